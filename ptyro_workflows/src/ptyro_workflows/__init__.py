"""ptyro_workflows: end-to-end pipelines and the ``ptyro`` command.

From a structure file to a reconstruction, as a user runs it:

- :func:`simulate` (configuration → 4D-STEM dataset, streamed to an EMD 1.0 file);
- :func:`reconstruct` (dataset + configuration → :class:`~ptyro_core.ReconState`);
- :func:`load_dataset` / :func:`save_dataset` (EMD 1.0 that py4DSTEM reads; ``.npy``),
  :func:`load_reconstruction` / :func:`save_reconstruction`, :func:`file_info`;
- :func:`load_config` / :func:`validate` (the TOML configuration contract);
- :func:`run_demo` (``ptyro demo``).

Figures live in :mod:`ptyro_workflows.figures` (the only module that imports matplotlib).
"""

import sys
import types

from ptyro_core._lazy import lazy_getattr

# imported on first use (PEP 562): ``import ptyro_workflows`` (and the ``ptyro`` command's
# --help, info, show) does not import JAX
_LAZY = {
    **dict.fromkeys(("load_config", "reconstruction_config", "simulation_config", "to_toml", "validate"), "ptyro_workflows.config"),
    **dict.fromkeys(
        ("DatasetWriter", "file_info", "load_dataset", "load_images", "load_reconstruction", "read_file_provenance", "save_dataset", "save_reconstruction"),
        "ptyro_workflows.io",
    ),
    **dict.fromkeys(("initial_state", "phase_correlation", "reconstruct"), "ptyro_workflows.reconstruct"),
    **dict.fromkeys(("SimulationResult", "simulate"), "ptyro_workflows.simulate"),
    "run_demo": "ptyro_workflows.demo",
    "show_file": "ptyro_workflows.show",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


class _Package(types.ModuleType):
    """The import system binds a submodule as an attribute of its package once imported; the
    functions named like their modules (``simulate``, ``reconstruct``) stay the functions."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"

__all__ = [
    "DatasetWriter",
    "SimulationResult",
    "file_info",
    "initial_state",
    "load_config",
    "load_dataset",
    "load_images",
    "load_reconstruction",
    "phase_correlation",
    "read_file_provenance",
    "reconstruct",
    "reconstruction_config",
    "run_demo",
    "save_dataset",
    "save_reconstruction",
    "show_file",
    "simulate",
    "simulation_config",
    "to_toml",
    "validate",
]
