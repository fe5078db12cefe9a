"""ptyro-lobato: the Lobato & Van Dyck (2014) parameterization of electron scattering factors
and atomic potentials, as the ptyrodactyl potential ``lobato``.

Citation: I. Lobato and D. Van Dyck, Acta Cryst. A70 (2014) 636-649,
doi:10.1107/S205327331401643X (parameters shipped as package data, ``data/lobato_parameters.json``).
"""

from ptyro_core._lazy import lazy_package

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


# every name is imported on first use, so that the entry point (ptyro_lobato.plugin) imports no
# JAX when the components are listed (``parameters`` and ``potential`` are also module names)
lazy_package(
    __name__,
    {
        **dict.fromkeys(("k0", "k1"), "ptyro_lobato.bessel"),
        **dict.fromkeys(("CITATION", "parameters"), "ptyro_lobato.parameters"),
        **dict.fromkeys(("A0E", "potential", "projected_potential", "projected_potential_fourier", "scattering_factor"), "ptyro_lobato.radial"),
        "lobato": "ptyro_lobato.potential",
    },
)
