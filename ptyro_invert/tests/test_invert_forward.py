import sys

# pytest's importlib mode names this file "ptyro_invert.tests.<name>" and may register the folder
# ptyro_invert/ as a namespace package "ptyro_invert" first; drop that placeholder so the real
# (installed) package is imported.
if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from jax.test_util import check_grads

from ptyro_core import Dataset4D, Grid, PtyroValueError, ReconState, replace
from ptyro_invert import initial_state, predict_patterns
from ptyro_invert.forward import make_model
from ptyro_invert.synthetic import setup


@pytest.fixture(scope="module")
def small():
    return setup(gpts=32, sampling=0.25, scan=(3, 3), step=0.5, aberrations={"C10": 30.0}, padding_px=4)


def test_initial_state_frame(small):
    grid, scan, st0 = small
    d = np.asarray(grid.sampling)
    pos = np.asarray(st0.positions)
    # object pixel [0,0] at (0,0) Å; the first probe centre sits half a window + padding in
    np.testing.assert_allclose(pos.min(0), (np.asarray(grid.gpts) // 2 + 4) * d, atol=1e-5)
    np.testing.assert_allclose(pos - pos[0], np.asarray(scan.positions) - np.asarray(scan.positions)[0], atol=1e-5)
    # the object covers every probe window with the padding to spare
    hi = (pos.max(0) / d).round() - np.asarray(grid.gpts) // 2 + np.asarray(grid.gpts) + 4
    assert np.all(hi <= np.asarray(st0.object.shape[-2:]))
    assert st0.object.dtype == jnp.complex64 and bool(jnp.all(st0.object == 1))
    assert abs(float(jnp.sum(jnp.abs(st0.probe) ** 2)) - 1.0) < 1e-4


def test_vacuum_patterns_are_the_probe_spectrum_and_sum_to_one(small):
    grid, scan, st0 = small
    pats = np.asarray(predict_patterns(st0))
    assert pats.shape == (9, 32, 32)
    np.testing.assert_allclose(pats.sum((-2, -1)), 1.0, rtol=1e-4)
    # |FFT(probe)|² centred, the same at every (sub-pixel shifted) position
    spec = np.fft.fftshift(np.abs(np.fft.fft2(np.asarray(st0.probe[0]), norm="ortho")) ** 2)
    for p in pats:
        np.testing.assert_allclose(p, spec, atol=1e-6)


_GRID = Grid((16, 16), (0.25, 0.25))
_MODEL = jax.jit(make_model(_GRID.gpts, _GRID.sampling, 300e3))


@given(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0))
def test_shift_equivariance(dx, dy):
    """Moving the probe by (dx, dy) over a periodic object equals moving the object by -(dx, dy)."""
    x = jnp.arange(48)[:, None] * 0.25
    y = jnp.arange(48)[None, :] * 0.25
    k = 2 * jnp.pi / 4.0  # period 4 Å = 16 px, so a shift is exact in Fourier space
    phase = 0.5 * jnp.cos(k * x) * jnp.sin(k * y)
    probe = jnp.exp(-((x[:16] - 2.0) ** 2 + (y[:, :16] - 2.0) ** 2) / 0.8).astype(jnp.complex64)
    model = _MODEL
    obj = jnp.exp(1j * phase)[None].astype(jnp.complex64)
    base = jnp.array([6.0, 6.0])
    moved = model(obj, probe[None], jnp.ones(1), base + jnp.array([dx, dy]))
    shifted = jnp.exp(1j * 0.5 * jnp.cos(k * (x + dx)) * jnp.sin(k * (y + dy)))[None].astype(jnp.complex64)
    ref = model(shifted, probe[None], jnp.ones(1), base)
    np.testing.assert_allclose(np.asarray(moved), np.asarray(ref), atol=2e-3 * float(jnp.max(ref)))


def test_gradients_float64():
    with jax.enable_x64(True):
        grid = Grid((8, 8), (0.3, 0.3))
        rng = np.random.default_rng(0)
        obj = np.exp(1j * rng.uniform(0, 0.5, (2, 20, 20)))
        probe = (rng.normal(size=(1, 8, 8)) + 1j * rng.normal(size=(1, 8, 8))) * 0.1
        m1 = make_model(grid.gpts, grid.sampling, 300e3)
        m2 = make_model(grid.gpts, grid.sampling, 300e3, num_slices=2, detector_blur=0.7)
        pos = np.array([2.93, 3.11])
        w = jnp.asarray(rng.uniform(size=(8, 8)))
        f1 = jax.jit(lambda o, p, r: jnp.sum(w * m1(o[:1], p, jnp.ones(1), r)))
        check_grads(f1, (obj, probe, pos), order=1, modes=("rev",), eps=1e-4)
        f2 = jax.jit(lambda o, p, dz, r: jnp.sum(w * m2(o, p, dz, r)))
        check_grads(f2, (obj, probe, np.array([5.0, 5.0]), pos), order=1, modes=("rev",), eps=1e-4)


def test_multislice_vacuum_equals_single_slice_spectrum(small):
    grid, scan, _ = small
    dummy = Dataset4D(np.zeros((3, 3, 32, 32), np.float32), scan.positions, grid=grid, energy=300e3)
    st2 = initial_state(dummy, semiangle_cutoff=20.0, aberrations={"C10": 30.0}, num_slices=3, slice_thickness=20.0, padding_px=4)
    p2 = np.asarray(predict_patterns(st2))
    p1 = np.asarray(predict_patterns(replace(st2, object=st2.object[:1], slice_thickness=st2.slice_thickness[:1])))
    # free-space propagation only changes phases in Fourier space (inside the band limit)
    np.testing.assert_allclose(p2, p1, atol=1e-6)
    # gratings in the first and last slices: the propagation between them changes the pattern
    n0, n1 = st2.object.shape[-2:]
    obj = st2.object.at[0].set(jnp.broadcast_to(jnp.exp(0.8j * jnp.cos(jnp.arange(n0)[:, None] * 0.9)), (n0, n1)))
    obj = obj.at[2].set(jnp.broadcast_to(jnp.exp(0.8j * jnp.cos(jnp.arange(n1)[None, :] * 0.7)), (n0, n1)))
    a = predict_patterns(replace(st2, object=obj))
    b = predict_patterns(replace(st2, object=obj, slice_thickness=jnp.full((3,), 1e-3)))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4


def test_initial_state_errors():
    grid = Grid((16, 16), (0.25, 0.25))
    ds = Dataset4D(np.zeros((2, 2, 16, 16), np.float32), np.zeros((4, 2), np.float32), grid=grid, energy=300e3)
    with pytest.raises(PtyroValueError, match="slice_thickness"):
        initial_state(ds, semiangle_cutoff=20.0, num_slices=2)
    with pytest.raises(PtyroValueError, match="num_modes"):
        initial_state(ds, semiangle_cutoff=20.0, num_modes=0)


@given(nx=st.integers(1, 9), ny=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_the_centring_ramp_centres_the_far_field_exactly(nx, ny, seed):
    """FFT(ψ · c) = fftshift(FFT(ψ)) for even and odd sides (NumPy's fftshift is the reference);
    even sides give the real ±1 checkerboard."""
    from ptyro_invert.forward import centring, intensities

    rng = np.random.default_rng(seed)
    psi = rng.normal(size=(2, nx, ny)) + 1j * rng.normal(size=(2, nx, ny))
    c = centring((nx, ny), np.float64)
    want = np.fft.fftshift(np.fft.fft2(psi, norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(np.fft.fft2(psi * c, norm="ortho"), want, atol=1e-12)
    assert np.isrealobj(c) == (nx % 2 == 0 and ny % 2 == 0)
    got = intensities(jnp.asarray(psi, jnp.complex64))
    np.testing.assert_allclose(np.asarray(got), np.sum(np.abs(want) ** 2, axis=0), rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want) ** 2)))


@pytest.mark.parametrize("axis, modes", [(0, 1), (0, 3), (1, 4)])
def test_mode_power_and_its_written_out_gradient(x64, axis, modes):
    """Σ_modes |f|² and its gradient (written out: 2 g conj f) against JAX's own differentiation
    of the plain sum, and a float64 finite-difference check."""
    from ptyro_invert.forward import mode_power

    rng = np.random.default_rng(modes)
    shape = (modes, 5, 4) if axis == 0 else (2, modes, 5, 4)
    f = jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape))
    g = jnp.asarray(rng.normal(size=np.delete(np.array(shape), axis)))
    plain = lambda z: jnp.sum(jnp.abs(z) ** 2, axis=axis)  # noqa: E731
    np.testing.assert_allclose(np.asarray(mode_power(f, axis)), np.asarray(plain(f)), rtol=1e-12)
    (got,) = jax.vjp(lambda z: mode_power(z, axis), f)[1](g)
    (want,) = jax.vjp(plain, f)[1](g)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
    check_grads(lambda z: mode_power(z, axis), (f,), order=1, modes=["rev"])
