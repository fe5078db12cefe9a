"""Reconstructions as HDF5 (layout in :mod:`ptyro_workflows.io`): write and read back."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_core.files import hdf5_writing
from ptyro_workflows.io.emd import _open_h5
from ptyro_workflows.io.safety import atomic_output
from ptyro_workflows.provenance import write_provenance

if TYPE_CHECKING:
    from ptyro_core import ReconState

__all__ = ["save_reconstruction", "load_reconstruction"]


def save_reconstruction(path: str | Path, state: ReconState, *, provenance: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a :class:`~ptyro_core.ReconState` as HDF5 (layout in the module docstring)."""
    from ptyro_core import ReconState

    with atomic_output(path, overwrite) as tmp, hdf5_writing(tmp) as f:
        f.attrs["ptyrodactyl_file"] = "reconstruction"
        g = f.create_group("reconstruction")
        g.attrs["energy"] = float(state.energy)
        g.attrs["iteration"] = int(np.asarray(state.iteration))
        g.attrs["sampling"] = np.asarray(state.sampling, np.float64)
        g.attrs["position_convention"] = ReconState.position_convention
        items = {
            "object": (np.asarray(state.object), "transmission (complex, slices x y)"),
            "probe": (np.asarray(state.probe), "probe modes (complex, modes x y), sum |psi|^2 = 1"),
            "positions": (np.asarray(state.positions), "A"),
            "loss": (np.asarray(state.loss), "loss per iteration"),
            "slice_thickness": (np.asarray(state.slice_thickness), "A"),
        }
        for name, (a, units) in items.items():
            d = g.create_dataset(name, data=a)
            d.attrs["sampling"] = np.asarray(state.sampling, np.float64)
            d.attrs["units"] = units
        if provenance:
            write_provenance(f.create_group("provenance"), provenance)
    return Path(path)


def load_reconstruction(path: str | Path) -> ReconState:
    """Read a reconstruction file written by :func:`save_reconstruction`."""
    from ptyro_core import ReconState

    with _open_h5(path) as f:
        g = f.get("reconstruction")
        if g is None or "object" not in g or "probe" not in g:
            raise PtyroValueError(f"{str(path)!r} holds no /reconstruction/object and /reconstruction/probe; expected a reconstruction file")
        return ReconState(
            np.asarray(g["object"][()]),
            np.asarray(g["probe"][()]),
            np.asarray(g["positions"][()], np.float32),
            sampling=tuple(float(v) for v in g.attrs["sampling"]),
            energy=float(g.attrs["energy"]),
            slice_thickness=np.asarray(g["slice_thickness"][()]) if "slice_thickness" in g else None,
            loss=np.asarray(g["loss"][()]) if "loss" in g else None,
            iteration=int(g.attrs.get("iteration", 0)),
        )
