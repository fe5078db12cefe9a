"""Pattern sources (ptyro_core.sources, the PatternSource protocol) and Dataset4D as a holder of
arrays: every source reads what the array holds, in its stored dtype; file-backed sources own
their handle and release it; Dataset4D keeps the caller's array (no copy, counts as integers)
and survives jit and vmap."""

import contextlib
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_core import Dataset4D, Grid, PtyroValueError
from ptyro_core.pipeline import device_mesh, global_batch, pattern_source
from ptyro_core.protocols import PatternSource
from ptyro_core.sources import ArraySource, HDF5Source, LazySource, MemmapSource, aligned_empty, read_into

DATA = np.random.default_rng(3).integers(0, 60000, size=(3, 5, 4, 6)).astype(np.uint16)
FLAT = DATA.reshape(15, 4, 6)
POS = np.zeros((15, 2), np.float32)
GRID = Grid((4, 6), 0.5)


def _file_is_closed(path) -> bool:
    """HDF5 refuses to truncate a file this process still has open: a strong test of a leak."""
    try:
        with h5py.File(path, "w"):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    np.save(d / "p.npy", DATA)
    np.save(d / "f.npy", np.asfortranarray(DATA))  # Fortran order: read through the map, not in rows
    np.save(d / "s.npy", np.concatenate([DATA[:2] + 1, DATA, DATA[:1] + 2]))  # DATA from the third row on
    with h5py.File(d / "p.h5", "w") as f:
        f["g/data"] = DATA
    return d


def _sources(d):
    return {
        "memory": ArraySource(DATA),
        "npy": MemmapSource(d / "p.npy"),
        "npy, Fortran order": MemmapSource(d / "f.npy"),
        "hdf5": HDF5Source(d / "p.h5", "/g/data"),
        # a caller's numpy.memmap: read from its file in rows, or through the map where it must
        "memory map": LazySource(np.load(d / "p.npy", mmap_mode="r")),
        "memory map, a slice": LazySource(np.load(d / "s.npy", mmap_mode="r")[2:5]),
        "memory map, Fortran order": LazySource(np.load(d / "f.npy", mmap_mode="r")),
        "memory map, copy-on-write": LazySource(np.load(d / "p.npy", mmap_mode="c")),
    }


@settings(max_examples=25, deadline=None)
@given(idx=st.lists(st.integers(0, 14), min_size=1, max_size=20))
def test_every_source_reads_what_the_array_holds(files, idx):
    for name, src in _sources(files).items():
        assert isinstance(src, PatternSource), name
        with src:
            got = src.read(np.asarray(idx))
        assert got.dtype == np.uint16, name  # the stored type: counts stay integers
        np.testing.assert_array_equal(got, FLAT[idx], err_msg=name)


class _Foreign:
    """A third party's source: ``read(indices)`` only (no ``out``)."""

    shape, dtype = DATA.shape, DATA.dtype

    def read(self, indices):
        return FLAT[np.asarray(indices)]


@settings(max_examples=20, deadline=None)
@given(idx=st.lists(st.integers(0, 14), min_size=1, max_size=20), dtype=st.sampled_from([np.uint16, np.float32]))
def test_every_source_reads_into_aligned_memory(files, idx, dtype):
    """``read(indices, out=...)`` fills ``out`` (converted to its dtype) and returns it: the
    memory-backed sources gather straight into it, the files' and a third party's copy in."""
    for name, src in {**_sources(files), "foreign": _Foreign()}.items():
        out = aligned_empty((len(idx),) + DATA.shape[-2:], dtype)
        assert out.ctypes.data % 64 == 0 and out.dtype == dtype
        with contextlib.nullcontext() if name == "foreign" else src:
            got = read_into(src, np.asarray(idx), out)
        assert got is out, name
        np.testing.assert_array_equal(got, FLAT[idx].astype(dtype), err_msg=name)


def test_aligned_buffer_starts_on_64_bytes():
    for shape in [(3, 5, 7), (1,), (2, 2)]:
        b = aligned_empty(shape, np.complex64)
        assert b.ctypes.data % 64 == 0 and b.shape == shape and b.flags.c_contiguous
        b[...] = 1  # writable
    assert jnp.asarray(b).shape == (2, 2)


def test_aligned_memory_reaches_jax_without_a_copy():
    x = aligned_empty((3, 4, 6), np.float32)
    x[...] = 1.0
    assert jax.device_put(x).unsafe_buffer_pointer() == x.ctypes.data  # taken as it is on the CPU
    with pytest.raises(PtyroValueError, match=r"out has shape \(2, 4, 6\); expected \(3, 4, 6\) for 3 indices"):
        ArraySource(DATA).read([0, 1, 2], out=aligned_empty((2, 4, 6), np.uint16))


def test_shapes_basic_indexing_and_bad_indices(files):
    for name, src in _sources(files).items():
        assert src.shape == DATA.shape and len(src) == 15 and src.dtype == np.uint16, name
        np.testing.assert_array_equal(src[1, 2], DATA[1, 2], err_msg=name)
        np.testing.assert_array_equal(src[0:2], DATA[0:2], err_msg=name)
        np.testing.assert_array_equal(np.asarray(src), DATA, err_msg=name)
        with pytest.raises(PtyroValueError, match=r"scan indices must lie in \[0, 15\), got 0\.\.15"):
            src.read([0, 15])
        src.close()


def test_file_handles_are_released(files):
    h5 = files / "closing.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = DATA
    src = HDF5Source(h5, "x")
    assert src.closed and _file_is_closed(h5)  # describing the file leaves it closed
    with h5py.File(h5, "w") as f:  # (the check truncated it: write it again)
        f["x"] = DATA
    with src:
        src.read([3, 1])
        assert not src.closed and not _file_is_closed(h5)  # open while in use...
    assert src.closed  # ... and closed after
    np.testing.assert_array_equal(src.read([4]), FLAT[[4]])  # a closed source reopens on demand
    src.close()
    assert _file_is_closed(h5)
    mm = MemmapSource(files / "p.npy")
    assert mm.closed
    with mm:
        mm.read([0])
    assert mm.closed


def test_a_dropped_open_source_closes_its_file(files):
    import gc

    h5 = files / "dropped.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = DATA
    src = HDF5Source(h5, "x")
    src.read([0])  # opened, never closed by the caller
    del src
    gc.collect()
    assert _file_is_closed(h5)


def test_bad_sources_are_refused_clearly(files):
    with pytest.raises(PtyroValueError, match=r"has no dataset 'nope'; expected the 4D patterns there"):
        HDF5Source(files / "p.h5", "nope")
    with pytest.raises(PtyroValueError, match=r"file '.*missing.h5' not found"):
        HDF5Source(files / "missing.h5", "x")
    np.save(files / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(PtyroValueError, match=r"expected a 3D or 4D array of patterns, got shape \(4, 4\)"):
        MemmapSource(files / "flat.npy")


def test_a_check_sees_every_block_read():
    seen = []
    src = ArraySource(DATA, check=lambda block, where: seen.append((block.shape, where)))
    src.read([2, 0])
    src[1]
    assert seen == [((2, 4, 6), " at scan index [0, 2]"), ((5, 4, 6), " at scan index 1")]


def test_dataset_holds_the_callers_array_without_a_copy():
    for arr in (DATA, DATA.astype(np.float32)):
        ds = Dataset4D(arr, POS, grid=GRID, energy=2e5)
        assert ds.array is arr and ds.dtype == arr.dtype and not ds.is_lazy
        src = pattern_source(ds)
        assert isinstance(src, ArraySource) and np.shares_memory(src.read([0, 1]), arr) is False
        assert np.shares_memory(src._data, arr)  # the source views the caller's array
    assert Dataset4D(DATA.astype(np.float64), POS, grid=GRID, energy=2e5).dtype == np.float32  # no x64: float32


def test_lazy_datasets_hold_a_source_not_a_handle(files):
    src = HDF5Source(files / "p.h5", "/g/data")
    ds = Dataset4D.lazy(src, POS, grid=GRID, energy=2e5)
    assert ds.is_lazy and ds.array is src and src.closed and ds.dtype == np.uint16
    assert pattern_source(ds) is src
    b = global_batch(src, np.array([14, 0, 3, 3]), device_mesh())
    np.testing.assert_array_equal(np.asarray(b), FLAT[[14, 0, 3, 3]])
    src.close()
    # a new dataset from a lazy one's array (new positions) stays lazy
    moved = Dataset4D(ds.array, POS + 1, grid=GRID, energy=2e5)
    assert moved.is_lazy and moved.array is src
    with h5py.File(files / "p.h5", "r") as f:  # a caller's array-like: wrapped, not owned
        lazy = Dataset4D.lazy(f["g/data"], POS, grid=GRID, energy=2e5)
        assert isinstance(pattern_source(lazy), LazySource)


def test_dataset_jit_and_vmap_round_trip():
    for arr in (DATA, DATA.astype(np.float32), jnp.asarray(DATA, jnp.float32)):
        ds = Dataset4D(arr, POS, grid=GRID, energy=2e5)
        back = jax.jit(lambda d: d)(ds)
        assert isinstance(back, Dataset4D) and back.grid == ds.grid and back.energy == ds.energy
        assert back.array.dtype == np.asarray(arr).dtype
        np.testing.assert_array_equal(np.asarray(back.array), np.asarray(arr))
        stacked = jax.tree_util.tree_map(lambda x: jnp.stack([jnp.asarray(x)] * 2), ds)
        sums = jax.vmap(lambda d: jnp.sum(d.array.astype(jnp.float32)))(stacked)
        np.testing.assert_allclose(np.asarray(sums), [float(np.sum(np.asarray(arr), dtype=np.float64))] * 2, rtol=1e-6)


def _rss_file_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="resident memory from Linux's /proc")
def test_reading_a_memory_map_keeps_only_a_batch_resident(tmp_path):
    """A .npy file read batch by batch through its memory map does not stay mapped in this
    process (the out-of-core peak is a batch, not the file)."""
    path = tmp_path / "big.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(256, 2, 128, 128))  # 64 MiB
    arr[:] = 1.0
    arr.flush()
    del arr
    for src in (MemmapSource(path), LazySource(np.load(path, mmap_mode="r"))):
        before = _rss_file_mib()
        with src:
            for lo in range(0, 512, 64):
                assert src.read(np.arange(lo, lo + 64)).sum() == 64 * 128 * 128
        assert _rss_file_mib() - before < 16, type(src).__name__


def test_npy_rows_are_read_in_runs_and_a_short_file_is_named(tmp_path):
    """A .npy file is read with one preadv per run of consecutive patterns (a run longer than
    the 1,024 buffers one call takes is split); the batch lands in a caller's strided buffer
    too; a file cut short after it was opened is refused naming it, not read as zeros."""
    data = np.arange(3000 * 2 * 3, dtype=np.float32).reshape(3000, 2, 3)
    np.save(tmp_path / "long.npy", data)
    src = MemmapSource(tmp_path / "long.npy")
    idx = np.concatenate([np.arange(5, 2600), [7, 7, 2999, 0]])
    with src:
        np.testing.assert_array_equal(src.read(idx), data[idx])
        strided = np.zeros((idx.size, 2, 6), np.float32)[:, :, ::2]
        assert src.read(idx, out=strided) is strided
        np.testing.assert_array_equal(strided, data[idx])
    assert src.closed and src._fd is None  # the descriptor closed with the source
    with src:
        src.read([0])
        os.truncate(tmp_path / "long.npy", 128 + 100 * 24)  # the header and 100 patterns left
        with pytest.raises(PtyroValueError, match=r"long.npy.*the file ends before pattern 2990's data \(0 of 24 bytes read\)"):
            src.read([2990])


def test_a_callers_memory_map_is_read_from_its_file(files, tmp_path):
    """A read-only, C-ordered numpy.memmap (or a slice or reshape of one) is read from its file
    with preadv at the view's own offset, on a descriptor of the source's own that close()
    releases; one whose rows the file does not hold as they are (Fortran order) or whose
    pages may differ from the file (copy-on-write) is read through the map."""
    from ptyro_core.sources import _map_position

    mm = np.load(files / "s.npy", mmap_mode="r")
    head = mm.offset
    row = DATA[0, 0].nbytes
    assert _map_position(mm) == (str(files / "s.npy"), head)
    assert _map_position(mm[2:5]) == (str(files / "s.npy"), head + 2 * 5 * row)
    assert _map_position(mm[2:5].reshape(15, 4, 6)) == (str(files / "s.npy"), head + 10 * row)
    assert _map_position(mm[:, ::2]) is None  # not C-contiguous
    assert _map_position(np.load(files / "f.npy", mmap_mode="r")) is None
    assert _map_position(np.load(files / "p.npy", mmap_mode="c")) is None
    assert _map_position(np.array(mm)) is None
    src = LazySource(mm[2:5].reshape(15, 4, 6))
    idx = np.array([14, 0, 0, 7, 3])
    np.testing.assert_array_equal(src.read(idx), FLAT[idx])
    fd = src._fd
    assert fd is not None and os.fstat(fd).st_size == os.path.getsize(files / "s.npy")
    src.close()
    assert src._fd is None
    with pytest.raises(OSError):
        os.fstat(fd)  # closed (no other file took the number in between: nothing opened since)
    np.testing.assert_array_equal(src.read([1]), FLAT[[1]])  # reopened on demand
    src.close()
