"""Readers: a detector file → raw 4D data with the calibrations its metadata has.

A reader is a component of kind ``reader`` (hook ``ptyro_register_readers``):
``component(path, *, lazy=True, **options) -> dict`` with

- ``"array"``: the 4D data (Rx, Ry, Qx, Qy), axis 0 = x, as an array-like with basic indexing
  (a ``numpy.memmap``, an ``h5py.Dataset``, a dask array: never loaded whole when ``lazy``);
- ``"calibration"``: what the file says, each as ``(value, unit)`` in the file's own units:
  ``energy`` (eV, keV, V, kV), ``scan_step`` ((x, y); Å, nm, pm, µm, m), ``detector_pixel``
  ((x, y); 1/Å, 1/nm, 1/m, mrad, rad), optionally ``positions`` ((Rx·Ry, 2) in Å) and
  ``scan_rotation`` (degrees);
- ``"metadata"`` (optional): anything else worth keeping (a flat dict of strings and numbers).

A component may carry ``suffixes`` (the file endings it claims) and ``claims(path) -> bool``
(to tell apart formats that share an ending, e.g. EMD 1.0 and Velox ``.emd``).
:func:`load` picks the reader, converts the calibrations to Å, eV and Å⁻¹, lets the caller's
values override the file's, and names every missing one in one line with the flag that
supplies it.

HyperSpy-style files (everything read through RosettaSciIO) store (scan y, scan x, detector y,
detector x); the vendor readers transpose to our (x, y, x, y).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptyro_core import PtyroTypeError, PtyroValueError

if TYPE_CHECKING:  # imported in load(): the readers' entry point (ptyro plugins) imports no JAX
    from ptyro_core import Dataset4D

__all__ = ["LENGTH_UNITS", "convert_length", "convert_detector_pixel", "convert_energy", "parse_quantity", "find_reader", "read_raw", "load", "is_native"]

#: Å per unit
LENGTH_UNITS: dict[str, float] = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "µm": 1e4, "um": 1e4, "μm": 1e4, "m": 1e10, "mm": 1e7}
_INVERSE = (
    {"1/" + k: 1.0 / v for k, v in LENGTH_UNITS.items()}
    | {k + "^-1": 1.0 / v for k, v in LENGTH_UNITS.items()}
    | {k + "-1": 1.0 / v for k, v in LENGTH_UNITS.items()}
)
_ANGLE = {"mrad": 1.0, "rad": 1e3, "µrad": 1e-3, "urad": 1e-3}
_ENERGY = {"ev": 1.0, "kev": 1e3, "v": 1.0, "kv": 1e3, "mev": 1e6}


def _unit(u: Any) -> str:
    s = (u.decode() if isinstance(u, bytes) else str(u or "")).strip().lower().replace(" ", "")
    return s.replace("angstrom", "a").replace("å", "a")


def convert_length(value: Any, unit: Any) -> float | None:
    """A length in Å, or None for pixel units / an unknown unit."""
    f = LENGTH_UNITS.get(_unit(unit))
    return None if f is None else float(value) * f


def convert_detector_pixel(value: Any, unit: Any, energy: float | None) -> float | None:
    """A detector pixel in Å⁻¹ (1/length units directly; mrad/rad through the wavelength, so
    ``energy`` in eV is needed), or None when it cannot be known."""
    u = _unit(unit)
    if u in _INVERSE:
        return float(value) * _INVERSE[u]
    if u in _ANGLE and energy:
        from ptyro_simul.constants import energy2wavelength

        return float(value) * _ANGLE[u] * 1e-3 / float(energy2wavelength(float(energy)))
    return None


def convert_energy(value: Any, unit: Any) -> float | None:
    f = _ENERGY.get(_unit(unit) or "ev")
    return None if f is None else float(value) * f


_QTY = re.compile(r"^\s*([-+0-9.eE]+)\s*([^\d\s].*)?$")


def parse_quantity(text: Any, kind: str) -> Any:
    """A flag's value with an optional unit, in our units: ``kind`` is ``energy`` (eV; "300 keV"),
    ``length`` (Å; "0.42", "0.042 nm") or ``detector`` (returns (value, unit) for
    :func:`convert_detector_pixel`; default unit 1/Å; "1.6 mrad", "0.08 1/A")."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text) if kind != "detector" else (float(text), "1/a")
    if isinstance(text, (list, tuple)):
        vals = [parse_quantity(t, kind) for t in text]
        return vals
    m = _QTY.match(str(text))
    if not m:
        raise PtyroValueError(f"expected a number with an optional unit for the {kind}, got {text!r}")
    v, u = float(m.group(1)), (m.group(2) or "").strip()
    if kind == "energy":
        out = convert_energy(v, u)
        if out is None:
            raise PtyroValueError(f"energy {text!r}: unknown unit {u!r}; expected eV or keV")
        return out
    if kind == "length":
        out = convert_length(v, u or "a")
        if out is None:
            raise PtyroValueError(f"length {text!r}: unknown unit {u!r}; expected Å, nm, pm or µm")
        return out
    return (v, u or "1/a")


# --------------------------------------------------------------------------- picking a reader


def find_reader(path: str | Path, name: str | None = None) -> tuple[str, Any]:
    """(name, component) of the reader for ``path``: ``name`` if given, else the one whose
    ``suffixes`` match the file's ending and whose ``claims`` (if any) accepts it."""
    from ptyro_core import get, list_components

    if name:
        return name, get("reader", name)
    p = Path(path)
    suffix = p.suffix.lower()
    comps = [(c.name, c.obj) for c in list_components("reader")]
    matches = [(n, comp) for n, comp in comps if suffix in tuple(getattr(comp, "suffixes", ()))]
    for n, comp in matches:
        claims = getattr(comp, "claims", None)
        if claims is None or claims(p):
            return n, comp
    known = sorted({s for _, comp in comps for s in getattr(comp, "suffixes", ())})
    if matches:
        raise PtyroValueError(f"{str(p)!r}: no reader recognises this {suffix} file (tried {', '.join(n for n, _ in matches)}); pass --reader NAME")
    raise PtyroValueError(
        f"{str(p)!r}: no reader for files ending in {suffix or '(nothing)'}; known endings: {', '.join(known)} (vendor formats need the extra: pip install 'ptyro-workflows[formats]')"
    )


def read_raw(path: str | Path, *, reader: str | None = None, lazy: bool = True, **options: Any) -> tuple[str, dict[str, Any]]:
    """(reader name, what the reader returned) for ``path``."""
    p = Path(path)
    if not p.exists():
        raise PtyroValueError(f"file {str(p)!r} not found")
    name, comp = find_reader(p, reader)
    if options:
        import inspect

        params = inspect.signature(comp).parameters
        if not any(q.kind is q.VAR_KEYWORD for q in params.values()):
            unknown = sorted(set(options) - set(params))
            if unknown:
                raise PtyroValueError(
                    f"the {name} reader takes no option {', '.join(unknown)}; its options: {', '.join(k for k in params if k not in ('path', 'lazy')) or 'none'}"
                )
    raw = comp(p, lazy=lazy, **options)
    if not isinstance(raw, Mapping) or "array" not in raw:
        raise PtyroTypeError(f"reader {name!r} returned {type(raw).__name__}; expected a dict with 'array' and 'calibration'")
    shape = tuple(getattr(raw["array"], "shape", ()))
    if len(shape) != 4:
        raise PtyroValueError(f"{str(p)!r}: expected 4D-STEM data (Rx, Ry, Qx, Qy), the {name} reader found shape {shape}")
    return name, dict(raw)


def is_native(path: str | Path) -> bool:
    """True for the files :func:`ptyro_workflows.io.load_dataset` reads itself (.h5/.hdf5 EMD 1.0, .npy)."""
    return Path(path).suffix.lower() in (".h5", ".hdf5", ".npy")


# --------------------------------------------------------------------------- raw → Dataset4D


def _pair(v: Any) -> tuple[float, float]:
    if isinstance(v, (int, float, np.integer, np.floating)):
        return (float(v), float(v))
    t = tuple(float(x) for x in v)
    return (t[0], t[0]) if len(t) == 1 else (t[0], t[1])


def load(
    path: str | Path,
    *,
    reader: str | None = None,
    energy: float | None = None,
    scan_step: Any = None,
    reciprocal_sampling: Any = None,
    sampling: Any = None,
    semiangle_cutoff: float | None = None,
    lazy: bool | None = None,
    **options: Any,
) -> tuple[Dataset4D, dict[str, Any]]:
    """A :class:`~ptyro_core.Dataset4D` from any file a reader knows, and a record of where
    each calibration came from (``{"reader": ..., "energy": "file" | "given", ...}``).

    Arguments (our units: eV, Å, Å⁻¹, mrad) override the file. ``reciprocal_sampling`` may be
    ``(value, unit)`` (e.g. ``(1.6, "mrad")``, from :func:`parse_quantity`); without a detector
    calibration, ``semiangle_cutoff`` measures it from the bright-field disc."""
    from ptyro_workflows.io.calibration import decide_lazy, detector_grid, in_memory, raster

    name, raw = read_raw(path, reader=reader, lazy=True if lazy is None else bool(lazy), **options)
    cal = dict(raw.get("calibration") or {})
    arr = raw["array"]
    src: dict[str, Any] = {"reader": name}
    # energy
    if energy is None and "energy" in cal:
        energy = convert_energy(*cal["energy"])
        src["energy"] = "file"
    elif energy is not None:
        src["energy"] = "given"
    if energy is None:
        raise PtyroValueError(f"{str(path)!r}: the beam energy is not in the file; pass --energy (eV, or e.g. '300 keV')")
    energy = float(energy)
    # detector
    dq = None
    if sampling is not None:
        s = _pair(sampling)
        src["detector"] = "given (real-space sampling)"
    else:
        if reciprocal_sampling is not None:
            rs = reciprocal_sampling
            if isinstance(rs, tuple) and len(rs) == 2 and isinstance(rs[1], str):
                v = convert_detector_pixel(rs[0], rs[1], energy)
                if v is None:
                    raise PtyroValueError(f"detector pixel {rs[0]} {rs[1]!r}: unknown unit; expected 1/Å, 1/nm or mrad")
                dq = (v, v)
            else:
                dq = _pair(rs)
            src["detector"] = "given"
        elif "detector_pixel" in cal:
            vals, unit = cal["detector_pixel"]
            conv = [convert_detector_pixel(x, unit, energy) for x in _pair(vals)]
            if all(c is not None and c > 0 for c in conv):
                dq = (abs(float(conv[0] or 0)), abs(float(conv[1] or 0)))
                src["detector"] = f"file ({unit})"
        if dq is None and semiangle_cutoff is not None:
            from ptyro_workflows.io.calibration import _estimate_reciprocal_sampling

            first = np.asarray(arr[0, : min(arr.shape[1], 16)], np.float64).mean(axis=0)
            d = _estimate_reciprocal_sampling(first, float(semiangle_cutoff), energy)
            dq = (d, d)
            src["detector"] = "measured from the bright-field disc and the semi-angle"
        if dq is None:
            raise PtyroValueError(
                f"{str(path)!r}: the detector calibration is not in the file; pass --reciprocal-sampling (Å⁻¹, or e.g. '1.6 mrad'), --sampling (Å) or --semiangle-cutoff (mrad)"
            )
    from ptyro_core import Dataset4D

    grid = detector_grid(tuple(arr.shape[-2:]), sampling=s if dq is None else None, reciprocal_sampling=dq)
    # scan
    rx, ry = (int(n) for n in arr.shape[:2])
    positions = None
    if scan_step is not None:
        st = _pair(scan_step)
        src["scan_step"] = "given"
    elif "positions" in cal:
        positions = np.asarray(cal["positions"], np.float64).reshape(-1, 2)
        src["scan_step"] = "file (positions)"
    elif "scan_step" in cal:
        vals, unit = cal["scan_step"]
        conv = [convert_length(x, unit) for x in _pair(vals)]
        if not all(c is not None and c > 0 for c in conv):
            raise PtyroValueError(f"{str(path)!r}: the scan step is in {unit!r}, not a length; pass --scan-step (Å, or e.g. '0.042 nm')")
        st = (abs(float(conv[0] or 0)), abs(float(conv[1] or 0)))
        src["scan_step"] = f"file ({unit})"
    else:
        raise PtyroValueError(f"{str(path)!r}: the scan step is not in the file; pass --scan-step (Å, or e.g. '0.042 nm')")
    if positions is None:
        positions = raster((rx, ry), st)
        if "scan_rotation" in cal and cal["scan_rotation"]:
            from ptyro_invert.calibrate import raster_positions

            positions = raster_positions((rx, ry), st, float(cal["scan_rotation"]))
            src["scan_rotation"] = "file"
    src["metadata"] = {k: v for k, v in dict(raw.get("metadata") or {}).items() if isinstance(v, (str, int, float, bool))}
    if not decide_lazy(lazy, arr):
        return Dataset4D(in_memory(arr), positions.astype(np.float32), grid=grid, energy=energy), src
    return Dataset4D.lazy(arr, positions.astype(np.float32), grid=grid, energy=energy), src
