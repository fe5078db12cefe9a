"""Entry point of the built-in live sources (hook ``ptyro_register_sources``)."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_sources(register):
    from ptyro_workflows.live.dectris import dectris
    from ptyro_workflows.live.merlin import merlin
    from ptyro_workflows.live.sources import replay

    register("dectris", dectris, description="DECTRIS Stream V2 over ZeroMQ (dectris://HOST:PORT; uncompressed, bslz4, lz4)")
    register("merlin", merlin, description="Quantum Detectors Merlin TCP data port (merlin://HOST:PORT; MPX-framed HDR and MQ1 frames, U08/U16/U32)")
    register("replay", replay, description="a dataset file streamed frame by frame (replay:PATH, --fps N)")
