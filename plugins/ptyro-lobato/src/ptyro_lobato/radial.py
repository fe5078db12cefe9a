"""The Lobato & Van Dyck (2014) electron scattering factor and the potentials it implies.

With the first Born approximation (Kirkland, Advanced Computing in Electron Microscopy, eq. 5.9)
the potential is V(r) = 2π a₀ e ∫ f(q) exp(2πi q·r) d³q and its projection along z is the 2D
inverse transform v_z(r) = 2π a₀ e ∫ f(q) exp(2πi q·r) d²q, with a₀ e = 7.6199 V·Å² (Bohr
radius times the elementary charge). Writing Lobato's term as
(2 + b g²)/(1 + b g²)² = 1/(1 + b g²) + 1/(1 + b g²)² and transforming each term
(∫ e^{2πi q·r}/(q² + α²) d²q = 2π K0(2παr) and its α²-derivative) gives the closed forms
(x = 2π r / √b):

    f(g)   = Σ a (2 + b g²) / (1 + b g²)²                                  [Å]
    V(r)   = 2π² a₀e Σ (a / b) e^{−x} (1/r + π/√b)                          [V]
    v_z(r) = 4π² a₀e Σ (a / b) (K0(x) + (x/2) K1(x))                        [V·Å]

(Lobato & Van Dyck 2014, eqs. 13 and 16 in their notation). Everything is jit-, vmap- and
grad-compatible; parameters may be traced (a and b are arrays of shape (..., 5)).
"""

from typing import Any

import jax.numpy as jnp
from jax import Array

from ptyro_core import PtyroValueError
from ptyro_lobato.bessel import k0k1
from ptyro_lobato.parameters import parameters

__all__ = [
    "BOHR",
    "ELEMENTARY_CHARGE_VA",
    "A0E",
    "scattering_factor",
    "potential",
    "projected_potential",
    "projected_potential_fourier",
    "tail_factor",
]

BOHR = 0.529177210903  # Å (CODATA 2018)
ELEMENTARY_CHARGE_VA = 14.399645478425668  # e / (4π ε0) in V·Å
A0E = BOHR * ELEMENTARY_CHARGE_VA  # 7.6199 V·Å²


def _params(Z: Any, a: Any, b: Any, dtype: Any, ndim: int) -> tuple[Array, Array]:
    """(a, b) of one element, shaped (1, ..., 1, 5) to broadcast against r[..., None]."""
    if a is None or b is None:
        if Z is None:
            raise PtyroValueError("lobato: give an atomic number Z, or both parameter vectors a and b")
        a, b = parameters(Z)
    shape = (1,) * ndim + (-1,)
    return jnp.asarray(a, dtype).reshape(shape), jnp.asarray(b, dtype).reshape(shape)


def _real_dtype(x: Any) -> Any:
    dt = jnp.result_type(x)
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.float32


def scattering_factor(g: Any, Z: int | None = None, *, a: Any = None, b: Any = None) -> Array:
    """Electron scattering factor f(g) in Å at spatial frequency |g| in Å⁻¹ (no 2π factor)."""
    g = jnp.asarray(g)
    dt = _real_dtype(g)
    a, b = _params(Z, a, b, dt, g.ndim)
    bg2 = b * (g[..., None] ** 2)
    return jnp.sum(a * (2.0 + bg2) / (1.0 + bg2) ** 2, axis=-1)


def potential(r: Any, Z: int | None = None, *, a: Any = None, b: Any = None) -> Array:
    """Electrostatic potential V(r) in V at distance r > 0 Å from the nucleus."""
    r = jnp.asarray(r)
    dt = _real_dtype(r)
    a, b = _params(Z, a, b, dt, r.ndim)
    sb = jnp.sqrt(b)
    rr = r[..., None]
    x = 2.0 * jnp.pi * rr / sb
    return 2.0 * jnp.pi**2 * A0E * jnp.sum(a / b * jnp.exp(-x) * (1.0 / rr + jnp.pi / sb), axis=-1)


def projected_potential(r: Any, Z: int | None = None, *, a: Any = None, b: Any = None) -> Array:
    """Projected potential v_z(r) = ∫ V dz in V·Å at in-plane distance r > 0 Å (diverges as
    −ln r at r → 0; clamp r to a minimum radius on a grid)."""
    r = jnp.asarray(r)
    dt = _real_dtype(r)
    a, b = _params(Z, a, b, dt, r.ndim)
    x = 2.0 * jnp.pi * r[..., None] / jnp.sqrt(b)
    v0, v1 = k0k1(x)
    return 4.0 * jnp.pi**2 * A0E * jnp.sum(a / b * (v0 + 0.5 * x * v1), axis=-1)


def projected_potential_fourier(g: Any, Z: int | None = None, *, a: Any = None, b: Any = None) -> Array:
    """2D Fourier transform of v_z at |g| Å⁻¹, in V·Å³: 2π a₀e f(g)
    (v_z(r) = ∫ this × e^{2πi g·r} d²g)."""
    return 2.0 * jnp.pi * A0E * scattering_factor(g, Z, a=a, b=b)


def tail_factor(g: Any, d: Any, Z: int | None = None, *, a: Any = None, b: Any = None) -> Array:
    """t(g, d) in Å: the 2D transform, in units of 2π a₀e, of the part of the potential beyond a
    plane at distance d ≥ 0 Å from the nucleus, ∫_d^∞ V dz (t(g, 0) = f(g)/2). With β = 1/b and
    s = √(g² + β), the term a/b · 1/(g² + β) (a Yukawa) gives ½ (a/b) e^{−2π d s}/s², and
    a/b² · 1/(g² + β)², its −∂/∂β, gives ½ (a/b²) e^{−2π d s} (1/s⁴ + π d/s³). ``g`` and ``d``
    broadcast elementwise."""
    g = jnp.asarray(g)
    dt = _real_dtype(g)
    a, b = _params(Z, a, b, dt, g.ndim)
    dd = jnp.broadcast_to(jnp.asarray(d, dt), g.shape)[..., None]
    s2 = g[..., None] ** 2 + 1.0 / b
    s = jnp.sqrt(s2)
    e = jnp.exp(-2.0 * jnp.pi * dd * s)
    return 0.5 * jnp.sum(a / b * e / s2 + a / b**2 * e * (1.0 / s2**2 + jnp.pi * dd / (s2 * s)), axis=-1)
