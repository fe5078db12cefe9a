"""The conformance check of ptyro_core.testing accepts good components and catches bad ones."""

import jax.numpy as jnp
import pytest

from ptyro_core import Optimizer
from ptyro_core.testing import check_conformance


def mse(predicted, measured, *, mask=None, weights=None):
    return jnp.mean((predicted - measured) ** 2)


def constant_loss(predicted, measured, *, mask=None, weights=None):
    return jnp.float32(1.0)


def per_pattern_loss(predicted, measured, *, mask=None, weights=None):
    return jnp.mean((predicted - measured) ** 2, axis=(-2, -1))


def sgd(learning_rate=0.1):
    def init(params):
        return ()

    def update(grads, state, params):
        import jax

        return jax.tree_util.tree_map(lambda g: -learning_rate * jnp.conj(g), grads), state

    return Optimizer(init, update)


def wrong_sign_sgd(learning_rate=0.1):
    def init(params):
        return ()

    def update(grads, state, params):
        import jax

        return jax.tree_util.tree_map(lambda g: learning_rate * jnp.conj(g), grads), state

    return Optimizer(init, update)


def test_good_loss_and_optimizer_pass() -> None:
    check_conformance("loss", mse)
    check_conformance("optimizer", sgd)


@pytest.mark.parametrize(
    ("kind", "component", "match"),
    [
        ("loss", constant_loss, "gradient is not finite or vanishes"),
        ("loss", per_pattern_loss, "expected a scalar"),
        ("optimizer", wrong_sign_sgd, "optimizer: loss went from"),
        ("loss", 3, "must be callable"),
    ],
)
def test_bad_components_fail(kind, component, match) -> None:
    with pytest.raises((AssertionError, TypeError), match=match):
        check_conformance(kind, component)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        check_conformance("detector", mse)
