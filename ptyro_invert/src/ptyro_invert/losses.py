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
"""

from typing import Any

import jax.numpy as jnp
from jax import Array
from jaxtyping import ArrayLike

from ptyro_core import PtyroValueError

__all__ = ["amplitude_loss", "intensity_loss", "poisson_loss", "LOSSES", "reduce_patterns"]

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


def amplitude_loss(
    predicted: ArrayLike, measured: ArrayLike, *, mask: ArrayLike | None = None, weights: ArrayLike | None = None, eps: float = EPS
) -> Array:
    """Least squares on amplitudes √I (see the module docstring for the normalisation)."""
    p, m = _check(predicted, measured)
    d = jnp.sqrt(jnp.maximum(p, 0.0) + eps) - jnp.sqrt(jnp.maximum(m, 0.0) + eps)
    return reduce_patterns(d * d, mask=mask, weights=weights)


def intensity_loss(
    predicted: ArrayLike, measured: ArrayLike, *, mask: ArrayLike | None = None, weights: ArrayLike | None = None
) -> Array:
    """Least squares on intensities."""
    p, m = _check(predicted, measured)
    d = p - m
    return reduce_patterns(d * d, mask=mask, weights=weights)


def poisson_loss(
    predicted: ArrayLike, measured: ArrayLike, *, mask: ArrayLike | None = None, weights: ArrayLike | None = None, eps: float = 0.1
) -> Array:
    """Poisson negative log-likelihood of counts ``measured`` given rates ``predicted``, offset
    to be zero at the perfect prediction (half the Poisson deviance)."""
    p, m = _check(predicted, measured)
    p = jnp.maximum(p, 0.0)
    m = jnp.maximum(m, 0.0)
    nll = p - m + (m + eps) * (jnp.log(m + eps) - jnp.log(p + eps))
    return reduce_patterns(nll, mask=mask, weights=weights)


#: name -> (function, one-line description)
LOSSES = {
    "amplitude": (amplitude_loss, "Least squares on amplitudes √I (Gaussian noise on √I), mean over patterns"),
    "intensity": (intensity_loss, "Least squares on intensities I, mean over patterns"),
    "poisson": (poisson_loss, "Poisson negative log-likelihood (deviance/2) for counted data, mean over patterns"),
}
