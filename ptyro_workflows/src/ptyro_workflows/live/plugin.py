"""Entry point of the built-in live sources (hook ``ptyro_register_sources``), registered lazily
(``"module:attribute"`` references, imported when a source is used)."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_sources(register):
    register("dectris", "ptyro_workflows.live.dectris:dectris", description="DECTRIS Stream V2 over ZeroMQ (dectris://HOST:PORT; uncompressed, bslz4, lz4)")
    register(
        "merlin",
        "ptyro_workflows.live.merlin:merlin",
        description="Quantum Detectors Merlin TCP data port (merlin://HOST:PORT; MPX-framed HDR and MQ1 frames, U08/U16/U32)",
    )
    register("replay", "ptyro_workflows.live.sources:replay", description="a dataset file streamed frame by frame (replay:PATH, --fps N)")
