"""What a component of each kind is: the call signatures the registry checks and pipelines use.

Components are plain callables (functions, or instances of classes with ``__call__``; attrs
PyTrees are welcome so that their parameters can be differentiated). The registry checks that a
registered component is callable with the positional parameters below; the conformance check in
:mod:`ptyro_core.testing` checks that it works under ``jit``, ``vmap`` and ``grad``.
"""

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ptyro_core.types import Atoms, Dataset4D, Grid, PotentialSlices, ProbeModes, ReconState

__all__ = [
    "Potential",
    "Propagator",
    "Probe",
    "Loss",
    "OptimizerFactory",
    "Optimizer",
    "Reconstruction",
    "Simulator",
    "Reader",
    "PROTOCOLS",
    "check_component",
]


@runtime_checkable
class Potential(Protocol):
    def __call__(self, atoms: Atoms, grid: Grid, *, slice_thickness: float, projection: str = "infinite", **options: Any) -> PotentialSlices: ...


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
class Reader(Protocol):
    def __call__(self, path: Any, **options: Any) -> Mapping[str, Any]: ...


#: kind -> (protocol, number of positional parameters a component must accept)
PROTOCOLS: dict[str, tuple[type, int]] = {
    "potential": (Potential, 2),
    "propagator": (Propagator, 4),
    "probe": (Probe, 2),
    "loss": (Loss, 2),
    "optimizer": (OptimizerFactory, 0),
    "reconstruction": (Reconstruction, 2),
    "simulator": (Simulator, 2),
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
