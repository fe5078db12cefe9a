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
from hypothesis import given, settings, strategies as st
from jax.test_util import check_grads

import ptyro_core
from ptyro_core.testing import check_conformance
from ptyro_invert.losses import LOSSES, amplitude_loss, intensity_loss, poisson_loss

NAMES = list(LOSSES)


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_conformant(name):
    fn = ptyro_core.get("loss", name)
    assert fn is LOSSES[name][0]
    mask = np.ones((16, 16), np.float32)
    mask[:2] = 0
    check_conformance("loss", fn, mask=mask)


@pytest.mark.parametrize("name", NAMES)
def test_zero_at_perfect_prediction_and_positive_elsewhere(name):
    fn = LOSSES[name][0]
    m = jax.random.uniform(jax.random.PRNGKey(1), (3, 8, 8), minval=0.0, maxval=5.0)
    assert abs(float(fn(m, m))) < 1e-5
    assert float(fn(m * 1.1 + 0.01, m)) > 1e-4


def test_known_values():
    p = jnp.array([[[4.0, 1.0]]])
    m = jnp.array([[[1.0, 1.0]]])
    assert np.isclose(float(amplitude_loss(p, m)), 1.0, atol=1e-5)  # (2 - 1)^2
    assert np.isclose(float(intensity_loss(p, m)), 9.0)
    # poisson: p - m + m log(m / p) = 3 + log(1/4)
    assert np.isclose(float(poisson_loss(p, m, eps=1e-12)), 3.0 + np.log(0.25), atol=1e-5)
    assert np.isclose(float(poisson_loss(p, m)), 3.0 + 1.1 * np.log(1.1 / 4.1), atol=1e-5)  # default ε = 0.1 count


@pytest.mark.parametrize("name", NAMES)
def test_mask_and_weights(name):
    fn = LOSSES[name][0]
    key = jax.random.PRNGKey(2)
    m = jax.random.uniform(key, (4, 8, 8), minval=0.5, maxval=2.0)
    p = m.at[:, 0, 0].multiply(3.0)
    mask = jnp.ones((8, 8)).at[0, 0].set(0.0)
    assert abs(float(fn(p, m, mask=mask))) < 1e-5  # the only wrong pixel is masked
    # weights: a zero weight removes a pattern; the result is the weighted mean over patterns
    p2 = m.at[3].multiply(2.0)
    w = jnp.array([1.0, 1.0, 1.0, 0.0])
    assert abs(float(fn(p2, m, weights=w))) < 1e-5
    per = jnp.stack([fn(p2[i : i + 1], m[i : i + 1]) for i in range(4)])
    w2 = jnp.array([1.0, 2.0, 0.5, 3.0])
    assert np.isclose(float(fn(p2, m, weights=w2)), float(jnp.sum(w2 * per) / jnp.sum(w2)), rtol=1e-5)
    assert np.isclose(float(fn(p2, m)), float(jnp.mean(per)), rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_finite_at_zero_intensity(name):
    fn = LOSSES[name][0]
    m = jnp.zeros((2, 4, 4)).at[:, 1, 1].set(1.0)
    p = jnp.zeros((2, 4, 4))
    g = jax.grad(lambda q: fn(q, m))(p)
    assert bool(jnp.all(jnp.isfinite(g)))
    # through a complex wave (the way reconstructions use it): |psi|^2 with psi = 0
    psi = jnp.zeros((2, 4, 4), jnp.complex64)
    gw = jax.grad(lambda w: fn(jnp.abs(w) ** 2, m))(psi)
    assert bool(jnp.all(jnp.isfinite(gw)))


@pytest.mark.parametrize("name", NAMES)
def test_check_grads_float64(x64, name):
    fn = LOSSES[name][0]
    rng = np.random.default_rng(0)
    m = rng.uniform(0.5, 2.0, (2, 5, 5))
    p = rng.uniform(0.5, 2.0, (2, 5, 5))
    w = np.array([1.0, 0.5])
    check_grads(jax.jit(lambda q: fn(q, m, weights=w)), (p,), order=1, modes=("fwd", "rev"))


def test_poisson_minimum_at_measured_counts():
    m = jnp.array([[[3.0, 7.0, 0.0]]])
    g = jax.grad(lambda p: poisson_loss(p, m))(m)
    np.testing.assert_allclose(np.asarray(g)[..., :2], 0.0, atol=1e-5)


@settings(max_examples=5)
@given(st.floats(0.1, 10.0), st.floats(0.1, 10.0))
def test_vmap_matches_loop(a, b):
    m = jnp.full((3, 4, 4), a, jnp.float32)
    p = jnp.full((3, 4, 4), b, jnp.float32).at[1].multiply(2.0)
    for name in NAMES:
        fn = LOSSES[name][0]
        v = jax.vmap(lambda x, y: fn(x[None], y[None]))(p, m)
        loop = jnp.stack([fn(p[i : i + 1], m[i : i + 1]) for i in range(3)])
        np.testing.assert_allclose(np.asarray(v), np.asarray(loop), rtol=1e-5, atol=1e-6)
        assert np.isclose(float(fn(p, m)), float(jnp.mean(loop)), rtol=1e-5)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ptyro_core.PtyroValueError, match="differs from measured"):
        amplitude_loss(jnp.ones((2, 4, 4)), jnp.ones((2, 4, 5)))
