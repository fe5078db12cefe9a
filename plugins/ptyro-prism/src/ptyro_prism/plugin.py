"""Entry point of ptyro-prism: registers the simulator ``prism``."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_simulators(register):
    from ptyro_prism.prism import prism

    register(
        "prism",
        prism,
        description="PRISM (Ophus 2017): plane-wave S-matrix with interpolation factor f, exact (= multislice) at f=1",
    )
