"""Every registered reader through the reader conformance check
(:func:`ptyro_workflows.readers.conformance.check_reader`), each on a file of its format that
is large enough (≥ 256 KiB) for the laziness check to mean something: written by RosettaSciIO's
own writers where it has them (.hspy, .zspy, .blo) or by ours (EMD 1.0, .npy), and built from the
formats' documented layouts where not (Merlin .mib, EMPAD, DM3/DM4, TIA .ser, Velox .emd, ARINA;
``vendor_files.py``). The DM, Velox, ARINA and TIA files are also read by RosettaSciIO and
compared, so our layouts are the ones the maintained library reads."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ptyro_core import Dataset4D, Grid, PtyroValueError, ScanPositions, list_components
from ptyro_workflows import readers
from ptyro_workflows.readers.conformance import check_reader

_spec = importlib.util.spec_from_file_location("vendor_files", Path(__file__).with_name("vendor_files.py"))
vf = importlib.util.module_from_spec(_spec)  # the layouts' writers (tests import by path: importlib mode)
_spec.loader.exec_module(vf)

RX, RY, Q = 8, 8, 64
LAM_300 = 0.0196875  # Å at 300 keV (DESIGN.md: 0.01969)


def _cube(dtype, rx=RX, ry=RY, q=Q):
    """(Rx, Ry, Qx, Qy) with every axis distinguishable (a transpose or a flip would show)."""
    i, j, qx, qy = np.meshgrid(np.arange(rx), np.arange(ry), np.arange(q), np.arange(q), indexing="ij")
    top = 250 if np.dtype(dtype) == np.uint8 else 60000
    return ((1 + i + 7 * j + 53 * qx + 3 * qy * qy) % top).astype(dtype)


def _signal(cube, step_nm, dq_nm, keV):
    return vf.hyperspy_signal(cube, step_nm, dq_nm, keV)


FULL = {"energy": 300e3, "scan_step": (0.42, 0.42), "reciprocal_sampling": (0.08, 0.08)}


def _emd(tmp):
    from ptyro_workflows.io import save_dataset

    cube = _cube(np.float32)
    pos = ScanPositions.raster((0.0, 0.0), (RX * 0.42, RY * 0.42), (RX, RY)).positions
    p = save_dataset(tmp / "d.h5", Dataset4D(cube, pos, grid=Grid((Q, Q), (1 / (Q * 0.08),) * 2), energy=300e3))
    return p, cube, FULL, {}, {}


def _npy(tmp):
    cube = _cube(np.uint16)
    np.save(tmp / "d.npy", cube)
    return tmp / "d.npy", cube, FULL, {"energy": 300e3, "scan_step": 0.42, "reciprocal_sampling": 0.08}, {}


def _hyperspy(fmt):
    def make(tmp):
        mod = pytest.importorskip(f"rsciio.{fmt}")
        cube = _cube(np.uint16, 32, 32)  # 8 MiB: RosettaSciIO's writer chunks it (~1 MB chunks), so one pattern reads one chunk
        p = tmp / f"d.{fmt}"
        # chunked as a large file is (zspy's writer would make this small one a single chunk)
        mod.file_writer(str(p), _signal(cube, 0.042, 0.8, 300.0), chunks=(8, 8, Q, Q))
        return p, cube, FULL, {}, {}

    return make


def _blo(tmp):
    blockfile = pytest.importorskip("rsciio.blockfile")
    cube = _cube(np.uint8, 16, 16)
    p = tmp / "d.blo"
    blockfile.file_writer(str(p), _signal(cube, 0.042, 0.8, 300.0))
    return p, cube, FULL, {"energy": 300e3, "reciprocal_sampling": 0.08}, {}  # the detector is in camera cm


def _mib(tmp):
    pytest.importorskip("rsciio.quantumdetector")
    cube = _cube(np.uint16)
    p = vf.write_mib(tmp / "d.mib", cube)
    return p, cube, FULL, {"energy": 300e3, "scan_step": 0.42, "reciprocal_sampling": (0.08 * LAM_300 * 1e3, "mrad")}, {}


def _empad(tmp):
    pytest.importorskip("rsciio.empad")
    cube = _cube(np.float32, 4, 4, 128)
    return vf.write_empad(tmp, cube, step=0.42), cube, {"scan_step": (0.42, 0.42)}, {"energy": 300e3, "reciprocal_sampling": 0.08}, {}


def _dm(tmp, version=4):
    pytest.importorskip("rsciio.digitalmicrograph")
    cube = _cube(np.uint16)
    p = vf.write_dm(tmp / f"d.dm{version}", cube, step_nm=0.042, pixel_per_nm=0.8, voltage=300e3, version=version)
    return p, cube, FULL, {}, {}


def _tia(tmp):
    cube = _cube(np.uint16)
    p = vf.write_ser(tmp / "d.ser", cube, step_m=0.042e-9, pixel_per_m=0.8e9)
    return p, cube, FULL, {"energy": 300e3}, {}


def _velox(tmp):
    pytest.importorskip("rsciio.emd")
    cube = _cube(np.uint16, RX, 6)
    p = vf.write_velox(tmp / "d.emd", cube, pixel_per_m=0.8e9, voltage=300e3)
    # a Velox 4D-STEM file is a stack of frames: the scan shape is given, the step too
    return p, cube, FULL, {"scan_step": 0.42}, {"scan_shape": (RX, 6)}


def _arina(tmp):
    pytest.importorskip("hdf5plugin")
    cube = _cube(np.uint16)
    p = vf.write_arina(tmp, "scan", cube, step_nm=0.042)
    return p, cube, FULL, {"energy": 300e3, "reciprocal_sampling": (1.6e-3 / LAM_300, "1/a")}, {}


CASES = {
    "emd": _emd,
    "npy": _npy,
    "hspy": _hyperspy("hspy"),
    "zspy": _hyperspy("zspy"),
    "blo": _blo,
    "mib": _mib,
    "empad": _empad,
    "dm": _dm,
    "tia": _tia,
    "velox": _velox,
    "arina": _arina,
}


def test_every_registered_reader_has_a_case():
    assert {c.name for c in list_components("reader")} <= set(CASES), "a registered reader has no conformance case here"


@pytest.mark.filterwarnings("ignore:BLO file expects cm units")
@pytest.mark.parametrize("name", sorted(CASES))
def test_reader_conformance(tmp_path, name):
    path, cube, cal, given, options = CASES[name](tmp_path)
    if name == "arina":
        cal = {**cal, "reciprocal_sampling": (1.6e-3 / LAM_300,) * 2}
    check_reader(name, path, cube, calibration=cal, given=given, options=options)


def test_dm3_as_well(tmp_path):
    path, cube, cal, given, options = _dm(tmp_path, version=3)
    check_reader("dm", path, cube, calibration=cal, given=given, options=options)


def test_our_layouts_are_what_rosettasciio_reads(tmp_path):
    """The TIA and ARINA readers are ours (RosettaSciIO's load the whole file); on the same files
    RosettaSciIO's readers return the same patterns (in HyperSpy's axis order)."""
    tia = pytest.importorskip("rsciio.tia")
    arina = pytest.importorskip("rsciio.arina")
    cube = _cube(np.uint16, 3, 5, 16)
    s = tia.file_reader(str(vf.write_ser(tmp_path / "a.ser", cube, step_m=0.042e-9, pixel_per_m=0.8e9)))[0]
    np.testing.assert_array_equal(s["data"], vf.hyperspy_order(cube))
    assert [round(float(a["scale"]), 6) for a in s["axes"][:2]] == [0.042, 0.042]  # nm
    a = arina.file_reader(str(vf.write_arina(tmp_path, "scan", cube, step_nm=0.042)), navigation_shape=(5, 3))[0]
    np.testing.assert_array_equal(a["data"], vf.hyperspy_order(cube))
    ours = readers.load(tmp_path / "scan_master.h5", energy=300e3, reciprocal_sampling=0.08, scan_shape=(3, 5))[0]
    np.testing.assert_array_equal(np.asarray(ours.array), cube)


def test_a_stack_needs_its_scan_shape(tmp_path):
    pytest.importorskip("rsciio.emd")
    cube = _cube(np.uint16, 3, 5, 16)
    p = vf.write_velox(tmp_path / "d.emd", cube, pixel_per_m=0.8e9, voltage=200e3)
    with pytest.raises(PtyroValueError, match="15 patterns, not a square scan; pass the scan shape"):
        readers.load(p, scan_step=0.5)
    with pytest.raises(PtyroValueError, match="scan_shape 4x4 = 16 patterns, but"):
        readers.load(p, scan_step=0.5, scan_shape=(4, 4))
    ds, src = readers.load(p, scan_step=0.5, scan_shape=(3, 5))
    assert src["energy"] == "file" and ds.energy == 200e3  # Optics.AccelerationVoltage, through RosettaSciIO's mapping
    np.testing.assert_array_equal(np.asarray(ds.array), cube)


def test_check_reader_catches_a_transposing_reader(tmp_path):
    """The check can fail: a reader that swaps the detector axes, and one that loads everything."""
    from ptyro_core import get_registry, hookimpl, register_plugin

    cube = _cube(np.uint16)
    np.save(tmp_path / "d.npy", cube)

    def swapped(path, *, lazy=True):
        return {"array": np.load(path, mmap_mode="r").transpose(0, 1, 3, 2), "calibration": {}}

    def eager(path, *, lazy=True):
        return {"array": np.array(np.load(path)), "calibration": {}}

    class Bad:
        @hookimpl
        def ptyro_register_readers(self, register):
            register("swapped", swapped, description="test")
            register("eager", eager, description="test")

    register_plugin(Bad(), "bad-readers")
    try:
        with pytest.raises(AssertionError, match="axis order"):
            check_reader("swapped", tmp_path / "d.npy", cube)
        with pytest.raises(AssertionError, match="in-memory numpy array"):
            check_reader("eager", tmp_path / "d.npy", cube)
    finally:
        get_registry().unregister_plugin("bad-readers")
