"""ptyro-native: native CPU kernels, registered as the back end ``native``: the multislice far
field of the simulations, and the single-slice far fields of the reconstructions with their
gradient (see :mod:`ptyro_native.kernel`)."""

from ptyro_core._lazy import lazy_getattr

__version__ = "0.1.0"
__all__ = ["LIBRARY", "NativeBackend", "load", "native", "__version__"]

# imported on first use (PEP 562): the entry point (plugin.py) then imports no JAX for a listing
__getattr__ = lazy_getattr(__name__, dict.fromkeys(("LIBRARY", "NativeBackend", "load", "native"), "ptyro_native.kernel"))
