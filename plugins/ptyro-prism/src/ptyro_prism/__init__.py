"""ptyro-prism: the PRISM algorithm (Ophus, Adv. Struct. Chem. Imaging 3:13, 2017) as the
ptyrodactyl simulator ``prism``."""

from ptyro_prism.prism import Prism, PrismSimulator, beam_indices, build_smatrix, prism, smatrix_memory

__version__ = "0.1.0"
__all__ = ["Prism", "PrismSimulator", "beam_indices", "build_smatrix", "prism", "smatrix_memory", "__version__"]
