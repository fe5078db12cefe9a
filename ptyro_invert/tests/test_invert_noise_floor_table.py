"""The noise floor per pixel (``losses.expected_loss_per_pixel``) reads the value at the centre of
a rate's bin in a fine table, the bin taken from the rate's float32 bits (512 bins per octave; one
gather per pixel and no logarithm: ``jnp.interp``'s search cost half of a Poisson reconstruction
pass on the CPU, linear interpolation's two gathers 3-4x one): checked against the exact Poisson
expectation summed at the rates themselves, at any rate in the table's range (within 0.1 %,
unbiased on average), and the fine table's nodes against it too."""

import math

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_invert import losses

E = losses._EPS_POISSON
EXACT = {
    "poisson": lambda l, m: l - m + (m + E) * (np.log(m + E) - np.log(l + E)),
    "amplitude": lambda l, m: (np.sqrt(l + losses.EPS) - np.sqrt(m + losses.EPS)) ** 2,
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1.2e-4, max_value=9.0e2, allow_nan=False), min_size=1, max_size=32), st.sampled_from(["poisson", "amplitude"]))
def test_the_floor_is_the_exact_expectation_at_any_rate(lams, name):
    lam = np.asarray(lams, np.float32).astype(np.float64)
    ours = np.asarray(losses.expected_loss_per_pixel(name, jnp.asarray(lam, jnp.float32)), np.float64)
    np.testing.assert_allclose(ours, losses._poisson_table(EXACT[name], lam), rtol=1.1e-3)


def test_the_nearest_node_is_unbiased_and_the_nodes_exact():
    lam = np.exp(np.random.default_rng(0).uniform(math.log(1.1e-4), math.log(9e2), 2000)).astype(np.float32).astype(np.float64)
    for name, fn in EXACT.items():
        ours = np.asarray(losses.expected_loss_per_pixel(name, jnp.asarray(lam, jnp.float32)), np.float64)
        rel = ours / losses._poisson_table(fn, lam) - 1
        assert abs(np.mean(rel)) < 1e-4 < np.max(np.abs(rel)) < 1.1e-3, name  # rounding to the node: errors of both signs
        nodes = losses._fine_nodes()
        inside = np.flatnonzero(nodes <= losses._LAM_MAX)[::61]
        np.testing.assert_allclose(losses._fine_tables()[name][inside], losses._poisson_table(fn, nodes[inside]), rtol=2e-5)


def test_the_bin_is_read_from_the_bits():
    # every rate falls in the bin whose centre is nearest in bits: at most half a bin from it,
    # and the bins' edges are where the float's bits cross a multiple of 2**_NODE_SHIFT
    nodes = losses._fine_nodes()
    lam = np.exp(np.random.default_rng(1).uniform(math.log(1.01e-4), math.log(9.9e2), 5000)).astype(np.float32)
    j = (lam.view(np.int32).astype(np.int64) - losses._BITS_MIN) >> losses._NODE_SHIFT
    assert np.all(np.abs(np.log(lam / nodes[j])) <= 2.0 ** -(23 - losses._NODE_SHIFT))
    ours = np.asarray(losses.expected_loss_per_pixel("poisson", jnp.asarray(lam)))
    np.testing.assert_array_equal(ours, losses._fine_tables()["poisson"].astype(np.float32)[j])


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
