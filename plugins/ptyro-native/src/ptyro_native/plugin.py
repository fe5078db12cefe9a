"""Entry point of ptyro-native: registers (lazily, by reference: listing imports nothing heavy) the far-field back end ``native``."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_backends(register):
    register(
        "native", "ptyro_native.kernel:native", description="CPU kernels (XLA FFI, built at install time), complex64: multislice and reconstruction far fields"
    )
