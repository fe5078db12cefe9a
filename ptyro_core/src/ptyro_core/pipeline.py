"""Composing components into jitted, batched, sharded pipelines.

The one code path for 1 CPU, 8 GPUs or many hosts: scan positions are cut into batches whose
size is a multiple of the number of devices, each batch is placed on a
``NamedSharding(mesh, P("scan"))`` (split over devices), everything else (object, probe,
potential, components) is replicated, and a function jitted once per shape does the rest; the
compiler all-reduces gradients. The last, short batch is padded (so nothing recompiles) and the
padding is dropped from the results. Memory is bounded by the batch, not by the scan.
"""

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ptyro_core.errors import MemoryBudgetError, PtyroValueError
from ptyro_core.sources import ArraySource, HDF5Source, LazySource  # re-exported: the pattern sources live there

__all__ = [
    "SCAN_AXIS",
    "device_mesh",
    "scan_sharding",
    "replicated_sharding",
    "shard_scan",
    "replicate",
    "round_batch_size",
    "batch_bounds",
    "pad_batch",
    "check_streams",
    "default_streams",
    "map_batches",
    "gather",
    "initialize_distributed",
    "is_writer",
    "ArraySource",
    "HDF5Source",
    "LazySource",
    "pattern_source",
    "global_batch",
    "available_memory",
    "memory_budget",
    "check_memory",
]

SCAN_AXIS = "scan"


def device_mesh(devices: Any = None) -> Mesh:
    """A one-axis mesh named ``"scan"`` over ``devices`` (default: every device of every process)."""
    devs = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devs), (SCAN_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def scan_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's ``scan`` axis."""
    return NamedSharding(mesh, P(SCAN_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_scan(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` with its leading axis split over the mesh.

    With several processes (``jax.distributed``), each process must hold the same host values;
    each places only the shards of its own devices.
    """
    sharding = scan_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(x: Any) -> Any:
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(place, tree)


def gather(tree: Any) -> Any:
    """Bring a (possibly multi-process) sharded result to host numpy arrays on every process."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree_util.tree_map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Join a multi-process JAX run (before any JAX computation).

    With no arguments, JAX picks the cluster up from its environment (SLURM, Open MPI, ...).
    On CPUs, collectives go through gloo.
    """
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - option absent on some builds
        pass
    kwargs: dict[str, Any] = {}
    if coordinator is not None:
        kwargs = {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}
    jax.distributed.initialize(**kwargs)


def is_writer() -> bool:
    """True on the one process that writes outputs (process 0)."""
    return jax.process_index() == 0


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array leaf of ``tree`` replicated on every device of the mesh."""
    return jax.device_put(tree, replicated_sharding(mesh))


def round_batch_size(batch_size: int, num_devices: int, total: int | None = None) -> int:
    """The batch size actually used: at least one position per device, a multiple of the device
    count, and no larger than needed for ``total`` positions."""
    if int(batch_size) < 1:
        raise PtyroValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    b = int(batch_size)
    if total is not None:
        b = min(b, int(total))
    return max(num_devices, int(math.ceil(b / num_devices)) * num_devices)


def batch_bounds(total: int, batch_size: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(total) in batches of ``batch_size``."""
    return [(s, min(s + batch_size, total)) for s in range(0, total, batch_size)]


def pad_batch(tree: Any, size: int) -> Any:
    """Pad every leaf along axis 0 to ``size`` by repeating its last entry."""

    def pad(x: Any) -> Any:
        n = x.shape[0]
        if n == size:
            return x
        reps = jnp.broadcast_to(x[-1:], (size - n,) + tuple(x.shape[1:]))
        return jnp.concatenate([jnp.asarray(x), reps], axis=0)

    return jax.tree_util.tree_map(pad, tree)


def check_streams(value: Any, name: str = "streams") -> int:
    """``value`` as a number of concurrent batches (a whole number >= 1), or a clear error naming
    ``name``."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise PtyroValueError(f"{name}: expected a whole number >= 1, got {value!r}")
    return n


def default_streams(mesh: Mesh) -> int:
    """How many batches :func:`map_batches` runs at once by default: on one CPU device of one
    process, one per core (``PTYRO_STREAMS`` overrides; at most 8), because XLA runs each
    FFT of a CPU program on one thread and independent batches dispatched from separate threads
    run side by side (SIM-A's FFTs: 0.27 ms each in one stream, 0.15 ms in two on 2 cores).
    Everywhere else 1: an accelerator is kept busy by one program, and a mesh of several
    devices (or hosts) already splits each batch and must run its collectives in order."""
    env = os.environ.get("PTYRO_STREAMS")
    if env:
        return check_streams(env, "PTYRO_STREAMS")
    if mesh.size != 1 or jax.process_count() != 1 or mesh.devices.flat[0].platform != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def map_batches(
    fn: Callable[..., Any],
    xs: Any,
    *args: Any,
    batch_size: int,
    mesh: Mesh | None = None,
    progress: Callable[[int], None] | None = None,
    gather_outputs: bool = False,
    streams: int | None = None,
) -> Iterator[tuple[int, int, Any]]:
    """Apply ``fn(batch_xs, *args)`` to ``xs`` (a PyTree with a leading scan axis) batch by batch.

    ``fn`` must be jitted (or jittable; it is jitted here once per shape). Each batch is sharded
    over ``mesh`` (default: every device) and ``args`` are replicated. Yields
    ``(start, stop, outputs)`` in order, with outputs trimmed to the batch's true length (and
    computed), so the caller can stream them (to HDF5, to a running sum) and peak memory stays
    bounded by ``streams`` batches.

    ``streams``: how many batches are computed at once, each dispatched from its own thread
    (default :func:`default_streams`: one per core on a single CPU device, else 1). ``fn`` must
    then be safe to run concurrently (a pure jitted function is).
    """
    mesh = device_mesh() if mesh is None else mesh
    total = int(jax.tree_util.tree_leaves(xs)[0].shape[0])
    b = round_batch_size(batch_size, mesh.size, total)
    jfn = fn if hasattr(fn, "lower") else jax.jit(fn)
    args = replicate(args, mesh)
    streams = default_streams(mesh) if streams is None else check_streams(streams)
    bounds = batch_bounds(total, b)

    def one(start: int, stop: int) -> Any:
        chunk = jax.tree_util.tree_map(lambda x: x[start:stop], xs)
        out = jfn(shard_scan(pad_batch(chunk, b), mesh), *args)
        if gather_outputs or jax.process_count() > 1:
            out = gather(out)
        if stop - start != b:
            out = jax.tree_util.tree_map(lambda y: y[: stop - start], out)
        return jax.block_until_ready(out) if streams > 1 else out

    if streams == 1 or len(bounds) == 1:
        for start, stop in bounds:
            yield start, stop, one(start, stop)
            if progress is not None:
                progress(stop - start)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending: deque = deque()

    def submitted() -> Iterator[tuple[int, int, Any]]:
        # keep `streams` batches in flight; hand them back in order
        for start, stop in bounds:
            pending.append((start, stop, pool.submit(one, start, stop)))
            if len(pending) == streams:
                yield pending.popleft()
        while pending:
            yield pending.popleft()

    with ThreadPoolExecutor(max_workers=streams, thread_name_prefix="ptyro-batch") as pool:
        try:
            for start, stop, fut in submitted():
                yield start, stop, fut.result()
                if progress is not None:
                    progress(stop - start)
        finally:  # the consumer stopped early or a batch failed: start nothing more
            for *_, fut in pending:
                fut.cancel()


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable, or the cgroup limit if lower)."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 8 * 2**30
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path).read().strip()
            if raw.isdigit():
                avail = min(avail, int(raw))
        except OSError:
            pass
    return int(avail)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def memory_budget() -> float:
    """Bytes a run may use: ``PTYRO_MEMORY_BUDGET`` if set, else 80% of available memory."""
    env = os.environ.get("PTYRO_MEMORY_BUDGET")
    if not env:
        return 0.8 * available_memory()
    try:
        budget = float(env)
    except ValueError:
        budget = float("nan")
    if not (budget > 0 and math.isfinite(budget)):
        raise PtyroValueError(f"PTYRO_MEMORY_BUDGET={env!r}: expected a positive number of bytes (e.g. 8e9)")
    return budget


def check_memory(required: float, *, what: str, knob: str, budget: float | None = None) -> None:
    """Refuse a run estimated to need ``required`` bytes when more than ``budget`` (default:
    80% of available memory, or ``PTYRO_MEMORY_BUDGET`` bytes) would be needed."""
    if budget is None:
        budget = memory_budget()
    if required > budget:
        raise MemoryBudgetError(f"{what} needs about {_fmt_bytes(required)} but only {_fmt_bytes(budget)} is available; {knob}")


# --------------------------------------------------------------------------- pattern sources


def pattern_source(dataset: Any) -> Any:
    """The :class:`~ptyro_core.protocols.PatternSource` of a :class:`~ptyro_core.Dataset4D`'s
    patterns: its own source when it was made from one (a file, read lazily), a
    :class:`LazySource` over a caller's array-like, else an :class:`ArraySource` viewing the
    array in memory (no copy, the stored dtype kept)."""
    arr = dataset.array
    if isinstance(arr, (ArraySource, LazySource, HDF5Source)) or (hasattr(arr, "read") and hasattr(arr, "close")):
        return arr
    if dataset.is_lazy:
        return LazySource(arr, "Dataset4D.array")
    return ArraySource(arr)


def global_batch(source: Any, indices: np.ndarray, mesh: Mesh) -> jax.Array:
    """The patterns ``indices`` of ``source`` as one global array split over the mesh's scan axis.

    Each process reads only the rows that land on its own devices (``make_array_from_callback``),
    so the same call serves one device, many devices, many hosts and out-of-core datasets.
    ``len(indices)`` must be a multiple of the mesh size (see :func:`round_batch_size`).
    """
    indices = np.asarray(indices)
    shape = (indices.shape[0],) + tuple(source.shape[-2:])
    return jax.make_array_from_callback(shape, scan_sharding(mesh), lambda idx: source.read(indices[idx[0]]))  # type: ignore[index]
