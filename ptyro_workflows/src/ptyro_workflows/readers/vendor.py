"""Vendor detector formats through RosettaSciIO (the optional extra ``ptyro-workflows[formats]``).

One reader per format, each a thin call of the matching ``rsciio`` plugin with ``lazy=True``
(memory-mapped or dask-chunked: nothing is loaded until a batch is read). RosettaSciIO returns
HyperSpy's axis order (scan y, scan x, detector y, detector x); the readers transpose to ours
(x, y, x, y) lazily, and take the calibrations from the axes (scale and units) and the beam
energy from ``Acquisition_instrument.TEM.beam_energy`` (keV).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ptyro_core import PtyroValueError

__all__ = ["FORMATS", "make_reader"]

_PIXELS = {"", "px", "pixel", "pixels", "<undefined>", "none"}

#: reader name -> (rsciio plugin module, suffixes, description)
FORMATS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "mib": ("quantumdetector", (".mib",), "Quantum Detectors Merlin .mib (scan shape from the .hdr beside it)"),
    "dm": ("digitalmicrograph", (".dm3", ".dm4"), "Gatan DigitalMicrograph .dm3/.dm4"),
    "empad": ("empad", (".xml",), "EMPAD .xml + .raw (Thermo Fisher)"),
    "arina": ("arina", (".h5",), "DECTRIS ARINA *_master.h5"),
    "tia": ("tia", (".ser", ".emi"), "FEI/Thermo Fisher TIA .ser"),
    "blo": ("blockfile", (".blo",), "NanoMegas / ASTAR blockfile .blo"),
    "hspy": ("hspy", (".hspy",), "HyperSpy .hspy"),
    "zspy": ("zspy", (".zspy",), "HyperSpy .zspy (zarr)"),
    "velox": ("emd", (".emd",), "Thermo Fisher Velox .emd"),
}


def _rsciio(module: str) -> Any:
    try:
        return importlib.import_module(f"rsciio.{module}")
    except ImportError:
        raise PtyroValueError("reading this format needs RosettaSciIO; install the extra: pip install 'ptyro-workflows[formats]'") from None


def _axes(sig: dict[str, Any]) -> list[dict[str, Any]]:
    axes = list(sig.get("axes") or [])
    if axes and all("index_in_array" in a for a in axes):
        axes.sort(key=lambda a: a["index_in_array"])
    return axes


def _calibration(axes: list[dict[str, Any]], metadata: dict[str, Any]) -> dict[str, Any]:
    cal: dict[str, Any] = {}
    if len(axes) == 4:
        (ay, ax, qy, qx) = axes
        u = str(ax.get("units") or "").strip()
        if u.lower() not in _PIXELS:
            cal["scan_step"] = ((float(ax.get("scale", 1.0)), float(ay.get("scale", 1.0))), u)
        u = str(qx.get("units") or "").strip()
        if u.lower() not in _PIXELS:
            cal["detector_pixel"] = ((float(qx.get("scale", 1.0)), float(qy.get("scale", 1.0))), u)
    tem = ((metadata or {}).get("Acquisition_instrument") or {}).get("TEM") or {}
    if tem.get("beam_energy"):
        cal["energy"] = (float(tem["beam_energy"]), "keV")
    return cal


def make_reader(name: str) -> Any:
    """The reader component for ``name`` in :data:`FORMATS`."""
    module, suffixes, description = FORMATS[name]

    def read(path: str | Path, *, lazy: bool = True, **options: Any) -> dict[str, Any]:
        mod = _rsciio(module)
        try:
            out = mod.file_reader(str(path), lazy=lazy, **options)
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise PtyroValueError(f"cannot read {str(path)!r} as {description} ({type(e).__name__}: {' '.join(str(e).split())})") from None
        sigs = [s for s in out if getattr(s.get("data"), "ndim", 0) == 4]
        if not sigs:
            shapes = [tuple(getattr(s.get("data"), "shape", ())) for s in out]
            raise PtyroValueError(f"{str(path)!r} holds no 4D-STEM data (arrays of shapes {shapes}); expected (scan y, scan x, detector y, detector x)")
        sig = sigs[0]
        data = sig["data"].transpose(1, 0, 3, 2)
        meta = sig.get("metadata") or {}
        general = meta.get("General") or {}
        return {"array": data, "calibration": _calibration(_axes(sig), meta), "metadata": {"format": description, "title": str(general.get("title", ""))}}

    read.__name__ = f"read_{name}"
    read.__doc__ = f"{description}, through RosettaSciIO's ``rsciio.{module}``."
    read.suffixes = suffixes  # type: ignore[attr-defined]
    if name == "arina":
        read.claims = lambda p: Path(p).name.lower().endswith("_master.h5")  # type: ignore[attr-defined]
    if name == "velox":

        def claims(p: str | Path) -> bool:
            from ptyro_workflows.readers.native import _is_emd1  # h5py when a file is read, not at registration

            return not _is_emd1(Path(p))

        read.claims = claims  # type: ignore[attr-defined]
    return read
