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

from ptyro_workflows.config import load_config, reconstruction_config, simulation_config, to_toml, validate
from ptyro_workflows.io import (
    DatasetWriter,
    file_info,
    load_dataset,
    load_images,
    load_reconstruction,
    read_file_provenance,
    save_dataset,
    save_reconstruction,
)
from ptyro_workflows.reconstruct import initial_state, phase_correlation, reconstruct
from ptyro_workflows.simulate import SimulationResult, simulate


def run_demo(*args, **kwargs):  # noqa: ANN002, ANN003
    """``ptyro demo`` as a function; see :func:`ptyro_workflows.demo.run_demo`."""
    from ptyro_workflows.demo import run_demo as _run

    return _run(*args, **kwargs)


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
    "simulate",
    "simulation_config",
    "to_toml",
    "validate",
]
