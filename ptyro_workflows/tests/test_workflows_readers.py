"""Readers (hook ptyro_register_readers): every format round-trips a small dataset with its
calibrations, through RosettaSciIO's own writers where it has them (.hspy, .zspy, .blo) and
files built from the formats' documented layouts where not (Merlin .mib + .hdr, EMPAD
.xml + .raw)."""

import importlib.util
from pathlib import Path

import emdfile
import numpy as np
import pytest

from ptyro_core import Dataset4D, Grid, PtyroValueError, ScanPositions, hookimpl, list_components, register_plugin
from ptyro_workflows import readers
from ptyro_workflows.io import save_dataset

_spec = importlib.util.spec_from_file_location("vendor_files", Path(__file__).with_name("vendor_files.py"))
vf = importlib.util.module_from_spec(_spec)  # the layouts' writers (tests import by path: importlib mode)
_spec.loader.exec_module(vf)

RX, RY, Q = 3, 4, 16


def _cube(dtype=np.float32):
    """(Rx, Ry, Qx, Qy) with every axis distinguishable (a transpose would show)."""
    i, j, qx, qy = np.meshgrid(np.arange(RX), np.arange(RY), np.arange(Q), np.arange(Q), indexing="ij")
    return ((1 + i + 10 * j + 100 * qx + 2000 * qy) % (250 if dtype == np.uint8 else 60000)).astype(dtype)


def _hs(cube):
    """HyperSpy's order (scan y, scan x, detector y, detector x)."""
    return vf.hyperspy_order(cube)


def _signal(cube, step_nm, dq_nm, keV):
    return vf.hyperspy_signal(cube, step_nm, dq_nm, keV)


def _check(ds, cube, *, step, dq, energy):
    np.testing.assert_array_equal(np.asarray(ds.array), cube.astype(np.float32))
    assert ds.energy == pytest.approx(energy)
    np.testing.assert_allclose(ds.grid.reciprocal_sampling, (dq, dq), rtol=1e-5)
    pos = np.asarray(ds.positions).reshape(RX, RY, 2)
    np.testing.assert_allclose(pos[1, 0] - pos[0, 0], [step[0], 0], atol=1e-5)
    np.testing.assert_allclose(pos[0, 1] - pos[0, 0], [0, step[1]], atol=1e-5)


@pytest.mark.parametrize("fmt", ["hspy", "zspy"])
def test_hyperspy_files_written_by_rosettasciio(tmp_path, fmt):
    mod = pytest.importorskip(f"rsciio.{fmt}")
    cube = _cube()
    p = tmp_path / f"d.{fmt}"
    mod.file_writer(str(p), _signal(cube, (0.042, 0.05), 0.8, 300.0))
    ds, src = readers.load(p, lazy=False)
    assert src["reader"] == fmt and src["energy"] == "file"
    _check(ds, cube, step=(0.42, 0.5), dq=0.08, energy=300e3)


@pytest.mark.filterwarnings("ignore:BLO file expects cm units")
def test_blockfile_written_by_rosettasciio_is_read_lazily(tmp_path):
    blockfile = pytest.importorskip("rsciio.blockfile")
    cube = _cube(np.uint8)
    p = tmp_path / "d.blo"
    blockfile.file_writer(str(p), _signal(cube, (0.042, 0.042), 0.8, 200.0))
    # a blockfile stores the scan step (nm) but the detector in camera centimetres: that one is asked for
    with pytest.raises(PtyroValueError, match="detector calibration is not in the file"):
        readers.load(p, energy=200e3)
    ds, src = readers.load(p, energy=200e3, reciprocal_sampling=0.08, lazy=True)
    assert src["reader"] == "blo" and src["scan_step"] == "file (nm)" and ds.is_lazy  # dask-backed, read batch by batch
    _check(ds, cube, step=(0.42, 0.42), dq=0.08, energy=200e3)


def _mib(tmp_path, cube):
    return vf.write_mib(tmp_path / "d.mib", cube)


def test_merlin_mib_from_its_documented_layout(tmp_path):
    pytest.importorskip("rsciio.quantumdetector")
    cube = _cube(np.uint16)
    p = _mib(tmp_path, cube)
    with pytest.raises(PtyroValueError, match="--energy"):
        readers.load(p)
    with pytest.raises(PtyroValueError, match="--reciprocal-sampling"):
        readers.load(p, energy=300e3)
    with pytest.raises(PtyroValueError, match="--scan-step"):
        readers.load(p, energy=300e3, reciprocal_sampling=(1.6, "mrad"))
    ds, src = readers.load(
        p,
        energy=readers.parse_quantity("300 keV", "energy"),
        reciprocal_sampling=readers.parse_quantity("1.6 mrad", "detector"),
        scan_step=readers.parse_quantity("0.042 nm", "length"),
    )
    lam = 0.0196875  # Å at 300 keV (DESIGN.md: 0.01969)
    _check(ds, cube, step=(0.42, 0.42), dq=1.6e-3 / lam, energy=300e3)
    assert src["reader"] == "mib"


def test_empad_from_its_documented_layout(tmp_path):
    pytest.importorskip("rsciio.empad")
    cube = (_cube() % 997).astype(np.float32)
    big = np.zeros((RX, RY, 128, 128), np.float32)
    big[:, :, :Q, :Q] = cube
    vf.write_empad(tmp_path, big, step=0.5, calibrated_pixelsize=0.08e10 / 1e9 * 1e-9 * 10)
    ds, src = readers.load(tmp_path / "d.xml", energy=300e3, lazy=False)
    assert src["reader"] == "empad" and ds.array.shape == (RX, RY, 128, 128)
    np.testing.assert_array_equal(np.asarray(ds.array), big)
    pos = np.asarray(ds.positions).reshape(RX, RY, 2)
    np.testing.assert_allclose(np.linalg.norm(pos[1, 0] - pos[0, 0]), 0.5, rtol=1e-5)


def test_our_emd_and_py4dstem_emd(tmp_path):
    cube = _cube()
    pos = ScanPositions.raster((0.0, 0.0), (RX * 0.4, RY * 0.3), (RX, RY)).positions
    p = save_dataset(tmp_path / "ours.h5", Dataset4D(cube, pos, grid=Grid((Q, Q), (0.25, 0.25)), energy=80e3))
    ds, src = readers.load(p, lazy=False)
    assert src == {**src, "reader": "emd", "energy": "file"}
    _check(ds, cube, step=(0.4, 0.3), dq=1 / (Q * 0.25), energy=80e3)
    root = emdfile.Root(name="py4dstem_root")
    root.add_to_tree(
        emdfile.Array(
            data=cube,
            name="datacube",
            dims=[[0, 0.04], [0, 0.03], [0, 0.5], [0, 0.5]],
            dim_units=["nm", "nm", "nm^-1", "nm^-1"],
            dim_names=["Rx", "Ry", "Qx", "Qy"],
        )
    )
    q = tmp_path / "py4d.emd"
    emdfile.save(str(q), root, mode="o")
    ds, src = readers.load(q, energy=200e3, lazy=False)
    assert src["reader"] == "emd"
    _check(ds, cube, step=(0.4, 0.3), dq=0.05, energy=200e3)


def test_npy_is_memory_mapped_and_takes_units(tmp_path):
    cube = _cube()
    p = tmp_path / "d.npy"
    np.save(p, cube)
    ds, src = readers.load(p, energy=200e3, scan_step=0.5, reciprocal_sampling=(0.8, "1/nm"), lazy=True)
    assert ds.is_lazy and isinstance(ds.array, np.memmap)
    _check(ds, cube, step=(0.5, 0.5), dq=0.08, energy=200e3)


def test_parse_quantity_units():
    assert readers.parse_quantity("300 keV", "energy") == 300e3
    assert readers.parse_quantity("0.05 nm", "length") == pytest.approx(0.5)
    assert readers.parse_quantity(0.4, "length") == 0.4
    assert readers.parse_quantity("1.2 mrad", "detector") == (1.2, "mrad")
    assert readers.convert_detector_pixel(1.0, "1/nm", None) == pytest.approx(0.1)
    assert readers.convert_detector_pixel(1.0, "mrad", None) is None
    with pytest.raises(PtyroValueError, match="unknown unit 'furlong'"):
        readers.parse_quantity("3 furlong", "length")


def test_unknown_ending_and_missing_file(tmp_path):
    (tmp_path / "x.abc").write_text("")
    with pytest.raises(PtyroValueError, match="no reader for files ending in .abc"):
        readers.load(tmp_path / "x.abc")
    with pytest.raises(PtyroValueError, match="not found"):
        readers.load(tmp_path / "missing.mib")


class _CsvPlugin:
    """A third-party reader through the hook ptyro_register_readers."""

    @hookimpl
    def ptyro_register_readers(self, register):
        def read(path, *, lazy=True):
            flat = np.loadtxt(path, delimiter=",", dtype=np.float32)
            return {
                "array": flat.reshape(2, 2, 4, 4),
                "calibration": {"energy": (60, "keV"), "scan_step": ((0.1, 0.1), "nm"), "detector_pixel": ((2.0, 2.0), "mrad")},
            }

        read.suffixes = (".csv4d",)
        register("csv4d", read, description="test reader")


def test_a_reader_registered_by_a_plugin(tmp_path):
    register_plugin(_CsvPlugin(), "csv4d-test")
    try:
        assert "csv4d" in [c.name for c in list_components("reader")]
        p = tmp_path / "d.csv4d"
        np.savetxt(p, np.arange(64.0)[None], delimiter=",")
        ds, src = readers.load(p)
        assert src["reader"] == "csv4d" and ds.energy == 60e3
        np.testing.assert_allclose(np.asarray(ds.positions)[1], [0, 1.0], atol=1e-6)
        np.testing.assert_allclose(ds.grid.reciprocal_sampling, (2e-3 / 0.048661,) * 2, rtol=1e-4)  # 60 keV: λ = 0.048661 Å
    finally:
        from ptyro_core import get_registry

        get_registry().unregister_plugin("csv4d-test")
