"""ptyro_simul: the physics of electron scattering for Ptyrodactyl.

Modules: :mod:`~ptyro_simul.constants` (wavelength, interaction constant),
:mod:`~ptyro_simul.structures` (built-in crystals, readers), :mod:`~ptyro_simul.potentials`
(the ``ParametrizedPotential`` framework and ``kirkland``), :mod:`~ptyro_simul.phonons`
(frozen phonons), :mod:`~ptyro_simul.probe` (``aberrated_probe``, ``partially_coherent_probe``),
:mod:`~ptyro_simul.propagator` (``fresnel``, a kernel propagator), :mod:`~ptyro_simul.multislice`
(exit waves and the planned ``multislice`` simulator), :mod:`~ptyro_simul.backend` (far-field back
ends: ``auto``, ``xla`` or a plugin's), :mod:`~ptyro_simul.detectors` and :mod:`~ptyro_simul.stem`
(``iter_4dstem``, ``simulate_4dstem``, ``cbed``). Components register through the
``ptyrodactyl`` entry point (:mod:`ptyro_simul.plugin`); importing this package imports nothing
heavy.
"""
