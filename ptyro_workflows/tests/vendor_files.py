"""Small vendor files built from the formats' documented layouts, for the reader tests (RosettaSciIO
has no writer for these): Gatan DigitalMicrograph .dm3/.dm4 (the tag-file layout), TIA .ser (FEI's
binary series header), Velox .emd (the HDF5 layout RosettaSciIO's ``rsciio.emd`` reads) and
DECTRIS ARINA (a NeXus master file linking bitshuffle-LZ4 compressed data files).

Every writer takes a cube in our order (Rx, Ry, Qx, Qy) and stores it in the file's own order,
so a reader that forgets a transpose or a flipped axis fails the round trip.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np


def hyperspy_order(cube: np.ndarray) -> np.ndarray:
    """(scan y, scan x, detector y, detector x), C order."""
    return np.ascontiguousarray(cube.transpose(1, 0, 3, 2))


# --------------------------------------------------------------------------- Merlin .mib, EMPAD


def hyperspy_signal(cube: np.ndarray, step_nm: Any, dq_nm: float, keV: float) -> dict[str, Any]:
    """The signal dict RosettaSciIO's writers take (.hspy, .zspy, .blo): ``cube`` (Rx, Ry, Qx, Qy)
    in HyperSpy's order with its axes (scan step in nm, (x, y) or one value; detector in 1/nm) and
    the beam energy (keV)."""
    rx, ry, q, _ = cube.shape
    sx, sy = (step_nm, step_nm) if np.ndim(step_nm) == 0 else step_nm
    ax = lambda name, n, scale, units, nav: {"name": name, "size": n, "scale": scale, "offset": 0.0, "units": units, "navigate": nav}  # noqa: E731
    return {
        "data": hyperspy_order(cube),
        "axes": [ax("y", ry, sy, "nm", True), ax("x", rx, sx, "nm", True), ax("ky", q, dq_nm, "1/nm", False), ax("kx", q, dq_nm, "1/nm", False)],
        "metadata": {"General": {"title": "t"}, "Signal": {"signal_type": "electron_diffraction"}, "Acquisition_instrument": {"TEM": {"beam_energy": keV}}},
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "package_info": {"package": "ptyrodactyl-tests", "package_version": "0"},
        "learning_results": {},
        "models": {},
    }


def write_mib(path: str | Path, cube: np.ndarray) -> Path:
    """Merlin .mib (Quantum Detectors' documented layout: a 384-byte ASCII header per frame,
    big-endian U16 pixels with the rows bottom-up, frames in scan order, the scan's x fastest)
    and its .hdr beside it."""
    rx, ry, qx, qy = cube.shape
    p = Path(path)
    with open(p, "wb") as f:
        n = 0
        for j in range(ry):
            for i in range(rx):
                n += 1
                head = f"MQ1,{n:06d},00384,01,{qx:04d},{qy:04d},U16,   1x1,01,2024-01-01T00:00:{n % 60:02d}.000000000Z,1000000ns,0,".encode()
                f.write(head.ljust(384, b"\x00"))
                f.write(cube[i, j].T[::-1].astype(">u2").tobytes())  # rows stored bottom-up
    p.with_suffix(".hdr").write_text(f"HDR,\t\nFrames in Acquisition (Number):\t{rx * ry}\nFrames per Trigger (Number):\t{rx}\nEnd\t\n")
    return p


def write_empad(folder: str | Path, cube: np.ndarray, *, step: float, calibrated_pixelsize: float | None = None) -> Path:
    """EMPAD .xml + .raw (128 × 130 float32 frames: 128 rows of data and two of metadata, scan
    order x fastest; the scan's field of view in metres in the .xml). ``cube`` has a 128 × 128
    detector."""
    rx, ry = cube.shape[:2]
    folder = Path(folder)
    raw = folder / f"scan_x{rx}_y{ry}.raw"
    frames = np.zeros((ry, rx, 130, 128), "<f4")
    frames[:, :, :128, :] = hyperspy_order(cube)
    frames.tofile(raw)
    (folder / "d.xml").write_text(
        f"<root><raw_file filename='{raw.name}'/><pix_x>{rx}</pix_x><pix_y>{ry}</pix_y>"
        f"<iom_measurements><optics><get_full_scan_field_of_view>[{ry * step * 1e-10}, {rx * step * 1e-10}]</get_full_scan_field_of_view></optics>"
        + (f"<calibrated_pixelsize>{calibrated_pixelsize}</calibrated_pixelsize>" if calibrated_pixelsize is not None else "")
        + "</iom_measurements></root>"
    )
    return folder / "d.xml"


# --------------------------------------------------------------------------- Gatan DigitalMicrograph

_DM_SIMPLE = {np.dtype("<i4"): 3, np.dtype("<u4"): 5, np.dtype("<f4"): 6, np.dtype("<f8"): 7, np.dtype("<u2"): 4}
_DM_IMAGE_TYPE = {np.dtype("<u2"): 10, np.dtype("<f4"): 2, np.dtype("<u4"): 11, np.dtype("<i4"): 7}


class _DM:
    """A DM tag file written as Gatan's layout (and RosettaSciIO's reader) has it: a big-endian
    header (version, size, byte order = 1 for little-endian data), then nested tag groups; each
    tag is a group (20) or data (21); data carry '%%%%', an info array (type codes) and the value
    little-endian. DM4 widens every length and count to 8 bytes and gives groups and data tags
    a byte size."""

    def __init__(self, version: int) -> None:
        self.v = version
        self.n = ">q" if version == 4 else ">i"

    def _len(self, x: int) -> bytes:
        return struct.pack(self.n, x)

    def data(self, name: str, info: list[int], payload: bytes) -> bytes:
        body = b"%%%%" + self._len(len(info)) + b"".join(self._len(i) for i in info) + payload
        head = b"\x15" + struct.pack(">h", len(name)) + name.encode()
        return head + (struct.pack(">q", len(body)) if self.v == 4 else b"") + body

    def value(self, name: str, v: float | int, dtype: str) -> bytes:
        dt = np.dtype(dtype)
        return self.data(name, [_DM_SIMPLE[dt]], np.asarray(v, dt).tobytes())

    def text(self, name: str, s: str) -> bytes:  # an array of uint16: how DM stores unicode strings
        return self.data(name, [20, 4, len(s)], np.frombuffer(s.encode("utf-16-le"), "<u2").tobytes())

    def array(self, name: str, a: np.ndarray) -> bytes:
        a = np.ascontiguousarray(a)
        return self.data(name, [20, _DM_SIMPLE[a.dtype.newbyteorder("<")], a.size], a.astype(a.dtype.newbyteorder("<")).tobytes())

    def group(self, name: str, tags: list[bytes]) -> bytes:
        body = b"\x00\x01" + self._len(len(tags)) + b"".join(tags)
        if self.v == 4:
            body = b"\x00\x01" + struct.pack(">q", len(body) - 2) + body[2:]
        return b"\x14" + struct.pack(">h", len(name)) + name.encode() + body

    def file(self, tags: list[bytes]) -> bytes:
        root = b"\x00\x01" + self._len(len(tags)) + b"".join(tags)
        size = struct.pack(">q" if self.v == 4 else ">i", len(root) + 16)
        return struct.pack(">i", self.v) + size + struct.pack(">i", 1) + root + b"\x00" * 8


def write_dm(path: str | Path, cube: np.ndarray, *, step_nm: float, pixel_per_nm: float, voltage: float, version: int = 4) -> Path:
    """A 4D-STEM DM file (Gatan's STEMx layout: Dimensions listed fastest first, detector x, y
    then scan x, y; Calibrations per dimension in 1/nm and nm; ``Microscope Info.Voltage`` in V)."""
    dm = _DM(version)
    hs = hyperspy_order(cube)
    dims = hs.shape[::-1]  # DM lists the fastest dimension first
    cal = [(pixel_per_nm, "1/nm"), (pixel_per_nm, "1/nm"), (step_nm, "nm"), (step_nm, "nm")]
    image = dm.group(
        "",
        [
            dm.group(
                "ImageData",
                [
                    dm.group(
                        "Calibrations",
                        [
                            dm.group("Brightness", [dm.value("Origin", 0.0, "<f4"), dm.value("Scale", 1.0, "<f4"), dm.text("Units", "Counts")]),
                            dm.group(
                                "Dimension", [dm.group("", [dm.value("Origin", 0.0, "<f4"), dm.value("Scale", s, "<f4"), dm.text("Units", u)]) for s, u in cal]
                            ),
                        ],
                    ),
                    dm.array("Data", hs.ravel()),
                    dm.value("DataType", _DM_IMAGE_TYPE[hs.dtype.newbyteorder("<")], "<i4"),
                    dm.group("Dimensions", [dm.value("", n, "<u4") for n in dims]),
                    dm.value("PixelDepth", hs.dtype.itemsize, "<i4"),
                ],
            ),
            dm.group("ImageTags", [dm.group("Microscope Info", [dm.value("Voltage", voltage, "<f8")])]),
            dm.text("Name", "4D-STEM"),
        ],
    )
    p = Path(path)
    p.write_bytes(dm.file([dm.group("ImageList", [image])]))
    return p


# --------------------------------------------------------------------------- TIA .ser


def write_ser(path: str | Path, cube: np.ndarray, *, step_m: float, pixel_per_m: float) -> Path:
    """A TIA series of 2D elements on a 2D scan (FEI's layout, version 0x0210: 4-byte offsets):
    the header with the scan dimensions (Dim-1 = x, the fastest, in meters), the offset tables,
    then each element (a 50-byte calibration header, the pixels x fastest with the rows stored
    bottom-up) followed by its tag (time and x, y position)."""
    rx, ry, qx, qy = cube.shape
    n = rx * ry
    types = {np.dtype("<u1"): 1, np.dtype("<u2"): 2, np.dtype("<u4"): 3, np.dtype("<f4"): 7, np.dtype("<f8"): 8}
    dims = b""
    for size in (rx, ry):
        units = b"meters"
        dims += struct.pack("<IddII", size, 0.0, step_m, 0, 0) + struct.pack("<I", len(units)) + units
    head_len = 30 + len(dims)
    table = head_len
    first = table + 8 * n
    elem = 50 + qx * qy * cube.dtype.itemsize
    tag = 24
    data_offsets = [first + k * (elem + tag) for k in range(n)]
    out = bytearray(struct.pack("<HHHIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4142, n, n) + struct.pack("<II", table, 2) + dims)
    out += np.asarray(data_offsets, "<u4").tobytes() + np.asarray([o + elem for o in data_offsets], "<u4").tobytes()
    for k in range(n):
        i, j = k % rx, k // rx  # x fastest
        frame = cube[i, j].T[::-1]  # (y, x), rows bottom-up
        out += struct.pack("<ddIddIHII", 0.0, pixel_per_m, 0, 0.0, pixel_per_m, 0, types[cube.dtype.newbyteorder("<")], qx, qy)
        out += np.ascontiguousarray(frame).astype(cube.dtype.newbyteorder("<")).tobytes()
        out += struct.pack("<HHIdd", 0x4142, 0, k, i * step_m, j * step_m)
    p = Path(path)
    p.write_bytes(bytes(out))
    return p


# --------------------------------------------------------------------------- Velox .emd


def write_velox(path: str | Path, cube: np.ndarray, *, pixel_per_m: float, voltage: float) -> Path:
    """A Velox EMD (HDF5) holding a 4D-STEM acquisition as Velox stores it: one image stack
    ``/Data/Image/<id>/Data`` of shape (detector y, detector x, frames), one chunk per frame, the
    frames in scan order (x fastest), and its JSON ``Metadata`` (uint8 column) with the pixel
    size (1/m), the detector and the acceleration voltage (V); ``/Version`` says Velox."""
    import h5py

    rx, ry, qx, qy = cube.shape
    frames = hyperspy_order(cube).reshape(rx * ry, qy, qx)  # frame k = j * rx + i
    meta = {
        "BinaryResult": {
            "PixelSize": {"width": str(pixel_per_m), "height": str(pixel_per_m)},
            "PixelUnitX": "1/m",
            "PixelUnitY": "1/m",
            "Offset": {"x": "0", "y": "0"},
            "DetectorIndex": "0",
        },
        "Detectors": {"Detector-0": {"DetectorName": "Ceta", "ExposureTime": "0.001"}},
        "Scan": {"FrameTime": "0.001"},
        "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1700000000"}},
        "Optics": {"AccelerationVoltage": str(voltage)},
    }
    raw = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    p = Path(path)
    with h5py.File(p, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": "11"}).encode()]))
        g = f.create_group("Data/Image/0123456789abcdef")
        g.create_dataset("Data", data=np.ascontiguousarray(frames.transpose(1, 2, 0)), chunks=(qy, qx, 1))
        g.create_dataset("Metadata", data=raw[:, None])
    return p


# --------------------------------------------------------------------------- DECTRIS ARINA


def write_arina(folder: str | Path, name: str, cube: np.ndarray, *, step_nm: float | None, frames_per_file: int = 7) -> Path:
    """An ARINA acquisition as DECTRIS writes it: ``NAME_master.h5`` whose ``/entry/data`` holds
    external links ``data_NNNNNN`` to ``NAME_data_NNNNNN.h5`` (each ``/entry/data/data``, (N, h, w)
    frames in scan order, x fastest, bitshuffle-LZ4 compressed), and, when ``step_nm`` is given,
    the metadata file ``NAME.h5`` (``STEM Metadata`` attribute ``Pixel Size``, nm)."""
    import h5py
    import hdf5plugin

    rx, ry, qx, qy = cube.shape
    frames = hyperspy_order(cube).reshape(rx * ry, qy, qx)
    folder = Path(folder)
    master = folder / f"{name}_master.h5"
    with h5py.File(master, "w") as m:
        data = m.create_group("entry/data")
        for k, lo in enumerate(range(0, len(frames), frames_per_file), start=1):
            fname = f"{name}_data_{k:06d}.h5"
            with h5py.File(folder / fname, "w") as d:
                d.create_dataset("entry/data/data", data=frames[lo : lo + frames_per_file], chunks=(1, qy, qx), **hdf5plugin.Bitshuffle(cname="lz4"))
            data[f"data_{k:06d}"] = h5py.ExternalLink(fname, "/entry/data/data")
    if step_nm is not None:
        with h5py.File(folder / f"{name}.h5", "w") as s:
            s.create_group("STEM Metadata").attrs["Pixel Size"] = np.array([step_nm])
    return master
