"""Reconstruction engine shared by the four algorithms (kind ``reconstruction``).

One engine, four presets: ``single_slice`` (object and probe), ``position_corrected`` (+ scan
positions, optionally a global affine map), ``mixed_state`` (several orthogonal, mutually
incoherent probe modes) and ``multislice`` (several object slices, optionally their thickness).

Each step takes a minibatch of scan positions (random order per pass, drawn from
``(seed, pass)`` only, so 1 and N devices see the same batches), shards it over the devices of
the mesh, evaluates the loss and its gradient, applies the optimizer and the constraints, all in
one function jitted once per shape. Padded entries of the last batch have zero weight.
Parameters are a dict PyTree with the groups ``object``, ``probe`` and, where fitted,
``positions`` (per-position corrections, Å), ``affine`` (2×2 matrix about the scan centre) and
``thickness`` (Å per slice); ``learning_rates`` is keyed by these names.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ptyro_core import Dataset4D, Grid, MemoryBudgetError, PtyroTypeError, PtyroValueError, ReconState, get, replace
from ptyro_core.pipeline import (
    batch_bounds,
    check_memory,
    device_mesh,
    global_batch,
    pattern_source,
    replicate,
    round_batch_size,
    scan_sharding,
)
from ptyro_invert import optimizers as _opt
from ptyro_invert.checkpoint import read_checkpoint, save_checkpoint
from ptyro_invert.forward import make_model, shift_groups, shifted_probes, wavelength

__all__ = [
    "initial_state",
    "add_probe_modes",
    "orthogonalize_modes",
    "occupancies",
    "estimate_memory",
    "run_reconstruction",
    "single_slice",
    "position_corrected",
    "mixed_state",
    "multislice",
    "reconstruct",
    "DEFAULT_LEARNING_RATES",
]

#: learning rates per algorithm and group (Adam; tuned on RECON-A), decayed by ``lr_schedule``.
DEFAULT_LEARNING_RATES: dict[str, dict[str, float]] = {
    "single_slice": {"object": 4e-2, "probe": 2e-3},
    "position_corrected": {"object": 2e-2, "probe": 2e-3, "positions": 4e-2, "affine": 1e-3},
    "mixed_state": {"object": 2e-2, "probe": 1.5e-3},
    "multislice": {"object": 2e-2, "probe": 2e-3, "thickness": 0.5},
}


# --------------------------------------------------------------------------- initial state


def orthogonalize_modes(probe: Array, reference: Array | None = None, *, sort: bool = True) -> Array:
    """Orthogonal modes (m, px, py) with the same incoherent sum Σ|Pₘ|² (the same density
    matrix): eigenvectors of the modes' Gram matrix. With ``sort`` they are ordered by decreasing
    power; without, each new mode keeps the place of the old mode it overlaps most (so that an
    optimizer's moments stay attached to their mode during a run). Each new mode's phase is
    fixed so that its overlap with the old mode at its place (``reference``, default ``probe``)
    is real positive, so repeated orthogonalisation is continuous."""
    m = probe.shape[0]
    if m == 1:
        return probe
    flat = probe.reshape(m, -1)
    gram = flat @ jnp.conj(flat).T  # (m, m) Hermitian
    w, v = jnp.linalg.eigh(gram)
    if sort:
        order = jnp.argsort(-w)
    else:
        order = jnp.argsort(jnp.argmax(jnp.abs(v), axis=0))
    v = v[:, order]
    new = jnp.conj(v).T @ flat  # rows: orthogonal modes
    ref = flat if reference is None else reference.reshape(m, -1)
    overlap = jnp.sum(jnp.conj(ref) * new, axis=-1)
    phase = jnp.conj(overlap) / jnp.maximum(jnp.abs(overlap), jnp.finfo(w.dtype).tiny)
    phase = jnp.where(jnp.abs(overlap) > 0, phase, 1.0)
    return (new * phase[:, None]).reshape(probe.shape).astype(probe.dtype)


def add_probe_modes(probe: Any, num_modes: int, *, power: float = 0.05) -> Array:
    """Extend probe modes (m, px, py) to ``num_modes``. New modes are the first mode's spectrum
    times low-order polynomials of the spatial frequency (kx, ky, kx²+ky², kx·ky, kx²−ky², ...),
    the shapes that a finite source (shifts: kx, ky) and a defocus spread (k²) add to a coherent
    probe; each gets a share ``power`` of the total intensity, then all are orthogonalised (the
    total Σ|P|² is kept)."""
    p = jnp.asarray(probe)
    if p.ndim == 2:
        p = p[None]
    m = p.shape[0]
    if num_modes <= m:
        return p
    total = jnp.sum(jnp.abs(p) ** 2)
    px, py = p.shape[-2:]
    real = p.real.dtype
    kx = jnp.broadcast_to(jnp.fft.fftfreq(px).astype(real)[:, None], (px, py))
    ky = jnp.broadcast_to(jnp.fft.fftfreq(py).astype(real)[None, :], (px, py))
    polys = [kx, ky, kx * kx + ky * ky, kx * ky, kx * kx - ky * ky, kx**3, ky**3]
    pk = jnp.fft.fft2(p[0])
    extra = []
    for k in range(num_modes - m):
        e = jnp.fft.ifft2(pk * polys[k % len(polys)] * (1 + k // len(polys)))
        extra.append(e / jnp.sqrt(jnp.sum(jnp.abs(e) ** 2)) * jnp.sqrt(power * total))
    n_new = num_modes - m
    base = p * jnp.sqrt(max(1.0 - power * n_new, 0.05))
    out = jnp.concatenate([base, jnp.stack(extra).astype(p.dtype)], axis=0)
    out = out * jnp.sqrt(total / jnp.sum(jnp.abs(out) ** 2))
    return orthogonalize_modes(out)


def initial_state(
    dataset: Dataset4D,
    *,
    semiangle_cutoff: float,
    aberrations: Mapping[str, Any] | None = None,
    num_modes: int = 1,
    num_slices: int = 1,
    slice_thickness: Any = None,
    padding_px: int = 8,
    probe: str = "aberrated",
    mode_power: float = 0.05,
) -> ReconState:
    """A starting :class:`~ptyro_core.ReconState` for ``dataset``.

    The probe comes from the registered probe ``probe`` (default "aberrated", e.g. from
    ptyro-simul) on the dataset's grid and energy with the nominal optics (``aberrations`` in the
    polar notation, C10 = −defocus, Å, azimuths in radians), extended to ``num_modes`` modes
    (:func:`add_probe_modes`). The object (``num_slices`` slices, transmission 1) covers every
    scan position plus the probe window plus ``padding_px`` pixels on each side; positions are
    translated into the object frame (object pixel [0, 0] at (0, 0) Å, positions = probe centre)
    by a whole number of pixels, so that the object's pixels sit on the dataset frame's pixel
    lattice: ``state.positions = dataset.positions − floor(min(dataset.positions) / d)·d +
    (window // 2 + padding_px)·d``.
    """
    if not isinstance(dataset, Dataset4D):
        raise PtyroTypeError(f"initial_state: expected a Dataset4D, got {type(dataset).__name__}")
    if int(num_modes) < 1 or int(num_slices) < 1 or int(padding_px) < 0:
        raise PtyroValueError(
            f"initial_state: expected num_modes >= 1, num_slices >= 1, padding_px >= 0; got {num_modes}, {num_slices}, {padding_px}"
        )
    if num_slices > 1 and slice_thickness is None:
        raise PtyroValueError(f"initial_state: num_slices={num_slices} needs a slice_thickness in Å, got None")
    grid = dataset.grid
    make_probe = get("probe", probe) if isinstance(probe, str) else probe
    modes = make_probe(grid, dataset.energy, semiangle_cutoff=semiangle_cutoff, aberrations=aberrations)
    parr = add_probe_modes(modes.array, int(num_modes), power=mode_power)
    d = np.asarray(grid.sampling, np.float64)
    pos = np.asarray(dataset.positions, np.float64)
    win = np.asarray(grid.gpts)
    lo = np.floor(pos.min(axis=0) / d)
    pos_obj = pos - lo * d + (win // 2 + int(padding_px)) * d
    extent_px = np.ceil(pos.max(axis=0) / d - lo).astype(int)
    gpts = tuple(int(v) for v in extent_px + win + 2 * int(padding_px) + 1)
    obj = jnp.ones((int(num_slices),) + gpts, jnp.complex64)
    th = None if slice_thickness is None else slice_thickness
    return ReconState(
        obj, parr, pos_obj.astype(np.float32), sampling=grid.sampling, energy=dataset.energy, slice_thickness=th
    )


def occupancies(state: ReconState) -> Array:
    """Share of the probe intensity in each mode (sums to 1)."""
    p = jnp.sum(jnp.abs(state.probe) ** 2, axis=(-2, -1))
    return p / jnp.sum(p)


# --------------------------------------------------------------------------- memory


def estimate_memory(
    dataset: Dataset4D | tuple,
    state: ReconState,
    *,
    batch_size: int = 64,
    num_devices: int = 1,
    optimizer_slots: int = 2,
) -> int:
    """Estimated peak bytes of a reconstruction: parameters with their gradient, update and
    ``optimizer_slots`` moments; the per-device batch of exit waves and their cotangents
    (modes × slices × window, with FFT work space); and the host copy of the data, unless the
    dataset is read from disk batch by batch (:meth:`ptyro_core.Dataset4D.lazy`).
    ``dataset`` may be a Dataset4D or its array shape (Rx, Ry, Qx, Qy)."""
    shape = tuple(dataset.array.shape) if isinstance(dataset, Dataset4D) else tuple(dataset)
    n = int(np.prod(shape[:-2]))
    q = int(shape[-2] * shape[-1])
    c = np.dtype(state.object.dtype).itemsize
    r = c // 2
    s, m = int(state.object.shape[0]), int(state.probe.shape[0])
    win = int(np.prod(state.probe.shape[-2:]))
    params = (state.object.size + state.probe.size) * c + state.positions.size * r * 2
    opt = params * (3 + optimizer_slots)
    b = round_batch_size(batch_size, num_devices, n) // num_devices
    per_position = (m * (s + 4) * win * c) * 3 + (6 * q * r)
    data = 0 if getattr(dataset, "is_lazy", False) else n * q * r * 2
    return int(opt + b * per_position + data + 64 * 2**20)


# --------------------------------------------------------------------------- engine


class _FFTOrderSource:
    """Patterns as the step wants them: float32, zero frequency at index 0 (the files hold them
    centred), checked for NaN/inf as each batch is read."""

    def __init__(self, source: Any, chunk: int = 256) -> None:
        self._source = source
        self._chunk = chunk
        self.shape = tuple(source.shape)

    def read(self, indices: np.ndarray) -> np.ndarray:
        block = np.asarray(self._source.read(indices), np.float32)
        if not np.all(np.isfinite(block)):
            raise PtyroValueError(f"the patterns at scan indices {sorted(set(np.asarray(indices).tolist()))[:8]} hold NaN/inf values; expected finite intensities")
        return np.ascontiguousarray(np.fft.ifftshift(block, axes=(-2, -1)))

    def mean_pattern_sum(self) -> float:
        """Mean total intensity per pattern, streamed chunk by chunk."""
        n = self.shape[0]
        total = 0.0
        for lo, hi in batch_bounds(n, self._chunk):
            total += float(np.sum(self._source.read(np.arange(lo, hi)), dtype=np.float64))
        return total / n



def _resolve_loss(loss: Any) -> Callable[..., Any]:
    if isinstance(loss, str):
        return get("loss", loss)
    if callable(loss):
        return loss
    raise PtyroTypeError(f"loss: expected a registered loss name or a callable, got {type(loss).__name__} {loss!r:.60}")


def _lr_schedules(algorithm: str, learning_rates: Mapping[str, Any] | None, groups: list[str], total_steps: int, steps_per_pass: int,
                  lr_schedule: str, starts: Mapping[str, int]) -> dict[str, Any]:  # fmt: skip
    given = dict(learning_rates or {})
    unknown = set(given) - set(groups) - {"default"}
    if unknown:
        raise PtyroValueError(f"learning_rates: unknown group(s) {sorted(unknown)} for {algorithm}; expected among {groups}")
    defaults = DEFAULT_LEARNING_RATES.get(algorithm, DEFAULT_LEARNING_RATES["single_slice"])
    out = {}
    for g in groups:
        lr = given.get(g, given.get("default", defaults.get(g, 1e-3)))
        if not callable(lr):
            if lr_schedule == "cosine":
                lr = _opt.cosine_decay(float(lr), max(total_steps, 1), alpha=0.05)
            elif lr_schedule == "exponential":
                lr = _opt.exponential_decay(float(lr), 0.05 ** (1 / max(total_steps, 1)))
            elif lr_schedule == "constant":
                lr = _opt.constant(float(lr))
            else:
                raise PtyroValueError(f"lr_schedule: expected 'cosine', 'exponential' or 'constant', got {lr_schedule!r}")
        start = int(starts.get(g, 0)) * steps_per_pass
        out[g] = _opt.delayed(lr, start) if start > 0 else lr
    return out


def _resolve_optimizer(optimizer: Any, lrs: dict[str, Any]) -> Any:
    if isinstance(optimizer, str):
        return get("optimizer", optimizer)(lrs)
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        return optimizer
    if callable(optimizer):
        return optimizer(lrs)
    raise PtyroTypeError(f"optimizer: expected a registered optimizer name, a factory or an Optimizer, got {type(optimizer).__name__}")


def _constrain(params: dict, *, probe_power: Array, object_max_amplitude: float | None, phase_positive: bool,
               orthogonalize: bool, fix_probe_intensity: bool, support: Array | None, previous_probe: Array) -> dict:  # fmt: skip
    out = dict(params)
    o = params["object"]
    if object_max_amplitude is not None:
        a = jnp.abs(o)
        o = o * (jnp.minimum(a, object_max_amplitude) / jnp.maximum(a, 1e-30)).astype(o.real.dtype)
    if phase_positive:
        o = (jnp.abs(o) * jnp.exp(1j * jnp.maximum(jnp.angle(o), 0.0))).astype(o.dtype)
    out["object"] = o
    p = params["probe"]
    if support is not None:
        p = jnp.fft.ifft2(jnp.fft.fft2(p) * support[None]).astype(p.dtype)
    if orthogonalize and p.shape[0] > 1:
        p = orthogonalize_modes(p, previous_probe, sort=False)
    if fix_probe_intensity:
        p = p * jnp.sqrt(probe_power / jnp.sum(jnp.real(p) ** 2 + jnp.imag(p) ** 2)).astype(p.real.dtype)
    out["probe"] = p
    if "thickness" in out:
        out["thickness"] = jnp.maximum(out["thickness"], 1e-2)
    return out


def _tv(o: Array) -> Array:
    dx = jnp.diff(o, axis=-2)[..., :, :-1]
    dy = jnp.diff(o, axis=-1)[..., :-1, :]
    return jnp.mean(jnp.sqrt(jnp.abs(dx) ** 2 + jnp.abs(dy) ** 2 + 1e-12))


def run_reconstruction(
    dataset: Dataset4D,
    state: ReconState,
    *,
    algorithm: str = "single_slice",
    loss: Any = "amplitude",
    optimizer: Any = "adam",
    iterations: int = 20,
    batch_size: int = 64,
    learning_rates: Mapping[str, Any] | None = None,
    callback: Callable[[ReconState], Any] | None = None,
    seed: int = 0,
    mesh: Any = None,
    progress: bool = True,
    checkpoint: Any = None,
    resume: bool = True,
    checkpoint_every: int = 1,
    fit_object: bool = True,
    fit_probe: bool = True,
    fit_positions: bool = False,
    affine: bool = False,
    fit_thickness: bool = False,
    orthogonalize: bool = False,
    num_modes: int | None = None,
    propagator: Any = "fresnel",
    probe_start: int = 1,
    position_start: int = 1,
    lr_schedule: str = "cosine",
    object_max_amplitude: float | None = 1.0,
    phase_positive: bool = False,
    fix_probe_intensity: bool = True,
    probe_support: float | None = None,
    tv_weight: float = 0.0,
    depth_weight: float = 0.0,
    detector_blur: float = 0.0,
    mask: Any = None,
    memory_budget: float | None = None,
    group_shifts: bool = True,
    chunk_size: int = 16,
) -> ReconState:
    """The shared engine; see :func:`single_slice` for the public options."""
    if not isinstance(dataset, Dataset4D):
        raise PtyroTypeError(f"{algorithm}: expected a Dataset4D, got {type(dataset).__name__}")
    if not isinstance(state, ReconState):
        raise PtyroTypeError(f"{algorithm}: expected a ReconState, got {type(state).__name__}")
    if int(iterations) < 0:
        raise PtyroValueError(f"iterations: expected a number of passes >= 0, got {iterations!r}")
    if int(chunk_size) < 1:
        raise PtyroValueError(f"chunk_size: expected a number of positions per device >= 1, got {chunk_size!r}")
    n = int(np.prod(dataset.array.shape[:-2]))
    window = tuple(int(v) for v in dataset.array.shape[-2:])
    if tuple(state.probe.shape[-2:]) != window:
        raise PtyroValueError(f"{algorithm}: probe window {tuple(state.probe.shape[-2:])} differs from the pattern shape {window}")
    if int(state.positions.shape[0]) != n:
        raise PtyroValueError(f"{algorithm}: state has {state.positions.shape[0]} positions, dataset has {n}")
    if not np.allclose(state.sampling, dataset.grid.sampling, rtol=1e-5):
        raise PtyroValueError(f"{algorithm}: state sampling {state.sampling} Å differs from the dataset grid sampling {dataset.grid.sampling} Å")
    if num_modes is not None and int(num_modes) > state.probe.shape[0]:
        state = replace(state, probe=add_probe_modes(state.probe, int(num_modes)))
    num_slices = int(state.object.shape[0])
    mesh = device_mesh() if mesh is None else mesh
    ndev = int(mesh.size)
    b = round_batch_size(int(batch_size), ndev, n)
    slots = {"adam": 2, "rmsprop": 2, "sgd": 1, "adagrad": 1}.get(optimizer if isinstance(optimizer, str) else "", 2)
    need = estimate_memory(dataset, state, batch_size=b, num_devices=ndev, optimizer_slots=slots)
    check_memory(
        need,
        what=f"reconstruction '{algorithm}' (batch {b}, {state.probe.shape[0]} mode(s), {num_slices} slice(s), object {tuple(state.object.shape[-2:])})",
        knob=f"reduce batch_size (now {batch_size}), the number of probe modes or slices, or crop the scan",
        budget=memory_budget,
    )

    # ---------------- resume
    ck = None
    start_iter = int(state.iteration)
    target = start_iter + int(iterations)
    nominal = np.asarray(state.positions, np.float32)
    if checkpoint is not None and resume:
        from pathlib import Path

        if Path(checkpoint).exists():
            ck = read_checkpoint(checkpoint)
            state = ck["state"]
            seed = ck["seed"]
            target = ck["target_iteration"]
            start_iter = int(state.iteration)
            nominal = np.asarray(ck["nominal_positions"], np.float32)

    # ---------------- parameters and their learning rates
    real = state.object.real.dtype
    params: dict[str, Any] = {"object": state.object, "probe": state.probe}
    groups = ["object", "probe"]
    starts = {"probe": probe_start, "positions": position_start, "affine": position_start}
    if fit_positions:
        params["positions"] = jnp.zeros((n, 2), real)
        groups.append("positions")
        if affine:
            params["affine"] = jnp.eye(2, dtype=real)
            groups.append("affine")
    if fit_thickness:
        if num_slices < 2:
            raise PtyroValueError(f"fit_thickness: needs a multislice object (2+ slices), got {num_slices} slice(s)")
        params["thickness"] = state.slice_thickness
        groups.append("thickness")
    steps_per_pass = len(batch_bounds(n, b))
    lrs = _lr_schedules(algorithm, learning_rates, groups, int(iterations) * steps_per_pass, steps_per_pass, lr_schedule, starts)
    if not fit_object:
        lrs["object"] = 0.0
    if not fit_probe:
        lrs["probe"] = 0.0
    opt = _resolve_optimizer(optimizer, lrs)
    loss_fn = _resolve_loss(loss)
    opt_state = opt.init(params)
    if ck is not None:
        params = _restore(params, ck["params"], "params")
        opt_state = _restore(opt_state, ck["opt_state"], "optimizer state")

    # ---------------- constants (replicated) and the data (host, FFT order)
    model = make_model(window, state.sampling, state.energy, propagator=propagator, num_slices=num_slices, detector_blur=detector_blur)
    source = _FFTOrderSource(pattern_source(dataset))
    scale = source.mean_pattern_sum()
    if not scale > 0:
        raise PtyroValueError(f"{algorithm}: the dataset holds no intensity (mean pattern sum {scale!r}); expected positive counts")
    mask_arr = None
    if mask is not None:
        mask_arr = np.fft.ifftshift(np.asarray(mask, np.float32), axes=(-2, -1))
        if mask_arr.shape != window:
            raise PtyroValueError(f"mask: expected shape {window} (the detector), got {mask_arr.shape}")
    support = None
    if probe_support is not None:
        lam = wavelength(state.energy)
        kx = np.fft.fftfreq(window[0], state.sampling[0])[:, None]
        ky = np.fft.fftfreq(window[1], state.sampling[1])[None, :]
        support = (np.sqrt(kx**2 + ky**2) * lam * 1e3 <= float(probe_support)).astype(np.float32)
    consts = {
        "positions": jnp.asarray(nominal),
        "centre": jnp.asarray(nominal.mean(axis=0)),
        "scale": jnp.asarray(scale, real),
        # the power the probe is held at: the starting state's (kept in checkpoints, so that a
        # resumed run holds exactly the same value)
        "probe_power": jnp.asarray(ck["extras"]["probe_power"] if ck is not None and "probe_power" in ck["extras"]
                                   else jnp.sum(jnp.abs(params["probe"]) ** 2), real),
        "thickness": state.slice_thickness,
    }
    if mask_arr is not None:
        consts["mask"] = jnp.asarray(mask_arr)
    if support is not None:
        consts["support"] = jnp.asarray(support)

    batched_model = jax.vmap(model, in_axes=(None, None, None, 0))
    # fixed positions: shift the probe once per distinct sub-pixel shift, not once per position
    groups_ = None if (fit_positions or not group_shifts) else shift_groups(nominal, state.sampling, window, max_groups=max(b // 2, 1))
    if groups_ is not None:
        consts["start"], consts["group"], consts["shifts"] = (jnp.asarray(v) for v in groups_)
        at_start = jax.vmap(model.at_start, in_axes=(None, 0, None, 0))

    def effective_positions(p: dict, idx: Array, c: dict) -> Array:
        pos = c["positions"][idx]
        if "affine" in p:
            pos = c["centre"][None] + (pos - c["centre"][None]) @ p["affine"].T
        if "positions" in p:
            pos = pos + p["positions"][idx]
        return pos

    def shared(p: dict, c: dict) -> dict:
        # the work a step shares between its positions: the probe shifted once per distinct shift
        return {**p, "probe": shifted_probes(p["probe"], c["shifts"])} if "shifts" in c else p

    def data_term(p: dict, d: Array, idx: Array, w: Array, c: dict) -> Array:
        # p as returned by shared()
        dz = p.get("thickness", c["thickness"])
        if "shifts" in c:
            probes = jnp.take(p["probe"], c["group"][idx], axis=0)
            pred = at_start(p["object"], probes, dz, c["start"][idx]) * c["scale"]
        else:
            pred = batched_model(p["object"], p["probe"], dz, effective_positions(p, idx, c)) * c["scale"]
        return loss_fn(pred, d, mask=c.get("mask"), weights=w)

    def regulariser(p: dict) -> Array:
        total = jnp.zeros((), real)
        if tv_weight:
            total = total + tv_weight * _tv(p["object"])
        if depth_weight and num_slices > 1:
            total = total + depth_weight * jnp.mean(jnp.abs(jnp.diff(p["object"], axis=0)) ** 2)
        return total

    # a step works through its batch in chunks of a few positions per device, accumulating the
    # gradient: the working set of a chunk stays in cache (1.5x faster per position on a CPU than
    # a whole batch of 64 at 128x128) and only one chunk's intermediates are held
    local = b // ndev
    nchunks = -(-local // max(1, min(int(chunk_size), local)))
    cs = -(-local // nchunks)  # equal chunks; the last padded with zero-weight entries
    pad = nchunks * cs - local

    def chunked(x: Array, fill: Any = None) -> Array:
        # (b, ...) sharded in device blocks -> (nchunks, ndev * cs, ...), each chunk spread over
        # all devices; each device block padded to nchunks * cs (with ``fill``, or its last entry)
        y = x.reshape((ndev, local) + x.shape[1:])
        if pad:
            extra = jnp.repeat(y[:, -1:], pad, axis=1) if fill is None else jnp.full((ndev, pad) + x.shape[1:], fill, x.dtype)
            y = jnp.concatenate([y, extra], axis=1)
        y = y.reshape((ndev, nchunks, cs) + x.shape[1:])
        return jnp.swapaxes(y, 0, 1).reshape((nchunks, ndev * cs) + x.shape[1:])

    def gradient(p0: dict, d: Array, idx: Array, w: Array, c: dict) -> tuple[dict, Array]:
        p, back = jax.vjp(lambda q: shared(q, c), p0)
        wsum = jnp.maximum(jnp.sum(w), jnp.finfo(real).tiny)

        def body(acc: tuple[dict, Array], xs: tuple[Array, Array, Array]) -> tuple[tuple[dict, Array], None]:
            dd, ii, ww = xs
            # a weighted mean over the chunk, re-weighted to its share of the batch
            v, g = jax.value_and_grad(lambda q: data_term(q, dd, ii, ww, c) * (jnp.sum(ww) / wsum))(p)
            return (jax.tree_util.tree_map(jnp.add, acc[0], g), acc[1] + v), None

        zero = (jax.tree_util.tree_map(jnp.zeros_like, p), jnp.zeros((), real))
        (grads, value), _ = jax.lax.scan(body, zero, (chunked(d), chunked(idx), chunked(w, 0.0)))
        (grads,) = back(grads)
        if tv_weight or (depth_weight and num_slices > 1):
            grads = jax.tree_util.tree_map(jnp.add, grads, jax.grad(regulariser)(p0))
        return grads, value

    def recon_step(p: dict, s: Any, d: Array, idx: Array, w: Array, c: dict) -> tuple[dict, Any, Array]:
        grads, value = gradient(p, d, idx, w, c)
        updates, s = opt.update(grads, s, p)
        new = _opt.apply_updates(p, updates)
        new = _constrain(
            new,
            probe_power=c["probe_power"],
            object_max_amplitude=object_max_amplitude,
            phase_positive=phase_positive,
            orthogonalize=orthogonalize,
            fix_probe_intensity=fix_probe_intensity,
            support=c.get("support"),
            previous_probe=p["probe"],
        )
        return new, s, value

    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    key = _cache_key(
        algorithm, loss, optimizer, learning_rates, tuple(groups), int(iterations) * steps_per_pass, steps_per_pass, lr_schedule,
        probe_start, position_start, fit_object, fit_probe, window, state.sampling, state.energy, propagator, num_slices,
        detector_blur, tv_weight, depth_weight, object_max_amplitude, phase_positive, orthogonalize, fix_probe_intensity,
        mask_arr is None, support is None, mesh, groups_ is None, chunk_size, b,
    )  # fmt: skip
    step = _STEP_CACHE.get(key) if key is not None else None
    if step is None:
        step = jax.jit(recon_step, out_shardings=(rep, rep, rep), donate_argnums=(0, 1))
        if key is not None:
            if len(_STEP_CACHE) >= 16:
                _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
            _STEP_CACHE[key] = step
    # fresh buffers: the step donates them, and the caller's state must survive
    params = replicate(jax.tree_util.tree_map(jnp.copy, params), mesh)
    opt_state = replicate(jax.tree_util.tree_map(jnp.copy, opt_state), mesh)
    consts = replicate(consts, mesh)
    shard = scan_sharding(mesh)

    def current_state(it: int, hist: list) -> ReconState:
        pos = effective_positions(params, jnp.arange(n), consts) if fit_positions else consts["positions"]
        probe = orthogonalize_modes(params["probe"]) if orthogonalize else params["probe"]
        return replace(
            state,
            object=params["object"],
            probe=probe,
            positions=pos,
            slice_thickness=params.get("thickness", consts["thickness"]),
            loss=jnp.concatenate([jnp.asarray(state.loss, jnp.float32), jnp.asarray(hist, jnp.float32)]),
            iteration=jnp.asarray(it, jnp.int32),
        )

    from tqdm.auto import tqdm

    hist: list[float] = []
    bar = tqdm(total=max(target - start_iter, 0), desc=algorithm, disable=not progress, leave=False)
    out = current_state(start_iter, hist)
    try:
        for it in range(start_iter, target):
            perm = np.random.default_rng([int(seed), it]).permutation(n)
            acc = []
            for lo, hi in batch_bounds(n, b):
                idx = perm[lo:hi]
                k = hi - lo
                w = np.zeros(b, np.float32)
                w[:k] = 1.0
                if k < b:
                    idx = np.concatenate([idx, np.full(b - k, idx[-1])])
                # each process reads only the patterns of its own devices (from memory or disk)
                d = global_batch(source, idx, mesh)
                ii, ww = jax.device_put((idx.astype(np.int32), w), shard)
                params, opt_state, value = step(params, opt_state, d, ii, ww, consts)
                acc.append((value, k))
                if len(acc) > 2:  # at most two steps in flight: their input batches are all that is queued
                    jax.block_until_ready(acc[-3][0])
            pass_loss = float(sum(float(v) * k for v, k in acc) / n)
            hist.append(pass_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{pass_loss:.4g}")
            out = current_state(it + 1, hist)
            if checkpoint is not None and ((it + 1 - start_iter) % max(int(checkpoint_every), 1) == 0 or it + 1 == target):
                save_checkpoint(
                    checkpoint, out, params=params, opt_state=opt_state, nominal_positions=nominal,
                    seed=seed, target_iteration=target, algorithm=algorithm,
                    extras={"probe_power": np.asarray(consts["probe_power"])},
                )  # fmt: skip
            if callback is not None and callback(out) is False:
                break
    finally:
        bar.close()
    return out


#: jitted steps of earlier runs with the same configuration (so a second run does not compile)
_STEP_CACHE: dict[Any, Any] = {}


def _cache_key(*parts: Any) -> Any:
    """A hashable key of a run's configuration, or None when a part is not hashable."""

    def freeze(x: Any) -> Any:
        if isinstance(x, Mapping):
            return tuple(sorted((str(k), freeze(v)) for k, v in x.items()))
        if isinstance(x, (list, tuple)):
            return tuple(freeze(v) for v in x)
        hash(x)
        return x

    try:
        return freeze(parts)
    except TypeError:
        return None


def _restore(tree: Any, leaves: list | None, what: str) -> Any:
    ref, treedef = jax.tree_util.tree_flatten(tree)
    if leaves is None or len(leaves) != len(ref):
        raise PtyroValueError(
            f"checkpoint: {what} has {None if leaves is None else len(leaves)} arrays, expected {len(ref)} for this algorithm and its options"
        )
    out = []
    for r, v in zip(ref, leaves):
        if tuple(np.shape(v)) != tuple(r.shape):
            raise PtyroValueError(f"checkpoint: {what} array of shape {np.shape(v)} where {tuple(r.shape)} was expected")
        out.append(jnp.asarray(v, r.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


# --------------------------------------------------------------------------- the four algorithms

_COMMON_DOC = """
    Common options: ``loss`` ("amplitude", "intensity", "poisson" or a callable),
    ``optimizer`` ("adam", "sgd", "rmsprop", "adagrad", a factory taking the learning-rate dict, or
    an ``Optimizer``), ``iterations`` (passes over the scan in this call), ``batch_size`` (rounded
    to a multiple of the device count), ``learning_rates`` (dict keyed by group: ``object``,
    ``probe``, ``positions``, ``affine``, ``thickness``, or ``default``; numbers are decayed by
    ``lr_schedule`` = "cosine" (to 5%), "exponential" or "constant"; callables are schedules of
    the step count), ``callback(state)`` after each pass (return False to stop), ``seed`` (pass
    order), ``mesh`` (default: all devices), ``progress`` (tqdm bar), ``checkpoint`` (HDF5 path
    written every ``checkpoint_every`` passes; when it exists and ``resume`` is true, the run
    resumes from it up to the same target pass, bit-identically), ``probe_start`` (passes
    before the probe is updated), constraints ``object_max_amplitude`` (1.0, None to disable),
    ``phase_positive``, ``fix_probe_intensity`` (keep Σ|P|²), ``probe_support`` (mrad, Fourier
    support of the probe), regularisation ``tv_weight`` (total variation of the object),
    ``detector_blur`` (Gaussian σ in detector pixels), ``mask`` (detector mask, centred like the
    data) and ``memory_budget`` (bytes; default 80% of available memory: a run that will not fit
    is refused with the knob to turn). With fixed positions, ``group_shifts`` (default true)
    shifts the probe once per distinct sub-pixel shift of a batch rather than once per position
    (exact to 1e-4 pixel; a raster with a rational step in pixels has a handful of them), which
    halves the FFTs of a step; with more distinct shifts than half a batch it falls back.
    ``chunk_size`` (16): positions per device computed at once inside a step; the gradient of the
    batch is accumulated over its chunks (same result up to round-off, a cache-sized working set).
    The chunks assume a loss that is a weighted mean over patterns, as every registered loss is.
"""


def single_slice(dataset: Dataset4D, state: ReconState, **options: Any) -> ReconState:
    """Single-slice ptychography: the object (transmission, 1 slice) and the probe modes
    jointly, minibatched over scan positions in random (seeded) order."""
    if int(state.object.shape[0]) != 1:
        raise PtyroValueError(f"single_slice: expected a single-slice object, got {state.object.shape[0]} slices; use 'multislice'")
    return run_reconstruction(dataset, state, **{"algorithm": "single_slice", **options})


def position_corrected(dataset: Dataset4D, state: ReconState, *, affine: bool = True, **options: Any) -> ReconState:
    """As :func:`single_slice`, plus a correction of every scan position (``positions`` group,
    started after ``position_start`` passes) and, with ``affine`` (default), a global 2×2 map
    (rotation, scale, shear) about the scan centre. The returned state holds the corrected
    positions."""
    return run_reconstruction(dataset, state, **{"algorithm": "position_corrected", "fit_positions": True, "affine": affine, **options})


def mixed_state(dataset: Dataset4D, state: ReconState, *, num_modes: int | None = None, **options: Any) -> ReconState:
    """Mixed-state ptychography for partially coherent illumination: several mutually
    incoherent probe modes (``num_modes``; added to the state's if it has fewer), kept orthogonal
    after each update (eigenvectors of their Gram matrix, sorted by power). Occupancies:
    :func:`occupancies`."""
    m = int(num_modes) if num_modes is not None else max(2, int(state.probe.shape[0]))
    return run_reconstruction(dataset, state, **{"algorithm": "mixed_state", "orthogonalize": True, "num_modes": m, **options})


def multislice(dataset: Dataset4D, state: ReconState, **options: Any) -> ReconState:
    """Multislice ptychography: an object of several slices (``state.slice_thickness`` Å),
    propagated with the registered ``propagator`` (default "fresnel"); ``depth_weight``
    regularises differences between adjacent slices, ``fit_thickness`` fits the slice
    thicknesses too. A one-slice object is allowed (it is then single-slice ptychography);
    make a layered starting state with ``initial_state(..., num_slices=s, slice_thickness=Δz)``."""
    return run_reconstruction(dataset, state, **{"algorithm": "multislice", **options})


for _fn in (single_slice, position_corrected, mixed_state, multislice):
    _fn.__doc__ = (_fn.__doc__ or "") + "\n" + _COMMON_DOC


def reconstruct(dataset: Dataset4D, state: ReconState, algorithm: str = "single_slice", **options: Any) -> ReconState:
    """Run the registered reconstruction ``algorithm`` (looked up by name in the registry)."""
    fn = get("reconstruction", algorithm) if isinstance(algorithm, str) else algorithm
    return fn(dataset, state, **options)
