"""ptyro_core: the physics-free core of Ptyrodactyl.

Typed PyTrees (:mod:`ptyro_core.types`), the component protocols
(:mod:`ptyro_core.protocols`), the pluggy hooks (:mod:`ptyro_core.hookspecs`), the registry
(:mod:`ptyro_core.registry`) and the sharded pipeline machinery (:mod:`ptyro_core.pipeline`).
Importing it imports no plugin.
"""

from ptyro_core._pytree import replace
from ptyro_core.errors import (
    DuplicateComponentError,
    MemoryBudgetError,
    PluginError,
    PtyroError,
    PtyroTypeError,
    PtyroValueError,
    UnknownComponentError,
)
from ptyro_core.hookspecs import KINDS, hookimpl
from ptyro_core.protocols import Optimizer
from ptyro_core.registry import Registry, get, get_registry, list_components, register_plugin, reset_registry
from ptyro_core.types import Atoms, Dataset4D, Grid, PotentialSlices, ProbeModes, ReconState, ScanPositions

__version__ = "0.1.0"

__all__ = [
    "Atoms",
    "Dataset4D",
    "DuplicateComponentError",
    "Grid",
    "KINDS",
    "MemoryBudgetError",
    "Optimizer",
    "PluginError",
    "PotentialSlices",
    "ProbeModes",
    "PtyroError",
    "PtyroTypeError",
    "PtyroValueError",
    "ReconState",
    "Registry",
    "ScanPositions",
    "UnknownComponentError",
    "get",
    "get_registry",
    "hookimpl",
    "list_components",
    "register_plugin",
    "replace",
    "reset_registry",
]
