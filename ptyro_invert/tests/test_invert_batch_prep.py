"""How a reconstruction's batches are prepared (``recon._PatternBatches``, ``_Steps.prepare``):
on the one CPU device of one process a batch stays a NumPy array and the step's call moves it
(the same result, bit for bit, as the ``device_put`` path every other mesh takes); patterns stay
centred, as stored (the model's far fields are centred too), and a source's data are never written
to; NaN/inf patterns are named, and each pattern is checked once, not every pass."""

import sys

if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptyro_core import Dataset4D, PtyroValueError
from ptyro_core.pipeline import device_mesh
from ptyro_core.sources import ArraySource
from ptyro_invert import recon, reconstruct
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object

KW = {"iterations": 2, "batch_size": 6, "learning_rates": {"object": 0.05, "probe": 0.005}, "progress": False}
ONE = device_mesh(jax.devices()[:1])  # the suite runs two CPU devices: one of them, as a plain CPU run has


@pytest.fixture(scope="module")
def data():
    grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(4, 4), step=0.6, aberrations={"C10": 40.0}, padding_px=8)
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling))[None])
    ds = simulate(truth, grid, scan, dose=2e4)
    return st0, ds


def test_the_mesh_of_one_cpu_device_is_fed_from_the_host():
    assert recon._on_host(ONE)
    assert not recon._on_host(device_mesh())  # the suite's two devices: each process reads its own rows onto them


@pytest.mark.parametrize("counts, streams", [(False, 1), (True, 1), (False, 2)])
def test_host_batches_give_the_device_put_result(data, counts, streams, monkeypatch):
    """16 positions in batches of 6 (with 2 streams, parts of 3 computed from two threads): the
    last batch is padded (zero weights), as on the device path."""
    st0, ds = data
    if counts:
        ds = Dataset4D(np.asarray(ds.array).astype(np.uint16), ds.positions, grid=ds.grid, energy=ds.energy)
    prepared = []
    real = recon._Steps.prepare

    def spy(self, idx):
        parts, n = real(self, idx)
        prepared.append(type(parts[0][1]))
        return parts, n

    monkeypatch.setattr(recon._Steps, "prepare", spy)
    host = reconstruct(ds, st0, "single_slice", mesh=ONE, streams=streams, **KW)
    assert prepared and all(t is np.ndarray for t in prepared)  # nothing put on the device by hand
    prepared.clear()
    monkeypatch.setattr(recon, "_on_host", lambda mesh: False)
    device = reconstruct(ds, st0, "single_slice", mesh=ONE, streams=streams, **KW)
    assert prepared and all(issubclass(t, jax.Array) for t in prepared)
    for f in ("object", "probe", "loss"):
        np.testing.assert_array_equal(np.asarray(getattr(host, f)), np.asarray(getattr(device, f)), err_msg=f)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_a_batch_is_the_centred_patterns_times_the_gain(dtype, gain):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 50, (3, 4, 6, 5)).astype(dtype)  # odd and even detector sides
    keep = arr.copy()
    src = recon._PatternBatches(ArraySource(arr), gain=gain)
    idx = np.array([7, 0, 11, 7])
    got = src.batch(idx, ONE)
    assert isinstance(got, np.ndarray)  # counts too become floats on the host of a one-CPU run
    want = arr.reshape(12, 6, 5)[idx].astype(np.float32) * np.float32(gain)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert np.asarray(got).dtype == np.float32
    # in 64-byte aligned memory: the step's dispatch takes it as it is, no copy per batch
    assert got.ctypes.data % 64 == 0 and jax.device_put(got).unsafe_buffer_pointer() == got.ctypes.data
    # the other meshes' path (device_put, converted on the device) gives the same values
    np.testing.assert_array_equal(np.asarray(recon._batch_floats(arr.reshape(12, 6, 5)[idx], np.float32(gain))), want)
    np.testing.assert_array_equal(arr, keep)  # the caller's data untouched


def _counting(src, monkeypatch):
    checked = []
    real = src._check_finite
    monkeypatch.setattr(src, "_check_finite", lambda block, indices: (checked.extend(np.asarray(indices).tolist()), real(block, indices)))
    return checked


@given(bad=st.sets(st.integers(0, 15), min_size=1, max_size=5), value=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_nan_patterns_are_named_before_the_first_step(bad, value):
    arr = np.ones((4, 4, 3, 3), np.float32)
    for i in bad:
        arr.reshape(16, 3, 3)[i, 1, 2] = value
    src = recon._PatternBatches(ArraySource(arr), chunk=5)
    with pytest.raises(PtyroValueError, match=r"scan indices \[" + ", ".join(map(str, sorted(bad))) + r"\] hold NaN/inf values; expected finite"):
        src.mean_pattern_sum(np.arange(16))
    # read by a batch first (mean_pattern_sum not called): the batch's bad patterns are named
    src = recon._PatternBatches(ArraySource(arr))
    batch = np.array(sorted(bad) + [i for i in range(16) if i not in bad][:2])
    with pytest.raises(PtyroValueError, match=r"scan indices \[" + ", ".join(map(str, sorted(bad))) + r"\]"):
        src.read(batch)


def test_each_pattern_is_checked_once(monkeypatch):
    arr = np.arange(16 * 9, dtype=np.float32).reshape(4, 4, 3, 3)
    src = recon._PatternBatches(ArraySource(arr))
    checked = _counting(src, monkeypatch)
    src.read(np.array([3, 1, 3]))
    src.read(np.array([1, 2]))
    assert sorted(checked) == [1, 2, 3, 3]  # 3 twice in its first batch, then nothing twice
    for _ in range(3):  # later passes check nothing
        src.read(np.arange(4))
    assert sorted(checked) == [0, 1, 2, 3, 3]
    # the sums a run takes first cover every active pattern: no batch checks anything after them
    src = recon._PatternBatches(ArraySource(arr))
    checked = _counting(src, monkeypatch)
    assert src.mean_pattern_sum(np.arange(16)) == pytest.approx(arr.sum() / 16)
    src.read(np.arange(16))
    assert checked == []
    # counts are finite by their type: never checked
    src = recon._PatternBatches(ArraySource(arr.astype(np.uint16)))
    checked = _counting(src, monkeypatch)
    src.read(np.arange(16))
    src.mean_pattern_sum(np.arange(16))
    assert checked == []
