"""Reading 4D-STEM datasets (our EMD files, EMD 1.0 from py4DSTEM / emdfile, ``.npy``) into a
:class:`~ptyro_core.Dataset4D` held in memory or read from disk through a pattern source, and
the 2D images stored beside them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ptyro_core import PtyroValueError
from ptyro_core.conventions import energy2wavelength
from ptyro_workflows.io.calibration import (
    _check_dtype,
    _check_values,
    _estimate_reciprocal_sampling,
    _pos_pair,
    decide_lazy,
    detector_grid,
    in_memory,
    raster,
)
from ptyro_workflows.io.emd import _Q_UNIT_NAMES, _R_UNIT_NAMES, ROOT, _dim_step, _find_4d, _open_h5, _read_metadata, _units

if TYPE_CHECKING:
    from ptyro_core import Dataset4D

__all__ = ["load_dataset", "load_array", "load_images"]


def load_array(path: str | Path) -> np.ndarray:
    """A ``.npy`` array, with a clear error for a missing or unreadable file."""
    p = Path(path)
    if not p.exists():
        raise PtyroValueError(f"file {str(p)!r} not found")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise PtyroValueError(f"cannot read {str(p)!r} as a .npy array ({e})") from None


# long: one calibration path per file kind (.npy, EMD from us or py4DSTEM, lazy or not) and the docstring of every argument
def load_dataset(
    path: str | Path,
    *,
    energy: float | None = None,
    scan_step: Any = None,
    sampling: Any = None,
    reciprocal_sampling: Any = None,
    semiangle_cutoff: float | None = None,
    lazy: bool | None = None,
) -> Dataset4D:
    """Read a 4D-STEM dataset: our EMD files, EMD 1.0 files written by py4DSTEM / emdfile, or a
    ``.npy`` 4D array (Rx, Ry, Qx, Qy).

    ``lazy=True`` leaves the patterns on disk (:meth:`ptyro_core.Dataset4D.lazy` with a
    :class:`~ptyro_core.sources.HDF5Source` or :class:`~ptyro_core.sources.MemmapSource`, which
    opens the file while batches are read and closes it after: reconstructions read them batch
    by batch, so datasets larger than memory work);
    ``lazy=None`` (default) does so when the 4D array would take more than half of the memory
    budget (:func:`ptyro_core.pipeline.memory_budget`: ``PTYRO_MEMORY_BUDGET``, or 80% of available memory).

    Calibrations missing from the file (always for ``.npy``) come from the arguments:
    ``energy`` (eV), ``scan_step`` (Å, scalar or (x, y)), and one of ``sampling`` (real-space
    pixel of the probe grid, Å), ``reciprocal_sampling`` (detector pixel, Å⁻¹) or
    ``semiangle_cutoff`` (mrad; the detector pixel is then measured from the bright-field disk).
    Arguments override what the file says. In memory, counts keep their stored integer type
    (uint16 stays 2 bytes a value; a batch becomes floats on its device), other data are float32.
    """
    from ptyro_core import Dataset4D
    from ptyro_core.sources import HDF5Source, MemmapSource

    p = Path(path)
    positions = None
    meta: dict[str, Any] = {}
    step = dq = None

    def check(block: np.ndarray, where: str) -> None:
        _check_values(block, p, where)

    arr: Any
    if p.suffix.lower() == ".npy":
        raw = load_array(p)
        _check_dtype(p, raw.dtype)
        if raw.ndim != 4:
            raise PtyroValueError(f"{str(p)!r}: expected a 4D array (Rx, Ry, Qx, Qy), got shape {raw.shape} (rank {raw.ndim})")
        lazy = decide_lazy(lazy, raw)
        # out of core: a source that maps the file while it is read
        arr = MemmapSource(p, check=check) if lazy else in_memory(raw)
        del raw
    else:
        with _open_h5(p) as f:
            node = _find_4d(f)
            if node is None:
                raise PtyroValueError(f"{str(p)!r} holds no 4D array; expected a 4D-STEM dataset (Rx, Ry, Qx, Qy)")
            data = node if isinstance(node, h5py.Dataset) else node["data"]
            _check_dtype(p, data.dtype)
            if data.ndim != 4:
                raise PtyroValueError(f"{str(p)!r}: expected a 4D array (Rx, Ry, Qx, Qy), got shape {data.shape} (rank {data.ndim})")
            lazy = decide_lazy(lazy, data)
            # out of core: a source that opens the file while it is read (no handle kept here)
            arr = HDF5Source(p, data.name, check=check) if lazy else in_memory(data)
            if isinstance(node, h5py.Group):
                meta = _read_metadata(node)
                step, dq = _file_steps(node)
                root = node.parent
                if "scan_positions" in root and "data" in root["scan_positions"]:
                    positions = np.asarray(root["scan_positions"]["data"][()], np.float32)
                if energy is None and meta.get("energy") is not None:
                    energy = float(meta["energy"])
    if arr.ndim != 4:
        raise PtyroValueError(f"{str(p)!r}: expected a 4D array (Rx, Ry, Qx, Qy), got shape {arr.shape} (rank {arr.ndim})")
    if lazy:
        # the patterns stay on disk: check a sample here, and every batch as it is read
        with arr:
            arr[0, : min(arr.shape[1], 8)]
    else:
        _check_values(arr, p)
    if energy is None:
        raise PtyroValueError(f"{str(p)!r}: the beam energy is not in the file; pass --energy (eV)")
    energy = float(energy)
    if not (energy > 0 and math.isfinite(energy)):
        raise PtyroValueError(f"energy: expected a positive beam energy in eV, got {energy!r}")
    rx, ry, qx, qy = arr.shape
    # --- detector calibration -> real-space grid
    if sampling is not None:
        grid = detector_grid((qx, qy), sampling=_pos_pair("sampling", sampling))
    else:
        if reciprocal_sampling is not None:
            dq_xy = _pos_pair("reciprocal_sampling", reciprocal_sampling)
        elif dq is not None and all(d is not None for d in dq):
            lam = energy2wavelength(energy)
            dq_xy = tuple((d[1] * 1e-3 / lam if isinstance(d, tuple) else d) for d in dq)
            dq_xy = _pos_pair("reciprocal sampling in the file", [abs(v) for v in dq_xy])
        elif semiangle_cutoff is not None:
            if lazy:
                with arr:
                    mean = np.mean(np.asarray(arr[0, : min(arr.shape[1], 16)], np.float64), axis=0)
            else:
                mean = np.asarray(arr.mean(axis=(0, 1)), np.float64)
            d = _estimate_reciprocal_sampling(mean, float(semiangle_cutoff), energy)
            dq_xy = (d, d)
        else:
            raise PtyroValueError(
                f"{str(p)!r}: the detector calibration is not in the file; pass --sampling (Å), --reciprocal-sampling (Å⁻¹) or --semiangle-cutoff (mrad)"
            )
        grid = detector_grid((qx, qy), reciprocal_sampling=dq_xy)
    # --- scan positions
    if scan_step is not None or positions is None:
        if scan_step is not None:
            st = _pos_pair("scan_step", scan_step)
        elif step is not None and all(s is not None for s in step):
            st = _pos_pair("scan step in the file", [abs(v) for v in step])
        else:
            raise PtyroValueError(f"{str(p)!r}: the scan step is not in the file; pass --scan-step (Å)")
        positions = raster((rx, ry), st)
    if lazy:
        return Dataset4D.lazy(arr, positions, grid=grid, energy=energy)
    return Dataset4D(arr, positions, grid=grid, energy=energy)


def _file_steps(node: h5py.Group) -> tuple[list[Any], list[Any]]:
    """The scan step (Å) and detector pixel (Å⁻¹, or ("mrad", value)) an EMD array's dims give
    (None where a dim is missing or in units we do not know)."""
    step: list[Any] = [None, None]
    dq: list[Any] = [None, None]
    for n in range(4):
        d = node.get(f"dim{n}")
        if d is None:
            continue
        u = _units(d).lower()
        s = _dim_step(d)
        if n < 2 and u in _R_UNIT_NAMES:
            step[n] = s
        elif n < 2 and u == "nm" and s is not None:
            step[n] = 10 * s
        elif n >= 2 and u in _Q_UNIT_NAMES:
            dq[n - 2] = s
        elif n >= 2 and u in ("nm^-1", "1/nm") and s is not None:
            dq[n - 2] = s / 10
        elif n >= 2 and u == "mrad" and s is not None:
            dq[n - 2] = ("mrad", s)
    return step, dq


def load_images(path: str | Path) -> dict[str, np.ndarray]:
    """The virtual detector images and 2D arrays stored in one of our dataset files."""
    out: dict[str, np.ndarray] = {}
    with _open_h5(path) as f:
        root = f.get(ROOT)
        if root is None:
            return out
        for name, g in root.items():
            if isinstance(g, h5py.Group) and "data" in g and g["data"].ndim == 2 and name != "scan_positions":
                out[name.removeprefix("virtual_")] = np.asarray(g["data"][()])
    return out
