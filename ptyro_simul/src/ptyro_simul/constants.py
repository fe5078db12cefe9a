"""Physical constants (CODATA 2018, SI) and the relativistic electron wavelength and
interaction constant.

λ = h / sqrt(2 m₀ e E (1 + e E / (2 m₀ c²)))           (200 keV: 0.025079 Å; 300 keV: 0.019687 Å)
σ = 2π m e λ / h², m = m₀ (1 + e E / (m₀ c²))           (200 keV: 7.2884e-4 rad/(V·Å))
"""

import math

__all__ = ["PLANCK", "ELECTRON_MASS", "ELEMENTARY_CHARGE", "SPEED_OF_LIGHT", "energy2wavelength", "energy2sigma", "relativistic_mass"]

PLANCK = 6.62607015e-34  # J s
ELECTRON_MASS = 9.1093837015e-31  # kg
ELEMENTARY_CHARGE = 1.602176634e-19  # C
SPEED_OF_LIGHT = 299792458.0  # m / s


def _check_energy(energy: float) -> float:
    e = float(energy)
    if not math.isfinite(e) or e <= 0:
        raise ValueError(f"energy: expected a positive acceleration voltage in eV, got {energy!r}")
    return e


def energy2wavelength(energy: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration energy in eV."""
    e = _check_energy(energy) * ELEMENTARY_CHARGE
    m0c2 = ELECTRON_MASS * SPEED_OF_LIGHT**2
    return PLANCK / math.sqrt(2 * ELECTRON_MASS * e * (1 + e / (2 * m0c2))) * 1e10


def relativistic_mass(energy: float) -> float:
    """Relativistic electron mass in kg at an acceleration energy in eV."""
    e = _check_energy(energy) * ELEMENTARY_CHARGE
    return ELECTRON_MASS * (1 + e / (ELECTRON_MASS * SPEED_OF_LIGHT**2))


def energy2sigma(energy: float) -> float:
    """Interaction constant σ in rad / (V·Å): transmission t = exp(i σ V_projected[V·Å])."""
    lam = energy2wavelength(energy) * 1e-10  # m
    sigma_si = 2 * math.pi * relativistic_mass(energy) * ELEMENTARY_CHARGE * lam / PLANCK**2  # rad / (V m)
    return sigma_si * 1e-10
