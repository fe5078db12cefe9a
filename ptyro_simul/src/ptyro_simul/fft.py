"""Unitary FFT helpers (``norm="ortho"``) over the last two axes, numpy sign convention."""

import jax.numpy as jnp
from jax import Array

__all__ = ["fft2", "ifft2", "fft2c", "ifft2c"]


def fft2(x: Array) -> Array:
    """Unitary forward FFT over the last two axes (zero frequency at index 0)."""
    return jnp.fft.fft2(x, norm="ortho")


def ifft2(x: Array) -> Array:
    """Unitary inverse FFT over the last two axes."""
    return jnp.fft.ifft2(x, norm="ortho")


def fft2c(x: Array) -> Array:
    """Unitary forward FFT with the zero frequency moved to the centre (index n // 2)."""
    return jnp.fft.fftshift(fft2(x), axes=(-2, -1))


def ifft2c(x: Array) -> Array:
    """Inverse of :func:`fft2c`."""
    return ifft2(jnp.fft.ifftshift(x, axes=(-2, -1)))
