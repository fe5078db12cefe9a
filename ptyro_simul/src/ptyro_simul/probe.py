"""Probes: an objective aperture with a soft (anti-aliased) edge and aberrations in the polar
notation up to 5th order.

χ(k) = (2π/λ) Σ_{n,m} C_nm (λ|k|)^(n+1) / (n+1) · cos(m (φ − φ_nm)),  ψ(k) = A(k) exp(−i χ(k)).
C10 = −defocus (abTEM's convention), C30 = Cs. Aberration magnitudes in Å, azimuths φ_nm in radians here (degrees in configs/CLI).
The probe is returned centred in its grid (at index n // 2) and normalised to Σ|ψ|² = 1.
"""

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from jax import Array

from ptyro_core import Grid, ProbeModes, PtyroValueError
from ptyro_simul.constants import energy2wavelength
from ptyro_simul.fft import ifft2
from ptyro_simul.propagator import antialias_cutoff

__all__ = ["POLAR_SYMBOLS", "ALIASES", "chi", "aperture", "probe_fourier", "aberrated_probe", "normalize_aberrations"]

#: (n, m) of every magnitude symbol C_nm up to 5th order; each with m > 0 has an azimuth phi_nm.
POLAR_SYMBOLS: dict[str, tuple[int, int]] = {
    "C10": (1, 0), "C12": (1, 2),
    "C21": (2, 1), "C23": (2, 3),
    "C30": (3, 0), "C32": (3, 2), "C34": (3, 4),
    "C41": (4, 1), "C43": (4, 3), "C45": (4, 5),
    "C50": (5, 0), "C52": (5, 2), "C54": (5, 4), "C56": (5, 6),
}  # fmt: skip
AZIMUTHS = tuple("phi" + s[1:] for s, (_, m) in POLAR_SYMBOLS.items() if m > 0)
#: common names accepted as aliases (abTEM's): defocus = -C10, Cs = C30, C5 = C50, astigmatism = C12
ALIASES = {"Cs": "C30", "C5": "C50", "astigmatism": "C12", "astigmatism_angle": "phi12", "coma": "C21", "coma_angle": "phi21"}


def normalize_aberrations(aberrations: Mapping[str, Any] | None) -> dict[str, Any]:
    """Map aliases and ``defocus`` to polar symbols; reject unknown names with the known ones."""
    out: dict[str, Any] = {}
    for key, value in (aberrations or {}).items():
        if key == "defocus":
            out["C10"] = out.get("C10", 0.0) - value
            continue
        sym = ALIASES.get(key, key)
        if sym not in POLAR_SYMBOLS and sym not in AZIMUTHS:
            known = ", ".join([*POLAR_SYMBOLS, *AZIMUTHS, "defocus", *ALIASES])
            raise PtyroValueError(f"aberrations: unknown aberration {key!r}; expected one of {known}")
        out[sym] = out.get(sym, 0.0) + value
    return out


def chi(alpha: Array, phi: Array, wavelength: float, aberrations: Mapping[str, Any] | None) -> Array:
    """Aberration phase χ (radians) at scattering angle ``alpha`` (rad) and azimuth ``phi`` (rad)."""
    ab = normalize_aberrations(aberrations)
    total = jnp.zeros_like(alpha)
    for sym, (n, m) in POLAR_SYMBOLS.items():
        if sym not in ab:
            continue
        term = ab[sym] * alpha ** (n + 1) / (n + 1)
        if m > 0:
            term = term * jnp.cos(m * (phi - ab.get("phi" + sym[1:], 0.0)))
        total = total + term
    return 2 * math.pi / wavelength * total


def aperture(alpha: Array, semiangle_cutoff: float, edge: float) -> Array:
    """Soft-edged circular aperture: 1 inside, 0 outside, linear over ``edge`` rad at the rim."""
    cut = semiangle_cutoff * 1e-3
    if edge <= 0:
        return (alpha <= cut).astype(alpha.dtype)
    return jnp.clip((cut - alpha) / edge + 0.5, 0.0, 1.0)


def probe_fourier(grid: Grid, energy: float, *, semiangle_cutoff: float, aberrations: Mapping[str, Any] | None = None, dtype: Any = jnp.complex64) -> Array:
    """A(k) exp(−iχ(k)) in FFT order (unnormalised), for a probe centred at the grid origin."""
    real = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    lam = energy2wavelength(energy)
    kx, ky = grid.frequencies(real)
    k = jnp.sqrt(kx**2 + ky**2)
    alpha = k * lam
    phi = jnp.arctan2(ky, kx)
    # soft edge one reciprocal pixel wide (in angle)
    edge = lam * min(grid.reciprocal_sampling)
    amp = aperture(alpha, semiangle_cutoff, edge)
    return (amp * jnp.exp(-1j * chi(alpha, phi, lam, aberrations))).astype(dtype)


def _check_semiangle(grid: Grid, energy: float, semiangle_cutoff: float) -> None:
    if not (semiangle_cutoff > 0 and math.isfinite(semiangle_cutoff)):
        raise PtyroValueError(f"semiangle_cutoff: expected a positive angle in mrad, got {semiangle_cutoff!r}")
    limit = antialias_cutoff(grid) * energy2wavelength(energy) * 1e3
    if semiangle_cutoff > limit:
        raise PtyroValueError(
            f"semiangle_cutoff: {semiangle_cutoff} mrad is beyond the band limit of the grid ({limit:.1f} mrad "
            f"for sampling {grid.sampling} Å at {energy:g} eV); use a finer sampling or a smaller aperture"
        )


def aberrated_probe(
    grid: Grid,
    energy: float,
    *,
    semiangle_cutoff: float,
    aberrations: Mapping[str, Any] | None = None,
    dtype: Any = jnp.complex64,
) -> ProbeModes:
    """A coherent probe (one mode), centred at grid index n // 2, Σ|ψ|² = 1."""
    _check_semiangle(grid, energy, float(semiangle_cutoff))
    pk = probe_fourier(grid, energy, semiangle_cutoff=semiangle_cutoff, aberrations=aberrations, dtype=dtype)
    psi = jnp.fft.fftshift(ifft2(pk), axes=(-2, -1))
    psi = psi / jnp.sqrt(jnp.sum(jnp.abs(psi) ** 2))
    return _probe_modes(psi[None], grid, energy)


def _probe_modes(array: Array, grid: Grid, energy: float) -> ProbeModes:
    # inside jit the array is a tracer; ProbeModes' checks skip tracers.
    return ProbeModes(array, grid=grid, energy=float(energy))
