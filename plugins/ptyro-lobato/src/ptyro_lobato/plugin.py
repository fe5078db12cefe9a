"""Entry point of ptyro-lobato: registers (lazily, by reference: listing imports nothing heavy) the potential ``lobato``."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_potentials(register):
    register(
        "lobato",
        "ptyro_lobato.potential:lobato",
        description="Lobato & Van Dyck (2014) 5-term parameterization, Z=1..103, closed-form K0/K1 projection",
    )
