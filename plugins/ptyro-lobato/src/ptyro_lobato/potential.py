"""The ``lobato`` potential component: Lobato & Van Dyck's parameterization on ptyro_simul's
slicing framework (:class:`ptyro_simul.potentials.ParametrizedPotential`: cutoff, periodic images,
pixel-core softening, infinite or finite projection).

Each element's parameter vector is (a₁..a₅, b₁..b₅); the radial functions are those of
:mod:`ptyro_lobato.radial`.
"""

from typing import Any

import jax
from jax import Array

from ptyro_lobato.parameters import MAX_Z, parameters
from ptyro_lobato.radial import potential as _potential
from ptyro_lobato.radial import projected_potential as _projected_potential

__all__ = ["CompiledPotential", "lobato", "lobato_projected", "lobato_potential_3d", "lobato_parameter_vectors", "make_lobato"]


@jax.jit
def lobato_projected(r: Any, p: Any) -> Array:
    """v_z(r) in V·Å for one element's parameter vector p = (a₁..a₅, b₁..b₅)."""
    return _projected_potential(r, a=p[:5], b=p[5:])


@jax.jit
def lobato_potential_3d(r: Any, p: Any) -> Array:
    """V(r) in V for one element's parameter vector p = (a₁..a₅, b₁..b₅)."""
    return _potential(r, a=p[:5], b=p[5:])


def lobato_parameter_vectors() -> dict[int, Any]:
    import numpy as np

    return {z: np.concatenate(parameters(z)) for z in range(1, MAX_Z + 1)}


class CompiledPotential:
    """A potential component that compiles the framework's slicing once per structure.

    Wraps a :class:`~ptyro_simul.potentials.ParametrizedPotential` (its attributes, e.g.
    ``cutoff``, pass through). A call closes over what must be concrete (atomic numbers, cell,
    grid, slicing) and runs one ``jax.jit``-compiled function of the positions and thermal
    sigmas, cached per structure: eager calls and ``jax.grad`` / ``jax.vmap`` of eager code then
    cost one compilation instead of op-by-op dispatch (the element cutoffs are computed first,
    outside any trace). Under an outer ``jit``/``vmap``/``grad`` the inner jit is simply inlined.
    """

    def __init__(self, inner: Any, *, cache_size: int = 32) -> None:
        self.inner = inner
        self.cache_size = int(cache_size)
        self._cache: dict[Any, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"CompiledPotential({self.inner!r})"

    def __call__(self, atoms: Any, grid: Any, *, slice_thickness: Any, projection: str = "infinite") -> Any:
        import numpy as np

        from ptyro_core import Atoms, PtyroTypeError, replace
        from ptyro_core._pytree import is_tracer

        if not isinstance(atoms, Atoms) or is_tracer(atoms.numbers):
            return self.inner(atoms, grid, slice_thickness=slice_thickness, projection=projection)  # its errors
        numbers = np.asarray(atoms.numbers)
        if np.ndim(slice_thickness) == 0:
            th_key: Any = float(slice_thickness)
        else:
            if is_tracer(slice_thickness):
                raise PtyroTypeError("slice_thickness: expected concrete thicknesses (Å), got a traced array")
            th_key = tuple(float(t) for t in np.asarray(slice_thickness).ravel())
        key = (numbers.tobytes(), numbers.shape, atoms.cell, grid, th_key, projection)
        fn = self._cache.get(key)
        if fn is None:
            for z in np.unique(numbers):
                self.inner.params(int(z))  # a clear error for an element the table lacks
                self.inner._cutoff(int(z))
            template = atoms
            inner = self.inner
            th = th_key if isinstance(th_key, float) else list(th_key)

            def run(positions: Any, sigmas: Any) -> Any:
                return inner(replace(template, positions=positions, sigmas=sigmas), grid, slice_thickness=th, projection=projection)

            fn = jax.jit(run)
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = fn
        return fn(atoms.positions, atoms.sigmas)


def make_lobato(**options: Any) -> Any:
    """A ``lobato`` potential with framework options (``cutoff_tolerance``, ``num_quadrature``, ...)."""
    from ptyro_simul.potentials import ParametrizedPotential

    return CompiledPotential(ParametrizedPotential("lobato", lobato_parameter_vectors(), lobato_projected, lobato_potential_3d, **options))


#: the registered ``lobato`` potential component
lobato = make_lobato()
