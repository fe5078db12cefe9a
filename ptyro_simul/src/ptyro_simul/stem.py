"""4D-STEM: simulate a scan batch by batch and reduce every batch with every detector.

``iter_4dstem`` streams ``(start, stop, {detector_name: array})`` per batch (memory bounded by the
batch, never by the scan; batches are sharded over the devices of ``mesh`` through
:func:`ptyro_core.pipeline.map_batches`); ``simulate_4dstem`` collects them into arrays shaped
like the scan: pixelated (Rx, Ry, Qx, Qy), annular (Rx, Ry), COM (Rx, Ry, 2), segmented
(Rx, Ry, nseg).

Frozen phonons: pass a *sequence* of :class:`~ptyro_core.PotentialSlices` (one per
configuration, e.g. from :func:`ptyro_simul.phonons.frozen_phonon_potentials`) as ``potential``;
the intensities of each batch are averaged over the configurations (a ``lax.scan`` inside the
jitted batch function) before the detectors reduce them.

Plan once, apply many: a simulator component that is a
:class:`~ptyro_core.protocols.PlannedSimulator` (``multislice``, PRISM) is planned once per
simulation and configuration, outside ``jit`` (the transmission functions and kernels, the
S-matrix), and the jitted batch function takes the plan as an argument; any other simulator
component (a plain ``component(potential, probe, **options) -> fn``) is built inside the batch
function.
"""

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ptyro_core import PotentialSlices, ProbeModes, PtyroTypeError, PtyroValueError, ScanPositions
from ptyro_core.pipeline import check_memory, check_streams, default_streams, device_mesh, map_batches, memory_budget
from ptyro_core.protocols import PlannedSimulator

__all__ = ["iter_4dstem", "simulate_4dstem", "cbed", "plan_simulation", "resolve_detectors", "stack_potentials"]


def resolve_detectors(detectors: Any) -> dict[str, Any]:
    """``{name: detector}`` from a mapping, a sequence of detectors (named by ``.name``) or one."""
    if detectors is None:
        raise PtyroValueError("detectors: expected at least one detector, e.g. [PixelatedDetector()]")
    if hasattr(detectors, "reduce"):
        detectors = [detectors]
    if isinstance(detectors, Mapping):
        out = dict(detectors)
    else:
        out = {}
        for d in detectors:
            name = getattr(d, "name", None) or type(d).__name__
            if name in out:
                raise PtyroValueError(f"detectors: two detectors are named {name!r}; pass a dict {{name: detector}}")
            out[name] = d
    if not out:
        raise PtyroValueError("detectors: expected at least one detector, e.g. [PixelatedDetector()]")
    for name, d in out.items():
        if not hasattr(d, "reduce"):
            raise PtyroTypeError(f"detectors[{name!r}]: expected an object with .reduce(patterns, grid, energy), got {d!r}")
    return out


def stack_potentials(potential: Any) -> PotentialSlices:
    """One PotentialSlices, or a sequence of them (frozen-phonon configurations), as one
    PotentialSlices whose arrays have a leading configuration axis (c, s, nx, ny)."""
    return _stack(_configurations(potential))


def _stack(items: list[Any]) -> Any:
    """PyTrees of the same structure as one, each leaf stacked along a new leading axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *items)


def _configurations(potential: Any) -> list[PotentialSlices]:
    """The configurations of ``potential`` (one PotentialSlices or a sequence), checked alike."""
    pots = [potential] if isinstance(potential, PotentialSlices) else list(potential)
    if not pots or not all(isinstance(p, PotentialSlices) for p in pots):
        raise PtyroTypeError(f"potential: expected PotentialSlices or a sequence of them, got {type(potential).__name__}")
    shapes = {(p.array.shape, p.grid) for p in pots}
    if len(shapes) != 1:
        raise PtyroValueError(f"potential: frozen-phonon configurations differ in shape or grid: {sorted(str(s) for s in shapes)}")
    return pots


def _resolve_simulator(simulator: Any) -> Any:
    if isinstance(simulator, str):
        import ptyro_core

        return ptyro_core.get("simulator", simulator)
    if not callable(simulator):
        raise PtyroTypeError(f"simulator: expected a registered name or a callable, got {simulator!r}")
    return simulator


def _batch_function(simulator: Any, detectors: dict[str, Any], sim_options: dict[str, Any], stacked_plan: bool | None) -> Any:
    """The jitted batch function, cached so repeated runs with the same simulator, detectors and
    options (and shapes) compile once. ``stacked_plan``: None for a plain simulator component
    (built inside the function, from the stacked potential); else the function takes the plan of
    a :class:`~ptyro_core.protocols.PlannedSimulator` (True: stacked over frozen-phonon
    configurations), whose static settings key JAX's own cache."""
    options = () if stacked_plan is not None else tuple(sorted(sim_options.items()))
    key = (simulator, tuple(detectors.items()), options, stacked_plan)
    try:
        return _cached_batch_function(key)
    except TypeError:  # an unhashable detector or option: build a fresh one
        return _make_batch_function(simulator, detectors, dict(options), stacked_plan)


@functools.lru_cache(maxsize=32)
def _cached_batch_function(key: tuple) -> Any:
    simulator, detectors, options, stacked_plan = key
    return _make_batch_function(simulator, dict(detectors), dict(options), stacked_plan)


def _reduce(patterns: Array, probe: ProbeModes, detectors: tuple[tuple[str, Any], ...]) -> dict[str, Array]:
    return {name: d.reduce(patterns, probe.grid, probe.energy) for name, d in detectors}


def _mean(one: Any, stack: Any) -> Array:
    """``one(item)`` averaged over the items (configurations) of ``stack`` (a ``lax.scan``)."""
    out = jax.eval_shape(one, jax.tree_util.tree_map(lambda x: x[0], stack))

    def step(acc: Array, item: Any) -> tuple[Array, None]:
        return acc + one(item), None

    total, _ = jax.lax.scan(step, jnp.zeros(out.shape, out.dtype), stack)
    return total / jax.tree_util.tree_leaves(stack)[0].shape[0]


def _apply_planned(positions: Array, plan: Any, probe: ProbeModes, simulator: Any, detectors: tuple[tuple[str, Any], ...], stacked: bool) -> dict[str, Array]:
    """The batch function of a :class:`~ptyro_core.protocols.PlannedSimulator`: a top-level
    function whose settings are static arguments (the simulator component, the ``(name,
    detector)`` pairs, whether the plan is stacked over configurations), so that a warm start
    finds its program in :mod:`ptyro_core.exec_cache` without tracing it (frozen records of
    numbers and strings: the built-in simulators and detectors)."""
    if not stacked:
        return _reduce(simulator.apply(plan, positions), probe, detectors)
    return _reduce(_mean(lambda p: simulator.apply(p, positions), plan), probe, detectors)


_run_planned = jax.jit(_apply_planned, static_argnums=(3, 4, 5))


def _make_batch_function(simulator: Any, detectors: dict[str, Any], sim_options: dict[str, Any], stacked_plan: bool | None) -> Any:
    dets = tuple(detectors.items())
    if stacked_plan is None:  # a plain simulator component, built per configuration inside

        def run(positions: Array, stacked: PotentialSlices, probe: ProbeModes) -> dict[str, Array]:
            return _reduce(_mean(lambda pot: simulator(pot, probe, **sim_options)(positions), stacked), probe, dets)

        return jax.jit(run)
    try:
        hash((simulator, dets))
    except TypeError:  # an unhashable simulator or detector: a closure over them
        return jax.jit(lambda positions, plan, probe: _apply_planned(positions, plan, probe, simulator, dets, stacked_plan))
    return _PlannedBatch(simulator, dets, stacked_plan)


@dataclasses.dataclass(frozen=True)
class _PlannedBatch:
    """:func:`_run_planned` with its static arguments bound; called (and lowered) as
    ``fn(positions, plan, probe)``, as :func:`~ptyro_core.pipeline.map_batches` does."""

    simulator: Any
    detectors: tuple[tuple[str, Any], ...]
    stacked: bool

    def __call__(self, positions: Array, plan: Any, probe: ProbeModes) -> dict[str, Array]:
        return _run_planned(positions, plan, probe, self.simulator, self.detectors, self.stacked)

    def lower(self, positions: Array, plan: Any, probe: ProbeModes) -> Any:
        return _run_planned.lower(positions, plan, probe, self.simulator, self.detectors, self.stacked)


def plan_simulation(simulator: Any, stacked: PotentialSlices, probe: ProbeModes, sim_options: dict[str, Any]) -> Any:
    """The plan of a :class:`~ptyro_core.protocols.PlannedSimulator` for every configuration of a
    :func:`stack_potentials` stack, made once, outside ``jit``: one configuration's plan, or the
    plans of several stacked along a leading axis; None for a plain simulator component."""
    if not isinstance(simulator, PlannedSimulator):
        return None
    n_conf = int(stacked.array.shape[0])
    return _plan_each(simulator, [jax.tree_util.tree_map(lambda x, i=i: x[i], stacked) for i in range(n_conf)], probe, sim_options)


def _plan_each(simulator: PlannedSimulator, pots: list[PotentialSlices], probe: ProbeModes, sim_options: dict[str, Any]) -> Any:
    """The plan of each configuration, stacked along a leading axis (one configuration: its plan,
    with no stacking and slicing programs run on the way)."""
    plans = [simulator.plan(p, probe, **sim_options) for p in pots]
    return plans[0] if len(plans) == 1 else _stack(plans)


def _positions_array(positions: Any) -> tuple[Any, tuple[int, ...]]:
    if isinstance(positions, ScanPositions):
        shape = positions.shape if positions.shape is not None else (len(positions),)
        return positions.positions, tuple(shape)
    arr = positions if isinstance(positions, jax.Array) else np.asarray(positions)  # NumPy stays on the host: no program
    if arr.ndim != 2 or arr.shape[-1] != 2:
        raise PtyroValueError(f"positions: expected ScanPositions or an array (n, 2) of (x, y) Å, got shape {arr.shape}")
    return arr, (arr.shape[0],)


def _streams_and_budget(streams: Any, mesh: Any, per_batch: int, shared: int, what: str) -> tuple[int, float]:
    """Batches computed at once (default: one per core on a CPU, fewer if memory is short) and the
    memory budget in bytes, after refusing a run that would not fit in it."""
    budget = memory_budget()
    if streams is None:
        streams = default_streams(mesh)
        while streams > 1 and per_batch * streams + shared > budget:
            streams -= 1
    else:
        streams = check_streams(streams)
    check_memory(per_batch * streams + shared, what=what, budget=budget,
                 knob="lower batch_size (or streams, PTYRO_STREAMS, or the number of probe modes)")  # fmt: skip
    return streams, budget


def iter_4dstem(
    potential: Any,
    probe: ProbeModes,
    positions: Any,
    *,
    detectors: Any,
    batch_size: int = 64,
    simulator: Any = "multislice",
    mesh: Any = None,
    progress: bool = True,
    streams: int | None = None,
    record: dict[str, Any] | None = None,
    **simulator_options: Any,
) -> Iterator[tuple[int, int, dict[str, Array]]]:
    """Yield ``(start, stop, {detector_name: array})`` for each batch of scan positions.

    ``potential``: PotentialSlices, or a sequence of them (frozen phonons; intensities averaged).
    ``positions``: :class:`~ptyro_core.ScanPositions` (or an (n, 2) array, Å). ``detectors``: a
    dict ``{name: detector}``, a sequence of detectors or one detector. The simulator is planned
    once (a :class:`~ptyro_core.protocols.PlannedSimulator`), the batch function jitted once (per
    shape) and each batch sharded over ``mesh`` (default: all devices). ``simulator_options``
    (e.g. ``propagator="fresnel"``, ``tilt``, ``backend``) go to the simulator. ``streams``:
    batches computed at once (default :func:`~ptyro_core.pipeline.default_streams`: one per
    core on one CPU device, else 1; fewer when memory is short). ``record``: a dict filled,
    before the first batch, with what the run actually uses: ``backend`` (the far field's back
    end), ``streams`` and ``memory_budget`` (bytes).
    """
    if not isinstance(probe, ProbeModes):
        raise PtyroTypeError(f"probe: expected ptyro_core.ProbeModes, got {type(probe).__name__}")
    pots = _configurations(potential)
    dets = resolve_detectors(detectors)
    sim = _resolve_simulator(simulator)
    pos, _ = _positions_array(positions)
    nx, ny = probe.grid.gpts
    itemsize = 16 if pots[0].array.dtype == jnp.float64 else 8
    b = min(int(batch_size), int(pos.shape[0]))
    mesh = device_mesh() if mesh is None else mesh
    per_batch, shared = b * probe.num_modes * nx * ny * itemsize * 6, len(pots) * pots[0].array.size * itemsize * 3
    streams, budget = _streams_and_budget(streams, mesh, per_batch, shared, f"4D-STEM batch of {b} positions x {probe.num_modes} modes on {nx}x{ny}")
    planned = isinstance(sim, PlannedSimulator)
    plan = _plan_each(sim, pots, probe, dict(simulator_options)) if planned else None
    stacked = None if planned else _stack(pots)
    stacked_plan = None if plan is None else len(pots) > 1
    fn = _batch_function(sim, dets, dict(simulator_options), stacked_plan)
    if record is not None:
        record.update(backend=str(getattr(plan, "backend", None) or "xla"), streams=int(streams), memory_budget=float(budget))
    bar = None
    if progress:
        from ptyro_core.progress import progress_bar

        bar = progress_bar(total=int(pos.shape[0]), desc="4D-STEM", unit="pos", leave=True)
    try:
        args = (stacked, probe) if plan is None else (plan, probe)
        # the positions on the host: each batch is a NumPy slice put on the devices, not a program
        yield from map_batches(fn, np.asarray(pos), *args, batch_size=batch_size, mesh=mesh, streams=streams, progress=None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()


def simulate_4dstem(
    potential: Any,
    probe: ProbeModes,
    positions: Any,
    *,
    detectors: Any,
    batch_size: int = 64,
    simulator: Any = "multislice",
    mesh: Any = None,
    progress: bool = True,
    streams: int | None = None,
    record: dict[str, Any] | None = None,
    **simulator_options: Any,
) -> dict[str, np.ndarray]:
    """Run :func:`iter_4dstem` and return ``{detector_name: array}`` (numpy) reshaped to the scan
    shape: pixelated (Rx, Ry, Qx, Qy), annular (Rx, Ry), COM (Rx, Ry, 2), segmented (Rx, Ry, nseg).
    For an (n, 2) position array (no raster shape) the leading axis is n."""
    pos, scan_shape = _positions_array(positions)
    n = int(pos.shape[0])
    out: dict[str, np.ndarray] = {}
    for start, stop, signals in iter_4dstem(
        potential,
        probe,
        positions,
        detectors=detectors,
        batch_size=batch_size,
        simulator=simulator,
        mesh=mesh,
        progress=progress,
        streams=streams,
        record=record,
        **simulator_options,
    ):
        for name, signal in signals.items():
            value = np.asarray(signal)
            if name not in out:
                out[name] = np.empty((n,) + value.shape[1:], value.dtype)
            out[name][start:stop] = value
    return {name: v.reshape(tuple(scan_shape) + v.shape[1:]) for name, v in out.items()}


def cbed(potential: Any, probe: ProbeModes, position: Any, *, simulator: Any = "multislice", **simulator_options: Any) -> Array:
    """Convergent-beam pattern (nx, ny), centred, at one probe position (x, y) Å (averaged over
    frozen-phonon configurations when ``potential`` is a sequence)."""
    stacked = stack_potentials(potential)
    sim = _resolve_simulator(simulator)
    pos = jnp.asarray(position)
    if pos.shape != (2,):
        raise PtyroValueError(f"position: expected (x, y) in Å, got shape {pos.shape}")
    n_conf = stacked.array.shape[0]

    def one(acc: Array, pot: PotentialSlices) -> tuple[Array, None]:
        return acc + sim(pot, probe, **simulator_options)(pos[None])[0], None

    total, _ = jax.lax.scan(one, jnp.zeros(tuple(probe.grid.gpts), stacked.array.dtype), stacked)
    return total / n_conf
