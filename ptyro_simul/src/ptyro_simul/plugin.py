"""Entry point of ptyro-simul: registers its potentials, propagators, probes and simulators.

Each component is registered lazily, as a ``"module:attribute"`` reference with its description:
listing them (``ptyro plugins``) imports none of them (and no JAX); the first use imports it.
"""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_potentials(register):
    register(
        "kirkland", "ptyro_simul.potentials:kirkland", description="Kirkland (2010) parametrisation: K0 + Gaussian projected potential, infinite/finite slicing"
    )


@hookimpl
def ptyro_register_propagators(register):
    register("fresnel", "ptyro_simul.propagator:fresnel", description="Fresnel free-space propagator, band-limited to 2/3 Nyquist, with tilt")


@hookimpl
def ptyro_register_probes(register):
    register("aberrated", "ptyro_simul.probe:aberrated_probe", description="Soft-edged aperture with polar aberrations to 5th order, Σ|ψ|²=1")
    register(
        "partially_coherent",
        "ptyro_simul.probe:partially_coherent_probe",
        description="Incoherent modes for focal spread (Gauss-Hermite defocus) and source size (shifted copies), optional SVD",
    )


@hookimpl
def ptyro_register_simulators(register):
    register(
        "multislice",
        "ptyro_simul.multislice:multislice",
        description="Multislice (lax.scan over slices), probe shifted by a Fourier phase ramp, summed over modes",
    )
