"""Robust losses on diffraction intensities (b, qx, qy).

Both follow the ptyrodactyl loss protocol ``loss(predicted, measured, *, mask=None,
weights=None) -> scalar``: ``mask`` (1 = use the pixel, 0 = ignore it; shape (qx, qy) or
(b, qx, qy)) and ``weights`` (per pattern (b,), per pixel (qx, qy) or (b, qx, qy)) combine into
per-pixel weights w, and the loss is the weighted mean Σ w ℓ / Σ w of a per-pixel term ℓ.

- :func:`huber`: Huber's ρ_δ on amplitude residuals r = √I_pred − √I_meas (the square root
  stabilises the Poisson variance, so one δ suits bright and dark pixels), or on intensity
  residuals with ``domain="intensity"``. Quadratic for |r| ≤ δ, linear beyond: a hot pixel or a
  beam-stop edge pulls the fit with bounded force (Huber, Ann. Math. Stat. 35, 1964, 73-101).
- :func:`gaussian_poisson`: shot noise plus detector read noise, m = Poisson(d·p) + N(0, σ²)
  with d the dose (counts per unit intensity), in the shifted-Poisson approximation
  m + σ² ~ Poisson(d·p + σ²) (Chouzenoux et al., SIAM J. Imaging Sci. 8, 2015, 2662-2682).
  ℓ is the deviance 2[λ − y − y log(λ/y)], λ = d·p + σ², y = max(d·m + σ², 0): non-negative and
  zero exactly where the prediction matches; with σ = 0 it is the Poisson deviance.
"""

from typing import Any

import jax.numpy as jnp
from jax import Array
from jax.scipy.special import xlogy

from ptyro_core import PtyroTypeError, PtyroValueError

__all__ = ["huber", "gaussian_poisson", "pixel_weights"]


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(jnp.shape(x))


def pixel_weights(shape: tuple[int, ...], mask: Any = None, weights: Any = None, dtype: Any = jnp.float32) -> Array:
    """Per-pixel weights of ``shape`` (b, qx, qy) from a mask and/or weights.

    ``mask`` and ``weights`` may be (qx, qy), (b, qx, qy), or for weights also (b,) per pattern.
    """
    w = jnp.ones(shape, dtype)
    for name, value in (("mask", mask), ("weights", weights)):
        if value is None:
            continue
        v = jnp.asarray(value).astype(dtype)
        vs = _shape_of(v)
        if vs == shape or vs == shape[-2:]:
            v = jnp.broadcast_to(v, shape)
        elif name == "weights" and vs == shape[:1]:
            v = jnp.broadcast_to(v[:, None, None], shape)
        else:
            expected = f"{shape[-2:]} or {shape}" + (f" or {shape[:1]}" if name == "weights" else "")
            raise PtyroValueError(f"{name}: shape {vs} does not fit intensities of shape {shape}; expected {expected}")
        w = w * v
    return w


def _prepare(predicted: Any, measured: Any) -> tuple[Array, Array]:
    p = jnp.asarray(predicted)
    m = jnp.asarray(measured)
    if jnp.iscomplexobj(p) or jnp.iscomplexobj(m):
        raise PtyroTypeError(f"loss: expected real intensities, got {p.dtype} and {m.dtype} (take |ψ|² first)")
    if p.shape != m.shape:
        raise PtyroValueError(f"loss: predicted shape {p.shape} differs from measured shape {m.shape}")
    if p.ndim != 3:
        raise PtyroValueError(f"loss: expected intensities (b, qx, qy), got shape {p.shape}")
    dtype = jnp.result_type(p, m, jnp.float32)
    return p.astype(dtype), m.astype(dtype)


def _weighted_mean(per_pixel: Array, w: Array) -> Array:
    return jnp.sum(w * per_pixel) / jnp.maximum(jnp.sum(w), jnp.finfo(w.dtype).tiny)


def huber_rho(r: Any, delta: float) -> Array:
    """Huber's ρ: r²/2 for |r| ≤ δ, δ(|r| − δ/2) beyond."""
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber(
    predicted: Any,
    measured: Any,
    *,
    mask: Any = None,
    weights: Any = None,
    delta: float = 0.5,
    domain: str = "amplitude",
    eps: float = 1e-10,
) -> Array:
    """Weighted mean Huber loss of the residuals between predicted and measured intensities.

    ``domain="amplitude"`` (default) uses r = √(p + eps) − √max(m, 0) (for counts, δ ≈ 0.5–1 is
    1–2 standard deviations of the amplitude noise); ``"intensity"`` uses r = p − m.
    """
    if not float(delta) > 0:
        raise PtyroValueError(f"huber: delta must be a positive number, got {delta!r}")
    p, m = _prepare(predicted, measured)
    if domain == "amplitude":
        r = jnp.sqrt(p + eps) - jnp.sqrt(jnp.maximum(m, 0.0))
    elif domain == "intensity":
        r = p - m
    else:
        raise PtyroValueError(f"huber: domain must be 'amplitude' or 'intensity', got {domain!r}")
    return _weighted_mean(huber_rho(r, float(delta)), pixel_weights(p.shape, mask, weights, p.dtype))


def gaussian_poisson(
    predicted: Any,
    measured: Any,
    *,
    mask: Any = None,
    weights: Any = None,
    read_noise: float = 1.0,
    dose: float = 1.0,
    eps: float = 1e-8,
) -> Array:
    """Weighted mean mixed Poisson–Gaussian deviance (shifted-Poisson approximation).

    ``dose``: counts per unit of intensity (1 when the intensities are counts); ``read_noise``:
    detector read-noise standard deviation σ in counts.
    """
    if not float(dose) > 0:
        raise PtyroValueError(f"gaussian_poisson: dose must be positive (counts per unit intensity), got {dose!r}")
    if not float(read_noise) >= 0:
        raise PtyroValueError(f"gaussian_poisson: read_noise must be >= 0 (counts), got {read_noise!r}")
    p, m = _prepare(predicted, measured)
    s2 = float(read_noise) ** 2
    lam = dose * jnp.maximum(p, 0.0) + s2 + eps
    y = jnp.maximum(dose * m + s2, 0.0)
    dev = 2.0 * (lam - y - xlogy(y, lam) + xlogy(y, jnp.maximum(y, eps)))
    return _weighted_mean(dev, pixel_weights(p.shape, mask, weights, p.dtype))
