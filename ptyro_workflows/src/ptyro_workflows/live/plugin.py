"""Entry point of the built-in live sources (hook ``ptyro_register_sources``)."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_sources(register):
    from ptyro_workflows.live.dectris import dectris
    from ptyro_workflows.live.sources import replay

    register("dectris", dectris, description="DECTRIS Stream V2 over ZeroMQ (dectris://HOST:PORT; uncompressed, bslz4, lz4)")
    register("replay", replay, description="a dataset file streamed frame by frame (replay:PATH, --fps N)")
