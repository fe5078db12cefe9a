"""Fresnel propagation: unitarity, reversibility, analytic Gaussian-beam spreading, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import ptyro_core
from ptyro_core import Grid
from ptyro_core.testing import check_conformance
from ptyro_simul.constants import energy2wavelength
from ptyro_simul.propagator import antialias_aperture, fresnel

GRID = Grid((32, 32), (0.2, 0.2))


def _bandlimited_wave(seed: int, grid: Grid = GRID) -> jnp.ndarray:
    key = jax.random.PRNGKey(seed)
    a, b = jax.random.normal(key, (2,) + grid.gpts)
    wk = jnp.fft.fft2(a + 1j * b) * antialias_aperture(grid)
    w = jnp.fft.ifft2(wk).astype(jnp.complex64)
    return w / jnp.sqrt(jnp.sum(jnp.abs(w) ** 2))


@given(seed=st.integers(0, 2**16), dz=st.floats(-200.0, 200.0), energy=st.sampled_from([80e3, 200e3, 300e3]))
def test_norm_conserved(seed, dz, energy):
    w = _bandlimited_wave(seed)
    out = fresnel(w, dz, GRID, energy)
    assert float(jnp.sum(jnp.abs(out) ** 2)) == pytest.approx(1.0, abs=1e-4)


@given(seed=st.integers(0, 2**16), dz=st.floats(0.5, 100.0), tilt=st.tuples(st.floats(-5, 5), st.floats(-5, 5)))
def test_forward_then_back_is_identity(seed, dz, tilt):
    w = _bandlimited_wave(seed)
    back = fresnel(fresnel(w, dz, GRID, 200e3, tilt=tilt), -dz, GRID, 200e3, tilt=tilt)
    np.testing.assert_allclose(np.asarray(back), np.asarray(w), atol=2e-5)


def test_gaussian_beam_spread_matches_analytic():
    # |ψ|² ∝ exp(-2 r² / w0²) spreads as w(z) = w0 sqrt(1 + (z / zR)²), zR = π w0² / λ
    grid = Grid((64, 64), (0.25, 0.25))
    w0, energy, dz = 1.5, 200e3, 400.0
    lam = energy2wavelength(energy)
    x, y = grid.coordinates(jnp.float32)
    cx, cy = 32 * 0.25, 32 * 0.25
    psi = jnp.exp(-((x - cx) ** 2 + (y - cy) ** 2) / w0**2).astype(jnp.complex64)
    psi = psi / jnp.sqrt(jnp.sum(jnp.abs(psi) ** 2))
    out = fresnel(psi, dz, grid, energy)
    inten = jnp.abs(out) ** 2
    var_x = float(jnp.sum(inten * (x - cx) ** 2) / jnp.sum(inten))
    zr = np.pi * w0**2 / lam
    w_z = w0 * np.sqrt(1 + (dz / zr) ** 2)
    assert var_x == pytest.approx(w_z**2 / 4, rel=1e-3)
    assert w_z > 1.5 * w0  # the beam really spread


def test_fresnel_gradient_wrt_distance(x64):
    grid = Grid((16, 16), (0.2, 0.2))
    w = _bandlimited_wave(3, grid).astype(jnp.complex128)
    f = jax.jit(lambda dz: jnp.sum(jnp.abs(fresnel(w, dz, grid, 200e3)[:4]) ** 2))
    check_grads(f, (20.0,), order=1, modes=("fwd", "rev"))


def test_fresnel_conformance():
    check_conformance("propagator", ptyro_core.get("propagator", "fresnel"))
