"""Entry point of ptyro-invert: registers its losses, optimizers and reconstructions."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_losses(register):
    from ptyro_invert.losses import LOSSES

    for name, (fn, description) in LOSSES.items():
        register(name, fn, description=description)


@hookimpl
def ptyro_register_optimizers(register):
    from ptyro_invert.optimizers import OPTIMIZERS

    for name, (fn, description) in OPTIMIZERS.items():
        register(name, fn, description=description)


@hookimpl
def ptyro_register_reconstructions(register):
    from ptyro_invert import recon

    register("single_slice", recon.single_slice, description="Object and probe, minibatched gradient ptychography (one slice)")
    register("position_corrected", recon.position_corrected, description="Single slice plus per-position and global affine scan correction")
    register("mixed_state", recon.mixed_state, description="Several orthogonal incoherent probe modes for partial coherence")
    register("multislice", recon.multislice, description="Several object slices propagated with a registered propagator")
    from ptyro_invert.direct import COMPONENTS

    for name, (fn, description) in COMPONENTS.items():
        register(name, fn, description=description)
