"""ptyro-native: the native CPU back end of the multislice far field, registered as the
far-field back end ``native`` (see :mod:`ptyro_native.kernel`)."""

from ptyro_native.kernel import LIBRARY, NativeBackend, load, native

__version__ = "0.1.0"
__all__ = ["LIBRARY", "NativeBackend", "load", "native", "__version__"]
