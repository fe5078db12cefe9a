"""Is a simulation converged in its sampling? The band-limit warning and the automatic grid.

A multislice grid of pixel dx carries spatial frequencies up to its band limit, 2/3 of Nyquist:
k_max = 1/(3 dx), i.e. θ_max = λ/(3 dx) (68 mrad at 0.122 Å, 200 keV). Electrons scattered
beyond it are dropped at every slice, and those that would have scattered back in are missing
too, so a detector that reaches close to the band limit collects too little even with an exact
potential: the mean 40–65 mrad ADF of SrTiO3 is 21 % low at 0.122 Å pixels (65 mrad = 95 % of the band
limit), 6 % low at 0.098 Å (76 %) and within 1 % at 0.081 Å (63 %) against a 4 × finer grid (the
measured table is in ptyro_simul/README.md, "Convergence"). :func:`check_band_limit` warns when a detector's
outer angle exceeds :data:`SAFE_FRACTION` of the band limit, naming the numbers and the fix;
:func:`auto_sampling` and :func:`auto_gpts` choose the pixel (and an FFT-friendly grid) that
keeps the largest detector angle within that fraction.
"""

import math
import warnings
from collections.abc import Mapping
from typing import Any

from ptyro_core import Grid, PtyroValueError
from ptyro_simul.constants import energy2wavelength

__all__ = ["SAFE_FRACTION", "ConvergenceWarning", "band_limit_mrad", "band_limit_message", "check_band_limit", "auto_sampling", "auto_gpts"]

#: a detector's outer angle should stay within this fraction of the band limit (README table: a
#: 40–65 mrad ADF within 1 % of the converged value at 63 %, 6 % low at 76 %)
SAFE_FRACTION = 0.6


class ConvergenceWarning(UserWarning):
    """A simulation whose sampling is too coarse for what it measures."""


def band_limit_mrad(grid: Grid, energy: float) -> float:
    """The 2/3-Nyquist band limit of ``grid`` in mrad at ``energy`` eV (the smaller of x, y)."""
    return energy2wavelength(energy) / (3 * max(grid.sampling)) * 1e3


def auto_sampling(max_angle: float, energy: float, *, fraction: float = SAFE_FRACTION) -> float:
    """The largest pixel (Å) whose band limit puts ``max_angle`` mrad at ``fraction`` of it."""
    if not (math.isfinite(float(max_angle)) and float(max_angle) > 0):
        raise PtyroValueError(f"max_angle: expected a positive angle in mrad, got {max_angle!r}")
    if not 0 < fraction <= 1:
        raise PtyroValueError(f"fraction: expected a fraction of the band limit in (0, 1], got {fraction!r}")
    return energy2wavelength(energy) * 1e3 * fraction / (3 * float(max_angle))


def _fast_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c 7^d ≥ n (FFT-friendly)."""
    m = max(1, int(n))
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def auto_gpts(extent: tuple[float, float], max_angle: float, energy: float, *, fraction: float = SAFE_FRACTION) -> tuple[int, int]:
    """FFT-friendly grid points over ``extent`` (Å) whose pixel is at most :func:`auto_sampling`."""
    dx = auto_sampling(max_angle, energy, fraction=fraction)
    return tuple(_fast_size(math.ceil(e / dx - 1e-9)) for e in extent)  # type: ignore[return-value]


def band_limit_message(grid: Grid, energy: float, detectors: Mapping[str, Any], *, fraction: float = SAFE_FRACTION) -> str | None:
    """The warning text when a detector ({name: (inner, outer) mrad}) reaches beyond ``fraction``
    of the band limit, else None."""
    limit = band_limit_mrad(grid, energy)
    worst = max(((float(rng[1]), name) for name, rng in detectors.items()), default=None)
    if worst is None or worst[0] <= fraction * limit:
        return None
    outer, name = worst
    dx = auto_sampling(outer, energy, fraction=fraction)
    return (
        f"detector {name!r} reaches {outer:g} mrad, {100 * outer / limit:.0f} % of the band limit of "
        f"{limit:.1f} mrad ({max(grid.sampling):.4g} Å pixels, {energy / 1e3:g} keV): scattering beyond the band "
        f"limit is lost, so this signal is not converged (at 95 % of it a 40–65 mrad ADF is 21 % low; see "
        f"ptyro_simul/README.md, Convergence). Fix: a pixel of at most {dx:.3g} Å "
        f'([potential] sampling = {math.floor(dx * 1000) / 1000:g}, or gpts = "auto"), which puts '
        f"{outer:g} mrad at {100 * fraction:.0f} % of a {outer / fraction:.0f} mrad band limit."
    )


def check_band_limit(grid: Grid, energy: float, detectors: Mapping[str, Any], *, fraction: float = SAFE_FRACTION, stacklevel: int = 2) -> str | None:
    """Warn (:class:`ConvergenceWarning`) when a detector reaches beyond ``fraction`` of the band
    limit; returns the message (None when all is well)."""
    msg = band_limit_message(grid, energy, detectors, fraction=fraction)
    if msg is not None:
        warnings.warn(msg, ConvergenceWarning, stacklevel=stacklevel + 1)
    return msg
