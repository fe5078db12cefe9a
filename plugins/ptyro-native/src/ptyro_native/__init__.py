"""ptyro-native: the native CPU back end of the multislice far field, registered as the
far-field back end ``native`` (see :mod:`ptyro_native.kernel`)."""

from ptyro_core._lazy import lazy_getattr

__version__ = "0.1.0"
__all__ = ["LIBRARY", "NativeBackend", "load", "native", "__version__"]

# imported on first use (PEP 562): the entry point (plugin.py) then imports no JAX for a listing
__getattr__ = lazy_getattr(__name__, dict.fromkeys(("LIBRARY", "NativeBackend", "load", "native"), "ptyro_native.kernel"))
