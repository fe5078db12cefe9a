"""Calibrations and the checks every way of reading a dataset shares (our EMD files and .npy
here, every other format in :mod:`ptyro_workflows.readers`): which dtypes are intensities, one
rule for bad values in memory and out of core, whether a dataset is read lazily, how it is
held in memory, the detector pixel -> real-space grid, the scan step -> raster positions, and
the detector pixel measured from the bright-field disk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptyro_core import PtyroTypeError, PtyroValueError
from ptyro_core.conventions import energy2wavelength

if TYPE_CHECKING:
    from ptyro_core import Grid

__all__ = ["decide_lazy", "in_memory", "held_itemsize", "detector_grid", "raster"]


def _estimate_reciprocal_sampling(mean_pattern: np.ndarray, semiangle_cutoff: float, energy: float) -> float:
    """Å⁻¹ per detector pixel from the bright-field disk radius (pixels above half its maximum)."""
    area = float(np.sum(mean_pattern > 0.5 * float(mean_pattern.max())))
    radius_px = math.sqrt(area / math.pi)
    if radius_px < 2:
        raise PtyroValueError(
            f"cannot estimate the detector calibration: the bright-field disk is {radius_px:.1f} pixels across; pass --reciprocal-sampling or --sampling"
        )
    return semiangle_cutoff * 1e-3 / energy2wavelength(energy) / radius_px


def _check_dtype(path: Path, dtype: Any) -> None:
    """Only integer and real floating-point intensities are read: complex values (whose
    imaginary part a conversion would drop), booleans, strings and records are refused."""
    dt = np.dtype(dtype)
    if dt.kind not in "iuf":
        raise PtyroTypeError(
            f"{str(path)!r}: the 4D data has dtype {dt} ({'complex' if dt.kind == 'c' else 'not numeric intensities'}); expected integer or real floating-point intensities"
        )


def _check_values(block: Any, path: Path, where: str = "") -> None:
    """One rule in memory and out of core: NaN/inf and negative intensities are refused,
    with how many there are (negative counts are not physical; subtract a smaller background
    or clip them to 0 before reconstructing). Checked in row blocks (no full-size temporary);
    unsigned counts need no check."""
    from ptyro_core.types import _blocks

    a = np.asarray(block)
    if a.dtype.kind == "u":
        return
    bad = neg = 0
    low = math.inf
    for blk in _blocks(a):
        if a.dtype.kind == "f":
            bad += int(blk.size - np.count_nonzero(np.isfinite(blk)))
        n = int(np.count_nonzero(blk < 0))
        if n:
            neg, low = neg + n, min(low, float(blk.min()))
    if bad:
        raise PtyroValueError(f"{str(path)!r}: the 4D data{where} holds {bad} NaN/inf values; expected finite intensities")
    if neg:
        raise PtyroValueError(
            f"{str(path)!r}: the 4D data{where} holds {neg} negative values (down to {low:.4g}); expected intensities >= 0 "
            "(subtract a smaller background, or clip them to 0 before reconstructing)"
        )


def held_itemsize(dtype: Any) -> int:
    """Bytes per value of the patterns as :func:`in_memory` holds them."""
    dt = np.dtype(dtype)
    return dt.itemsize if dt.kind in "iu" and dt.itemsize <= 4 else 4


def in_memory(array: Any) -> np.ndarray:
    """The patterns of an array-like (an ``h5py.Dataset``, a memory map, a dask array, an
    array) read into memory as they are kept: counts in their stored integer type (up to 4
    bytes: uint16 data stay 2 bytes a value), everything else as float32. An in-memory array
    of that type is returned as it is (no copy)."""
    dt = np.dtype(array.dtype)
    keep = dt.kind in "iu" and dt.itemsize <= 4
    a = np.asarray(array) if keep else np.asarray(array, dtype=np.float32)
    return np.array(a) if isinstance(a, np.memmap) else a


def decide_lazy(lazy: bool | None, array: Any) -> bool:
    """Whether to leave the patterns on disk: as asked, or (``lazy=None``) when they would
    take more than half of the memory budget (:func:`ptyro_core.pipeline.memory_budget`) held
    in memory."""
    if lazy is not None:
        return bool(lazy)
    from ptyro_core.pipeline import memory_budget

    return int(np.prod(array.shape)) * held_itemsize(array.dtype) > 0.5 * memory_budget()


def _pos_pair(name: str, v: Any) -> tuple[float, float]:
    if isinstance(v, (int, float, np.floating, np.integer)):
        v = (v, v)
    try:
        t = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise PtyroTypeError(f"{name}: expected a number or a pair (x, y), got {v!r}") from None
    if len(t) != 2 or not all(math.isfinite(x) and x > 0 for x in t):
        raise PtyroValueError(f"{name}: expected positive values (x, y), got {v!r}")
    return t  # type: ignore[return-value]


def detector_grid(pattern_shape: tuple[int, int], *, sampling: Any = None, reciprocal_sampling: Any = None) -> Grid:
    """The real-space grid the patterns are the unitary FFT of, from either the real-space
    ``sampling`` (Å) or the detector pixel ``reciprocal_sampling`` (Å⁻¹), each (x, y)."""
    from ptyro_core import Grid

    qx, qy = (int(n) for n in pattern_shape)
    if sampling is not None:
        return Grid((qx, qy), tuple(sampling))
    dq = tuple(reciprocal_sampling)
    return Grid((qx, qy), (1.0 / (qx * dq[0]), 1.0 / (qy * dq[1])))


def raster(scan_shape: tuple[int, int], step: Any) -> np.ndarray:
    """Row-major raster positions (Rx·Ry, 2) in Å from (0, 0) with ``step`` (x, y) Å, float32."""
    rx, ry = (int(n) for n in scan_shape)
    xx, yy = np.meshgrid(np.arange(rx) * step[0], np.arange(ry) * step[1], indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
