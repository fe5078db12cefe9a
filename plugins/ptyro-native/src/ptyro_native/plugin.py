"""Entry point of ptyro-native: registers the far-field back end ``native``."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_backends(register):
    from ptyro_native.kernel import native

    register("native", native, description="CPU kernel of the multislice far field (XLA FFI, built at install time), complex64")
