"""Free-space (Fresnel) propagation in Fourier space.

P(k) = exp(−i π λ Δz |k|²) · exp(−2πi Δz (kx tan θx + ky tan θy)) · A(k), where A is the
band-limiting (anti-aliasing) aperture at 2/3 of the Nyquist frequency, applied at every step.

``fresnel`` is a :class:`~ptyro_core.protocols.KernelPropagator`: it declares its kernel, so the
multislice loop computes the kernels of all slices once and multiplies in Fourier space (the
same lane any third-party propagator that declares a kernel gets).
"""

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import Array

from ptyro_core import Grid
from ptyro_core.conventions import energy2wavelength, fft2, ifft2
from ptyro_core.protocols import KernelPropagator

__all__ = ["ANTIALIAS_FRACTION", "antialias_aperture", "antialias_cutoff", "fresnel_kernel", "Fresnel", "fresnel"]

#: fraction of the Nyquist frequency kept by the band limit
ANTIALIAS_FRACTION = 2.0 / 3.0


def antialias_cutoff(grid: Grid) -> float:
    """Band-limit radius in Å⁻¹: 2/3 of the smaller Nyquist frequency of the grid."""
    return ANTIALIAS_FRACTION * min(1.0 / (2 * grid.sampling[0]), 1.0 / (2 * grid.sampling[1]))


def antialias_aperture(grid: Grid, dtype: Any = jnp.float32) -> Array:
    """Hard circular band-limiting aperture (1 inside 2/3 Nyquist, 0 outside), FFT order."""
    kx, ky = grid.frequencies(jnp.float64 if dtype == jnp.float64 else jnp.float32)
    return ((kx**2 + ky**2) < antialias_cutoff(grid) ** 2).astype(dtype)


def fresnel_kernel(dz: Any, grid: Grid, energy: float, *, tilt: tuple[float, float] = (0.0, 0.0), dtype: Any = jnp.complex64) -> Array:
    """The band-limited Fresnel propagator in FFT order for a distance ``dz`` Å (may be traced);
    ``tilt`` (θx, θy) in mrad."""
    real = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    lam = energy2wavelength(energy)
    kx, ky = grid.frequencies(real)
    dz = jnp.asarray(dz, real)
    phase = jnp.pi * lam * dz * (kx**2 + ky**2)
    if tilt[0] or tilt[1]:
        phase = phase + 2 * jnp.pi * dz * (kx * jnp.tan(tilt[0] * 1e-3) + ky * jnp.tan(tilt[1] * 1e-3))
    return (jnp.exp(-1j * phase) * antialias_aperture(grid, real)).astype(dtype)


@dataclasses.dataclass(frozen=True, repr=False)
class Fresnel(KernelPropagator):
    """The band-limited Fresnel propagator: ``fresnel(wave, dz, grid, energy, *, tilt)`` propagates
    ``wave`` (..., nx, ny) by ``dz`` Å through free space; :meth:`kernel` is
    :func:`fresnel_kernel`."""

    def kernel(self, dz: Any, grid: Grid, energy: float, *, tilt: tuple[float, float] = (0.0, 0.0), dtype: Any = None) -> Array:
        return fresnel_kernel(dz, grid, energy, tilt=tilt, dtype=jnp.complex64 if dtype is None else dtype)

    def __call__(self, wave: Array, dz: Any, grid: Grid, energy: float, *, tilt: tuple[float, float] = (0.0, 0.0)) -> Array:
        kernel = self.kernel(dz, grid, energy, tilt=(float(tilt[0]), float(tilt[1])), dtype=jnp.result_type(wave, jnp.complex64))
        return ifft2(fft2(wave) * kernel)

    def __repr__(self) -> str:
        return "fresnel"


#: the ``fresnel`` propagator component
fresnel = Fresnel()
