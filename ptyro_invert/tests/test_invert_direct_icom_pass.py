"""iCoM's single pass over the patterns (``project_patterns``, ``com_field``) against independent
computations: a float64 ``einsum`` of the patterns with the weights, and the per-pattern centre
of mass of :func:`ptyro_invert.calibrate.center_of_mass` (the route iCoM took before), on every
way a dataset can hold its patterns (NumPy float32/float64/uint16, C-ordered or not, a JAX
array, a lazy source on disk)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_core import Dataset4D, Grid, PtyroValueError, get
from ptyro_invert import synthetic as syn
from ptyro_invert.calibrate import center_of_mass, fit_descan
from ptyro_invert.direct import _common
from ptyro_invert.direct import icom as icom_mod
from ptyro_invert.direct._common import pattern_pixels, project_patterns


def dataset(arr, sampling=0.2):
    rx, ry, nx, ny = arr.shape
    pos = np.stack(np.meshgrid(np.arange(rx) * 0.3, np.arange(ry) * 0.3, indexing="ij"), -1).reshape(-1, 2)
    return Dataset4D(arr, pos.astype(np.float32), grid=Grid((nx, ny), (sampling, sampling)), energy=200e3)


STORAGE = ("float32", "float64", "uint16", "fortran", "jax", "uint16-jax")


def stored(counts, how):
    if how == "float32":
        return counts.astype(np.float32)
    if how == "float64":
        return counts.astype(np.float64)
    if how == "uint16":
        return counts.astype(np.uint16)
    if how == "fortran":
        return np.asfortranarray(counts.astype(np.float32))
    if how == "jax":
        return jnp.asarray(counts, jnp.float32)
    return jnp.asarray(counts, jnp.uint16)


@settings(max_examples=25, deadline=None)
@given(
    rx=st.integers(2, 5),
    ry=st.integers(2, 5),
    nx=st.integers(3, 9),
    ny=st.integers(3, 9),
    m=st.integers(1, 4),
    how=st.sampled_from(STORAGE),
    seed=st.integers(0, 2**16),
)
def test_project_patterns_is_the_weighted_sum_on_every_storage(rx, ry, nx, ny, m, how, seed):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(50.0, (rx, ry, nx, ny))
    w = rng.standard_normal((nx * ny, m))
    got = np.asarray(project_patterns(dataset(stored(counts, how)), w))
    want = np.einsum("abk,km->abm", counts.reshape(rx, ry, -1).astype(np.float64), w.astype(np.float32).astype(np.float64))
    assert got.shape == (rx, ry, m) and got.dtype == np.float32
    assert np.allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("block", [None, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.float64])
def test_project_patterns_at_every_alignment_of_the_buffer(dtype, block, monkeypatch):
    """Host patterns whose buffer starts anywhere relative to a 64-byte boundary (the pass reads
    the aligned interior in place and adds the two pieces it leaves out on the host), whole or
    (integer counts) a block of patterns at a time."""
    if block:
        monkeypatch.setattr(_common, "_BLOCK_PIXELS", block)  # 2 patterns a block: 6 blocks
    rng = np.random.default_rng(3)
    shape = (3, 4, 9, 10)
    counts = rng.poisson(30.0, shape)
    w = rng.standard_normal((90, 3)).astype(np.float32)
    want = np.einsum("abk,km->abm", counts.reshape(3, 4, -1).astype(np.float64), w.astype(np.float64))
    size = np.dtype(dtype).itemsize
    raw = np.empty(counts.size * size + 128, np.uint8)
    base = (-raw.ctypes.data) % 64
    for shift in range(0, 64, size):
        arr = raw[base + shift : base + shift + counts.size * size].view(dtype).reshape(shape)
        arr[...] = counts
        got = np.asarray(project_patterns(dataset(arr), w))
        assert np.allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max()), (shift, np.abs(got - want).max())


def test_project_patterns_reads_a_lazy_source_block_by_block(tmp_path):
    rng = np.random.default_rng(1)
    counts = rng.poisson(20.0, (6, 5, 8, 8)).astype(np.uint16)
    path = tmp_path / "p.npy"
    np.save(path, counts)
    lazy = Dataset4D.lazy(np.load(path, mmap_mode="r"), dataset(counts).positions, grid=Grid((8, 8), (0.2, 0.2)), energy=200e3)
    w = rng.standard_normal((64, 2))
    want = np.einsum("abk,km->abm", counts.reshape(6, 5, -1).astype(np.float64), w.astype(np.float32))
    assert np.allclose(project_patterns(lazy, w), want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("descan", ["constant", "plane", "free"])
def test_com_field_equals_the_per_pattern_centre_of_mass(descan):
    """The three moments from one pass give calibrate.center_of_mass's centres (independent:
    per-pattern sums over absolute pixel indices), a mask and an empty pattern included."""
    rng = np.random.default_rng(2)
    nx, ny = 12, 10
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    centres = rng.uniform(4, 7, (4, 5, 2))
    counts = rng.poisson(200 * np.exp(-((x - centres[..., :1, None]) ** 2 + (y - centres[..., 1:, None]) ** 2) / 4.0)).astype(np.float32)
    counts[1, 2] = 0.0  # a pattern with no counts sits at the detector centre in both
    mask = (np.hypot(x - 6, y - 5) < 4.5).astype(np.float32)
    ds = dataset(counts, sampling=0.25)
    dk = np.asarray(ds.grid.reciprocal_sampling)
    for m in (None, mask):
        com = np.asarray(center_of_mass(counts, m), np.float64)
        want = (com - fit_descan(com, descan)) * dk
        got = np.asarray(icom_mod.com_field(ds, descan=descan, mask=m))
        assert np.allclose(got, want, atol=2e-5 * np.abs(want).max()), (descan, np.abs(got - want).max())
    u16 = np.asarray(icom_mod.com_field(dataset(counts.astype(np.uint16), sampling=0.25), descan=descan))
    assert np.allclose(u16, np.asarray(icom_mod.com_field(ds, descan=descan)), atol=1e-7)


def test_host_and_device_patterns_give_the_same_reconstructions():
    """NumPy patterns (BLAS on the host, a gather on the host) and the same patterns as a JAX
    array (the jitted pass) give the same iCoM, DPC and SSB images to float32 round-off."""
    grid, scan, state = syn.setup(gpts=24, sampling=0.25, scan=(8, 8), step=0.5, energy=300e3, semiangle_cutoff=20.0, aberrations={"C10": -40.0})
    ph = syn.hexagonal_phase(tuple(state.object.shape[-2:]), state.sampling, peaks=(0.1, 0.06))
    ds = syn.simulate(syn.with_object(state, np.exp(1j * ph)), grid, scan, dose=5000.0)
    host = Dataset4D(np.asarray(ds.array), ds.positions, grid=ds.grid, energy=ds.energy)
    dev = Dataset4D(jnp.asarray(ds.array), ds.positions, grid=ds.grid, energy=ds.energy)
    for name in ("icom", "dpc", "ssb"):
        a = np.angle(np.asarray(get("reconstruction", name)(host, state).object))
        b = np.angle(np.asarray(get("reconstruction", name)(dev, state).object))
        assert np.abs(a).max() > 0.01 and np.allclose(a, b, atol=1e-5 * np.abs(a).max()), (name, np.abs(a - b).max())
    pix = np.array([0, 5, 24 * 3 + 2, 24 * 24 - 1])
    (ph_host, d_host), (ph_dev, d_dev) = pattern_pixels(host, pix), pattern_pixels(dev, pix)
    assert np.isclose(d_host, d_dev, rtol=1e-6) and np.allclose(ph_host, ph_dev, rtol=1e-6)


def test_a_mask_of_the_wrong_shape_fails_with_one_line():
    ds = dataset(np.ones((2, 2, 6, 6), np.float32))
    with pytest.raises(PtyroValueError, match=r"icom: expected a mask of shape \(6, 6\) \(the patterns' pixels\), got \(5, 6\)"):
        icom_mod.com_field(ds, mask=np.ones((5, 6)))
