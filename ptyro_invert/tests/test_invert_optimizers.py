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

import ptyro_core
from ptyro_core.testing import check_conformance
from ptyro_invert import optimizers as O

# (factory, options, steps): settings under which each optimizer must reach the minimum
CASES = {
    "sgd": (O.sgd, {"learning_rate": 0.1}, 200),
    "sgd_nesterov": (O.sgd, {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}, 200),
    "adam": (O.adam, {"learning_rate": O.cosine_decay(0.1, 400, alpha=0.01)}, 400),
    "rmsprop": (O.rmsprop, {"learning_rate": O.exponential_decay(0.05, 0.98)}, 400),
    "adagrad": (O.adagrad, {"learning_rate": 0.5}, 400),
}


def run(opt, loss, params, steps):
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        upd, s = opt.update(jax.grad(loss)(p), s, p)
        return O.apply_updates(p, upd), s

    for _ in range(steps):
        params, state = step(params, state)
    return params


def test_jax_gradient_convention_is_what_descent_direction_assumes():
    # jax.grad of a real function of z = x + iy returns dL/dx - i dL/dy = conj(dL/dx + i dL/dy)
    z = jnp.asarray(1.0 + 2.0j, jnp.complex64)
    g = jax.grad(lambda z: 3.0 * jnp.real(z) + 5.0 * jnp.imag(z))(z)
    assert np.isclose(complex(g), 3.0 - 5.0j)
    assert np.isclose(complex(jax.grad(lambda z: jnp.abs(z) ** 2)(z)), 2 * (1.0 - 2.0j))
    # descent_direction turns it into the ascent direction in C (real leaves untouched)
    d = O.descent_direction({"z": g, "r": jnp.float32(2.0)})
    assert np.isclose(complex(d["z"]), 3.0 + 5.0j) and float(d["r"]) == 2.0


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad"])
def test_registered_and_conformant(name):
    factory = ptyro_core.get("optimizer", name)
    check_conformance("optimizer", factory, learning_rate=0.1, steps=80)


@pytest.mark.parametrize("case", list(CASES))
def test_complex_quadratic_and_real_leaves(case):
    factory, kw, steps = CASES[case]
    target = {"z": jnp.array([1.0 + 2.0j, -0.5 + 0.25j, 0.3 - 1.2j], jnp.complex64), "r": jnp.array([0.3, -1.0], jnp.float32)}
    w = jnp.array([1.0, 2.0, 0.5])

    def loss(p):
        return jnp.sum(w * jnp.abs(p["z"] - target["z"]) ** 2) + jnp.sum((p["r"] - target["r"]) ** 2)

    p0 = jax.tree_util.tree_map(jnp.zeros_like, target)
    p = run(factory(**kw), loss, p0, steps)
    np.testing.assert_allclose(np.asarray(p["z"]), np.asarray(target["z"]), atol=2e-2)
    np.testing.assert_allclose(np.asarray(p["r"]), np.asarray(target["r"]), atol=2e-2)


def _lsq_problem():
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(12, 4)) + 1j * rng.normal(size=(12, 4))) / 4
    x_true = rng.normal(size=4) + 1j * rng.normal(size=4)
    b = a @ x_true
    return jnp.asarray(a, jnp.complex64), jnp.asarray(b, jnp.complex64), x_true


@pytest.mark.parametrize("case", list(CASES))
def test_complex_least_squares(case):
    factory, kw, steps = CASES[case]
    a, b, x_true = _lsq_problem()
    x_ls = np.linalg.lstsq(np.asarray(a), np.asarray(b), rcond=None)[0]
    np.testing.assert_allclose(x_ls, x_true, atol=1e-4)  # the known minimum
    loss = lambda p: jnp.sum(jnp.abs(a @ p["x"] - b) ** 2)  # noqa: E731
    p = run(factory(**kw), loss, {"x": jnp.zeros(4, jnp.complex64)}, steps * 2)
    np.testing.assert_allclose(np.asarray(p["x"]), x_true, atol=5e-2)


def test_unconjugated_gradient_does_not_converge():
    """Stepping along -grad (jax's raw output) instead of -conj(grad) goes the wrong way in the
    imaginary part: on |z - t|², the imaginary error grows instead of shrinking."""
    t = jnp.asarray(1.0 + 2.0j, jnp.complex64)
    loss = lambda z: jnp.abs(z - t) ** 2  # noqa: E731
    z_right = z_wrong = jnp.asarray(0.0 + 0.0j, jnp.complex64)
    for _ in range(50):
        z_right = z_right - 0.1 * jnp.conj(jax.grad(loss)(z_right))
        z_wrong = z_wrong - 0.1 * jax.grad(loss)(z_wrong)
    assert abs(complex(z_right) - complex(t)) < 1e-3
    assert abs(complex(z_wrong) - complex(t)) > 1.0  # the imaginary part runs away
    # and the library's sgd agrees with the right one
    p = run(O.sgd(0.1), lambda p: loss(p["z"]), {"z": jnp.asarray(0j, jnp.complex64)}, 50)
    assert abs(complex(p["z"]) - complex(t)) < 1e-3


def test_per_group_learning_rates():
    target = {"object": jnp.asarray([1.0 + 1.0j], jnp.complex64), "probe": jnp.asarray([2.0 - 1.0j], jnp.complex64), "positions": jnp.asarray([0.5])}
    loss = lambda p: sum(jnp.sum(jnp.abs(p[k] - target[k]) ** 2) for k in p)  # noqa: E731
    p0 = jax.tree_util.tree_map(jnp.zeros_like, target)
    p = run(O.sgd({"object": 0.1, "probe": 0.0, "default": 0.1}), loss, p0, 100)
    assert abs(complex(p["object"][0]) - (1 + 1j)) < 1e-3
    assert complex(p["probe"][0]) == 0j  # frozen by a zero learning rate
    assert abs(float(p["positions"][0]) - 0.5) < 1e-3  # from "default"
    with pytest.raises(ptyro_core.PtyroValueError, match="no entry for parameter group 'probe'"):
        q = {"object": p0["object"], "probe": p0["probe"]}
        O.sgd({"object": 0.1}).update(q, O.sgd({"object": 0.1}).init(q), q)


def test_schedules():
    c = O.cosine_decay(1.0, 10, alpha=0.1)
    assert np.isclose(float(c(0)), 1.0) and np.isclose(float(c(5)), 0.55) and np.isclose(float(c(10)), 0.1) and np.isclose(float(c(20)), 0.1)
    e = O.exponential_decay(2.0, 0.5, 4)
    assert np.isclose(float(e(8)), 0.5) and np.isclose(float(e(2)), 2.0 * 0.5**0.5)
    assert np.isclose(float(O.exponential_decay(2.0, 0.5, 4, staircase=True)(7)), 1.0)
    s = O.step_decay(1.0, 3, 0.1)
    assert [round(float(s(i)), 6) for i in (0, 2, 3, 6)] == [1.0, 1.0, 0.1, 0.01]
    d = O.delayed(0.3, 5)
    assert float(d(4)) == 0.0 and np.isclose(float(d(5)), 0.3)
    assert np.isclose(float(O.constant(0.2)(100)), 0.2)
    with pytest.raises(ptyro_core.PtyroValueError):
        O.exponential_decay(1.0, 1.5)


def test_adam_second_moment_is_abs_squared():
    opt = O.adam(1.0, b1=0.0, b2=0.0, eps=0.0)
    g = {"z": jnp.asarray([3.0 - 4.0j], jnp.complex64)}
    upd, st = opt.update(g, opt.init(g), g)
    assert np.isclose(float(st.nu["z"][0]), 25.0) and st.nu["z"].dtype == jnp.float32
    # unit step along -conj(g) / |g|
    assert np.isclose(complex(upd["z"][0]), -(3.0 + 4.0j) / 5.0)


def test_optimizer_in_float64():
    with jax.enable_x64(True):
        opt = O.adam(0.1)
        p = {"z": jnp.zeros(2, jnp.complex128), "r": jnp.zeros(2, jnp.float64)}
        upd, st = opt.update(p, opt.init(p), p)
        assert upd["z"].dtype == jnp.complex128 and st.nu["z"].dtype == jnp.float64


def test_adam_relative_epsilon_damps_tiny_gradients():
    # plain Adam moves an entry with a 1e-9 gradient as far as one with a gradient of 1 (both by
    # about the learning rate); with eps_rel the tiny one moves ~1e-6 of that, the large one as before
    params = {"x": jnp.zeros(2, jnp.complex64)}
    grads = {"x": jnp.asarray([1.0 + 0j, 1e-9 + 0j], jnp.complex64)}
    plain, _ = O.adam(0.1).update(grads, O.adam(0.1).init(params), params)
    damped, _ = O.adam(0.1, eps_rel=1e-3).update(grads, O.adam(0.1, eps_rel=1e-3).init(params), params)
    p, d = np.abs(np.asarray(plain["x"])), np.abs(np.asarray(damped["x"]))
    assert p[1] > 0.05 * p[0]  # round-off-sized gradients take visible steps without it
    assert d[1] < 1e-5 * d[0]
    np.testing.assert_allclose(d[0], p[0], rtol=2e-3)
    with pytest.raises(ptyro_core.PtyroValueError, match="eps_rel"):
        O.adam(0.1, eps_rel=-1.0)
