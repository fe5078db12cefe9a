"""What a component of each kind is: the call signatures the registry checks and pipelines use.

Components are plain callables (functions, or instances of classes with ``__call__``; attrs
PyTrees are welcome so that their parameters can be differentiated). The registry checks that a
registered component is callable with the positional parameters below; the conformance check in
:mod:`ptyro_core.testing` checks that it works under ``jit``, ``vmap`` and ``grad``.

Two declared capabilities (base classes, never identity checks) open the fast lanes to every
component, built-in or third-party:

- :class:`PlannedSimulator`: plan once, apply many (after optax's ``init``/``update`` and
  diffrax's solvers' ``init``/``step``). ``plan(potential, probe, **options)`` does, outside
  ``jit``, everything the scan positions share and returns it as a PyTree;
  ``apply(plan, positions)`` is pure and is what the jitted batch function runs, the plan
  passed to it as an argument. :func:`ptyro_simul.stem.iter_4dstem` plans once per simulation.
- :class:`KernelPropagator`: a propagator whose step is a multiplication by a kernel in Fourier
  space exposes ``kernel(dz, grid, energy, *, tilt, dtype)``; the multislice loop then computes
  the kernels of all slices once and runs the FFT-multiply loop (and a far-field back end).
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: checking a component (the registry) imports no JAX
    from ptyro_core.types import Atoms, Dataset4D, Grid, PotentialSlices, ProbeModes, ReconState

__all__ = [
    "Potential",
    "ScatteringFactor",
    "Propagator",
    "Probe",
    "Loss",
    "OptimizerFactory",
    "Optimizer",
    "Reconstruction",
    "Simulator",
    "Source",
    "PlannedSimulator",
    "KernelPropagator",
    "FarFieldBackend",
    "WindowFarFields",
    "Reader",
    "PatternSource",
    "PROTOCOLS",
    "check_component",
]


@runtime_checkable
class Potential(Protocol):
    def __call__(self, atoms: Atoms, grid: Grid, *, slice_thickness: float, projection: str = "infinite", **options: Any) -> PotentialSlices: ...


@runtime_checkable
class ScatteringFactor(Protocol):
    """Optional for a potential: its electron scattering factor f(k) in Å of atomic number ``z``
    at |k| in Å⁻¹ (no 2π; numpy in, float64 numpy out). A potential that has it can be built in
    Fourier space, exactly at any sub-pixel position (``ptyro_simul.potential_fourier``)."""

    def scattering_factor(self, k: Any, z: int) -> Any: ...


@runtime_checkable
class Propagator(Protocol):
    def __call__(self, wave: Any, dz: Any, grid: Grid, energy: float, *, tilt: tuple[float, float] = (0.0, 0.0)) -> Any: ...


@runtime_checkable
class Probe(Protocol):
    def __call__(self, grid: Grid, energy: float, *, semiangle_cutoff: float, aberrations: Mapping[str, float] | None = None, **options: Any) -> ProbeModes: ...


@runtime_checkable
class Loss(Protocol):
    def __call__(self, predicted: Any, measured: Any, *, mask: Any = None, weights: Any = None) -> Any: ...


class Optimizer(NamedTuple):
    """A pure optimizer in the style of optax: ``state = init(params)``;
    ``updates, state = update(grads, state, params)``; ``params = apply_updates(params, updates)``.

    ``grads`` are what ``jax.grad`` returns; for complex leaves the optimizer itself applies the
    Wirtinger convention (descent along the conjugate), in one place.
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], tuple[Any, Any]]


@runtime_checkable
class OptimizerFactory(Protocol):
    def __call__(self, learning_rate: Any = ..., **options: Any) -> Optimizer: ...


@runtime_checkable
class Reconstruction(Protocol):
    def __call__(self, dataset: Dataset4D, state: ReconState, **options: Any) -> ReconState: ...


@runtime_checkable
class Simulator(Protocol):
    def __call__(self, potential: PotentialSlices, probe: ProbeModes, **options: Any) -> Callable[[Any], Any]: ...


@runtime_checkable
class Source(Protocol):
    def __call__(self, address: str, **options: Any) -> Any: ...


class PlannedSimulator(abc.ABC):
    """A simulator component in two phases. ``plan(potential, probe, **options)`` returns a
    PyTree (arrays as leaves, settings as static metadata) holding what every scan position
    shares; ``apply(plan, positions (b, 2) Å) -> intensities (b, nx, ny)`` is pure and jittable,
    taking the plan as an argument (so a jitted batch function compiles once per plan structure
    and shape, and the plan is computed once per simulation, not per batch).

    Calling the component, ``component(potential, probe, **options)``, is plan then apply:
    it returns ``fn(positions)`` like any simulator.
    """

    @abc.abstractmethod
    def plan(self, *args: Any, **options: Any) -> Any:
        """``plan(potential, probe, **options)``: what every position shares, as a PyTree
        (computed outside ``jit``). (Declared with ``*args, **options`` so that subclasses name
        their own options.)"""

    @abc.abstractmethod
    def apply(self, plan: Any, positions: Any) -> Any:
        """Centred intensities (b, nx, ny) for positions (b, 2) Å from ``plan`` (pure)."""

    def __call__(self, potential: PotentialSlices, probe: ProbeModes, **options: Any) -> Any:
        return functools.partial(self.apply, self.plan(potential, probe, **options))


class KernelPropagator(abc.ABC):
    """A propagator whose step over ``dz`` is the multiplication of the wave's FFT by a kernel:
    ``propagate(wave) = IFFT(kernel · FFT(wave))``. Subclasses define :meth:`kernel`; calling
    the instance propagates one wave (the :class:`Propagator` signature)."""

    @abc.abstractmethod
    def kernel(self, dz: Any, grid: Grid, energy: float, *, tilt: tuple[float, float] = (0.0, 0.0), dtype: Any = None) -> Any:
        """The kernel (nx, ny) in FFT order for a distance ``dz`` Å (may be traced), in ``dtype``
        (a complex dtype; complex64 when None)."""

    def __call__(self, wave: Any, dz: Any, grid: Grid, energy: float, *, tilt: tuple[float, float] = (0.0, 0.0)) -> Any:
        import jax.numpy as jnp

        k = self.kernel(dz, grid, energy, tilt=(float(tilt[0]), float(tilt[1])), dtype=jnp.result_type(wave, jnp.complex64))
        return jnp.fft.ifft2(jnp.fft.fft2(wave) * k)


class FarFieldBackend(abc.ABC):
    """A back end for the multislice far field with kernel propagators (kind ``backend``):
    ``backend(waves, head, last, offsets=None) -> intensities``, what
    :func:`ptyro_simul.multislice.fresnel_far_field` computes (|FFT(exit wave)|², FFT order) for
    waves (..., nx, ny); ``head`` = (transmission functions, kernels) of every slice but the
    last, ``last`` = (last transmission function, |last kernel|²/N); ``offsets`` (b, 2) int32:
    each position's window in the potential (windowed runs), None on the full grid.

    :meth:`unavailable` says, outside ``jit``, why it cannot run such waves here (or None).
    """

    @abc.abstractmethod
    def unavailable(self, dtype: Any, windowed: bool) -> str | None:
        """Why this back end cannot compute waves of ``dtype`` on the default device now (None: it can)."""

    @abc.abstractmethod
    def __call__(self, waves: Any, head: tuple[Any, Any], last: tuple[Any, Any], offsets: Any = None) -> Any: ...


@runtime_checkable
class WindowFarFields(Protocol):
    """What a far-field back end (kind ``backend``) may also run: the far fields of a
    reconstruction's windows on a single-slice object, and their gradient (what
    :func:`ptyro_invert.forward.far_fields` and :func:`~ptyro_invert.forward.far_fields_add`
    compute with XLA). ``auto`` uses a back end for a reconstruction only if it has both methods
    (and :meth:`~FarFieldBackend.unavailable` is None for the waves).

    - ``window_far_fields(obj (1, ox, oy), probes (g, m, nx, ny), group (b,) int32, start (b, 2)
      int32) -> (b, m, nx, ny)``: the unitary FFT of ``probes[group[i]]`` times the object's window
      from pixel ``start[i]``, centred (zero frequency at ``n // 2``);
    - ``window_far_fields_add(obj, probes, group, start, ct (b, m, nx, ny), go, gp) -> (go, gp)``:
      their gradient for the cotangent ``ct`` added into the sums ``go`` (1, ox, oy) and ``gp``
      (g, m, nx, ny); ``gp`` None: a probe per position, whose gradient (b, m, nx, ny) is returned.
    """

    def window_far_fields(self, obj: Any, probes: Any, group: Any, start: Any) -> Any: ...

    def window_far_fields_add(self, obj: Any, probes: Any, group: Any, start: Any, ct: Any, go: Any, gp: Any) -> tuple[Any, Any]: ...


@runtime_checkable
class Reader(Protocol):
    def __call__(self, path: Any, **options: Any) -> Mapping[str, Any]: ...


@runtime_checkable
class PatternSource(Protocol):
    """Where a dataset's patterns live (:mod:`ptyro_core.sources`: memory, ``.npy`` memory
    maps, HDF5, and a caller's array-like): ``shape`` of the stored array ((Rx, Ry, Qx, Qy) or
    (N, Qx, Qy)), the stored ``dtype`` (counts stay integers), ``len()`` patterns,
    ``read(indices)`` -> (k, Qx, Qy) at flat scan indices, basic indexing, and the
    context-manager protocol: the source owns its file handle, opened while in use and released
    by ``close()`` / the end of ``with`` (a closed source reopens on its next read). The sources
    of :mod:`ptyro_core.sources` also read into a caller's array (``read(indices, out=...)``);
    :func:`ptyro_core.sources.read_into` does that for any source (copying where it cannot)."""

    shape: tuple[int, ...]
    dtype: Any

    def __len__(self) -> int: ...

    def read(self, indices: Any) -> Any: ...

    def __getitem__(self, index: Any) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> None: ...


#: kind -> (protocol, number of positional parameters a component must accept)
PROTOCOLS: dict[str, tuple[type, int]] = {
    "potential": (Potential, 2),
    "propagator": (Propagator, 4),
    "probe": (Probe, 2),
    "loss": (Loss, 2),
    "optimizer": (OptimizerFactory, 0),
    "reconstruction": (Reconstruction, 2),
    "simulator": (Simulator, 2),
    "source": (Source, 1),
    "backend": (FarFieldBackend, 3),
    "reader": (Reader, 1),
}


def check_component(kind: str, component: Any) -> None:
    """Raise TypeError unless ``component`` can be called as a component of ``kind``."""
    protocol, npos = PROTOCOLS[kind]
    if not callable(component):
        raise TypeError(f"a {kind} must be callable as {protocol.__name__}, got {type(component).__name__} {component!r:.60}")
    try:
        sig = inspect.signature(component)
    except (TypeError, ValueError):
        return  # builtins and C callables: nothing more to check
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(positional) < npos or len(required) > npos:
        raise TypeError(
            f"a {kind} must accept {npos} positional argument(s) as {protocol.__name__}, "
            f"but {getattr(component, '__name__', type(component).__name__)}{sig} takes {len(positional)} "
            f"({len(required)} required)"
        )
