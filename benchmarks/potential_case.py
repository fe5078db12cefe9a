"""The case of the potential acceptance runs (issue 14), shared by both sides and built by each
code on its own: SrTiO3 [001], 4 × 4 × 5 cells (15.62 × 15.62 × 19.53 Å, 400 atoms), every atom
moved up by a/4 so that no atom lies on a slice face (slices a/2 thick: one SrO and one TiO2
plane each), 200 keV, 20 mrad aperture, no aberrations, 128 × 128 grid (0.122 Å pixels, band
limit 68 mrad), an 8 × 8 scan over one unit cell, BF 0–20 mrad and ADF 40–65 mrad. Frozen
phonons: σ = 0.1 Å per direction for every atom, 8 configurations.

Only numpy here: ``potential_vs_abtem.py`` imports it in abTEM's venv, ``potential_accuracy.py``
in ours.
"""

import numpy as np

A = 3.905
REPEAT = (4, 4, 5)
ENERGY = 200e3
SEMIANGLE = 20.0
GPTS = 128
SLICE = A / 2
SCAN_GPTS = (8, 8)
SCAN_END = (A, A)
BF = (0.0, 20.0)
ADF = (40.0, 65.0)
SIGMA = 0.1
CONFIGS = 8
RING = 2.0  # mrad

_FRACTIONAL = [(38, (0, 0, 0)), (22, (0.5, 0.5, 0.5)), (8, (0.5, 0.5, 0)), (8, (0.5, 0, 0.5)), (8, (0, 0.5, 0.5))]


def structure():
    """(numbers (n,), positions (n, 3) Å, cell (3,) Å)."""
    numbers, pos = [], []
    for i in range(REPEAT[0]):
        for j in range(REPEAT[1]):
            for k in range(REPEAT[2]):
                for z, f in _FRACTIONAL:
                    numbers.append(z)
                    pos.append(((i + f[0]) * A, (j + f[1]) * A, (k + f[2] + 0.25) * A))
    return np.array(numbers), np.array(pos), np.array([REPEAT[0] * A, REPEAT[1] * A, REPEAT[2] * A])


# independent on purpose (runs in other codes' venvs, without ptyro_core.conventions)
def wavelength(energy=ENERGY):
    """Relativistic electron wavelength in Å (CODATA 2018)."""
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    ev = energy * e
    return h / np.sqrt(2 * m0 * ev * (1 + ev / (2 * m0 * c**2))) * 1e10


def angles(n, extent, energy=ENERGY):
    """Scattering angles (mrad) of a centred n × n pattern of a grid of ``extent`` Å."""
    k = np.fft.fftshift(np.fft.fftfreq(n, extent / n))
    return np.hypot(k[:, None], k[None, :]) * wavelength(energy) * 1e3


def rings(mean_pattern, extent, limit, energy=ENERGY):
    """(ring starts (m,), summed intensity per 2-mrad ring) of a centred pattern, up to ``limit`` mrad."""
    a = angles(mean_pattern.shape[0], extent, energy)
    starts = np.arange(0.0, limit - RING + 1e-9, RING)
    return starts, np.array([mean_pattern[(a >= s) & (a < s + RING)].sum() for s in starts])


def annular(patterns, extent, inner, outer, energy=ENERGY):
    """Virtual detector images (Rx, Ry) of centred patterns (Rx, Ry, n, n)."""
    a = angles(patterns.shape[-1], extent, energy)
    return np.sum(patterns * ((a >= inner) & (a < outer)), axis=(-2, -1))
