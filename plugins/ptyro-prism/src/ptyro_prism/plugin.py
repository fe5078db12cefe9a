"""Entry point of ptyro-prism: registers (lazily, by reference: listing imports nothing heavy) the simulator ``prism``."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_simulators(register):
    register(
        "prism",
        "ptyro_prism.prism:prism",
        description="PRISM (Ophus 2017): plane-wave S-matrix with interpolation factor f, exact (= multislice) at f=1",
    )
