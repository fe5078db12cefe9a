"""Checkpoints: the whole reconstruction (state, optimizer state, fitted corrections, RNG seed and
progress) in one HDF5 file, so that a run resumes bit-identically.

Layout: ``/state`` (object, probe, positions, slice_thickness, loss, iteration; attrs sampling,
energy), ``/params/NNNN`` and ``/opt_state/NNNN`` (the leaves of the parameter and optimizer
PyTrees in flattening order), ``/nominal_positions``, and root attrs ``format``, ``seed``,
``target_iteration``, ``algorithm``. The pass order is drawn from ``(seed, pass number)`` only,
so the RNG needs no state of its own.
"""

import os
from pathlib import Path
from typing import Any

import h5py
import jax
import numpy as np

from ptyro_core import PtyroValueError, ReconState

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint"]

FORMAT = "ptyro-invert-checkpoint-1"


def _write_leaves(group: h5py.Group, tree: Any) -> None:
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        group.create_dataset(f"{i:04d}", data=np.asarray(leaf))


def save_checkpoint(
    path: str | os.PathLike,
    state: ReconState,
    *,
    params: Any = None,
    opt_state: Any = None,
    nominal_positions: Any = None,
    seed: int = 0,
    target_iteration: int | None = None,
    algorithm: str = "",
    extras: dict[str, float] | None = None,
) -> Path:
    """Write ``state`` (and, for resuming, the optimizer's ``params`` / ``opt_state`` PyTrees)
    to HDF5 at ``path``, atomically (written to a temporary file, then renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["seed"] = int(seed)
        f.attrs["target_iteration"] = int(state.iteration) if target_iteration is None else int(target_iteration)
        f.attrs["algorithm"] = str(algorithm)
        for k, v in (extras or {}).items():
            f.attrs["extra_" + k] = np.asarray(v)
        g = f.create_group("state")
        for name in ("object", "probe", "positions", "slice_thickness", "loss", "iteration"):
            g.create_dataset(name, data=np.asarray(getattr(state, name)))
        g.attrs["sampling"] = np.asarray(state.sampling, np.float64)
        g.attrs["energy"] = float(state.energy)
        if params is not None:
            _write_leaves(f.create_group("params"), params)
        if opt_state is not None:
            _write_leaves(f.create_group("opt_state"), opt_state)
        f.create_dataset("nominal_positions", data=np.asarray(state.positions if nominal_positions is None else nominal_positions))
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Everything in a checkpoint: ``state`` (ReconState), ``params`` / ``opt_state`` (lists of
    numpy leaves or None), ``nominal_positions``, ``seed``, ``target_iteration``, ``algorithm``."""
    path = Path(path)
    if not path.exists():
        raise PtyroValueError(f"checkpoint: no file at {str(path)!r}; expected an HDF5 checkpoint written by save_checkpoint")
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise PtyroValueError(f"checkpoint: {str(path)!r} has format {f.attrs.get('format')!r}, expected {FORMAT!r}")
        g = f["state"]
        state = ReconState(
            g["object"][()],
            g["probe"][()],
            g["positions"][()],
            sampling=tuple(float(v) for v in g.attrs["sampling"]),
            energy=float(g.attrs["energy"]),
            slice_thickness=g["slice_thickness"][()],
            loss=g["loss"][()],
            iteration=int(g["iteration"][()]),
        )

        def leaves(name: str) -> list | None:
            if name not in f:
                return None
            return [f[name][k][()] for k in sorted(f[name])]

        return {
            "state": state,
            "params": leaves("params"),
            "opt_state": leaves("opt_state"),
            "nominal_positions": f["nominal_positions"][()],
            "seed": int(f.attrs["seed"]),
            "target_iteration": int(f.attrs["target_iteration"]),
            "algorithm": str(f.attrs["algorithm"]),
            "extras": {k[6:]: f.attrs[k] for k in f.attrs if k.startswith("extra_")},
        }


def load_checkpoint(path: str | os.PathLike) -> ReconState:
    """The :class:`~ptyro_core.ReconState` stored in a checkpoint."""
    return read_checkpoint(path)["state"]
