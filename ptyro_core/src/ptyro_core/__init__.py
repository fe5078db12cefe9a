"""ptyro_core: the physics-free core of Ptyrodactyl.

Typed PyTrees (:mod:`ptyro_core.types`), the component protocols
(:mod:`ptyro_core.protocols`), the pluggy hooks (:mod:`ptyro_core.hookspecs`), the registry
(:mod:`ptyro_core.registry`) and the sharded pipeline machinery (:mod:`ptyro_core.pipeline`).
Importing it imports no plugin.
"""

from ptyro_core._lazy import lazy_getattr
from ptyro_core.errors import (
    DuplicateComponentError,
    MemoryBudgetError,
    PluginError,
    PtyroError,
    PtyroTypeError,
    PtyroValueError,
    UnknownComponentError,
)

# everything else is imported on first use (PEP 562), so that importing ptyro_core for its
# errors (the ``ptyro`` command's --help, info, ...) does not import JAX
_LAZY = {
    "replace": "ptyro_core._pytree",
    "KINDS": "ptyro_core.hookspecs",
    "hookimpl": "ptyro_core.hookspecs",
    "Optimizer": "ptyro_core.protocols",
    **dict.fromkeys(("Registry", "get", "get_registry", "list_components", "register_plugin", "reset_registry"), "ptyro_core.registry"),
    **dict.fromkeys(("Atoms", "Dataset4D", "Grid", "PotentialSlices", "ProbeModes", "ReconState", "ScanPositions"), "ptyro_core.types"),
}


__getattr__ = lazy_getattr(__name__, _LAZY)

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
