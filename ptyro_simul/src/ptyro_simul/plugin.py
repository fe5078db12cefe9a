"""Entry point of ptyro-simul: registers its potentials, propagators, probes and simulators."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_potentials(register):
    from ptyro_simul.potentials import kirkland

    register("kirkland", kirkland, description="Kirkland (2010) parametrisation: K0 + Gaussian projected potential, infinite/finite slicing")


@hookimpl
def ptyro_register_propagators(register):
    from ptyro_simul.propagator import fresnel

    register("fresnel", fresnel, description="Fresnel free-space propagator, band-limited to 2/3 Nyquist, with tilt")


@hookimpl
def ptyro_register_probes(register):
    from ptyro_simul.probe import aberrated_probe

    register("aberrated", aberrated_probe, description="Soft-edged aperture with polar aberrations to 5th order, Σ|ψ|²=1")
    from ptyro_simul.probe import partially_coherent_probe

    register(
        "partially_coherent",
        partially_coherent_probe,
        description="Incoherent modes for focal spread (Gauss-Hermite defocus) and source size (shifted copies), optional SVD",
    )


@hookimpl
def ptyro_register_simulators(register):
    from ptyro_simul.multislice import multislice

    register("multislice", multislice, description="Multislice (lax.scan over slices), probe shifted by a Fourier phase ramp, summed over modes")
