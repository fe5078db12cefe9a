"""Vendor detector formats through RosettaSciIO (the optional extra ``ptyro-workflows[formats]``).

One reader per format, each a thin call of the matching ``rsciio`` plugin with ``lazy=True``
(memory-mapped or dask-chunked: nothing is loaded until a batch is read). Two formats are read
here instead, because RosettaSciIO loads them whole: DECTRIS ARINA (its reader has no lazy mode)
and TIA ``.ser`` (its header parser reads every element); both follow the layouts RosettaSciIO
documents and reads, and the tests check them against it. RosettaSciIO returns
HyperSpy's axis order (scan y, scan x, detector y, detector x); the readers transpose to ours
(x, y, x, y) lazily, and take the calibrations from the axes (scale and units) and the beam
energy from ``Acquisition_instrument.TEM.beam_energy`` (keV).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from ptyro_core import PtyroValueError

__all__ = ["FORMATS", "make_reader", "arina", "tia"]

_PIXELS = {"", "px", "pixel", "pixels", "<undefined>", "none"}

#: reader name -> (rsciio plugin module, suffixes, description)
FORMATS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "mib": ("quantumdetector", (".mib",), "Quantum Detectors Merlin .mib (scan shape from the .hdr beside it)"),
    "dm": ("digitalmicrograph", (".dm3", ".dm4"), "Gatan DigitalMicrograph .dm3/.dm4"),
    "empad": ("empad", (".xml",), "EMPAD .xml + .raw (Thermo Fisher)"),
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
    from ptyro_workflows.readers import convert_detector_pixel, convert_length

    cal: dict[str, Any] = {}
    if len(axes) == 4:
        (ay, ax, qy, qx) = axes
        # only what load() can convert: pixels, camera centimetres (.blo) and the like are asked for instead
        u = str(ax.get("units") or "").strip()
        if u.lower() not in _PIXELS and convert_length(1.0, u) is not None:
            cal["scan_step"] = ((float(ax.get("scale", 1.0)), float(ay.get("scale", 1.0))), u)
        u = str(qx.get("units") or "").strip()
        if u.lower() not in _PIXELS and convert_detector_pixel(1.0, u, 300e3) is not None:
            cal["detector_pixel"] = ((float(qx.get("scale", 1.0)), float(qy.get("scale", 1.0))), u)
    tem = ((metadata or {}).get("Acquisition_instrument") or {}).get("TEM") or {}
    if tem.get("beam_energy"):
        cal["energy"] = (float(tem["beam_energy"]), "keV")
    return cal


def _mapped(sig: dict[str, Any]) -> dict[str, Any]:
    """The signal's metadata with RosettaSciIO's ``mapping`` applied (original metadata paths ->
    metadata paths, as HyperSpy does on loading): DM's ``Microscope Info.Voltage`` and Velox's
    ``Optics.AccelerationVoltage`` become ``Acquisition_instrument.TEM.beam_energy`` only there."""
    meta = dict(sig.get("metadata") or {})
    orig = sig.get("original_metadata") or {}
    for src, (dst, fn) in dict(sig.get("mapping") or {}).items():
        node: Any = orig
        for key in src.split("."):
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if node is None:
            continue
        try:
            value = fn(node) if fn is not None else node
        except Exception:  # noqa: BLE001 - a vendor field we cannot convert is simply not mapped
            continue
        *parents, leaf = dst.split(".")
        d = meta
        for key in parents:
            d = d.setdefault(key, {}) if isinstance(d.get(key, {}), dict) else {}
        d.setdefault(leaf, value)
    return meta


def _as_scan(data: Any, path: str | Path, scan_shape: Any) -> Any:
    """A 4D (scan y, scan x, detector y, detector x) view of ``data``: 4D as it is, a 3D stack of
    frames in scan order (x fastest; Velox's 4D-STEM) reshaped to ``scan_shape`` (Rx, Ry): given,
    or square when the frame count is a square number."""
    if getattr(data, "ndim", 0) == 4:
        return data
    rx, ry = _scan_shape(int(data.shape[0]), scan_shape, path)
    return data.reshape((ry, rx) + tuple(data.shape[1:]))


def make_reader(name: str) -> Any:
    """The reader component for ``name`` in :data:`FORMATS`."""
    module, suffixes, description = FORMATS[name]

    def read(path: str | Path, *, lazy: bool = True, scan_shape: Any = None, **options: Any) -> dict[str, Any]:
        mod = _rsciio(module)
        try:
            out = mod.file_reader(str(path), lazy=lazy, **options)
            sigs = [s for s in out if getattr(s.get("data"), "ndim", 0) == 4] or [s for s in out if getattr(s.get("data"), "ndim", 0) == 3]
            if sigs:
                np.asarray(sigs[0]["data"][-1, -1] if sigs[0]["data"].ndim == 4 else sigs[0]["data"][-1])  # a truncated file fails here, not later
        except Exception as e:  # noqa: BLE001 - whatever a vendor parser raises on a malformed file: one line naming it
            raise PtyroValueError(f"cannot read {str(path)!r} as {description} ({type(e).__name__}: {' '.join(str(e).split())})") from None
        if not sigs:
            shapes = [tuple(getattr(s.get("data"), "shape", ())) for s in out]
            raise PtyroValueError(f"{str(path)!r} holds no 4D-STEM data (arrays of shapes {shapes}); expected (scan y, scan x, detector y, detector x)")
        sig = sigs[0]
        hdr = (sig.get("original_metadata") or {}).get("hdr_file") or {}
        frames = hdr.get("Frames in Acquisition (Number)") if isinstance(hdr, dict) else None
        n = int(np.prod(sig["data"].shape[:-2]))
        if frames is not None and int(frames) != n:  # a Merlin file cut short: RosettaSciIO reads the frames it finds
            raise PtyroValueError(f"cannot read {str(path)!r} as {description}: its header announces {int(frames)} frames, the file holds {n} (truncated?)")
        data = _as_scan(sig["data"], path, scan_shape).transpose(1, 0, 3, 2)
        meta = _mapped(sig)
        general = meta.get("General") or {}
        axes = _axes(sig)
        if len(axes) == 3:  # a stack: its frame axis carries no scan calibration
            axes = [{"units": ""}, {"units": ""}, *axes[1:]]
        return {"array": data, "calibration": _calibration(axes, meta), "metadata": {"format": description, "title": str(general.get("title", ""))}}

    read.__name__ = f"read_{name}"
    read.__doc__ = f"{description}, through RosettaSciIO's ``rsciio.{module}``."
    read.suffixes = suffixes  # type: ignore[attr-defined]
    if name == "velox":

        def claims(p: str | Path) -> bool:
            from ptyro_workflows.readers.native import _is_emd1  # h5py when a file is read, not at registration

            return not _is_emd1(Path(p))

        read.claims = claims  # type: ignore[attr-defined]
    return read


# --------------------------------------------------------------------------- ARINA and TIA, read lazily here


class _Frames:
    """A lazy (Rx, Ry, Qx, Qy) array over frames stored one after another in scan order (x
    fastest): ``frame(k)`` returns frame k as (Qx, Qy); only the frames indexed are read."""

    ndim = 4

    def __init__(self, frame: Any, scan_shape: tuple[int, int], detector: tuple[int, int], dtype: Any) -> None:
        self._frame = frame
        self.shape = (int(scan_shape[0]), int(scan_shape[1]), int(detector[0]), int(detector[1]))
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(n for n, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (5 - len(key)) + key[i + 1 :]
        key = key + (slice(None),) * (4 - len(key))
        xs, ys = np.arange(self.shape[0])[key[0]], np.arange(self.shape[1])[key[1]]
        rx = self.shape[0]
        block = np.stack([np.stack([self._frame(int(y) * rx + int(x))[key[2:]] for y in np.atleast_1d(ys)]) for x in np.atleast_1d(xs)])
        return block[(0 if np.ndim(xs) == 0 else slice(None), 0 if np.ndim(ys) == 0 else slice(None))]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[:, :]
        return a if dtype is None else a.astype(dtype)


def _scan_shape(n: int, scan_shape: Any, path: str | Path) -> tuple[int, int]:
    if scan_shape is None:
        r = int(round(n**0.5))
        if r * r != n:
            raise PtyroValueError(
                f"{str(path)!r} holds {n} patterns, not a square scan; pass the scan shape (scan_shape=(Rx, Ry), ptyro preprocess --scan-shape RX,RY)"
            )
        return (r, r)
    rx, ry = (int(v) for v in scan_shape)
    if rx * ry != n:
        raise PtyroValueError(f"scan_shape {rx}x{ry} = {rx * ry} patterns, but {str(path)!r} holds {n}; expected Rx*Ry = {n}")
    return (rx, ry)


def arina(path: str | Path, *, lazy: bool = True, scan_shape: Any = None) -> dict[str, Any]:
    """DECTRIS ARINA ``*_master.h5``: ``/entry/data/data_NNNNNN`` (linked files, (N, h, w) frames
    in scan order, x fastest, bitshuffle-LZ4 compressed: ``hdf5plugin`` decodes each chunk as it
    is read), the scan square unless ``scan_shape`` says otherwise; the scan step from the
    metadata file beside it (``NAME.h5`` for ``NAME_master.h5``: attribute ``Pixel Size`` of
    ``STEM Metadata``, nm), as RosettaSciIO reads it. The file holds no detector calibration
    and no energy (asked for by name)."""
    import h5py

    try:
        import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filter)
    except ImportError:
        raise PtyroValueError("reading ARINA files needs hdf5plugin; install the extra: pip install 'ptyro-workflows[formats]'") from None
    p = Path(path)
    try:
        f = h5py.File(p, "r")
        dsets = [f["entry"]["data"][k] for k in sorted(f["entry"]["data"])]
        if not dsets or any(d.ndim != 3 or d.shape[1:] != dsets[0].shape[1:] for d in dsets):
            raise ValueError(f"/entry/data holds {[d.shape for d in dsets]}, expected (N, h, w) frame stacks of one size")
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise PtyroValueError(f"cannot read {str(p)!r} as a DECTRIS ARINA master file ({type(e).__name__}: {' '.join(str(e).split())})") from None
    ends = np.cumsum([d.shape[0] for d in dsets])
    h, w = dsets[0].shape[1:]

    def frame(k: int) -> np.ndarray:
        i = int(np.searchsorted(ends, k, side="right"))
        return np.asarray(dsets[i][k - (0 if i == 0 else int(ends[i - 1]))]).T  # (y, x) -> (x, y)

    array: Any = _Frames(frame, _scan_shape(int(ends[-1]), scan_shape, p), (w, h), dsets[0].dtype)
    cal: dict[str, Any] = {}
    meta_file = p.with_name(p.name[: -len("_master.h5")] + ".h5")
    try:
        with h5py.File(meta_file, "r") as m:
            step = float(np.ravel(m["STEM Metadata"].attrs["Pixel Size"])[0])
        cal["scan_step"] = ((step, step), "nm")
    except (OSError, KeyError, IndexError, ValueError):
        pass  # no metadata file: the scan step is asked for by name
    if not lazy:
        array = np.asarray(array)
    return {"array": array, "calibration": cal, "metadata": {"format": "DECTRIS ARINA", "files": len(dsets)}}


arina.suffixes = (".h5",)  # type: ignore[attr-defined]
arina.claims = lambda p: Path(p).name.lower().endswith("_master.h5")  # type: ignore[attr-defined]

#: TIA's element data types (the .ser DataType field)
_TIA_TYPES = {1: "<u1", 2: "<u2", 3: "<u4", 4: "<i1", 5: "<i2", 6: "<i4", 7: "<f4", 8: "<f8"}


def _tia_header(f: Any) -> dict[str, Any]:
    """The .ser header (FEI's documented layout, as RosettaSciIO's ``rsciio.tia`` reads it)."""
    import struct

    byte_order, series_id, version, data_type, tag_type, total, valid = struct.unpack("<HHHIIII", f.read(22))
    if byte_order != 0x4949 or series_id != 0x0197:
        raise ValueError(f"not a TIA series file (byte order 0x{byte_order:04x}, series id 0x{series_id:04x}; expected 0x4949, 0x0197)")
    wide = version > 0x0210
    (offsets_at,) = struct.unpack("<Q" if wide else "<I", f.read(8 if wide else 4))
    (ndim,) = struct.unpack("<I", f.read(4))
    dims = []
    for _ in range(ndim):
        size, offset, delta, element, dlen = struct.unpack("<IddII", f.read(28))
        f.read(dlen)
        (ulen,) = struct.unpack("<I", f.read(4))
        units = f.read(ulen).decode("latin-1")
        dims.append({"size": size, "offset": offset, "delta": delta, "units": units})
    f.seek(offsets_at)
    it = "<u8" if wide else "<u4"
    data_offsets = np.frombuffer(f.read(8 * total if wide else 4 * total), it).astype(np.int64)
    tag_offsets = np.frombuffer(f.read(8 * total if wide else 4 * total), it).astype(np.int64)
    return {"data_type": data_type, "tag_type": tag_type, "valid": valid, "dims": dims, "data_offsets": data_offsets, "tag_offsets": tag_offsets}


def tia(path: str | Path, *, lazy: bool = True) -> dict[str, Any]:
    """FEI / Thermo Fisher TIA ``.ser``: a 2D scan of 2D elements (4D-STEM), memory-mapped frame
    by frame. Its layout as RosettaSciIO documents and reads it: a header with the scan's
    dimensions (size, calibration delta, units, e.g. meters), an offset table, and per element a
    50-byte calibration header (the pixel delta, in 1/meters for diffraction) then the pixels,
    x fastest and rows stored bottom-up; the scan's fastest dimension is x (Dim-1 when the tags'
    y positions repeat, else Dim-2, as RosettaSciIO orders them). The energy is not in the .ser
    (it is in the .emi beside it): asked for by name."""
    import struct

    p = Path(path)
    try:
        with open(p, "rb") as f:
            hd = _tia_header(f)
            if hd["data_type"] != 0x4122 or len(hd["dims"]) != 2:
                raise ValueError(f"data type 0x{hd['data_type']:04x} with {len(hd['dims'])} scan dimensions; expected 2D elements (0x4122) on a 2D scan")
            first = int(hd["data_offsets"][0])
            f.seek(first)
            _, dx, _, _, dy, _, dtype_id, sx, sy = struct.unpack("<ddIddIHII", f.read(50))
            y_repeats = False
            if hd["tag_type"] == 0x4142 and hd["valid"] > 1:  # tags with positions
                ys = []
                for t in hd["tag_offsets"][:2]:
                    f.seek(int(t) + 16)
                    ys.append(struct.unpack("<d", f.read(8))[0])
                y_repeats = ys[0] == ys[1]
        d1, d2 = hd["dims"]
        fast, slow = (d1, d2) if y_repeats else (d2, d1)
        dt = np.dtype(_TIA_TYPES[dtype_id])
        n = fast["size"] * slow["size"]
        if hd["valid"] < n:
            raise ValueError(f"{hd['valid']} of {n} patterns were recorded (an interrupted scan)")
        mm = np.memmap(p, dtype=np.uint8, mode="r")
        offsets = hd["data_offsets"][:n] + 50
        if int(offsets[-1]) + sx * sy * dt.itemsize > mm.size:
            raise ValueError(f"the file ends at byte {mm.size}, before its last pattern (truncated)")
    except (OSError, ValueError, KeyError, struct.error) as e:
        raise PtyroValueError(f"cannot read {str(p)!r} as a TIA .ser 4D-STEM series ({type(e).__name__}: {' '.join(str(e).split())})") from None

    def frame(k: int) -> np.ndarray:
        o = int(offsets[k])
        return np.frombuffer(mm[o : o + sx * sy * dt.itemsize], dt).reshape(sy, sx)[::-1].T  # rows bottom-up; (y, x) -> (x, y)

    array: Any = _Frames(frame, (fast["size"], slow["size"]), (sx, sy), dt)
    cal: dict[str, Any] = {}
    if fast["units"].strip().lower() in ("meters", "m"):
        cal["scan_step"] = ((abs(fast["delta"]), abs(slow["delta"])), "m")
        cal["detector_pixel"] = ((abs(dx), abs(dy)), "1/m")
    if not lazy:
        array = np.asarray(array)
    return {"array": array, "calibration": cal, "metadata": {"format": "TIA .ser"}}


tia.suffixes = (".ser",)  # type: ignore[attr-defined]
