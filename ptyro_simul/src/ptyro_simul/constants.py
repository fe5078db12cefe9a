"""Physical constants (CODATA 2018, SI), the relativistic electron wavelength, mass and
interaction constant: defined once in :mod:`ptyro_core.conventions` and re-exported here.

λ = h / sqrt(2 m₀ e E (1 + e E / (2 m₀ c²)))           (200 keV: 0.025079 Å; 300 keV: 0.019687 Å)
σ = 2π m e λ / h², m = m₀ (1 + e E / (m₀ c²))           (200 keV: 7.2884e-4 rad/(V·Å))
"""

from ptyro_core.conventions import (
    ELECTRON_MASS,
    ELEMENTARY_CHARGE,
    PLANCK,
    SPEED_OF_LIGHT,
    energy2sigma,
    energy2wavelength,
    relativistic_mass,
)

__all__ = ["PLANCK", "ELECTRON_MASS", "ELEMENTARY_CHARGE", "SPEED_OF_LIGHT", "energy2wavelength", "energy2sigma", "relativistic_mass"]
