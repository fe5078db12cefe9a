"""Readers of the formats we read without extras: EMD 1.0 (ours and py4DSTEM's / emdfile's)
and ``.npy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["emd", "npy"]


def _reader(suffixes: tuple[str, ...], claims: Any = None) -> Any:
    def wrap(fn: Any) -> Any:
        fn.suffixes = suffixes
        if claims is not None:
            fn.claims = claims
        return fn

    return wrap


def _is_emd1(path: Path) -> bool:
    """An EMD 1.0 file (root attribute ``emd_group_type = "file"`` or ``version_major = 1``
    with an emd array group), not Velox's or NCEM's ``.emd``."""
    try:
        with h5py.File(path, "r") as f:
            gt = f.attrs.get("emd_group_type")
            gt = gt.decode() if isinstance(gt, bytes) else gt
            return gt == "file" or (int(f.attrs.get("version_major", 0)) == 1 and "Data" not in f)
    except OSError:
        return False


@_reader((".h5", ".hdf5", ".emd"), claims=_is_emd1)
def emd(path: str | Path, *, lazy: bool = True) -> dict[str, Any]:
    """EMD 1.0: the first 4D array node; dims' steps and units (scan Å or nm, detector Å⁻¹,
    nm⁻¹ or mrad), ``scan_positions`` when present, the energy from the node's metadata
    (``energy`` in eV, as we and py4DSTEM's calibration write it)."""
    from ptyro_workflows.io import _dim_step, _find_4d, _open_h5, _read_metadata, _units

    f = _open_h5(path)
    node = _find_4d(f)
    if node is None:
        f.close()
        from ptyro_core import PtyroValueError

        raise PtyroValueError(f"{str(path)!r} holds no 4D array; expected a 4D-STEM dataset (Rx, Ry, Qx, Qy)")
    data = node["data"] if isinstance(node, h5py.Group) else node
    cal: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    if isinstance(node, h5py.Group):
        meta = _read_metadata(node)
        steps = [(_dim_step(node[f"dim{n}"]), _units(node[f"dim{n}"])) if f"dim{n}" in node else (None, "") for n in range(4)]
        if steps[0][0] is not None and steps[1][0] is not None and steps[0][1] not in ("", "pixels"):
            cal["scan_step"] = ((steps[0][0], steps[1][0]), steps[0][1])
        if steps[2][0] is not None and steps[3][0] is not None and steps[2][1] not in ("", "pixels"):
            cal["detector_pixel"] = ((steps[2][0], steps[3][0]), steps[2][1])
        for key in ("energy", "beam_energy"):
            if meta.get(key) is not None:
                cal["energy"] = (float(meta[key]), "eV")
                break
        root = node.parent
        if "scan_positions" in root and "data" in root["scan_positions"]:
            cal["positions"] = np.asarray(root["scan_positions"]["data"][()], np.float64)
    array = data if lazy else np.asarray(data[()])
    if not lazy:
        f.close()
    return {"array": array, "calibration": cal, "metadata": meta}


@_reader((".npy",))
def npy(path: str | Path, *, lazy: bool = True) -> dict[str, Any]:
    """A ``.npy`` 4D array (Rx, Ry, Qx, Qy), read lazily (:class:`~ptyro_core.sources.MemmapSource`); no calibrations."""
    from ptyro_workflows.io import load_array

    a = load_array(path)
    return {"array": a if lazy else np.asarray(a), "calibration": {}, "metadata": {}}
