"""Unitary FFT helpers (``norm="ortho"``) over the last two axes, numpy sign convention: defined
once in :mod:`ptyro_core.conventions` and re-exported here."""

from ptyro_core.conventions import fft2, fft2c, ifft2, ifft2c

__all__ = ["fft2", "ifft2", "fft2c", "ifft2c"]
