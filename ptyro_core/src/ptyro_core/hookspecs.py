"""The pluggy hook specifications of ptyrodactyl: one hook per component kind.

A plugin implements any of them with :data:`ptyro_core.hookimpl`; each is called with a
``register(name, component, *, description="")`` callable supplied by the core, so naming,
validation and the duplicate policy live in one place. These names and that signature are the
public contract for third-party authors.
"""

from collections.abc import Callable

import pluggy

PROJECT = "ptyrodactyl"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


@hookspec
def ptyro_register_potentials(register: Register) -> None:
    """Register potentials: ``component(atoms, grid, *, slice_thickness, projection="infinite", **options) -> PotentialSlices``."""


@hookspec
def ptyro_register_propagators(register: Register) -> None:
    """Register propagators: ``component(wave, dz, grid, energy, *, tilt=(0.0, 0.0)) -> wave`` (free-space propagation over dz Å)."""


@hookspec
def ptyro_register_probes(register: Register) -> None:
    """Register probes: ``component(grid, energy, *, semiangle_cutoff, aberrations=None, **options) -> ProbeModes``."""


@hookspec
def ptyro_register_losses(register: Register) -> None:
    """Register losses: ``component(predicted, measured, *, mask=None, weights=None) -> scalar`` on intensities (b, qx, qy)."""


@hookspec
def ptyro_register_optimizers(register: Register) -> None:
    """Register optimizers: ``component(learning_rate, **options) -> Optimizer`` (an ``(init, update)`` pair)."""


@hookspec
def ptyro_register_reconstructions(register: Register) -> None:
    """Register reconstructions: ``component(dataset, state, *, loss, optimizer, iterations, batch_size, **options) -> ReconState``."""


@hookspec
def ptyro_register_simulators(register: Register) -> None:
    """Register 4D-STEM simulators: ``component(potential, probe, *, propagator="fresnel", **options) -> fn``,
    where ``fn(positions)`` maps a batch of scan positions (b, 2) Å to diffraction intensities
    (b, nx, ny), centred, summed over probe modes (e.g. ``multislice``, or PRISM from a plugin)."""


@hookspec
def ptyro_register_sources(register: Register) -> None:
    """Register frame sources (detector streams): ``component(address, **options) -> stream``, an
    iterable of ``SeriesStart``, ``Frame`` ... , ``SeriesEnd`` with a ``close()`` (see
    ``ptyro_workflows.live.sources``); chosen on the command line as ``NAME:ADDRESS``."""


@hookspec
def ptyro_register_backends(register: Register) -> None:
    """Register far-field back ends of the multislice loop with kernel propagators:
    ``component(waves, head, last, offsets=None) -> intensities`` (a
    :class:`ptyro_core.protocols.FarFieldBackend`, e.g. ``native`` from ptyro-native), chosen
    with ``backend="auto" | "xla" | NAME``."""


@hookspec
def ptyro_register_readers(register: Register) -> None:
    """Register readers: ``component(path, *, lazy=True, **options) -> dict`` with ``"array"`` (4D
    array-like (Rx, Ry, Qx, Qy), lazy where the format allows), ``"calibration"`` (``energy``,
    ``scan_step``, ``detector_pixel`` as ``(value, unit)`` in the file's units) and ``"metadata"``;
    optional attributes ``suffixes`` (file endings claimed) and ``claims(path) -> bool``."""


#: kind name -> hook name; the order is the order of listings.
HOOKS: dict[str, str] = {
    "potential": "ptyro_register_potentials",
    "propagator": "ptyro_register_propagators",
    "probe": "ptyro_register_probes",
    "loss": "ptyro_register_losses",
    "optimizer": "ptyro_register_optimizers",
    "reconstruction": "ptyro_register_reconstructions",
    "simulator": "ptyro_register_simulators",
    "source": "ptyro_register_sources",
    "backend": "ptyro_register_backends",
    "reader": "ptyro_register_readers",
}
KINDS: tuple[str, ...] = tuple(HOOKS)
