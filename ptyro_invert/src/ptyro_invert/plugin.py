"""Entry point of ptyro-invert: registers its losses, optimizers and reconstructions.

Every component is registered lazily, as a ``"module:attribute"`` reference with its
description, so that listing them (``ptyro plugins``) imports none of them (and no JAX). The
tables below are the one list of the built-in names and descriptions (``LOSSES`` of
:mod:`ptyro_invert.losses`, ``OPTIMIZERS`` of :mod:`ptyro_invert.optimizers` and ``COMPONENTS``
of :mod:`ptyro_invert.direct` are made from them).
"""

from ptyro_core import hookimpl

#: name -> ("module:attribute", one-line description)
LOSSES = {
    "amplitude": ("ptyro_invert.losses:amplitude_loss", "Least squares on amplitudes √I (Gaussian noise on √I), mean over patterns"),
    "intensity": ("ptyro_invert.losses:intensity_loss", "Least squares on intensities I, mean over patterns"),
    "poisson": ("ptyro_invert.losses:poisson_loss", "Poisson negative log-likelihood (deviance/2) for counted data, mean over patterns"),
}
OPTIMIZERS = {
    "sgd": ("ptyro_invert.optimizers:sgd", "Wirtinger gradient descent with optional (Nesterov) momentum, per-group learning rates"),
    "adam": ("ptyro_invert.optimizers:adam", "Adam for complex and real PyTrees (second moments |g|²), per-group learning rates"),
    "rmsprop": ("ptyro_invert.optimizers:rmsprop", "RMSProp for complex and real PyTrees (|g|²), per-group learning rates"),
    "adagrad": ("ptyro_invert.optimizers:adagrad", "Adagrad for complex and real PyTrees (|g|²), per-group learning rates"),
}
RECONSTRUCTIONS = {
    "single_slice": ("ptyro_invert.recon:single_slice", "Object and probe, minibatched gradient ptychography (one slice)"),
    "position_corrected": ("ptyro_invert.recon:position_corrected", "Single slice plus per-position and global affine scan correction"),
    "mixed_state": ("ptyro_invert.recon:mixed_state", "Several orthogonal incoherent probe modes for partial coherence"),
    "multislice": ("ptyro_invert.recon:multislice", "Several object slices propagated with a registered propagator"),
}
DIRECT = {
    "icom": ("ptyro_invert.direct:icom_reconstruction", "Integrated centre of mass (iCoM/DPC), Fourier inverse gradient"),
    "dpc": (
        "ptyro_invert.direct:dpc_reconstruction",
        "Segmented-detector (e.g. quadrant) DPC, calibrated on the mean pattern and integrated like iCoM",
    ),
    "parallax": (
        "ptyro_invert.direct:parallax_reconstruction",
        "Tilt-corrected bright field with defocus/astigmatism/coma fitted from the parallax shifts",
    ),
    "ssb": ("ptyro_invert.direct:ssb_reconstruction", "Single-sideband ptychography with the probe's aberrations (weak phase)"),
    "obf": ("ptyro_invert.direct:obf_reconstruction", "Optimum bright field: SNR-optimal linear phase image"),
    "wdd": ("ptyro_invert.direct:wdd_reconstruction", "Wigner-distribution deconvolution (complex object, thicker specimens)"),
}


@hookimpl
def ptyro_register_losses(register):
    for name, (reference, description) in LOSSES.items():
        register(name, reference, description=description)


@hookimpl
def ptyro_register_optimizers(register):
    for name, (reference, description) in OPTIMIZERS.items():
        register(name, reference, description=description)


@hookimpl
def ptyro_register_reconstructions(register):
    for name, (reference, description) in {**RECONSTRUCTIONS, **DIRECT}.items():
        register(name, reference, description=description)
