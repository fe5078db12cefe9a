"""Loss functions on diffraction intensities (kind ``loss``).

Every loss has the signature ``loss(predicted, measured, *, mask=None, weights=None) -> scalar``
on intensities of shape (b, qx, qy) (or (qx, qy) for one pattern), in the same units.

Normalisation: the per-pattern loss is a *sum* over detector pixels (times ``mask``, a (qx, qy)
array of 0/1 or soft weights), and the result is the *weighted mean over patterns*,
``Σ_b w_b ℓ_b / Σ_b w_b`` (``weights`` (b,) default 1). Entries with zero weight (the padding of
a short batch) contribute nothing. All three are zero for a perfect prediction.

- ``amplitude``: ``ℓ = Σ (√(I_p + ε) − √(I_m + ε))²``, robust least squares on amplitudes
  (the Gaussian-noise model on √I; the usual choice for ptychography).
- ``intensity``: ``ℓ = Σ (I_p − I_m)²``.
- ``poisson``: the Poisson deviance / 2 with both sides shifted by ε,
  ``ℓ = Σ I_p − I_m + (I_m + ε) log((I_m + ε) / (I_p + ε))``, the negative log-likelihood of
  counts ``I_m`` minus its value at the perfect prediction (minimum exactly at ``I_p = I_m``);
  use it on counted data (electrons per pixel).

``ε`` (in the units of the intensities) keeps √ and log away from zero, so gradients stay
finite where the prediction vanishes: 1e-12 for ``amplitude``; 0.1 for ``poisson``, a tenth of
a count (a small background), which also keeps the pull of dark-field counts on a near-zero
prediction (∝ m / (p + ε)) bounded, so that a reconstruction started from a blank object
converges (with ε → 0 it does not).

Choosing a loss from the data (``loss = "auto"``, :func:`choose_loss`): counted data (non-negative
integers, or integer multiples of one quantum, e.g. counts divided by a dose or two ADU per
electron, with the gain to counts found) get ``poisson``, the likelihood of counts; anything else (noise-free simulations, float data) gets ``amplitude``.

Noise floor (:func:`noise_floor`): the value each loss is expected to reach on Poisson counts
when the model is exactly right, ``Σ_pixels E_{m ~ Poisson(λ)}[ℓ(λ, m)]`` at the predicted
counts λ: about ½ per bright pixel for ``poisson`` (half the deviance; Wilks), ¼ for
``amplitude`` (√ is variance-stabilising), λ for ``intensity``. A loss at its floor has fitted the
data down to the shot noise; the ratio loss / floor is the convergence measure needed no ground
truth. The expectations are tabulated once (exact sums over the Poisson distribution on a log
grid of λ, asymptotic series above 10³) and interpolated onto a fine table, which each pixel reads
at its rate's bin, found from the rate's float32 bits (no logarithm per pixel).
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jaxtyping import ArrayLike

from ptyro_core import PtyroValueError
from ptyro_invert import plugin as _plugin

__all__ = ["amplitude_loss", "intensity_loss", "poisson_loss", "LOSSES", "reduce_patterns", "choose_loss", "noise_floor", "expected_loss_per_pixel"]

EPS = 1e-12


def _check(predicted: Any, measured: Any) -> tuple[Array, Array]:
    p = jnp.asarray(predicted)
    m = jnp.asarray(measured)
    if p.shape != m.shape:
        raise PtyroValueError(f"loss: predicted shape {p.shape} differs from measured shape {m.shape}; expected equal (b, qx, qy)")
    if p.ndim < 2:
        raise PtyroValueError(f"loss: expected intensities (b, qx, qy) or (qx, qy), got shape {p.shape}")
    return p, m


def reduce_patterns(per_pixel: Array, *, mask: ArrayLike | None = None, weights: ArrayLike | None = None) -> Array:
    """Sum ``per_pixel`` (b, qx, qy) over the detector (times ``mask``), then take the weighted
    mean over patterns; a single pattern (qx, qy) is treated as a batch of one."""
    x = per_pixel if per_pixel.ndim == 3 else per_pixel.reshape((-1,) + per_pixel.shape[-2:])
    if mask is not None:
        x = x * jnp.asarray(mask, x.dtype)[None]
    per_pattern = jnp.sum(x, axis=(-2, -1))
    if weights is None:
        return jnp.mean(per_pattern)
    w = jnp.asarray(weights, per_pattern.dtype).reshape(per_pattern.shape)
    return jnp.sum(w * per_pattern) / jnp.maximum(jnp.sum(w), jnp.finfo(per_pattern.dtype).tiny)


def amplitude_loss(predicted: ArrayLike, measured: ArrayLike, *, mask: ArrayLike | None = None, weights: ArrayLike | None = None, eps: float = EPS) -> Array:
    """Least squares on amplitudes √I (see the module docstring for the normalisation)."""
    p, m = _check(predicted, measured)
    d = jnp.sqrt(jnp.maximum(p, 0.0) + eps) - jnp.sqrt(jnp.maximum(m, 0.0) + eps)
    return reduce_patterns(d * d, mask=mask, weights=weights)


def intensity_loss(predicted: ArrayLike, measured: ArrayLike, *, mask: ArrayLike | None = None, weights: ArrayLike | None = None) -> Array:
    """Least squares on intensities."""
    p, m = _check(predicted, measured)
    d = p - m
    return reduce_patterns(d * d, mask=mask, weights=weights)


def poisson_loss(predicted: ArrayLike, measured: ArrayLike, *, mask: ArrayLike | None = None, weights: ArrayLike | None = None, eps: float = 0.1) -> Array:
    """Poisson negative log-likelihood of counts ``measured`` given rates ``predicted``, offset
    to be zero at the perfect prediction (half the Poisson deviance)."""
    p, m = _check(predicted, measured)
    p = jnp.maximum(p, 0.0)
    m = jnp.maximum(m, 0.0)
    nll = p - m + (m + eps) * (jnp.log(m + eps) - jnp.log(p + eps))
    return reduce_patterns(nll, mask=mask, weights=weights)


#: name -> (function, one-line description): the losses ``ptyro_invert.plugin`` registers (its
#: table holds the names and descriptions)
LOSSES = {name: (globals()[ref.partition(":")[2]], description) for name, (ref, description) in _plugin.LOSSES.items()}


# --------------------------------------------------------------------------- the loss the data choose


def _count_quantum(c: np.ndarray, min_values: int = 32) -> int:
    """The greatest common divisor of the nonzero whole numbers ``c`` (the detector's units per
    count: 2 for two ADU per electron), or 1 when fewer than ``min_values`` values are nonzero
    (too few to tell a quantum from chance: k values all even by chance has probability 2⁻ᵏ)."""
    n = np.round(c[c > 0]).astype(np.int64)
    return int(np.gcd.reduce(n)) if n.size >= min_values else 1


def choose_loss(sample: Any, *, tol: float = 1e-3) -> tuple[str, float, str]:
    """``(loss name, gain, reason)`` for data of which ``sample`` is a representative part (a few
    patterns). Counts -> ``("poisson", gain, ...)`` where ``sample · gain`` are the counts (1 for
    integers; ``1 / quantum`` for integer multiples of a quantum, e.g. counts / dose, or whole
    numbers that are all multiples of an integer q > 1, e.g. two ADU per electron, as the greatest
    common divisor of the nonzero values finds); anything else -> ``("amplitude", 1.0, ...)``."""
    x = np.asarray(sample, np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0 or np.min(x) < 0 or np.max(x) <= 0:
        return "amplitude", 1.0, "the data are not non-negative intensities"
    pos = x[x > 0]
    for gain, what in ((1.0, "integers"), (1.0 / float(np.min(pos)), f"integer multiples of {float(np.min(pos)):.4g}")):
        c = x * gain
        # float32 storage of a count c / dose is exact to ~1e-7 relative: allow that much
        if np.max(c) < 2**24 and np.min(c[c > 0]) >= 0.5 and np.all(np.abs(c - np.round(c)) <= np.maximum(tol, 4e-7 * c)):
            q = _count_quantum(c)
            if q > 1:  # e.g. two ADU per electron: integers, but not counts until divided by q
                gain, what = gain / q, f"{what}, all multiples of {q}: {q} units per count, gain 1/{q}"
            return "poisson", gain, f"the data are counts ({what})"
    return "amplitude", 1.0, "the data are not counts (non-integer values): noise-free or already processed"


# --------------------------------------------------------------------------- noise floors


def _poisson_table(fn: Any, lam: np.ndarray, mmax: int = 4000, rows: int = 16) -> np.ndarray:
    # ``rows`` rates at a time: the whole (240, 4001) float64 table's temporaries would take
    # 40 MiB at import, which glibc keeps (7 MiB of every run's memory); each row's sum is the same
    m = np.arange(mmax + 1, dtype=np.float64)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(m[1:]))])
    out = np.empty(lam.shape[0])
    for i in range(0, lam.shape[0], rows):
        lam_ = lam[i : i + rows, None]
        logp = m[None] * np.log(lam_) - lam_ - logfact[None]
        out[i : i + rows] = np.sum(np.exp(logp) * fn(lam_, m[None]), axis=1)
    return out


_LOG_LAM = np.linspace(math.log(1e-4), math.log(1e3), 240)
_EPS_POISSON = 0.1


@functools.cache
def _tables() -> dict[str, np.ndarray]:
    """The expected losses on the log-λ grid, made when a noise floor is first asked for (not at
    import: a run on float data never asks, and they took 0.04-0.1 s of every import)."""
    lam = np.exp(_LOG_LAM)
    e = _EPS_POISSON
    pois = _poisson_table(lambda l, m: l - m + (m + e) * (np.log(m + e) - np.log(l + e)), lam)
    amp = _poisson_table(lambda l, m: (np.sqrt(l + EPS) - np.sqrt(m + EPS)) ** 2, lam)
    return {"poisson": pois, "amplitude": amp}


#: the fine table's bins: the noise floor reads a rate's bin from its float32 bits (exponent and
#: the mantissa's top bits), which rise with λ ≥ 0 and are uniform in its piecewise-linear log2:
#: 2**(23 - _NODE_SHIFT) = 512 bins per octave (a bin at most 0.2 % of λ wide), no logarithm
_NODE_SHIFT = 14
_LAM_MIN, _LAM_MAX = math.exp(_LOG_LAM[0]), math.exp(_LOG_LAM[-1])
_BITS_MIN = int(np.float32(_LAM_MIN).view(np.int32))
_FINE_NODES = ((int(np.float32(_LAM_MAX).view(np.int32)) - _BITS_MIN) >> _NODE_SHIFT) + 1


def _fine_nodes() -> np.ndarray:
    """The rates λ (float64) at the centres of the fine table's bins, in bits."""
    bits = _BITS_MIN + (np.arange(_FINE_NODES, dtype=np.int64) << _NODE_SHIFT) + (1 << (_NODE_SHIFT - 1))
    return bits.astype(np.int32).view(np.float32).astype(np.float64)


@functools.cache
def _fine_tables() -> dict[str, np.ndarray]:
    """The expected losses at the fine table's nodes (:func:`_fine_nodes`), by cubic
    (Catmull-Rom) interpolation of their logarithms between the exact nodes of :func:`_tables`
    (uniform in log λ): read at a rate's bin, one float32 gather per pixel."""
    x = np.clip(np.log(_fine_nodes()), _LOG_LAM[0], _LOG_LAM[-1])
    u = (x - _LOG_LAM[0]) / (_LOG_LAM[1] - _LOG_LAM[0])
    i = np.clip(np.floor(u).astype(np.int64), 0, _LOG_LAM.size - 2)
    t = u - i
    out = {}
    for name, v in _tables().items():
        y = np.log(v)
        y = np.concatenate([[2 * y[0] - y[1]], y, [2 * y[-1] - y[-2]]])  # linear beyond the ends
        p0, p1, p2, p3 = y[i], y[i + 1], y[i + 2], y[i + 3]
        c = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        out[name] = np.exp(c)
    return out


def expected_loss_per_pixel(name: str, lam: ArrayLike) -> Array:
    """``E_{m ~ Poisson(λ)}[ℓ(λ, m)]`` per pixel for the registered loss ``name`` at rates λ
    (counts); differentiable nowhere needed, used with ``stop_gradient``. Within the table's
    range (1e-4 to 1e3 counts) the value at the centre of the rate's bin (512 bins per octave:
    within 0.1 % of the exact value, unbiased on average over pixels), the bin read from the
    rate's float32 bits: one gather per pixel and no logarithm (the logarithm was a third of
    the floor's cost on the CPU; ``jnp.interp``'s search cost as much as the rest of a
    reconstruction step)."""
    lam = jnp.maximum(jnp.asarray(lam), 0.0)
    if name == "intensity":
        return lam
    if name not in _tables():
        raise PtyroValueError(f"noise floor: no expectation known for loss {name!r}; expected 'poisson', 'amplitude' or 'intensity'")
    table = jnp.asarray(_fine_tables()[name], lam.dtype)
    # a non-negative float's bits rise with it: the bin is their offset from the table's start,
    # shifted (below the table the offset is negative, clipped to bin 0, and ``low`` is taken)
    bits = jax.lax.bitcast_convert_type(lam.astype(jnp.float32), jnp.int32)
    small = table[jnp.clip((bits - _BITS_MIN) >> _NODE_SHIFT, 0, _FINE_NODES - 1)]
    # below the table: linear in λ (one count with probability ≈ λ); above: the asymptotic series
    low = float(_tables()[name][0]) * lam / _LAM_MIN
    big = 0.5 + 1.0 / (12.0 * jnp.maximum(lam, 1.0)) if name == "poisson" else 0.25 - 1.0 / (32.0 * jnp.maximum(lam, 1.0))
    return jnp.where(lam < _LAM_MIN, low, jnp.where(lam > _LAM_MAX, big, small))


def noise_floor(name: str, predicted: ArrayLike, *, mask: ArrayLike | None = None, weights: ArrayLike | None = None) -> Array:
    """The value loss ``name`` is expected to take on Poisson counts drawn from ``predicted``
    (counts, (b, qx, qy)), normalised like the loss (sum over pixels, weighted mean over patterns)."""
    p = jax.lax.stop_gradient(jnp.asarray(predicted))
    return reduce_patterns(expected_loss_per_pixel(name, p), mask=mask, weights=weights)


#: the registered loss functions whose noise floor is known, by function
FLOOR_NAMES = {poisson_loss: "poisson", amplitude_loss: "amplitude", intensity_loss: "intensity"}
