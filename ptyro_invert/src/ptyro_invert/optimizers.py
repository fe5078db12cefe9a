"""Complex-aware (Wirtinger) optimizers as pure ``(init, update)`` pairs, and learning-rate
schedules (kind ``optimizer``).

The Wirtinger convention lives in one function, :func:`descent_direction`. For a real loss L of a
complex variable z = x + iy, ``jax.grad`` returns ``conj(∂L/∂x + i ∂L/∂y) = ∂L/∂x − i ∂L/∂y``
(checked by a test: ``grad(|z|²)(z) = 2·conj(z)``). The direction of steepest ascent in the
complex plane is ``∂L/∂x + i ∂L/∂y = conj(grad)``, so descent is ``z ← z − η·conj(grad)``.
:func:`descent_direction` conjugates complex leaves and leaves real leaves alone; every optimizer
below works on its output only. Second moments (adam, rmsprop, adagrad) use ``|g|²``.

Updates are *added*: ``params = apply_updates(params, updates)`` (= ``params + updates``).

Learning rates: a number, a schedule (a function of the step count, see :func:`constant`,
:func:`exponential_decay`, :func:`cosine_decay`, :func:`step_decay`, :func:`delayed`), or a
mapping from group name to either, where the groups are the top-level fields of the params
PyTree (dict keys or attribute names, e.g. ``{"object": 1e-2, "probe": 1e-3}``); a ``"default"``
entry covers groups not named, otherwise a missing group is an error.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ptyro_core import Optimizer, PtyroTypeError, PtyroValueError
from ptyro_invert import plugin as _plugin

__all__ = [
    "descent_direction",
    "apply_updates",
    "constant",
    "exponential_decay",
    "cosine_decay",
    "step_decay",
    "delayed",
    "sgd",
    "adam",
    "rmsprop",
    "adagrad",
    "OPTIMIZERS",
]

Schedule = Callable[[Any], Array]


# --------------------------------------------------------------------------- the convention


def descent_direction(grads: Any) -> Any:
    """The ascent direction in ℂ ≅ ℝ² from what ``jax.grad`` returns: ``conj(g)`` for complex
    leaves, ``g`` for real ones. Optimizers step along minus this. The only place where the
    Wirtinger convention is applied."""
    return jax.tree_util.tree_map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, grads)


def apply_updates(params: Any, updates: Any) -> Any:
    """``params + updates`` leaf by leaf (keeping each leaf's dtype)."""
    return jax.tree_util.tree_map(lambda p, u: (p + u).astype(jnp.result_type(p)), params, updates)


def _abs2(g: Array) -> Array:
    return jnp.real(g) ** 2 + jnp.imag(g) ** 2 if jnp.iscomplexobj(g) else g * g


# --------------------------------------------------------------------------- schedules


def _f(x: Any) -> Array:
    return jnp.asarray(x, jnp.float32)


def constant(value: float) -> Schedule:
    """A constant learning rate."""
    _check_lr(value)
    return lambda count: _f(value)


def exponential_decay(init_value: float, decay_rate: float, transition_steps: int = 1, *, staircase: bool = False) -> Schedule:
    """``init_value · decay_rate^(count / transition_steps)`` (floored exponent if ``staircase``)."""
    _check_lr(init_value)
    if not 0 < decay_rate <= 1:
        raise PtyroValueError(f"exponential_decay: decay_rate must be in (0, 1], got {decay_rate!r}")
    if transition_steps < 1:
        raise PtyroValueError(f"exponential_decay: transition_steps must be >= 1, got {transition_steps!r}")

    def schedule(count: Any) -> Array:
        e = _f(count) / transition_steps
        if staircase:
            e = jnp.floor(e)
        return _f(init_value) * _f(decay_rate) ** e

    return schedule


def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """Cosine from ``init_value`` down to ``alpha · init_value`` over ``decay_steps``, then flat."""
    _check_lr(init_value)
    if decay_steps < 1:
        raise PtyroValueError(f"cosine_decay: decay_steps must be >= 1, got {decay_steps!r}")

    def schedule(count: Any) -> Array:
        t = jnp.minimum(_f(count), decay_steps) / decay_steps
        return _f(init_value) * ((1 - alpha) * 0.5 * (1 + jnp.cos(math.pi * t)) + alpha)

    return schedule


def step_decay(init_value: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``init_value · gamma^⌊count / step_size⌋`` (piecewise constant)."""
    _check_lr(init_value)
    if step_size < 1:
        raise PtyroValueError(f"step_decay: step_size must be >= 1, got {step_size!r}")
    return lambda count: _f(init_value) * _f(gamma) ** jnp.floor(_f(count) / step_size)


def delayed(schedule: Any, start: int) -> Schedule:
    """Zero before step ``start``, then ``schedule(count)`` (e.g. start the probe update late)."""
    s = _as_schedule(schedule)
    return lambda count: jnp.where(jnp.asarray(count) >= start, s(count), _f(0.0))


def _check_lr(v: Any) -> None:
    if isinstance(v, (int, float)) and not (math.isfinite(v) and v >= 0):
        raise PtyroValueError(f"learning_rate: expected a finite number >= 0, got {v!r}")


def _as_schedule(lr: Any) -> Schedule:
    if callable(lr):
        return lr
    if isinstance(lr, (int, float)) or (hasattr(lr, "shape") and jnp.ndim(lr) == 0):
        _check_lr(lr)
        return lambda count: jnp.asarray(lr, jnp.float32)
    raise PtyroTypeError(f"learning_rate: expected a number, a schedule or a mapping of them, got {type(lr).__name__} {lr!r:.60}")


def _group(path: tuple) -> Any:
    if not path:
        return None
    k = path[0]
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return str(k)


def _leaf_schedules(learning_rate: Any, params: Any) -> list[Schedule]:
    """One schedule per leaf of ``params`` (flattening order)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not isinstance(learning_rate, Mapping):
        s = _as_schedule(learning_rate)
        return [s] * len(leaves)
    table = {k: _as_schedule(v) for k, v in learning_rate.items()}
    out = []
    for path, _ in leaves:
        g = _group(path)
        if g in table:
            out.append(table[g])
        elif "default" in table:
            out.append(table["default"])
        else:
            raise PtyroValueError(f"learning_rate: no entry for parameter group {g!r}; expected keys among {sorted(map(str, table))} or a 'default'")
    return out


def _validate(learning_rate: Any) -> None:
    if isinstance(learning_rate, Mapping):
        for v in learning_rate.values():
            _as_schedule(v)
    else:
        _as_schedule(learning_rate)


# --------------------------------------------------------------------------- optimizers


class SGDState(NamedTuple):
    count: Array  # type: ignore[assignment]  # optax's name for the step count (shadows tuple.count)
    momentum: Any


class AdamState(NamedTuple):
    count: Array  # type: ignore[assignment]
    mu: Any
    nu: Any


class RMSPropState(NamedTuple):
    count: Array  # type: ignore[assignment]
    nu: Any
    momentum: Any


class AdagradState(NamedTuple):
    count: Array  # type: ignore[assignment]
    sum_sq: Any


def _real_like(p: Array) -> Array:
    return jnp.zeros(p.shape, jnp.real(jnp.zeros((), p.dtype)).dtype)


def _zeros(params: Any) -> Any:
    return jax.tree_util.tree_map(jnp.zeros_like, params)


def _map(fn: Callable[..., Any], *trees: Any) -> list:
    flat = [jax.tree_util.tree_leaves(t) for t in trees]
    return [fn(*xs) for xs in zip(*flat)]


def _unflatten(like: Any, leaves: list) -> Any:
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)


def _lrs(learning_rate: Any, params: Any, count: Array) -> list[Array]:
    return [s(count) for s in _leaf_schedules(learning_rate, params)]


def _scale(lr: Array, x: Array) -> Array:
    return (-lr * x).astype(x.dtype)


def sgd(learning_rate: Any = 1e-2, *, momentum: float = 0.0, nesterov: bool = False) -> Optimizer:
    """Gradient descent with optional (Nesterov) momentum: ``b ← μ b + g``;
    step ``−η (g + μ b)`` (Nesterov) or ``−η b``, with ``g`` the descent direction."""
    _validate(learning_rate)
    if not 0 <= momentum < 1:
        raise PtyroValueError(f"sgd: momentum must be in [0, 1), got {momentum!r}")

    def init(params: Any) -> SGDState:
        return SGDState(jnp.zeros((), jnp.int32), _zeros(params))

    def update(grads: Any, state: SGDState, params: Any = None) -> tuple[Any, SGDState]:
        g = descent_direction(grads)
        lrs = _lrs(learning_rate, g, state.count)
        buf = _map(lambda b, x: momentum * b + x, state.momentum, g)
        step = _map(lambda b, x: x + momentum * b if nesterov else b, _unflatten(g, buf), g)
        upd = [_scale(lr, s) for lr, s in zip(lrs, step)]
        return _unflatten(g, upd), SGDState(state.count + 1, _unflatten(g, buf))

    return Optimizer(init, update)


def adam(learning_rate: Any = 1e-2, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_rel: float = 0.0) -> Optimizer:
    """Adam with complex first moments and real second moments ``|g|²``.

    ``eps_rel`` adds ``eps_rel · max(√v̂)`` (the largest gradient scale of that parameter array) to
    the denominator: entries whose gradients are that much smaller than the array's largest, such
    as object pixels the probe barely reaches, take proportionally small steps instead of steps
    the size of the learning rate (which would turn round-off into visible changes)."""
    _validate(learning_rate)
    if not (eps_rel >= 0.0):
        raise PtyroValueError(f"adam: eps_rel must be >= 0, got {eps_rel!r}")

    def init(params: Any) -> AdamState:
        nu = jax.tree_util.tree_map(_real_like, params)
        return AdamState(jnp.zeros((), jnp.int32), _zeros(params), nu)

    def update(grads: Any, state: AdamState, params: Any = None) -> tuple[Any, AdamState]:
        g = descent_direction(grads)
        count = state.count + 1
        lrs = _lrs(learning_rate, g, state.count)
        mu = _map(lambda m, x: b1 * m + (1 - b1) * x, state.mu, g)
        nu = _map(lambda v, x: b2 * v + (1 - b2) * _abs2(x), state.nu, g)
        c1 = 1 - b1 ** count.astype(jnp.float32)
        c2 = 1 - b2 ** count.astype(jnp.float32)
        upd = []
        for lr, m, v in zip(lrs, mu, nu):
            scale = jnp.sqrt(v / c2)
            floor = eps + eps_rel * jnp.max(scale) if eps_rel else eps
            upd.append(_scale(lr, (m / c1) / (scale + floor)))
        return _unflatten(g, upd), AdamState(count, _unflatten(g, mu), _unflatten(g, nu))

    return Optimizer(init, update)


def rmsprop(learning_rate: Any = 1e-2, *, decay: float = 0.9, eps: float = 1e-8, momentum: float = 0.0) -> Optimizer:
    """RMSProp: ``v ← ρ v + (1 − ρ)|g|²``, step ``−η g / (√v + ε)`` (optionally with momentum)."""
    _validate(learning_rate)

    def init(params: Any) -> RMSPropState:
        return RMSPropState(jnp.zeros((), jnp.int32), jax.tree_util.tree_map(_real_like, params), _zeros(params))

    def update(grads: Any, state: RMSPropState, params: Any = None) -> tuple[Any, RMSPropState]:
        g = descent_direction(grads)
        lrs = _lrs(learning_rate, g, state.count)
        nu = _map(lambda v, x: decay * v + (1 - decay) * _abs2(x), state.nu, g)
        step = [x / (jnp.sqrt(v) + eps) for x, v in zip(jax.tree_util.tree_leaves(g), nu)]
        buf = [momentum * b + s for b, s in zip(jax.tree_util.tree_leaves(state.momentum), step)]
        upd = [_scale(lr, b) for lr, b in zip(lrs, buf)]
        return _unflatten(g, upd), RMSPropState(state.count + 1, _unflatten(g, nu), _unflatten(g, buf))

    return Optimizer(init, update)


def adagrad(learning_rate: Any = 1e-1, *, initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> Optimizer:
    """Adagrad: ``s ← s + |g|²``, step ``−η g / (√s + ε)``."""
    _validate(learning_rate)

    def init(params: Any) -> AdagradState:
        acc = jax.tree_util.tree_map(lambda p: _real_like(p) + initial_accumulator_value, params)
        return AdagradState(jnp.zeros((), jnp.int32), acc)

    def update(grads: Any, state: AdagradState, params: Any = None) -> tuple[Any, AdagradState]:
        g = descent_direction(grads)
        lrs = _lrs(learning_rate, g, state.count)
        acc = _map(lambda s, x: s + _abs2(x), state.sum_sq, g)
        upd = [_scale(lr, x / (jnp.sqrt(s) + eps)) for lr, x, s in zip(lrs, jax.tree_util.tree_leaves(g), acc)]
        return _unflatten(g, upd), AdagradState(state.count + 1, _unflatten(g, acc))

    return Optimizer(init, update)


#: name -> (factory, one-line description): the optimizers ``ptyro_invert.plugin`` registers (its
#: table holds the names and descriptions)
OPTIMIZERS = {name: (globals()[ref.partition(":")[2]], description) for name, (ref, description) in _plugin.OPTIMIZERS.items()}
