"""The noise floor's table lookup (``losses.expected_loss_per_pixel``) indexes its uniform
log-grid directly instead of searching it (``jnp.interp``, which cost half of a Poisson
reconstruction pass on the CPU): the same piecewise-linear interpolation, checked against NumPy's
``np.interp`` on the same table at any rate, and against the exact Poisson expectation."""

import math

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_invert import losses


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1.2e-4, max_value=9.0e2, allow_nan=False), min_size=1, max_size=32), st.sampled_from(["poisson", "amplitude"]))
def test_direct_index_equals_searching_interpolation(lams, name):
    lam = np.asarray(lams, np.float64)
    ours = np.asarray(losses.expected_loss_per_pixel(name, jnp.asarray(lam, jnp.float32)), np.float64)
    ref = np.interp(np.log(lam.astype(np.float32).astype(np.float64)), losses._LOG_LAM, losses._tables()[name])
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=1e-7)


def test_floor_matches_the_exact_expectation_between_nodes():
    # midway between two table nodes, where linear interpolation is least exact
    mid = np.exp(0.5 * (losses._LOG_LAM[100:140] + losses._LOG_LAM[101:141]))
    m = np.arange(0, 400, dtype=np.float64)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(m[1:]))])
    logp = m[None] * np.log(mid[:, None]) - mid[:, None] - logfact[None]
    e = losses._EPS_POISSON
    exact = np.sum(np.exp(logp) * (mid[:, None] - m[None] + (m[None] + e) * (np.log(m[None] + e) - np.log(mid[:, None] + e))), axis=1)
    ours = np.asarray(losses.expected_loss_per_pixel("poisson", jnp.asarray(mid, jnp.float32)), np.float64)
    np.testing.assert_allclose(ours, exact, rtol=5e-3)
    assert math.isclose(float(losses.expected_loss_per_pixel("poisson", jnp.float32(1e5))), 0.5, rel_tol=1e-3)
