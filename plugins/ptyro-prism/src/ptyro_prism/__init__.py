"""ptyro-prism: the PRISM algorithm (Ophus, Adv. Struct. Chem. Imaging 3:13, 2017) as the
ptyrodactyl simulator ``prism``."""

from ptyro_core._lazy import lazy_package

__version__ = "0.1.0"
__all__ = ["Prism", "PrismSimulator", "beam_indices", "build_smatrix", "prism", "smatrix_memory", "__version__"]

# imported on first use, so that the entry point (plugin.py) imports no JAX for a listing; the
# package's ``prism`` is the component although its module has the same name
lazy_package(__name__, dict.fromkeys(("Prism", "PrismSimulator", "beam_indices", "build_smatrix", "prism", "smatrix_memory"), "ptyro_prism.prism"))
