"""Relativistic wavelength and interaction constant against textbook values."""

import math

import pytest

from ptyro_simul.constants import energy2sigma, energy2wavelength


@pytest.mark.parametrize(
    ("energy", "wavelength"),
    [(60e3, 0.04866), (80e3, 0.04176), (200e3, 0.02508), (300e3, 0.01969)],
)
def test_wavelength_textbook(energy, wavelength):
    assert energy2wavelength(energy) == pytest.approx(wavelength, abs=6e-6)


@pytest.mark.parametrize(("energy", "sigma"), [(200e3, 7.2884e-4), (300e3, 6.5262e-4)])
def test_interaction_constant_textbook(energy, sigma):
    # Kirkland, Advanced Computing in Electron Microscopy (2010), Table 2.2 / Eq. 5.6
    assert energy2sigma(energy) == pytest.approx(sigma, rel=2e-4)


@pytest.mark.parametrize("energy", [60e3, 80e3, 200e3, 300e3])
def test_interaction_constant_textbook_form(energy):
    # the textbook form σ = (2π / (λ V)) (m₀c² + eV) / (2 m₀c² + eV), m₀c² = 510.999 keV
    m0c2 = 510998.95
    lam = energy2wavelength(energy)
    expected = 2 * math.pi / (lam * energy) * (m0c2 + energy) / (2 * m0c2 + energy)
    assert energy2sigma(energy) == pytest.approx(expected, rel=1e-6)


def test_nonrelativistic_limit():
    # at 1 eV, λ = h / sqrt(2 m e E) = 12.2643 Å
    assert energy2wavelength(1.0) == pytest.approx(12.2643, rel=1e-4)
