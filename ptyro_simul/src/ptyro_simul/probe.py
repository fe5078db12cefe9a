"""Probes: an objective aperture with a soft (anti-aliased) edge and aberrations in the polar
notation up to 5th order.

χ(k) = (2π/λ) Σ_{n,m} C_nm (λ|k|)^(n+1) / (n+1) · cos(m (φ − φ_nm)),  ψ(k) = A(k) exp(−i χ(k)).
C10 = −defocus (abTEM's convention), C30 = Cs. Aberration magnitudes in Å, azimuths φ_nm in radians here (degrees in configs/CLI).
The probe is returned centred in its grid (at index n // 2) and normalised to Σ|ψ|² = 1.
"""

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from ptyro_core import Grid, ProbeModes, PtyroValueError
from ptyro_core.conventions import ALIASES, AZIMUTHS, POLAR_SYMBOLS, energy2wavelength, ifft2, normalize_aberrations, shift_ramp
from ptyro_simul.propagator import antialias_cutoff

__all__ = ["POLAR_SYMBOLS", "AZIMUTHS", "ALIASES", "chi", "aperture", "probe_fourier", "aberrated_probe", "partially_coherent_probe", "normalize_aberrations"]


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
    ab = normalize_aberrations(aberrations)
    psi = _coherent_probe(ab, grid, float(energy), float(semiangle_cutoff), jnp.dtype(dtype).name)
    return _probe_modes(psi, grid, energy)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _probe_fourier_jit(aberrations: dict[str, Any], grid: Grid, energy: float, semiangle_cutoff: float, dtype: str) -> Array:
    return probe_fourier(grid, energy, semiangle_cutoff=semiangle_cutoff, aberrations=aberrations, dtype=jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _coherent_probe(aberrations: dict[str, Any], grid: Grid, energy: float, semiangle_cutoff: float, dtype: str) -> Array:
    # jitted as a whole (one compile per grid / energy / aperture / set of aberration names)
    pk = probe_fourier(grid, energy, semiangle_cutoff=semiangle_cutoff, aberrations=aberrations, dtype=jnp.dtype(dtype))
    psi = jnp.fft.fftshift(ifft2(pk), axes=(-2, -1))
    return (psi / jnp.sqrt(jnp.sum(jnp.abs(psi) ** 2)))[None]  # one mode (the axis added here, not by a program of its own)


def _probe_modes(array: Array, grid: Grid, energy: float) -> ProbeModes:
    # inside jit the array is a tracer; ProbeModes' checks skip tracers.
    return ProbeModes(array, grid=grid, energy=float(energy))


def _gauss_hermite(n: int, sigma: float) -> tuple[Any, Any]:
    """Nodes and weights (summing to 1) for the mean over a Gaussian of rms ``sigma``."""
    import numpy as np

    x, w = np.polynomial.hermite.hermgauss(int(n))
    return math.sqrt(2.0) * sigma * x, w / math.sqrt(math.pi)


def partially_coherent_probe(
    grid: Grid,
    energy: float,
    *,
    semiangle_cutoff: float,
    aberrations: Mapping[str, Any] | None = None,
    focal_spread: float = 0.0,
    source_size: float = 0.0,
    num_focal: int = 5,
    num_source: int = 3,
    orthogonalize: bool = False,
    num_modes: int | None = None,
    dtype: Any = jnp.complex64,
) -> ProbeModes:
    """A partially coherent probe as mutually incoherent modes (ProbeModes, Σ over modes = 1).

    - ``focal_spread`` (Å, rms of the defocus distribution from chromatic spread): ``num_focal``
      Gauss–Hermite defocus values C10 + δᵢ, each a coherent probe with occupancy wᵢ
      (the quadrature weight).
    - ``source_size`` (Å, rms of a Gaussian effective source in x and in y): each probe above is
      laterally shifted by the ``num_source`` × ``num_source`` Gauss–Hermite product nodes, with
      the product weights as occupancies (Fourier phase ramps, so differentiable).
    - ``orthogonalize``: replace the modes by their SVD (orthogonal modes, same mixed state),
      keeping the ``num_modes`` strongest (renormalised to Σ = 1).

    With neither spread the result is the coherent :func:`aberrated_probe` (one mode).
    """
    _check_semiangle(grid, energy, float(semiangle_cutoff))
    for name, v in (("focal_spread", focal_spread), ("source_size", source_size)):
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise PtyroValueError(f"{name}: expected a non-negative rms in Å, got {v!r}")
    for name, v in (("num_focal", num_focal), ("num_source", num_source)):
        if int(v) < 1:
            raise PtyroValueError(f"{name}: expected a positive number of quadrature points, got {v!r}")
    base = normalize_aberrations(aberrations)
    focal = _gauss_hermite(num_focal, float(focal_spread)) if focal_spread > 0 else ([0.0], [1.0])
    real = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    modes: list[Array] = []
    weights = []
    for d, w in zip(*focal):
        ab = dict(base)
        ab["C10"] = ab.get("C10", 0.0) + float(d)
        pk = _probe_fourier_jit(ab, grid, float(energy), float(semiangle_cutoff), jnp.dtype(dtype).name)
        modes.append(pk / jnp.sqrt(jnp.sum(jnp.abs(pk) ** 2)))
        weights.append(float(w))
    modes_k = jnp.stack(modes)
    occ = jnp.asarray(weights, real)
    if source_size > 0:
        sx, sw = _gauss_hermite(num_source, float(source_size))
        shifted: list[Array] = []
        occ2: list[Array] = []
        for i in range(len(sx)):
            for j in range(len(sx)):
                ramp = shift_ramp([[sx[i], sx[j]]], grid.gpts, grid.sampling, dtype)
                shifted.append(modes_k * ramp)
                occ2.append(occ * float(sw[i] * sw[j]))
        modes_k = jnp.concatenate(shifted)
        occ = jnp.concatenate(occ2)
    psi = jnp.fft.fftshift(ifft2(modes_k), axes=(-2, -1))
    psi = psi / jnp.sqrt(jnp.sum(jnp.abs(psi) ** 2, axis=(-2, -1), keepdims=True))
    psi = psi * jnp.sqrt(occ / jnp.sum(occ))[:, None, None].astype(psi.real.dtype)
    if orthogonalize:
        m = psi.shape[0]
        u, s, vh = jnp.linalg.svd(psi.reshape(m, -1), full_matrices=False)
        keep = m if num_modes is None else max(1, min(int(num_modes), m))
        psi = (s[:keep, None] * vh[:keep]).reshape((keep,) + tuple(grid.gpts))
        psi = psi / jnp.sqrt(jnp.sum(jnp.abs(psi) ** 2))
    return _probe_modes(psi, grid, energy)
