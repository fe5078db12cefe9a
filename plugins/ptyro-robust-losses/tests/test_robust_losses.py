"""Tests of the ptyro-robust-losses plugin: registration, conformance, gradients, and the
statistics the losses stand for (checked against scipy's distributions and analytic limits)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import stats

import ptyro_core
from ptyro_core import PtyroValueError
from ptyro_core.testing import check_conformance
from ptyro_robust_losses import gaussian_poisson, huber, huber_rho




def test_registered_through_entry_point():
    reg = ptyro_core.get_registry()
    for name in ("huber", "gaussian_poisson"):
        comp = reg.component("loss", name)
        assert comp.distribution == "ptyro-robust-losses"
        assert comp.version == "0.1.0"
    assert ptyro_core.get("loss", "huber") is huber
    assert ptyro_core.get("loss", "gaussian_poisson") is gaussian_poisson


@pytest.mark.parametrize("name,options", [("huber", {}), ("huber", {"domain": "intensity", "delta": 0.2}), ("gaussian_poisson", {"read_noise": 0.5, "dose": 20.0})])
def test_conformance(name, options):
    check_conformance("loss", ptyro_core.get("loss", name), **options)


def test_huber_limits():
    """Quadratic below δ (half the mean squared amplitude residual), linear above."""
    rng = np.random.default_rng(0)
    m = rng.uniform(1.0, 4.0, (2, 8, 8)).astype(np.float32)
    p_small = (np.sqrt(m) + 0.01 * rng.standard_normal(m.shape)) ** 2
    r = np.sqrt(p_small) - np.sqrt(m)
    np.testing.assert_allclose(float(huber(p_small, m, delta=1.0)), 0.5 * np.mean(r**2), rtol=1e-3)
    p_big = (np.sqrt(m) + 3.0) ** 2  # every residual is 3 > δ = 1
    np.testing.assert_allclose(float(huber(p_big, m, delta=1.0)), 1.0 * (3.0 - 0.5), rtol=1e-4)
    # continuity of ρ and ρ' at |r| = δ
    d = 0.7
    np.testing.assert_allclose(huber_rho(jnp.array([d - 1e-4, d + 1e-4]), d), [0.5 * (d - 1e-4) ** 2, d * (d + 1e-4 - d / 2)], rtol=1e-5)
    g = jax.vmap(jax.grad(lambda r: huber_rho(r, d)))(jnp.array([d - 1e-3, d + 1e-3, -5.0]))
    np.testing.assert_allclose(g, [d - 1e-3, d, -d], rtol=1e-5)


def _fit_scale(loss, model, data, grid):
    vals = np.asarray(jax.jit(jax.vmap(lambda a: loss(a * jnp.asarray(model), jnp.asarray(data))))(jnp.asarray(grid)))
    return grid[int(np.argmin(vals))]


def test_huber_is_robust_to_hot_pixels():
    """Fitting the dose of a Poisson pattern with 2% hot pixels: least squares is dragged off,
    Huber on amplitudes is not."""
    rng = np.random.default_rng(1)
    model = rng.uniform(0.5, 1.5, (4, 16, 16))
    data = rng.poisson(50.0 * model).astype(np.float64)
    hot = rng.random(data.shape) < 0.02
    data[hot] += 2000.0
    grid = np.linspace(40.0, 80.0, 401)
    robust = _fit_scale(lambda p, m: huber(p, m, delta=1.0), model, data, grid)
    lsq = _fit_scale(lambda p, m: huber(p, m, delta=1e6), model, data, grid)
    assert abs(robust - 50.0) / 50.0 < 0.03, robust
    assert abs(lsq - 50.0) / 50.0 > 0.1, lsq


def test_gaussian_poisson_without_read_noise_is_poisson_likelihood():
    """σ = 0: loss differences equal (2/N) × differences of the Poisson negative log-likelihood (scipy)."""
    rng = np.random.default_rng(2)
    lam = rng.uniform(0.2, 8.0, (3, 8, 8))
    counts = rng.poisson(lam).astype(np.float64)
    p1, p2 = lam, 1.3 * lam + 0.1
    ours = float(gaussian_poisson(p1, counts, read_noise=0.0) - gaussian_poisson(p2, counts, read_noise=0.0))
    nll = lambda p: -np.sum(stats.poisson.logpmf(counts, p))  # noqa: E731
    np.testing.assert_allclose(ours, 2.0 * (nll(p1) - nll(p2)) / counts.size, rtol=2e-4)
    assert float(gaussian_poisson(counts, counts, read_noise=0.0)) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_poisson_matches_exact_mixed_likelihood():
    """With read noise, the dose fitted with our loss agrees with the exact Poisson–Gaussian
    maximum-likelihood fit (likelihood Σ_k Poisson(k; λ) N(m; k, σ²) summed numerically)."""
    rng = np.random.default_rng(3)
    sigma, dose = 2.0, 3.0
    model = rng.uniform(0.5, 1.5, (1, 24, 24))
    data = rng.poisson(dose * model) + sigma * rng.standard_normal(model.shape)
    k = np.arange(0, 60)[:, None]
    mflat, pflat = data.ravel()[None, :], model.ravel()[None, :]

    def exact_nll(a):
        like = stats.poisson.pmf(k, a * pflat) * stats.norm.pdf(mflat, loc=k, scale=sigma)
        return -np.sum(np.log(np.sum(like, axis=0)))

    grid = np.linspace(2.0, 4.0, 201)
    exact = grid[np.argmin([exact_nll(a) for a in grid])]
    ours = _fit_scale(lambda p, m: gaussian_poisson(p, m, read_noise=sigma), model, data, grid)
    assert abs(ours - exact) < 0.05 * dose, (ours, exact)
    assert abs(ours - dose) < 0.15 * dose, ours


@given(st.integers(0, 3), st.integers(0, 15), st.floats(0.0, 100.0))
def test_masked_pixels_do_not_count(b, q, junk):
    rng = np.random.default_rng(4)
    m = rng.uniform(0.1, 2.0, (4, 16, 16)).astype(np.float32)
    p = 1.2 * m
    mask = np.ones((16, 16), np.float32)
    mask[q, :] = 0.0
    p2 = p.copy()
    p2[b, q, :] = junk
    for loss in (huber, gaussian_poisson):
        np.testing.assert_allclose(float(loss(p2, m, mask=mask)), float(loss(p, m, mask=mask)), rtol=1e-6)


def test_weights_per_pattern():
    rng = np.random.default_rng(5)
    m = rng.uniform(0.1, 2.0, (2, 8, 8))
    p = m * np.array([1.5, 1.0])[:, None, None]
    # weight only the second (perfect) pattern -> zero loss; only the first -> its own loss
    for loss in (huber, gaussian_poisson):
        assert float(loss(p, m, weights=np.array([0.0, 1.0]))) == pytest.approx(0.0, abs=1e-6)
        np.testing.assert_allclose(float(loss(p, m, weights=np.array([1.0, 0.0]))), float(loss(p[:1], m[:1])), rtol=1e-5)


def test_errors_name_the_bad_value():
    m = jnp.ones((2, 4, 4))
    with pytest.raises(PtyroValueError, match="delta"):
        huber(m, m, delta=-1.0)
    with pytest.raises(PtyroValueError, match="domain"):
        huber(m, m, domain="log")
    with pytest.raises(PtyroValueError, match="dose"):
        gaussian_poisson(m, m, dose=0.0)
    with pytest.raises(PtyroValueError, match="mask"):
        huber(m, m, mask=jnp.ones((3, 3)))
    with pytest.raises(PtyroValueError, match="predicted shape"):
        huber(m, jnp.ones((2, 4, 5)))


def test_gradients_float64(x64):
    rng = np.random.default_rng(6)
    m = jnp.asarray(rng.uniform(0.5, 3.0, (2, 6, 6)))
    p = jnp.asarray(rng.uniform(0.5, 3.0, (2, 6, 6)))
    assert p.dtype == jnp.float64
    check_grads(jax.jit(lambda x: huber(x, m, delta=0.3)), (p,), order=1, modes=("fwd", "rev"))
    check_grads(jax.jit(lambda x: gaussian_poisson(x, m, read_noise=1.5, dose=4.0)), (p,), order=2, modes=("rev",))
