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
"""

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ptyro_core import PotentialSlices, ProbeModes, PtyroTypeError, PtyroValueError, ScanPositions
from ptyro_core.pipeline import check_memory, check_streams, default_streams, device_mesh, map_batches, memory_budget
from ptyro_simul import native

__all__ = ["iter_4dstem", "simulate_4dstem", "cbed", "resolve_detectors", "stack_potentials"]


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
    pots = [potential] if isinstance(potential, PotentialSlices) else list(potential)
    if not pots or not all(isinstance(p, PotentialSlices) for p in pots):
        raise PtyroTypeError(f"potential: expected PotentialSlices or a sequence of them, got {type(potential).__name__}")
    shapes = {(p.array.shape, p.grid) for p in pots}
    if len(shapes) != 1:
        raise PtyroValueError(f"potential: frozen-phonon configurations differ in shape or grid: {sorted(str(s) for s in shapes)}")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *pots)


def _resolve_simulator(simulator: Any) -> Any:
    if isinstance(simulator, str):
        import ptyro_core

        return ptyro_core.get("simulator", simulator)
    if not callable(simulator):
        raise PtyroTypeError(f"simulator: expected a registered name or a callable, got {simulator!r}")
    return simulator


def _batch_function(simulator: Any, detectors: dict[str, Any], sim_options: dict[str, Any], prepared: bool = False) -> Any:
    """The jitted batch function, cached so repeated runs with the same simulator, detectors and
    options (and shapes) compile once. ``prepared``: the function takes the simulator's
    operators (``prepare()``, computed once per simulation) as a fourth argument."""
    # PTYRO_NATIVE is read when the simulator is traced: a changed setting needs a fresh function
    key = (simulator, tuple(detectors.items()), tuple(sorted(sim_options.items())), prepared, native.mode())
    try:
        return _cached_batch_function(key)
    except TypeError:  # an unhashable detector or option: build a fresh one
        return _make_batch_function(simulator, detectors, sim_options, prepared)


@functools.lru_cache(maxsize=32)
def _cached_batch_function(key: tuple) -> Any:
    simulator, detectors, options, prepared, _ = key
    return _make_batch_function(simulator, dict(detectors), dict(options), prepared)


def _make_batch_function(simulator: Any, detectors: dict[str, Any], sim_options: dict[str, Any], prepared: bool) -> Any:
    def reduce(patterns: Array, probe: ProbeModes) -> dict[str, Array]:
        return {name: d.reduce(patterns, probe.grid, probe.energy) for name, d in detectors.items()}

    if prepared:  # one configuration whose simulator computed its operators once, outside

        def run_prepared(positions: Array, stacked: PotentialSlices, probe: ProbeModes, ops: Any) -> dict[str, Array]:
            return reduce(simulator(_first_configuration(stacked), probe, **sim_options).apply(ops, positions), probe)

        return jax.jit(run_prepared)

    def run(positions: Array, stacked: PotentialSlices, probe: ProbeModes) -> dict[str, Array]:
        n_conf = stacked.array.shape[0]

        def one(acc: Array, pot: PotentialSlices) -> tuple[Array, None]:
            return acc + simulator(pot, probe, **sim_options)(positions), None

        zero = jnp.zeros((positions.shape[0],) + tuple(probe.grid.gpts), stacked.array.dtype)
        total, _ = jax.lax.scan(one, zero, stacked)
        return reduce(total / n_conf, probe)

    return jax.jit(run)


def _prepared_operators(simulator: Any, stacked: PotentialSlices, probe: ProbeModes, sim_options: dict[str, Any]) -> Any:
    """The operators of a simulator component that says (attribute ``prepares = True``) its
    simulators offer ``prepare()`` / ``apply(operators, positions)`` (the built-in multislice
    does), for one configuration; None for frozen phonons (each configuration's operators are
    then made inside the batch) or any other simulator (which is never built outside the batch
    function: a plugin's may do heavy work on construction, as PRISM builds its S-matrix)."""
    if stacked.array.shape[0] != 1 or getattr(simulator, "prepares", False) is not True:
        return None
    return simulator(_first_configuration(stacked), probe, **sim_options).prepare()


def _first_configuration(stacked: PotentialSlices) -> PotentialSlices:
    """The first configuration of a :func:`stack_potentials` stack (c, s, nx, ny)."""
    return jax.tree_util.tree_map(lambda x: x[0], stacked)


def _positions_array(positions: Any) -> tuple[Array, tuple[int, ...]]:
    if isinstance(positions, ScanPositions):
        shape = positions.shape if positions.shape is not None else (len(positions),)
        return positions.positions, tuple(shape)
    arr = jnp.asarray(positions)
    if arr.ndim != 2 or arr.shape[-1] != 2:
        raise PtyroValueError(f"positions: expected ScanPositions or an array (n, 2) of (x, y) Å, got shape {arr.shape}")
    return arr, (arr.shape[0],)


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
    **simulator_options: Any,
) -> Iterator[tuple[int, int, dict[str, Array]]]:
    """Yield ``(start, stop, {detector_name: array})`` for each batch of scan positions.

    ``potential``: PotentialSlices, or a sequence of them (frozen phonons; intensities averaged).
    ``positions``: :class:`~ptyro_core.ScanPositions` (or an (n, 2) array, Å). ``detectors``: a
    dict ``{name: detector}``, a sequence of detectors or one detector. The batch function is
    jitted once (per shape) and each batch is sharded over ``mesh`` (default: all devices).
    ``simulator_options`` (e.g. ``propagator="fresnel"``, ``tilt``) go to the simulator.
    ``streams``: batches computed at once (default
    :func:`~ptyro_core.pipeline.default_streams`: one per core on one CPU device, else 1; fewer
    when memory is short).
    """
    if not isinstance(probe, ProbeModes):
        raise PtyroTypeError(f"probe: expected ptyro_core.ProbeModes, got {type(probe).__name__}")
    stacked = stack_potentials(potential)
    dets = resolve_detectors(detectors)
    sim = _resolve_simulator(simulator)
    pos, _ = _positions_array(positions)
    nx, ny = probe.grid.gpts
    itemsize = 16 if stacked.array.dtype == jnp.float64 else 8
    b = min(int(batch_size), int(pos.shape[0]))
    mesh = device_mesh() if mesh is None else mesh
    per_batch, shared = b * probe.num_modes * nx * ny * itemsize * 6, stacked.array.size * itemsize * 3
    if streams is None:  # batches at once (one per core on a CPU): fewer if memory is short
        streams = default_streams(mesh)
        while streams > 1 and per_batch * streams + shared > memory_budget():
            streams -= 1
    else:
        streams = check_streams(streams)
    check_memory(
        per_batch * streams + shared,
        what=f"4D-STEM batch of {b} positions x {probe.num_modes} modes on {nx}x{ny}",
        knob="lower batch_size (or streams, PTYRO_STREAMS, or the number of probe modes)",
    )
    ops = _prepared_operators(sim, stacked, probe, dict(simulator_options))
    fn = _batch_function(sim, dets, dict(simulator_options), ops is not None)
    extra = () if ops is None else (ops,)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(pos.shape[0]), desc="4D-STEM", unit="pos")
    try:
        yield from map_batches(fn, pos, stacked, probe, *extra, batch_size=batch_size, mesh=mesh, streams=streams,
                              progress=None if bar is None else bar.update)  # fmt: skip
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
    **simulator_options: Any,
) -> dict[str, np.ndarray]:
    """Run :func:`iter_4dstem` and return ``{detector_name: array}`` (numpy) reshaped to the scan
    shape: pixelated (Rx, Ry, Qx, Qy), annular (Rx, Ry), COM (Rx, Ry, 2), segmented (Rx, Ry, nseg).
    For an (n, 2) position array (no raster shape) the leading axis is n."""
    pos, scan_shape = _positions_array(positions)
    n = int(pos.shape[0])
    out: dict[str, np.ndarray] = {}
    for start, stop, signals in iter_4dstem(
        potential, probe, positions, detectors=detectors, batch_size=batch_size, simulator=simulator, mesh=mesh,
        progress=progress, streams=streams, **simulator_options,
    ):
        for name, value in signals.items():
            value = np.asarray(value)
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
