"""How a reconstruction is fed: counted data go to the devices as integers and become floats
there (the same result as floats made on the host), and an out-of-core dataset's file is read
batch by batch and closed when the run ends."""

import sys

if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import h5py
import numpy as np
import pytest

from ptyro_core import Dataset4D
from ptyro_core.sources import HDF5Source
from ptyro_invert import reconstruct
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object

KW = {"iterations": 2, "batch_size": 8, "learning_rates": {"object": 0.05, "probe": 0.005}, "progress": False}


@pytest.fixture(scope="module")
def counted():
    grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(4, 4), step=0.6, aberrations={"C10": 40.0}, padding_px=8)
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling))[None])
    ds = simulate(truth, grid, scan, dose=2e4)
    counts = np.asarray(ds.array).astype(np.uint16)
    assert np.array_equal(counts, np.asarray(ds.array))  # whole numbers below 2^16
    return st0, ds, counts


def _same(a, b):
    for f in ("object", "probe", "loss"):
        np.testing.assert_array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), err_msg=f)


def test_integer_counts_give_the_float_result(counted):
    st0, ds, counts = counted
    as_floats = reconstruct(ds, st0, "single_slice", **KW)
    as_counts = reconstruct(Dataset4D(counts, ds.positions, grid=ds.grid, energy=ds.energy), st0, "single_slice", **KW)
    _same(as_floats, as_counts)


def test_out_of_core_reads_the_file_and_closes_it(counted, tmp_path):
    st0, ds, counts = counted
    path = tmp_path / "counts.h5"
    with h5py.File(path, "w") as f:
        f["patterns"] = counts
    src = HDF5Source(path, "patterns")
    lazy = Dataset4D.lazy(src, ds.positions, grid=ds.grid, energy=ds.energy)
    out = reconstruct(lazy, st0, "single_slice", **KW)
    assert src.closed
    with h5py.File(path, "w"):  # HDF5 refuses to truncate a file this process still has open
        pass
    _same(out, reconstruct(Dataset4D(counts, ds.positions, grid=ds.grid, energy=ds.energy), st0, "single_slice", **KW))
