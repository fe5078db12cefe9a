"""The batched, sharded pipeline machinery and the memory pre-flight."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptyro_core import MemoryBudgetError, PtyroValueError
from ptyro_core.pipeline import (
    available_memory,
    batch_bounds,
    check_memory,
    device_mesh,
    map_batches,
    pad_batch,
    round_batch_size,
)


@given(st.integers(1, 500), st.integers(1, 100), st.integers(1, 8))
def test_round_batch_size_is_a_device_multiple_and_covers(total: int, batch: int, ndev: int) -> None:
    b = round_batch_size(batch, ndev, total)
    assert b % ndev == 0 and b >= ndev
    assert b <= max(ndev, -(-min(batch, total) // ndev) * ndev)
    bounds = batch_bounds(total, b)
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(stop - start <= b for start, stop in bounds)
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))


def test_round_batch_size_rejects_nonpositive() -> None:
    with pytest.raises(PtyroValueError, match="batch_size: expected a positive integer, got 0"):
        round_batch_size(0, 2)


def test_pad_batch_repeats_last() -> None:
    x = {"a": jnp.arange(3.0), "b": jnp.ones((3, 2))}
    out = pad_batch(x, 5)
    np.testing.assert_array_equal(np.asarray(out["a"]), [0, 1, 2, 2, 2])
    assert out["b"].shape == (5, 2)


def test_map_batches_matches_unbatched_and_compiles_once() -> None:
    xs = jnp.arange(23.0)[:, None] * jnp.ones((1, 4))
    calls = []

    def fn(x, w):
        calls.append(x.shape)
        return jnp.sin(x) * w

    w = jnp.float32(3.0)
    mesh = device_mesh()
    out = np.concatenate([np.asarray(o) for _, _, o in map_batches(fn, xs, w, batch_size=6, mesh=mesh)])
    np.testing.assert_allclose(out, np.sin(np.asarray(xs)) * 3, rtol=1e-6)
    assert len(calls) == 1, f"traced {len(calls)} times for shapes {calls}"


def test_map_batches_shards_over_every_device() -> None:
    mesh = device_mesh()
    seen = []
    for _, _, out in map_batches(lambda x: x * 2, jnp.ones((8, 3)), batch_size=4, mesh=mesh):
        seen.append(len(out.sharding.device_set))
    assert seen[0] == len(jax.devices())


def test_map_batches_progress_counts_positions() -> None:
    done = []
    list(map_batches(lambda x: x, jnp.ones((7, 1)), batch_size=4, progress=done.append))
    assert sum(done) == 7


def test_check_memory_names_the_knob() -> None:
    with pytest.raises(MemoryBudgetError, match=r"4D-STEM output needs about 2\.0 GiB but only 1\.0 GiB is available; lower batch_size"):
        check_memory(2 * 2**30, what="4D-STEM output", knob="lower batch_size", budget=2**30)
    check_memory(10, what="x", knob="y", budget=100)
    assert available_memory() > 0


def test_memory_budget_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("PTYRO_MEMORY_BUDGET", "1000")
    with pytest.raises(MemoryBudgetError):
        check_memory(2000, what="x", knob="use fewer modes")


def test_sources_and_global_batch(tmp_path) -> None:
    import h5py

    from ptyro_core.pipeline import ArraySource, HDF5Source, global_batch

    data = np.random.default_rng(0).uniform(size=(3, 4, 5, 5)).astype(np.float32)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["x"] = data
    flat = data.reshape(12, 5, 5)
    idx = np.array([7, 0, 11, 7, 3, 2])
    h5 = HDF5Source(str(path), "x")
    assert len(h5) == 12 and h5.shape == (3, 4, 5, 5)  # the stored shape; len() counts patterns
    np.testing.assert_array_equal(h5.read(idx), flat[idx])
    np.testing.assert_array_equal(ArraySource(flat).read(idx), flat[idx])
    mesh = device_mesh()
    g = global_batch(h5, idx, mesh)
    assert len(g.sharding.device_set) == len(jax.devices())
    np.testing.assert_array_equal(np.asarray(g), flat[idx])
    h5.close()
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["x"] = np.zeros((4, 4))
    with pytest.raises(PtyroValueError, match="expected a 3D or 4D array of patterns"):
        HDF5Source(str(tmp_path / "bad.h5"), "x")


def test_lazy_dataset_reads_rows_on_demand(tmp_path) -> None:
    import h5py

    from ptyro_core import Dataset4D, Grid, PtyroTypeError
    from ptyro_core.pipeline import ArraySource, LazySource, global_batch, pattern_source

    data = np.random.default_rng(1).uniform(size=(2, 3, 4, 4)).astype(np.float32)
    pos = np.zeros((6, 2), np.float32)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["d"] = data
    with h5py.File(tmp_path / "d.h5", "r") as f:
        ds = Dataset4D.lazy(f["d"], pos, grid=Grid((4, 4), 0.5), energy=3e5)
        assert ds.is_lazy and ds.scan_shape == (2, 3)
        src = pattern_source(ds)
        assert isinstance(src, LazySource)
        idx = np.array([5, 1, 1, 4])
        np.testing.assert_array_equal(np.asarray(global_batch(src, idx, device_mesh())), data.reshape(6, 4, 4)[idx])
        with pytest.raises(PtyroValueError, match=r"expected Rx\*Ry = 6 positions"):
            Dataset4D.lazy(f["d"], pos[:5], grid=Grid((4, 4), 0.5), energy=3e5)
    with pytest.raises(PtyroTypeError, match="expected a 4D array-like"):
        Dataset4D.lazy(np.zeros((6, 4, 4)), pos, grid=Grid((4, 4), 0.5), energy=3e5)
    mem = Dataset4D(data, pos, grid=Grid((4, 4), 0.5), energy=3e5)
    assert not mem.is_lazy and isinstance(pattern_source(mem), ArraySource)


# --------------------------------------------------------------------------- concurrent batches


class _Counting:
    """A jitted function that counts its calls and fails on call ``fail_at`` (``lower`` marks it as
    already jitted, so map_batches calls it as it is)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self._fn = jax.jit(lambda x: jnp.cos(x) * 2)
        self.lower = self._fn.lower

    def __call__(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise ValueError(f"batch {self.calls} failed")
        return self._fn(x)


@pytest.mark.parametrize("streams", [2, 3, 5])
def test_map_batches_streams_match_one_stream_in_order(streams: int) -> None:
    mesh = device_mesh(jax.devices()[:1])
    xs = jnp.arange(41.0)[:, None] * jnp.ones((1, 3))
    one = list(map_batches(_Counting(), xs, batch_size=4, mesh=mesh, streams=1))
    done: list[int] = []
    many = list(map_batches(_Counting(), xs, batch_size=4, mesh=mesh, streams=streams, progress=done.append))
    assert [(a, b) for a, b, _ in many] == [(a, b) for a, b, _ in one] == batch_bounds(41, 4)
    for (_, _, x), (_, _, y) in zip(one, many):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert done == [b - a for a, b in batch_bounds(41, 4)]


def test_map_batches_streams_stop_early_and_report_failures() -> None:
    mesh = device_mesh(jax.devices()[:1])
    xs = jnp.ones((40, 2))
    fn = _Counting()
    gen = map_batches(fn, xs, batch_size=4, mesh=mesh, streams=2)
    next(gen)
    gen.close()  # the consumer stops after one batch: at most the batches in flight were started
    assert fn.calls <= 3
    failing = _Counting(fail_at=3)
    with pytest.raises(ValueError, match="batch 3 failed"):
        list(map_batches(failing, xs, batch_size=4, mesh=mesh, streams=2))
    assert failing.calls <= 4


def test_default_streams(monkeypatch) -> None:
    from ptyro_core.pipeline import default_streams

    monkeypatch.delenv("PTYRO_STREAMS", raising=False)
    one_cpu = device_mesh(jax.devices()[:1])
    assert 1 <= default_streams(one_cpu) <= 8
    assert default_streams(device_mesh(jax.devices()[:2])) == 1  # a mesh already splits each batch
    monkeypatch.setenv("PTYRO_STREAMS", "3")
    assert default_streams(device_mesh()) == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("PTYRO_STREAMS", bad)
        with pytest.raises(PtyroValueError, match=f"PTYRO_STREAMS: expected a whole number >= 1, got '{bad}'"):
            default_streams(one_cpu)
    with pytest.raises(PtyroValueError, match="streams: expected a whole number >= 1, got 0"):
        list(map_batches(lambda x: x, jnp.ones((4, 1)), batch_size=2, mesh=one_cpu, streams=0))
