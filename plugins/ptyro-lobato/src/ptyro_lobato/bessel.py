"""Modified Bessel functions of the second kind K0 and K1 in JAX (jit, vmap, grad, float32/64).

JAX has I0 and I1 but not K0 and K1, which the closed-form projected potentials need.

- x ≤ 2: the ascending series (Abramowitz & Stegun 9.6.13, 9.6.11), with t = x²/4,
  K0(x) = −ln(x/2) I0(x) + Σ_k t^k/(k!)² ψ(k+1),
  K1(x) = 1/x + ln(x/2) I1(x) − (x/4) Σ_k t^k/(k!(k+1)!) (ψ(k+1) + ψ(k+2)),
  summed to 13 terms (exact to round-off for t ≤ 1).
- x > 2: e^{−x}/√x times a degree-20 Chebyshev interpolant in u = 2/x of the scaled functions
  √x e^{x} K_ν(x), built once at import from scipy's ``k0e``/``k1e`` (accurate to ~4e-15).

Both branches are evaluated on safe arguments (the double-``where`` idiom), so gradients are
finite everywhere on x > 0. Derivatives use K0' = −K1 and K1' = −K0 − K1/x (a custom JVP),
so differentiated code stays small and exact to any order. Jitted (one compilation per shape
and dtype).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import i0, i1
from numpy.polynomial import chebyshev as _cheb
from scipy import special as _sp

__all__ = ["k0", "k1", "k0k1"]

_EULER = 0.5772156649015329
_NTERMS = 13
_SPLIT = 2.0


def _series_coefficients() -> tuple[np.ndarray, np.ndarray]:
    c0, c1 = [], []
    harmonic, fact = 0.0, 1.0
    for k in range(_NTERMS):
        if k > 0:
            harmonic += 1.0 / k
            fact *= k
        psi_k1 = harmonic - _EULER  # ψ(k+1)
        psi_k2 = psi_k1 + 1.0 / (k + 1)  # ψ(k+2)
        c0.append(psi_k1 / fact**2)
        c1.append((psi_k1 + psi_k2) / (fact * fact * (k + 1)))
    return np.array(c0), np.array(c1)


def _scaled_chebyshev(scaled: Any, degree: int = 20) -> np.ndarray:
    """Chebyshev coefficients (on s = 2u − 1, u = 2/x ∈ (0, 1]) of √x e^{x} K_ν(x)."""

    def f(s: np.ndarray) -> np.ndarray:
        u = np.clip((s + 1.0) / 2.0, 1e-12, 1.0)
        x = 2.0 / u
        return scaled(x) * np.sqrt(x)

    return _cheb.chebinterpolate(f, degree)


_C0, _C1 = _series_coefficients()
_CHEB0 = _scaled_chebyshev(_sp.k0e)
_CHEB1 = _scaled_chebyshev(_sp.k1e)


def _poly(t: Array, coeffs: np.ndarray) -> Array:
    """Σ c_k t^k by Horner's rule."""
    out = jnp.zeros_like(t) + float(coeffs[-1])
    for c in coeffs[-2::-1]:
        out = out * t + float(c)
    return out


def _clenshaw(s: Array, coeffs: np.ndarray) -> Array:
    b1 = jnp.zeros_like(s)
    b2 = jnp.zeros_like(s)
    for c in coeffs[:0:-1]:
        b1, b2 = 2.0 * s * b1 - b2 + float(c), b1
    return s * b1 - b2 + float(coeffs[0])


def _split(x: Any) -> tuple[Array, Array, Array]:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    small = x <= _SPLIT
    xs = jnp.where(small, x, 1.0)
    xl = jnp.where(small, 2.0 * _SPLIT, x)
    return small, xs, xl


def _k0k1_values(x: Any) -> tuple[Array, Array]:
    small, xs, xl = _split(x)
    t = xs * xs / 4.0
    log_half = jnp.log(xs / 2.0)
    k0_low = -log_half * i0(xs) + _poly(t, _C0)
    k1_low = 1.0 / xs + log_half * i1(xs) - xs / 4.0 * _poly(t, _C1)
    s = 4.0 / xl - 1.0
    scale = jnp.exp(-xl) / jnp.sqrt(xl)
    k0_high = scale * _clenshaw(s, _CHEB0)
    k1_high = scale * _clenshaw(s, _CHEB1)
    return jnp.where(small, k0_low, k0_high), jnp.where(small, k1_low, k1_high)


@jax.custom_jvp
def _k0k1(x: Any) -> tuple[Array, Array]:
    return _k0k1_values(x)


@_k0k1.defjvp
def _k0k1_jvp(primals: tuple, tangents: tuple) -> tuple:
    # K0' = -K1, K1' = -K0 - K1/x (A&S 9.6.27): derivatives reuse the values, so the
    # differentiated graph stays small (fast to compile) and exact to any order.
    (x,), (dx,) = primals, tangents
    v0, v1 = _k0k1(x)
    return (v0, v1), (-v1 * dx, (-v0 - v1 / x) * dx)


@jax.jit
def k0k1(x: Any) -> tuple[Array, Array]:
    """(K0(x), K1(x)) for x > 0 (elementwise), computed together."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return _k0k1(x)


def k0(x: Any) -> Array:
    """K0(x) for x > 0 (elementwise)."""
    return k0k1(x)[0]


def k1(x: Any) -> Array:
    """K1(x) for x > 0 (elementwise)."""
    return k0k1(x)[1]
