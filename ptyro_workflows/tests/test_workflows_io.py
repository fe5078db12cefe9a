"""Files: EMD 1.0 datasets (read back by emdfile, py4DSTEM's reader), files written by emdfile,
.npy with flags, streaming writes, atomic writes, reconstructions, provenance, info."""

import os

import h5py
import numpy as np
import pytest

import emdfile
from ptyro_core import Dataset4D, Grid, PtyroValueError, ReconState, ScanPositions
from ptyro_workflows.io import (
    DatasetWriter,
    atomic_output,
    file_info,
    load_dataset,
    load_images,
    load_reconstruction,
    read_file_provenance,
    save_dataset,
    save_reconstruction,
)
from ptyro_workflows.provenance import make_provenance


# py4DSTEM's classes as emdfile sees them (found through this module's ``_emd_hook``): our datacube
# is a DataCube node (an emdfile Array) with a Calibration (an emdfile Metadata) in the root
_emd_hook = True


class DataCube(emdfile.Array):
    pass


class Calibration(emdfile.Metadata):
    pass


def _emd_read(path):
    # emdfile walks sys.modules looking for plugins; a lazily imported module can change it
    # during the walk (RuntimeError: dictionary changed size), so try twice.
    try:
        return emdfile.read(str(path))
    except RuntimeError:
        return emdfile.read(str(path))


def _dataset(rx=3, ry=4, q=8, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.random((rx, ry, q, q)).astype(np.float32)
    pos = ScanPositions.raster((1.0, 2.0), (1.0 + 0.5 * rx, 2.0 + 0.25 * ry), (rx, ry)).positions
    return Dataset4D(arr, pos, grid=Grid((q, q), (0.2, 0.25)), energy=300e3)


def test_our_dataset_is_an_emd_file_that_emdfile_reads(tmp_path):
    ds = _dataset()
    p = save_dataset(tmp_path / "d.h5", ds, images={"bf": np.arange(12.0).reshape(3, 4)}, provenance=make_provenance("simulation", {"probe": {"energy": 300e3}}, [], 7))
    with h5py.File(p) as f:
        assert f.attrs["emd_group_type"] == "file" and f.attrs["version_major"] == 1 and f.attrs["version_minor"] == 0
        assert f["ptyrodactyl/datacube/data"].chunks == (1, 1, 8, 8)
    root = _emd_read(p)
    cube = root.tree("datacube")
    assert cube.data.shape == (3, 4, 8, 8)
    np.testing.assert_array_equal(cube.data, np.asarray(ds.array))
    assert list(cube.dim_names) == ["Rx", "Ry", "Qx", "Qy"]
    assert list(cube.dim_units) == ["A", "A", "A^-1", "A^-1"]
    # calibrations: scan step 0.5 / 0.25 Å from origin (1, 2); detector pixel 1/(n d) Å⁻¹, centred
    np.testing.assert_allclose(cube.dims[0][:2], [1.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(cube.dims[1][:2], [2.0, 2.25], rtol=1e-6)
    dq = 1 / (8 * 0.2)
    np.testing.assert_allclose(cube.dims[2][:2], [-4 * dq, -3 * dq], rtol=1e-6)
    assert cube.metadata["calibration"]["energy"] == 300e3
    np.testing.assert_array_equal(root.tree("virtual_bf").data, np.arange(12.0).reshape(3, 4))


def test_dataset_round_trip(tmp_path):
    ds = _dataset()
    p = save_dataset(tmp_path / "d.h5", ds, images={"adf": np.ones((3, 4))})
    back = load_dataset(p)
    np.testing.assert_array_equal(np.asarray(back.array), np.asarray(ds.array))
    np.testing.assert_allclose(np.asarray(back.positions), np.asarray(ds.positions), atol=1e-6)
    assert back.grid.gpts == ds.grid.gpts
    np.testing.assert_allclose(back.grid.sampling, ds.grid.sampling, rtol=1e-6)
    assert back.energy == ds.energy
    assert set(load_images(p)) == {"adf"}


def test_reads_an_emd_file_written_by_emdfile(tmp_path):
    """py4DSTEM saves through emdfile: a Root with a 4D Array, dims calibrated in A and A^-1."""
    data = np.random.default_rng(1).random((2, 3, 6, 6)).astype(np.float32)
    root = emdfile.Root(name="py4dstem_root")
    arr = emdfile.Array(data=data, name="datacube", units="counts", dims=[[0, 0.4], [0, 0.4], [0, 0.05], [0, 0.05]],
                        dim_units=["A", "A", "A^-1", "A^-1"], dim_names=["Rx", "Ry", "Qx", "Qy"])
    root.add_to_tree(arr)
    p = tmp_path / "py4d.h5"
    emdfile.save(str(p), root, mode="o")
    ds = load_dataset(p, energy=80e3)
    np.testing.assert_array_equal(np.asarray(ds.array), data)
    np.testing.assert_allclose(ds.grid.sampling, (1 / (6 * 0.05),) * 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ds.positions)[:4], [[0, 0], [0, 0.4], [0, 0.8], [0.4, 0]], atol=1e-6)
    with pytest.raises(PtyroValueError, match="--energy"):
        load_dataset(p)


def test_reads_uncalibrated_emd_with_flags(tmp_path):
    root = emdfile.Root(name="r")
    root.add_to_tree(emdfile.Array(data=np.ones((2, 2, 4, 4), np.float32), name="cube"))  # dims in pixels
    p = tmp_path / "u.h5"
    emdfile.save(str(p), root, mode="o")
    with pytest.raises(PtyroValueError, match="detector calibration"):
        load_dataset(p, energy=200e3)
    ds = load_dataset(p, energy=200e3, sampling=0.3, scan_step=0.7)
    assert ds.grid.sampling == (0.3, 0.3)
    np.testing.assert_allclose(np.asarray(ds.positions)[-1], [0.7, 0.7])


def test_npy_needs_and_takes_calibration_flags(tmp_path):
    arr = np.random.default_rng(2).random((2, 3, 8, 8)).astype(np.float32)
    p = tmp_path / "d.npy"
    np.save(p, arr)
    with pytest.raises(PtyroValueError, match="--energy"):
        load_dataset(p)
    ds = load_dataset(p, energy=200e3, scan_step=(0.5, 0.25), reciprocal_sampling=0.1)
    np.testing.assert_allclose(ds.grid.sampling, (1 / 0.8, 1 / 0.8), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ds.positions)[1], [0.0, 0.25])


def test_npy_calibration_from_the_bright_field_disk(tmp_path):
    """A disk of radius 10 px and a 20 mrad aperture: the detector pixel is 2 mrad."""
    from ptyro_simul.constants import energy2wavelength

    n = 64
    x = np.arange(n)[:, None] - n // 2
    y = np.arange(n)[None, :] - n // 2
    disk = (np.sqrt(x**2 + y**2) <= 10).astype(np.float32)
    p = tmp_path / "disk.npy"
    np.save(p, np.broadcast_to(disk, (2, 2, n, n)))
    ds = load_dataset(p, energy=200e3, scan_step=1.0, semiangle_cutoff=20.0)
    mrad_per_px = ds.grid.reciprocal_sampling[0] * energy2wavelength(200e3) * 1e3
    assert mrad_per_px == pytest.approx(2.0, rel=0.03)


@pytest.mark.parametrize("shape", [(4, 8, 8), (2, 2, 2, 4, 4)])
def test_wrong_rank_is_refused(tmp_path, shape):
    p = tmp_path / "bad.npy"
    np.save(p, np.ones(shape, np.float32))
    with pytest.raises(PtyroValueError, match="4D"):
        load_dataset(p, energy=200e3, scan_step=1.0, sampling=0.1)


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(PtyroValueError, match="cannot read .* as HDF5"):
        load_dataset(bad)
    with pytest.raises(PtyroValueError, match="not found"):
        load_dataset(tmp_path / "nope.h5")
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(PtyroValueError, match="no 4D array"):
        load_dataset(empty)


def test_streaming_writer_fills_batches_that_span_rows(tmp_path):
    ds = _dataset(rx=3, ry=4)
    pats = np.asarray(ds.patterns)
    with DatasetWriter(tmp_path / "s.h5", scan_shape=(3, 4), positions=ds.positions, grid=ds.grid, energy=ds.energy) as w:
        for start in range(0, 12, 5):  # 0:5, 5:10, 10:12 cross row boundaries
            stop = min(start + 5, 12)
            w.write(start, stop, pats[start:stop])
        assert os.path.exists(w.tmp) and not (tmp_path / "s.h5").exists()
    np.testing.assert_array_equal(np.asarray(load_dataset(tmp_path / "s.h5").array), np.asarray(ds.array))


def test_a_failed_write_leaves_nothing(tmp_path):
    ds = _dataset()
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path / "f.h5", scan_shape=(3, 4), positions=ds.positions, grid=ds.grid, energy=ds.energy) as w:
        w.write(0, 4, np.asarray(ds.patterns)[:4])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    # an incomplete dataset is refused at close, and nothing is left either
    w = DatasetWriter(tmp_path / "g.h5", scan_shape=(3, 4), positions=ds.positions, grid=ds.grid, energy=ds.energy)
    w.write(0, 4, np.asarray(ds.patterns)[:4])
    with pytest.raises(PtyroValueError, match="only 4 of 12"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_no_overwrite_without_permission(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("precious")
    with pytest.raises(PtyroValueError, match="--overwrite"):
        save_dataset(p, _dataset())
    assert p.read_text() == "precious"
    save_dataset(p, _dataset(), overwrite=True)
    assert load_dataset(p).array.shape == (3, 4, 8, 8)
    with pytest.raises(PtyroValueError, match="does not exist"):
        save_dataset(tmp_path / "no" / "dir" / "x.h5", _dataset())


def test_atomic_output_cleans_up(tmp_path):
    with pytest.raises(ValueError), atomic_output(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_reconstruction_round_trip_with_provenance(tmp_path):
    rng = np.random.default_rng(3)
    obj = (rng.random((2, 20, 24)) + 1j * rng.random((2, 20, 24))).astype(np.complex64)
    probe = (rng.random((3, 8, 8)) + 0j).astype(np.complex64)
    state = ReconState(obj, probe, rng.random((5, 2)).astype(np.float32), sampling=(0.2, 0.3), energy=200e3,
                       slice_thickness=np.array([2.0, 3.0], np.float32), loss=np.array([3.0, 2.0, 1.0], np.float32), iteration=3)
    prov = make_provenance("reconstruction", {"reconstruction": {"iterations": 3}}, [("loss", "amplitude")], 11, extra={"source": {"seed": 5, "config": "x = 1"}})
    p = save_reconstruction(tmp_path / "r.h5", state, provenance=prov)
    with h5py.File(p) as f:
        for name in ("object", "probe", "positions", "loss"):
            np.testing.assert_allclose(f["reconstruction"][name].attrs["sampling"], [0.2, 0.3])
        assert f["reconstruction/object"].dtype == np.complex64
    back = load_reconstruction(p)
    np.testing.assert_array_equal(np.asarray(back.object), obj)
    np.testing.assert_array_equal(np.asarray(back.probe), probe)
    np.testing.assert_array_equal(np.asarray(back.loss), [3.0, 2.0, 1.0])
    assert back.sampling == (0.2, 0.3) and int(back.iteration) == 3
    pr = read_file_provenance(p)
    assert pr["seed"] == 11 and pr["source"]["seed"] == 5
    assert "[reconstruction]" in pr["config"] and "iterations = 3" in pr["config"]
    assert pr["components"][0]["name"] == "amplitude"
    assert "jax" in pr["versions"] and "ptyro-workflows" in pr["versions"]


def test_file_info_lists_arrays_calibrations_and_provenance(tmp_path):
    ds = _dataset()
    p = save_dataset(tmp_path / "d.h5", ds, images={"bf": np.ones((3, 4))}, provenance=make_provenance("simulation", {"probe": {"energy": 3e5}}, [("probe", "aberrated")], 4))
    info = file_info(p)
    assert info["format"] == "emd-1.0" and info["kind"] == "dataset"
    cube = next(a for a in info["arrays"] if a["path"].endswith("datacube/data"))
    assert cube["shape"] == [3, 4, 8, 8]
    assert [d["name"] for d in cube["dims"]] == ["Rx", "Ry", "Qx", "Qy"]
    assert cube["dims"][0]["step"] == pytest.approx(0.5)
    assert cube["calibration"]["energy"] == 3e5
    assert info["provenance"]["seed"] == 4
    assert info["provenance"]["components"][0]["distribution"] == "ptyro-simul"


def test_docstring_examples_run():
    import doctest

    import ptyro_workflows.io as mod

    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_counts_stay_integers_and_the_execution_record_says_so(tmp_path, monkeypatch):
    """Counted data keep their stored type in memory and out of core, and the execution record
    (a reconstruction's provenance) names that type, where the data were read from and the
    memory budget (PTYRO_MEMORY_BUDGET)."""
    from ptyro_core.sources import HDF5Source, MemmapSource
    from ptyro_workflows.io import execution_record

    counts = np.random.default_rng(0).integers(0, 900, size=(2, 3, 8, 8)).astype(np.uint16)
    ds = Dataset4D(counts, ScanPositions.raster((0, 0), (1, 1.5), (2, 3)).positions, grid=Grid((8, 8), 0.25), energy=2e5)
    p = save_dataset(tmp_path / "c.h5", ds)
    np.save(tmp_path / "c.npy", counts)
    monkeypatch.setenv("PTYRO_MEMORY_BUDGET", "3e9")
    for lazy, kind in ((False, np.ndarray), (True, HDF5Source)):
        got = load_dataset(p, lazy=lazy)
        assert isinstance(got.array, kind) and got.array.dtype == np.uint16
        np.testing.assert_array_equal(np.asarray(got.array), counts)
        rec = execution_record(got)
        assert rec["data_dtype"] == "uint16" and rec["memory_budget"] == 3e9 and rec["streams"] == 1
        assert rec["data"] == ("out of core (HDF5Source)" if lazy else "memory")
    got = load_dataset(tmp_path / "c.npy", lazy=True, energy=2e5, scan_step=0.5, sampling=0.25)
    assert isinstance(got.array, MemmapSource) and got.array.closed and got.dtype == np.uint16
    assert load_dataset(tmp_path / "c.npy", lazy=False, energy=2e5, scan_step=0.5, sampling=0.25).array.dtype == np.uint16
