"""What every reader must do, checked on a sample file: :func:`check_reader`.

Any reader, built-in or from a plugin (hook ``ptyro_register_readers``), can be run through it
with a small file of its format and the 4D array that file holds. It checks, each failure an
``AssertionError`` naming the reader and the property:

- the return value: a dict with a 4D ``array`` and a ``calibration`` dict whose keys are known
  and whose units :func:`ptyro_workflows.readers.load` converts;
- shape and axis order (Rx, Ry, Qx, Qy), axis 0 = scan x: the array equals the expected one,
  pattern by pattern and whole, and the dtype is the file's (no silent conversion);
- laziness: with ``lazy=True`` the array is not an in-memory ``numpy.ndarray`` (a memory map, an
  HDF5 dataset, a dask array or another array-like with basic indexing), and opening the file and
  reading one pattern allocates less than half the data (``tracemalloc``; for files of at least
  ``min_bytes``): nothing is loaded whole by accident;
- calibrations: through :func:`~ptyro_workflows.readers.load` (with what the caller must supply
  for the format, ``given``), the energy (eV), the scan step (Å) and the detector pixel (Å⁻¹)
  are the ``expected`` ones;
- malformed files: a file of the same name holding garbage, and a copy cut to half its length,
  give one :class:`~ptyro_core.PtyroValueError` line naming the file, when opened or at the
  latest when its last pattern is read, never another exception or a silent success.
"""

from __future__ import annotations

import shutil
import tempfile
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ptyro_core import PtyroValueError

__all__ = ["check_reader"]

_KEYS = {"energy", "scan_step", "detector_pixel", "positions", "scan_rotation"}


def _component(reader: Any) -> tuple[str, Any]:
    from ptyro_core import get, list_components

    if isinstance(reader, str):
        return reader, get("reader", reader)
    for c in list_components("reader"):
        if c.obj is reader:
            return c.name, reader
    raise AssertionError(f"reader {getattr(reader, '__name__', reader)!r} is not registered; register it (hook ptyro_register_readers) before checking it")


def _check_calibration_units(name: str, cal: Mapping[str, Any]) -> None:
    from ptyro_workflows.readers import convert_detector_pixel, convert_energy, convert_length

    unknown = set(cal) - _KEYS
    assert not unknown, f"reader {name}: unknown calibration keys {sorted(unknown)}; expected some of {sorted(_KEYS)}"
    for key, conv in (
        ("energy", lambda v, u: convert_energy(v, u)),
        ("scan_step", convert_length),
        ("detector_pixel", lambda v, u: convert_detector_pixel(v, u, 300e3)),
    ):
        if key in cal:
            value, unit = cal[key]
            first = np.ravel(value)[0]
            assert conv(first, unit) is not None, f"reader {name}: calibration {key} is in {unit!r}, a unit load() cannot convert"


def _check_malformed(name: str, comp: Any, path: Path, opts: Mapping[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for what in ("garbage", "truncated"):
            bad = Path(tmp) / what
            bad.mkdir()
            target = bad / path.name
            if what == "garbage":
                target.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
            else:
                if path.is_dir():
                    continue
                for side in path.parent.iterdir():  # the files beside it (headers, linked data) stay whole
                    if side.is_file() and side != path:
                        shutil.copy(side, bad / side.name)
                data = path.read_bytes()
                target.write_bytes(data[: len(data) // 2])
            try:
                raw = comp(target, lazy=True, **opts)
                arr = raw["array"]
                np.asarray(arr[arr.shape[0] - 1, arr.shape[1] - 1])
            except PtyroValueError as e:
                msg = str(e)
                assert "\n" not in msg.strip(), f"reader {name}: the error for a {what} file spans several lines: {msg!r}"
                assert path.name in msg, f"reader {name}: the error for a {what} file does not name it: {msg!r}"
                continue
            except Exception as e:  # noqa: BLE001 - the point: anything but PtyroValueError is a failure
                raise AssertionError(
                    f"reader {name}: a {what} file raised {type(e).__name__} ({e}); expected one PtyroValueError line naming the file"
                ) from None
            raise AssertionError(f"reader {name}: a {what} file was read without an error")


def check_reader(
    reader: Any,
    path: str | Path,
    expected: np.ndarray,
    *,
    calibration: Mapping[str, Any] | None = None,
    given: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    min_bytes: int = 256 * 1024,
) -> None:
    """Check the reader ``reader`` (a component or its registered name) on ``path``, a file that
    holds ``expected`` ((Rx, Ry, Qx, Qy), the file's dtype). ``calibration``: the values
    :func:`~ptyro_workflows.readers.load` must find, in our units (``energy`` eV, ``scan_step``
    (x, y) Å, ``reciprocal_sampling`` (x, y) Å⁻¹); ``given``: the keyword arguments ``load``
    needs for what the format does not store (e.g. ``energy``); ``options``: reader options
    (e.g. ``scan_shape``). Raises AssertionError naming the first property that fails."""
    name, comp = _component(reader)
    p = Path(path)
    opts = dict(options or {})
    exp = np.asarray(expected)
    # the return value, the shape, the axis order, the dtype
    raw = comp(p, lazy=True, **opts)
    assert isinstance(raw, Mapping) and "array" in raw, f"reader {name}: returned {type(raw).__name__}; expected a dict with 'array' and 'calibration'"
    arr = raw["array"]
    shape = tuple(int(s) for s in getattr(arr, "shape", ()))
    assert shape == exp.shape, f"reader {name}: array shape {shape}, expected {exp.shape} (Rx, Ry, Qx, Qy)"
    dt = np.dtype(arr.dtype)
    assert (dt.kind, dt.itemsize) == (exp.dtype.kind, exp.dtype.itemsize), f"reader {name}: dtype {dt}, expected the file's {exp.dtype} (no silent conversion)"
    _check_calibration_units(name, dict(raw.get("calibration") or {}))
    rx, ry = shape[:2]
    for i, j in {(0, 0), (rx - 1, 0), (0, ry - 1), (rx - 1, ry - 1), (rx // 2, ry // 3)}:
        got = np.asarray(arr[i, j])
        assert got.shape == exp.shape[2:] and np.array_equal(got, exp[i, j]), (
            f"reader {name}: pattern ({i}, {j}) differs from the expected one (axis order: (Rx, Ry, Qx, Qy), axis 0 = scan x)"
        )
    whole = comp(p, lazy=False, **opts)["array"]
    assert np.array_equal(np.asarray(whole), exp), f"reader {name}: lazy=False returns other values than the file holds"
    # laziness
    assert type(arr) is not np.ndarray, f"reader {name}: lazy=True returned an in-memory numpy array; expected a memory map or an array-like read on demand"
    if exp.nbytes >= min_bytes:
        tracemalloc.start()
        try:
            lazy = comp(p, lazy=True, **opts)["array"]
            np.asarray(lazy[rx // 2, ry // 2])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < exp.nbytes / 2, f"reader {name}: opening the file and reading one pattern allocated {peak} bytes of {exp.nbytes}: loaded whole"
    # calibrations, through load()
    if calibration is not None:
        from ptyro_workflows.readers import load

        ds, _ = load(p, reader=name, lazy=True, **dict(given or {}), **opts)
        if "energy" in calibration:
            assert np.isclose(ds.energy, calibration["energy"], rtol=1e-6), f"reader {name}: energy {ds.energy} eV, expected {calibration['energy']}"
        if "reciprocal_sampling" in calibration:
            got_q = ds.grid.reciprocal_sampling
            assert np.allclose(got_q, calibration["reciprocal_sampling"], rtol=1e-5), (
                f"reader {name}: detector pixel {got_q} Å⁻¹, expected {calibration['reciprocal_sampling']}"
            )
        if "scan_step" in calibration:
            pos = np.asarray(ds.positions, np.float64).reshape(rx, ry, 2)
            step = (float(np.linalg.norm(pos[1, 0] - pos[0, 0])) if rx > 1 else 0.0, float(np.linalg.norm(pos[0, 1] - pos[0, 0])) if ry > 1 else 0.0)
            assert np.allclose(step, calibration["scan_step"], rtol=1e-5), f"reader {name}: scan step {step} Å, expected {calibration['scan_step']}"
            assert np.allclose(pos[1, 0] - pos[0, 0], [step[0], 0.0], atol=1e-5 * max(step)), f"reader {name}: the scan's axis 0 is not x"
    _check_malformed(name, comp, p, opts)
