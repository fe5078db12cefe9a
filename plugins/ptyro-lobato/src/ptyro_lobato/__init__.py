"""ptyro-lobato: the Lobato & Van Dyck (2014) parameterization of electron scattering factors
and atomic potentials, as the ptyrodactyl potential ``lobato``.

Citation: I. Lobato and D. Van Dyck, Acta Cryst. A70 (2014) 636-649,
doi:10.1107/S205327331401643X (parameters shipped as package data, ``data/lobato_parameters.json``).
"""

from ptyro_lobato.bessel import k0, k1
from ptyro_lobato.parameters import CITATION, parameters
from ptyro_lobato.radial import A0E, potential, projected_potential, projected_potential_fourier, scattering_factor

__version__ = "0.1.0"

__all__ = [
    "A0E",
    "CITATION",
    "k0",
    "k1",
    "parameters",
    "potential",
    "projected_potential",
    "projected_potential_fourier",
    "scattering_factor",
    "lobato",
    "__version__",
]


def __getattr__(name: str):  # the component needs ptyro_simul; import it on first use
    if name == "lobato":
        from ptyro_lobato.potential import lobato

        return lobato
    raise AttributeError(f"module 'ptyro_lobato' has no attribute {name!r}")
