"""The ``lobato`` potential component: Lobato & Van Dyck's parameterization on ptyro_simul's
slicing framework (:class:`ptyro_simul.potentials.ParametrizedPotential`): the scattering factor
f(k) goes through the framework's Fourier-space builder (exact structure factor, infinite or
finite projection, Debye–Waller), with the tail factor t(k, d) for the finite projection's slice
faces; the radial functions through its real-space sampling (``method="real"``).

Each element's parameter vector is (a₁..a₅, b₁..b₅); the radial functions are those of
:mod:`ptyro_lobato.radial`.
"""

from typing import Any

import jax
from jax import Array

from ptyro_lobato.parameters import MAX_Z, parameters
from ptyro_lobato.radial import potential as _potential
from ptyro_lobato.radial import projected_potential as _projected_potential
from ptyro_lobato.radial import scattering_factor as _scattering_factor
from ptyro_lobato.radial import tail_factor as _tail_factor

__all__ = ["lobato", "lobato_projected", "lobato_potential_3d", "lobato_scattering_factor", "lobato_tail", "lobato_parameter_vectors", "make_lobato"]


@jax.jit
def lobato_projected(r: Any, p: Any) -> Array:
    """v_z(r) in V·Å for one element's parameter vector p = (a₁..a₅, b₁..b₅)."""
    return _projected_potential(r, a=p[:5], b=p[5:])


@jax.jit
def lobato_potential_3d(r: Any, p: Any) -> Array:
    """V(r) in V for one element's parameter vector p = (a₁..a₅, b₁..b₅)."""
    return _potential(r, a=p[:5], b=p[5:])


@jax.jit
def lobato_scattering_factor(k: Any, p: Any) -> Array:
    """f(k) in Å at |k| Å⁻¹ for one element's parameter vector p = (a₁..a₅, b₁..b₅): what the
    framework's Fourier-space builder uses (exact at any sub-pixel position)."""
    return _scattering_factor(k, a=p[:5], b=p[5:])


@jax.jit
def lobato_tail(k: Any, d: Any, p: Any) -> Array:
    """t(k, d) in Å (the part beyond a plane at distance d, in units of 2π a₀e): what the
    framework's finite projection adds at the slice faces, in Fourier space."""
    return _tail_factor(k, d, a=p[:5], b=p[5:])


def lobato_parameter_vectors() -> dict[int, Any]:
    import numpy as np

    return {z: np.concatenate(parameters(z)) for z in range(1, MAX_Z + 1)}


def make_lobato(**options: Any) -> Any:
    """A ``lobato`` potential with framework options (``cutoff_tolerance``, ``num_quadrature``, ...)."""
    from ptyro_simul.potentials import ParametrizedPotential

    return ParametrizedPotential(
        "lobato",
        lobato_parameter_vectors(),
        lobato_projected,
        lobato_potential_3d,
        scattering_factor=lobato_scattering_factor,
        tail_factor=lobato_tail,
        **options,
    )


#: the registered ``lobato`` potential component
lobato = make_lobato()
