"""Entry point of ptyro-lobato: registers the potential ``lobato``."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_potentials(register):
    from ptyro_lobato.potential import lobato

    register(
        "lobato",
        lobato,
        description="Lobato & Van Dyck (2014) 5-term parameterization, Z=1..103, closed-form K0/K1 projection",
    )
