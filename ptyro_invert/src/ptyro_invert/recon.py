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

import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ptyro_core import Dataset4D, PtyroTypeError, PtyroValueError, ReconState, get, replace
from ptyro_core.backends import XLA, check_backend_name, resolve_backend
from ptyro_core.conventions import energy2wavelength as wavelength
from ptyro_core.conventions import shift_ramp
from ptyro_core.pipeline import (
    SCAN_AXIS,
    batch_bounds,
    check_memory,
    check_streams,
    default_streams,
    device_mesh,
    global_batch,
    pattern_source,
    replicate,
    round_batch_size,
    scan_sharding,
)
from ptyro_core.protocols import WindowFarFields
from ptyro_core.sources import aligned_empty, read_into
from ptyro_invert import optimizers as _opt
from ptyro_invert.checkpoint import check_resume, fingerprint, save_checkpoint
from ptyro_invert.forward import make_model, shift_groups, shifted_probes, spectrum_shifted, window_ramps
from ptyro_invert.losses import FLOOR_NAMES, choose_loss, noise_floor

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
    "StepConfig",
    "recon_step",
    "apply_aberrations",
    "aberration_basis",
    "aberrations_in_angstrom",
    "scan_map",
]

#: learning rates per algorithm and group (Adam; tuned on RECON-A), decayed by ``lr_schedule``.
DEFAULT_LEARNING_RATES: dict[str, dict[str, float]] = {
    "single_slice": {"object": 4e-2, "probe": 2e-3},
    "position_corrected": {"object": 2e-2, "probe": 2e-3, "positions": 4e-2, "affine": 1e-3},
    "mixed_state": {"object": 2e-2, "probe": 1.5e-3},
    "multislice": {"object": 2e-2, "probe": 2e-3, "thickness": 0.5},
}
#: the probe's rate is for a 128 × 128 window with Σ|P|² = 1 and is scaled to the rms probe
#: amplitude of other windows (√(Σ|P|²·128²/(px·py))), so the default does not depend on the
#: detector size; the loss is per electron (divided by the mean counts per pattern), so no rate
#: depends on the dose.
#: aberrations (``fit_aberrations``): rad of phase at the aperture edge per step
ABERRATION_LEARNING_RATE = 0.3


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
        raise PtyroValueError(f"initial_state: expected num_modes >= 1, num_slices >= 1, padding_px >= 0; got {num_modes}, {num_slices}, {padding_px}")
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
    obj = _on_device(np.ones((int(num_slices),) + gpts, np.complex64))  # no eager program (see _on_device)
    th = None if slice_thickness is None else slice_thickness
    return ReconState(obj, parr, pos_obj.astype(np.float32), sampling=grid.sampling, energy=dataset.energy, slice_thickness=th)


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
    (modes × slices × window, with FFT work space); and the data (once, in their stored type),
    unless the dataset is read from disk batch by batch (:meth:`ptyro_core.Dataset4D.lazy`).
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
    # the patterns once, in their stored type (held as given: no device copy beside them)
    data = 0 if getattr(dataset, "is_lazy", False) else n * q * (np.dtype(dataset.array.dtype).itemsize if isinstance(dataset, Dataset4D) else r)
    return int(opt + b * per_position + data + 64 * 2**20)


# --------------------------------------------------------------------------- engine


class _PatternBatches:
    """Patterns as the step wants them, read batch by batch from the dataset's
    :class:`~ptyro_core.protocols.PatternSource`: centred, as the files hold them and as the model
    predicts them (:func:`~ptyro_invert.forward.centring`), so a batch is only gathered, never
    reordered.

    Counted data (integers) leave the host in their own type: a batch becomes floats (float32,
    times ``gain``: to counts, where the data are counts in other units) on its device
    (:func:`_batch_floats`), so no float copy of the data is ever made. Float data are read as
    float32 and checked for NaN/inf once per pattern: by :meth:`mean_pattern_sum` (a finite sum
    of a pattern's values says they are all finite), else as a batch first reads them. On the
    one CPU device of one process a batch stays a NumPy array (:func:`_on_host`): the step's
    call moves it (a ``device_put`` of its own costs more than the step's dispatch does)."""

    def __init__(self, source: Any, chunk: int = 256, gain: float = 1.0) -> None:
        self._source = source
        self._chunk = chunk
        self.gain = float(gain)
        self.shape = tuple(source.shape)
        self.integer = np.dtype(source.dtype).kind in "iu"
        # which patterns (flat scan index) are known to be finite
        self._finite = np.full(int(np.prod(self.shape[:-2])), self.integer, bool)

    def raw(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is not None:
            return read_into(self._source, np.asarray(indices), out)
        return np.asarray(self._source.read(np.asarray(indices)), np.float32)

    def read(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The patterns at ``indices``: counts in their stored type, floats as float32 (into
        ``out`` where given), checked finite."""
        if self.integer:  # integers: converted where the batch is used
            return np.asarray(self._source.read(np.asarray(indices)))
        block = self.raw(indices, out)
        new = ~self._finite[indices]
        if new.any():
            self._check_finite(block[new], np.asarray(indices)[new])
        return block

    def _check_finite(self, block: np.ndarray, indices: np.ndarray) -> None:
        """Raise naming the patterns of ``block`` (at ``indices``) that hold NaN/inf; else mark them finite."""
        good = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if not good.all():
            raise PtyroValueError(f"the patterns at scan indices {sorted(set(indices[~good].tolist()))[:8]} hold NaN/inf values; expected finite intensities")
        self._finite[indices] = True

    def batch(self, indices: np.ndarray, mesh: Any) -> Any:
        """The batch ``indices`` as float32 on the mesh (each process reads its own rows); on
        the one CPU device of one process, as a float32 NumPy array (counts converted there:
        a program of its own per batch costs more than the conversion)."""
        if _on_host(mesh):  # floats made here (counts times the gain): the step's dispatch takes them as they are
            out = aligned_empty((len(indices),) + self.shape[-2:], np.float32)  # no copy at the dispatch
            if self.integer:
                return np.multiply(self.read(indices), np.float32(self.gain), dtype=np.float32, out=out)
            h = self.read(indices, out)
            return np.multiply(h, np.float32(self.gain), out=h) if self.gain != 1.0 else h
        d = global_batch(self, indices, mesh)
        return _batch_floats(d, np.float32(self.gain)) if (self.integer or self.gain != 1.0) else d

    def close(self) -> None:
        """Release the source's file handle (it reopens if read again)."""
        self._source.close()

    def mean_pattern_sum(self, indices: np.ndarray) -> float:
        """Mean total intensity per pattern (times the gain) over ``indices``, streamed chunk by
        chunk; float patterns whose sums are finite are marked finite (never checked again)."""
        total, bad = 0.0, [np.zeros(0, np.int64)]
        for lo, hi in batch_bounds(len(indices), self._chunk):
            chunk = np.sort(indices[lo:hi])
            sums = np.sum(self.raw(chunk), axis=(-2, -1), dtype=np.float64)  # float64: no float32 sum overflows it
            if not self.integer:
                finite = np.isfinite(sums)
                self._finite[chunk[finite]] = True
                bad.append(chunk[~finite])
            total += float(np.sum(sums))
        if (nonfinite := np.concatenate(bad)).size:  # every pattern that is not finite named at once
            self._check_finite(self.raw(nonfinite), nonfinite)
        return total * self.gain / len(indices)


@functools.lru_cache(maxsize=8)
def _on_host(mesh: Any) -> bool:
    """Whether ``mesh`` is this process's one CPU device, where a step's inputs are best left
    NumPy arrays: its dispatch moves them for less than a ``device_put`` costs (on accelerators
    a ``device_put`` starts the copy while the previous step runs)."""
    return int(mesh.size) == 1 and jax.process_count() == 1 and mesh.devices.flat[0].platform == "cpu"


def _give_back_freed_heap() -> None:
    """Return the heap the compiler freed to the operating system: glibc keeps it otherwise, and
    the run's buffers come on top of it (RECON-A: 70 MiB of the peak; benchmarks/profile_memory.py).
    Nothing to do where the C library is not glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@jax.jit
def _batch_floats(d: Any, gain: Any) -> Any:
    """A batch as float32 counts on its device(s): ``d * gain`` (elementwise: the sharding stays)."""
    return d.astype(jnp.float32) * gain


def _resolve_loss(loss: Any) -> Callable[..., Any]:
    if isinstance(loss, str):
        return get("loss", loss)
    if callable(loss):
        return loss
    raise PtyroTypeError(f"loss: expected a registered loss name or a callable, got {type(loss).__name__} {loss!r:.60}")


def _choose_loss(loss: Any, source: _PatternBatches, indices: np.ndarray) -> tuple[Any, float, str, bool]:
    """(the loss to use, the gain to counts, why, whether the data are counts): ``"auto"``
    chooses from a few patterns; a named loss is kept (counted data still get their gain and a
    noise floor)."""
    pick = np.unique(indices[np.linspace(0, len(indices) - 1, min(len(indices), 16)).astype(int)])
    name, gain, why = choose_loss(source.raw(pick))
    counted = name == "poisson"
    if isinstance(loss, str) and loss == "auto":
        return name, gain, f"auto: {why}", counted
    _resolve_loss(loss)
    return loss, gain, f"named by the caller; {why}", counted


def _floor_name(loss: Any) -> str | None:
    fn = _resolve_loss(loss)
    return FLOOR_NAMES.get(fn)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static part of a reconstruction step: everything that shapes the traced computation
    (the dtype included), hashable, so that it is the key of JAX's own jit cache
    (``static_argnums``): a second run with the same configuration does not compile. Arrays
    live in the parameters and the constants instead."""

    algorithm: str
    window: tuple[int, int]
    sampling: tuple[float, float]
    energy: float
    dtype: str
    num_slices: int
    propagator: Any
    detector_blur: float
    loss: Any
    floor: str | None
    optimizer: Any
    learning_rates: tuple[tuple[str, Any], ...]
    lr_schedule: str
    total_steps: int
    starts: tuple[tuple[str, int], ...]
    tv_weight: float
    depth_weight: float
    object_max_amplitude: float | None
    phase_positive: bool
    orthogonalize: bool
    fix_probe_intensity: bool
    remove_phase_ramp: str  # "" (off), "centroid" or "plane"
    scan_scale: str
    grouped: bool
    chunk_size: int
    batch: int
    ndev: int
    #: the devices' mesh where there are several (None: one device): each computes its own
    #: positions' gradient (see :func:`_gradient`)
    mesh: Any = None
    #: an algorithm's own constraints and regularisers (see :func:`run_reconstruction`)
    constraints: tuple[Callable[[dict], dict], ...] = ()
    regularisers: tuple[Callable[[dict], Any], ...] = ()
    #: the back end of the single-slice far fields and their gradient: "xla" or a registered back
    #: end's name (see :func:`_far_backend`)
    backend: str = "xla"


def _schedule(lr: Any, cfg: StepConfig) -> Any:
    if callable(lr):
        return lr
    if cfg.lr_schedule == "cosine":
        return _opt.cosine_decay(float(lr), max(cfg.total_steps, 1), alpha=0.05)
    if cfg.lr_schedule == "exponential":
        return _opt.exponential_decay(float(lr), 0.05 ** (1 / max(cfg.total_steps, 1)))
    return _opt.constant(float(lr))


def _optimizer(cfg: StepConfig) -> Any:
    """The optimizer of a configuration (built inside the trace: a pure function of ``cfg``)."""
    starts = dict(cfg.starts)
    lrs = {}
    for g, lr in cfg.learning_rates:
        s = _schedule(lr, cfg)
        lrs[g] = _opt.delayed(s, starts[g]) if starts.get(g, 0) > 0 else s
    optimizer = cfg.optimizer
    if isinstance(optimizer, str):
        return get("optimizer", optimizer)(lrs)
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        return optimizer
    if callable(optimizer):
        return optimizer(lrs)
    raise PtyroTypeError(f"optimizer: expected a registered optimizer name, a factory or an Optimizer, got {type(optimizer).__name__}")


def _learning_rates(algorithm: str, learning_rates: Mapping[str, Any] | None, groups: list[str], *, probe_scale: float) -> dict[str, Any]:
    given = dict(learning_rates or {})
    unknown = set(given) - set(groups) - {"default"}
    if unknown:
        raise PtyroValueError(f"learning_rates: unknown group(s) {sorted(unknown)} for {algorithm}; expected among {groups}")
    defaults = dict(DEFAULT_LEARNING_RATES.get(algorithm, DEFAULT_LEARNING_RATES["single_slice"]))
    defaults["probe"] = defaults.get("probe", 2e-3) * probe_scale
    defaults.setdefault("aberrations", ABERRATION_LEARNING_RATE)
    out = {}
    for g in groups:
        lr = given.get(g, given.get("default", defaults.get(g, 1e-3)))
        if not callable(lr):
            lr = float(lr)
            if not (math.isfinite(lr) and lr >= 0):
                raise PtyroValueError(f"learning_rates[{g!r}]: expected a finite number >= 0, got {lr!r}")
        out[g] = lr
    return out


# --------------------------------------------------------------------------- aberrations


#: the fitted aberrations, in the order of ``params["aberrations"]``: C10, C12 (as its two
#: Cartesian components), C30, each as its phase (rad) at the aperture edge
ABERRATION_TERMS = ("C10", "C12a", "C12b", "C30")


def _aperture_radius(probe: Any, sampling: tuple[float, float]) -> float:
    """Radius (1/Å) of the probe's aperture: the largest |k| where |P(k)| > half its maximum."""
    f = np.abs(np.fft.fft2(np.asarray(probe).reshape((-1,) + tuple(np.shape(probe)[-2:]))[0]))
    kx = np.fft.fftfreq(f.shape[0], sampling[0])[:, None]
    ky = np.fft.fftfreq(f.shape[1], sampling[1])[None, :]
    k = np.sqrt(kx**2 + ky**2)
    return float(np.max(k[f > 0.5 * f.max()]))


def _disc(probe: Any) -> np.ndarray:
    """The bright-field disc of a probe (FFT order): where Σ_modes |P(k)|² > ¼ of its maximum."""
    f = np.sum(np.abs(np.fft.fft2(np.asarray(probe))) ** 2, axis=0)
    return (f > 0.25 * f.max()).astype(np.float32)


def aberration_basis(window: tuple[int, int], sampling: tuple[float, float], k_alpha: float) -> np.ndarray:
    """(4, px, py) phase patterns (FFT order) of C10, C12 (cos 2φ and sin 2φ) and C30, each 1 rad
    at the aperture edge ``k_alpha`` (1/Å): ρ², ρ² cos 2φ, ρ² sin 2φ, ρ⁴ with ρ = k / k_alpha."""
    kx = np.fft.fftfreq(window[0], sampling[0])[:, None] / k_alpha
    ky = np.fft.fftfreq(window[1], sampling[1])[None, :] / k_alpha
    r2 = np.broadcast_to(kx**2 + ky**2, tuple(window))
    return np.stack([r2, kx**2 - ky**2 + 0 * r2, 2 * kx * ky + 0 * r2, r2**2]).astype(np.float32)


def apply_aberrations(probe: Array, coefficients: Array, basis: Array) -> Array:
    """Probe modes (m, px, py) with the extra aberration phase Σ cⱼ Bⱼ(k) (ψ(k) ← ψ(k)·e^{−iΔχ})."""
    dchi = jnp.tensordot(coefficients, basis, axes=1)
    phase = jnp.exp(-1j * dchi).astype(probe.dtype)
    return jnp.fft.ifft2(jnp.fft.fft2(probe) * phase[None]).astype(probe.dtype)


def aberrations_in_angstrom(coefficients: Any, k_alpha: float, energy: float) -> dict[str, float]:
    """Fitted aberration changes (rad at the aperture edge) in the polar notation: ΔC10, ΔC12
    (Å), φ12 (rad), ΔC30 (Å); χ = 2π/λ (C10 α²/2 + C12 α²/2 cos 2(φ − φ12) + C30 α⁴/4)."""
    c = np.asarray(coefficients, np.float64)
    lam = wavelength(energy)
    q = math.pi * lam * k_alpha**2  # rad at the edge per Å of C10 or C12
    return {"C10": float(c[0] / q), "C12": float(math.hypot(c[1], c[2]) / q), "phi12": float(0.5 * math.atan2(c[2], c[1])),
            "C30": float(2 * c[3] / (math.pi * lam**3 * k_alpha**4))}  # fmt: skip


# --------------------------------------------------------------------------- the pure step


def _shared(cfg: StepConfig, p: dict, c: dict) -> dict:
    """The work a step shares between its positions: the aberration phase on the probe, and the
    probe shifted once per distinct sub-pixel shift (fixed positions)."""
    probe = p["probe"]
    if "aberrations" in p:
        probe = apply_aberrations(probe, p["aberrations"], c["aber_basis"])
    if cfg.grouped:
        probe = shifted_probes(probe, None, ramps=c["ramps"])
    return {**p, "probe": probe}


def _effective_positions(p: dict, idx: Array, c: dict) -> Array:
    pos = c["positions"][idx]
    if "affine" in p:
        pos = c["centre"][None] + (pos - c["centre"][None]) @ p["affine"].T
    if "positions" in p:
        pos = pos + p["positions"][idx]
    return pos


def _chunked(x: Array, cfg: StepConfig, fill: Any = None) -> Array:
    """(b, ...) sharded in device blocks -> (nchunks, ndev * cs, ...), each chunk spread over all
    devices; each device block padded to nchunks * cs (with ``fill``, or its last entry)."""
    ndev, local = cfg.ndev, cfg.batch // cfg.ndev
    nchunks = -(-local // max(1, min(cfg.chunk_size, local)))
    cs = -(-local // nchunks)  # equal chunks; the last padded with zero-weight entries
    pad = nchunks * cs - local
    y = x.reshape((ndev, local) + x.shape[1:])
    if pad:
        extra = jnp.repeat(y[:, -1:], pad, axis=1) if fill is None else jnp.full((ndev, pad) + x.shape[1:], fill, x.dtype)
        y = jnp.concatenate([y, extra], axis=1)
    y = y.reshape((ndev, nchunks, cs) + x.shape[1:])
    return jnp.swapaxes(y, 0, 1).reshape((nchunks, ndev * cs) + x.shape[1:])


def _regulariser(cfg: StepConfig, p: dict) -> Array:
    total = jnp.zeros((), p["object"].real.dtype)
    if cfg.tv_weight:
        total = total + cfg.tv_weight * _tv(p["object"])
    if cfg.depth_weight and cfg.num_slices > 1:
        total = total + cfg.depth_weight * jnp.mean(jnp.abs(jnp.diff(p["object"], axis=0)) ** 2)
    for regulariser in cfg.regularisers:
        total = total + regulariser(p)
    return total


#: the parameters a step's far-field path differentiates (:func:`_gradient`; fitting any other
#: takes the per-position model, and :func:`_far_backend` leaves it to XLA)
FAR_PARAMS = frozenset({"object", "probe", "aberrations"})


def _gradient(cfg: StepConfig, p0: dict, d: Array, idx: Array, w: Array, c: dict, wsum: Array | None = None, *,
              shared: bool = False) -> tuple[dict, Array, Array]:  # fmt: skip
    """(gradient of the batch's data term per electron, the loss, its noise floor) of one batch;
    ``wsum``: the total weight the loss is a mean over (default the batch's own: a part of a
    batch passes the whole batch's, so that the parts' gradients add up to the batch's). With
    ``shared``, ``p0`` are the parameters after :func:`_shared` (made once for all the parts of
    a batch) and the gradient is with respect to them."""
    model = make_model(cfg.window, cfg.sampling, cfg.energy, propagator=cfg.propagator, num_slices=cfg.num_slices, detector_blur=cfg.detector_blur,
                       far_backend=None if cfg.backend == XLA else get("backend", cfg.backend))  # fmt: skip
    loss_fn = _resolve_loss(cfg.loss)
    batched = jax.vmap(model, in_axes=(None, None, None, 0))
    at_starts = model.at_starts  # type: ignore[attr-defined]
    real = p0["object"].real.dtype
    p, back = (p0, None) if shared else jax.vjp(lambda q: _shared(cfg, q, c), p0)
    wsum = jnp.maximum(jnp.sum(w) if wsum is None else wsum, jnp.finfo(real).tiny)
    ramps: tuple[Array, ...] = ()
    if not cfg.grouped and "positions" not in p and "affine" not in p:
        # fixed positions, each with its own sub-pixel shift: the batch's ramps made here, outside
        # the chunks' loop, so that XLA cannot recompute their sines and cosines for every pixel
        # of every mode in the product (see shifted_probes; RECON-L: 1,000s of distinct shifts)
        start, factors = window_ramps(c["positions"][idx], cfg.sampling, cfg.window, p["probe"].dtype)
        ramps = (start, *factors)

    def data_term(q: dict, cc: dict, ws: Array, dd: Array, ii: Array, ww: Array, *rr: Array) -> tuple[Array, tuple[Array, Array]]:
        dz = q.get("thickness", cc["thickness"])
        if cfg.grouped:
            pred = at_starts(q["object"], q["probe"], cc["group"][ii], dz, cc["start"][ii])
        elif rr:
            pred = at_starts(q["object"], shifted_probes(q["probe"], None, ramps=(rr[1], rr[2])), jnp.arange(ii.shape[0]), dz, rr[0])
        else:
            pred = batched(q["object"], q["probe"], dz, _effective_positions(q, ii, cc))
        return pattern_term(pred, cc, ws, dd, ww)

    def pattern_term(pred: Array, cc: dict, ws: Array, dd: Array, ww: Array) -> tuple[Array, tuple[Array, Array]]:
        pred = pred * cc["scale"]
        share = jnp.sum(ww) / ws  # a weighted mean over the chunk, re-weighted to its share of the batch
        v = loss_fn(pred, dd, mask=cc.get("mask"), weights=ww) * share
        fl = noise_floor(cfg.floor, pred, mask=cc.get("mask"), weights=ww) * share if cfg.floor else jnp.zeros((), real)
        # the gradient of the loss per electron: learning rates independent of the dose
        return v / cc["scale"], (v, fl)

    def accumulate(q: dict, cc: dict, ws: Array, dd: Array, ii: Array, ww: Array, *rr: Array, lcfg: StepConfig = cfg) -> tuple[dict, Array, Array]:
        """The chunks' summed (gradient, loss, floor) of positions ``ii`` (``lcfg.batch`` of them)."""

        def body(acc: tuple, xs: tuple[Array, ...]) -> tuple[tuple, None]:
            if far:
                return far_body(acc, xs), None
            g, (v, fl) = jax.grad(data_term, has_aux=True)(q, cc, ws, *xs)
            return (jax.tree_util.tree_map(jnp.add, acc[0], g), acc[1] + v, acc[2] + fl), None

        def far_body(acc: tuple, xs: tuple[Array, ...]) -> tuple:
            """A chunk: the loss differentiated with respect to the far fields, their gradient
            added into the sums in place (forward.exit_far_fields_add; no chunk zeroes an
            object-sized gradient: RECON-L 0.79x the pass time). Grouped shifts read the shared
            shifted probes; a shift each (ramp factors ``rr``) shifts the probe's FFT, made once,
            and sums its gradient in Fourier space (``acc[3]``, back through the FFT once)."""
            dd, ii, ww, *rr = xs
            if rr:
                probes, shift_back = jax.vjp(lambda sp: spectrum_shifted(sp, (rr[1], rr[2])), spectrum)
                group, start, gp0 = jnp.arange(ii.shape[0]), rr[0], None  # a probe per position: its gradient made, not summed
            else:
                probes, shift_back, group, start, gp0 = q["probe"], None, cc["group"][ii], cc["start"][ii], acc[0]["probe"]
            args = (q["object"], probes, group, cc["thickness"], start)
            f, waves = model.far_forward(*args)  # type: ignore[attr-defined]
            ct, (v, fl) = jax.grad(lambda f_: pattern_term(model.far_intensities(f_), cc, ws, dd, ww), has_aux=True)(f)  # type: ignore[attr-defined]
            go, gp, _ = model.far_add(*args, waves, ct, acc[0]["object"], gp0)  # type: ignore[attr-defined]
            if shift_back is not None:
                return {**acc[0], "object": go}, acc[1] + v, acc[2] + fl, acc[3] + shift_back(gp)[0]
            return {**acc[0], "object": go, "probe": gp}, acc[1] + v, acc[2] + fl

        # grouped shifts or the batch's ramps, the data term's only parameters the object and the
        # probe (not the thicknesses), slices few enough to unroll
        far = (cfg.grouped or bool(rr)) and model.far_add is not None and not (set(q) - FAR_PARAMS)  # type: ignore[attr-defined]
        spectrum, to_probe = jax.vjp(jnp.fft.fft2, q["probe"]) if far and rr else (None, None)
        # (gradient, loss, floor) and, for the batch's ramps, the probe gradient in Fourier space
        zero: tuple[Any, ...] = (jax.tree_util.tree_map(jnp.zeros_like, q), jnp.zeros((), real), jnp.zeros((), real))
        if spectrum is not None:
            zero = (*zero, jnp.zeros_like(spectrum))
        carry, _ = jax.lax.scan(body, zero, (_chunked(dd, lcfg), _chunked(ii, lcfg), _chunked(ww, lcfg, 0.0), *(_chunked(r, lcfg) for r in rr)))
        g, v, fl = carry[:3]
        if to_probe is not None:  # the chunks' probe gradient, summed in Fourier space, back through the FFT once
            g = {**g, "probe": g["probe"] + to_probe(carry[3])[0]}
        return g, v, fl

    if cfg.mesh is None:
        grads, value, floor = accumulate(p, c, wsum, d, idx, w, *ramps)
    else:
        # each device runs the chunks of its own positions and the sums are reduced once: under
        # plain sharding XLA's partitioner replicated the chunks' work (every device computing
        # every device's positions: RECON-B multislice on 2 CPU devices, twice one device's CPU)
        local = dataclasses.replace(cfg, batch=cfg.batch // cfg.ndev, ndev=1, mesh=None)
        spec = jax.sharding.PartitionSpec(SCAN_AXIS)
        per_device = jax.shard_map(
            lambda *a: jax.tree_util.tree_map(lambda x: x[None], accumulate(*a, lcfg=local)),
            mesh=cfg.mesh, in_specs=(jax.sharding.PartitionSpec(),) * 3 + (spec,) * (3 + len(ramps)), out_specs=spec, check_vma=False,
        )  # fmt: skip
        grads, value, floor = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), per_device(p, c, wsum, d, idx, w, *ramps))
    if back is not None:
        (grads,) = back(grads)
    return grads, value, floor


def _remove_ramp(o: Array, p: Array, target: Array, disc: Array) -> tuple[Array, Array]:
    """Move a linear phase ramp out of the object into... nowhere: the pair (object·e^{2πik·r},
    probe·e^{−2πik·r}) predicts the same patterns (a phase per position), so the ramp is a
    degeneracy. It is pinned by holding the probe's Fourier-space centroid (the bright-field
    disc's centre) at ``target`` (cycles per pixel); the drift k is taken out of both. The
    centroid is taken over ``disc`` (the starting probe's aperture), where the probe's power is."""
    f = jnp.fft.fft2(p)
    inten = jnp.sum(jnp.real(f) ** 2 + jnp.imag(f) ** 2, axis=0) * disc
    real = inten.dtype
    fx = jnp.fft.fftfreq(p.shape[-2]).astype(real)[:, None]
    fy = jnp.fft.fftfreq(p.shape[-1]).astype(real)[None, :]
    tot = jnp.maximum(jnp.sum(inten), jnp.finfo(real).tiny)
    k = jnp.stack([jnp.sum(inten * fx), jnp.sum(inten * fy)]) / tot - target

    def ramp(shape: tuple[int, ...], sign: float) -> Array:
        x = jnp.arange(shape[-2], dtype=real)[:, None]
        y = jnp.arange(shape[-1], dtype=real)[None, :]
        return jnp.exp(sign * 2j * jnp.pi * (k[0] * x + k[1] * y))

    return (o * ramp(o.shape, 1.0)[None]).astype(o.dtype), (p * ramp(p.shape, -1.0)[None]).astype(p.dtype)


def _ramp_mode(value: bool | str) -> str:
    if value is False or value is None or value == "":
        return ""
    if value is True or value == "centroid":
        return "centroid"
    if value == "plane":
        return "plane"
    raise PtyroValueError(
        f"remove_phase_ramp: expected false, true / 'centroid' (hold the probe's bright-field centroid) or 'plane' (fit over the scanned area), got {value!r}"
    )


def remove_phase_plane(obj: Any, probe: Any, centres_px: Any) -> tuple[Array, Array]:
    """The object's phase plane, fitted by least squares over the box the probe centres
    ``centres_px`` (n, 2; object pixels) span, taken out of the object and put into the probe
    as the opposite tilt: object·e^{−ig·r} with probe·e^{ig·u} predicts every pattern exactly as
    before (a constant phase per position), so only the split between the two changes. The
    split is what data whose patterns were centred on their centres of mass cannot tell (the
    centring set the mean tilt, and with it the ramp): phaserEM's ``remove_phase_ramp`` does
    the same. Single-slice objects (s = 1)."""
    o = np.asarray(obj)
    ph = np.angle(o).sum(axis=0)
    c = np.asarray(centres_px, np.float64)
    lo, hi = np.floor(c.min(axis=0)).astype(int), np.ceil(c.max(axis=0)).astype(int) + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, ph.shape)
    xx, yy = np.meshgrid(np.arange(lo[0], hi[0], dtype=np.float64), np.arange(lo[1], hi[1], dtype=np.float64), indexing="ij")
    a = np.stack([np.ones(xx.size), xx.ravel(), yy.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(a, ph[lo[0] : hi[0], lo[1] : hi[1]].ravel(), rcond=None)
    g = coef[1:]
    ox, oy = np.meshgrid(np.arange(o.shape[-2]), np.arange(o.shape[-1]), indexing="ij")
    px, py = np.meshgrid(np.arange(probe.shape[-2]), np.arange(probe.shape[-1]), indexing="ij")
    o_new = jnp.asarray(o * np.exp(-1j * (g[0] * ox + g[1] * oy))[None], obj.dtype)
    p_new = jnp.asarray(np.asarray(probe) * np.exp(1j * (g[0] * px + g[1] * py))[None], probe.dtype)
    return o_new, p_new


def _constrain(cfg: StepConfig, params: dict, previous_probe: Array, c: dict) -> dict:
    out = dict(params)
    o, p = params["object"], params["probe"]
    if cfg.object_max_amplitude is not None:
        a = jnp.abs(o)
        o = o * (jnp.minimum(a, cfg.object_max_amplitude) / jnp.maximum(a, 1e-30)).astype(o.real.dtype)
    if cfg.phase_positive:
        o = (jnp.abs(o) * jnp.exp(1j * jnp.maximum(jnp.angle(o), 0.0))).astype(o.dtype)
    out["object"] = o
    if "support" in c:
        p = jnp.fft.ifft2(jnp.fft.fft2(p) * c["support"][None]).astype(p.dtype)
    if cfg.orthogonalize and p.shape[0] > 1:
        p = orthogonalize_modes(p, previous_probe, sort=False)
    if cfg.fix_probe_intensity:
        p = p * jnp.sqrt(c["probe_power"] / jnp.sum(jnp.real(p) ** 2 + jnp.imag(p) ** 2)).astype(p.real.dtype)
    out["probe"] = p
    if "positions" in out:
        # per-position corrections carry no translation and no isotropic scaling of the scan
        # (the object's shift; the scale that trades against the probe): project them out
        dp = out["positions"]
        dp = (dp - c["pos_basis"] @ jnp.tensordot(c["pos_pinv"], dp, axes=2)) * c["active"][:, None]
        out["positions"] = dp
    if "affine" in out and cfg.scan_scale == "hold":
        # the scan's scale (the calibrated step) held: the nearest rotation
        a = out["affine"]
        cs, sn = 0.5 * (a[0, 0] + a[1, 1]), 0.5 * (a[1, 0] - a[0, 1])
        r = jnp.maximum(jnp.sqrt(cs * cs + sn * sn), jnp.finfo(a.dtype).tiny)
        out["affine"] = jnp.stack([jnp.stack([cs, -sn]), jnp.stack([sn, cs])]) / r
    if "thickness" in out:
        out["thickness"] = jnp.maximum(out["thickness"], 1e-2)
    for constraint in cfg.constraints:
        out = constraint(out)
    return out


def recon_step(cfg: StepConfig, p: dict, s: Any, d: Array, idx: Array, w: Array, c: dict) -> tuple[dict, Any, Array]:
    """One pure reconstruction step: the batch's gradient, the optimizer's update, the
    constraints. Returns (parameters, optimizer state, [loss, noise floor])."""
    return recon_update(cfg, p, s, (_gradient(cfg, p, d, idx, w, c),), c)


def recon_part(cfg: StepConfig, shared: dict, d: Array, idx: Array, w: Array, wsum: Array, c: dict) -> tuple[dict, Array, Array]:
    """The data term's (gradient, loss, noise floor) of one part of a batch (``cfg.batch`` its
    size; ``wsum`` the whole batch's weight), with respect to the parameters after
    :func:`_shared` (``shared``): a stream of a step run in parts (:class:`_Steps`)."""
    return _gradient(cfg, shared, d, idx, w, c, wsum, shared=True)


def recon_shared(cfg: StepConfig, p: dict, c: dict) -> dict:
    """The parameters as the parts of a step read them (:func:`_shared`: the probe shifted once per
    sub-pixel group, the aberrations applied)."""
    return _shared(cfg, p, c)


def _summed(parts: Sequence[Any]) -> Any:
    """The element-wise sum of PyTrees of one structure (the parts of a step)."""
    return functools.reduce(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b), parts)


def recon_update_parts(cfg: StepConfig, p: dict, s: Any, parts: Sequence[tuple[dict, Array, Array]], c: dict) -> tuple[dict, Any, Array, dict]:
    """:func:`recon_update` from the parts' gradients with respect to the shared parameters
    (taken back through :func:`_shared` once, summed), and the next step's shared parameters."""
    grads, value, floor = _summed(parts)
    _, back = jax.vjp(lambda q: _shared(cfg, q, c), p)
    (grads,) = back(grads)
    new, s, values = recon_update(cfg, p, s, ((grads, value, floor),), c)
    return new, s, values, _shared(cfg, new, c)


def recon_update(cfg: StepConfig, p: dict, s: Any, parts: Sequence[tuple[dict, Array, Array]], c: dict) -> tuple[dict, Any, Array]:
    """The update of a step from its parts' (gradient, loss, noise floor), summed: the
    regularisers' gradient, the optimizer, the constraints."""
    grads, value, floor = _summed(parts)
    if cfg.tv_weight or (cfg.depth_weight and cfg.num_slices > 1) or cfg.regularisers:
        grads = jax.tree_util.tree_map(jnp.add, grads, jax.grad(lambda q: _regulariser(cfg, q))(p))
    updates, s = _optimizer(cfg).update(grads, s, p)
    new = _constrain(cfg, _opt.apply_updates(p, updates), p["probe"], c)
    return new, s, jnp.stack([value, floor])


@functools.lru_cache(maxsize=8)
def _jitted_step(mesh: Any) -> Any:
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(recon_step, static_argnums=0, out_shardings=(rep, rep, rep), donate_argnums=(1, 2))


@functools.lru_cache(maxsize=8)
def _jitted_parts(mesh: Any) -> tuple[Any, Any, Any]:
    """(the shared parameters, the part's gradient, the update) jitted for a step run in streams
    on one device."""
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    update = jax.jit(recon_update_parts, static_argnums=0, out_shardings=(rep, rep, rep, rep), donate_argnums=(1, 2))
    return jax.jit(recon_shared, static_argnums=0), jax.jit(recon_part, static_argnums=0), update


#: the least transform work of one part (positions × slices × modes × window pixels) for which
#: the default splits a step into parts: measured idle on 2 cores (two parts against one),
#: RECON-B multislice's 1.5 Mi per part 0.74x, the mixed state's 2 Mi 0.75x, RECON-A's 0.5 Mi
#: 0.86x once its batches were no longer reordered on the host (1.05x while the host's shift
#: held the second core); the demo's 96² single-slice step (147 Ki per part) 1.1x
STREAM_MIN_WORK = 2**19


def step_streams(streams: int | None, mesh: Any, batch: int, work: int | None = None) -> int:
    """How many parts of each batch a step computes at once, each from its own thread: ``streams``
    (validated), else :func:`~ptyro_core.pipeline.default_streams` (one per core on one CPU
    device, ``PTYRO_STREAMS`` overrides; 1 on accelerators and meshes), lowered to the largest
    divisor of the batch that leaves at least 2 positions per part. XLA runs the FFTs of a CPU
    program one after another on one thread, so a step in one program uses one core. By default
    (neither ``streams`` nor ``PTYRO_STREAMS`` given) also lowered until each part transforms at
    least :data:`STREAM_MIN_WORK` pixels, where ``work`` is one position's (slices, plus one
    where each position's probe is shifted by an FFT of its own, × modes × window pixels): below
    it the threads' contention for XLA's pool costs more than the second core gives."""
    chosen = streams is not None or bool(os.environ.get("PTYRO_STREAMS"))
    k = default_streams(mesh) if streams is None else check_streams(streams)
    if k > 1 and int(mesh.size) != 1:
        k = 1  # a mesh splits each batch over its devices already
    if not chosen and work is not None:
        k = max(1, min(k, (batch * int(work)) // STREAM_MIN_WORK))
    k = min(k, max(batch // 2, 1))
    while batch % k:
        k -= 1
    return k


def _tv(o: Array) -> Array:
    dx = jnp.diff(o, axis=-2)[..., :, :-1]
    dy = jnp.diff(o, axis=-1)[..., :-1, :]
    return jnp.mean(jnp.sqrt(jnp.abs(dx) ** 2 + jnp.abs(dy) ** 2 + 1e-12))


# --------------------------------------------------------------------------- the driver


def _check_inputs(dataset: Any, state: Any, algorithm: str, iterations: Any, chunk_size: Any) -> tuple[int, tuple[int, int]]:
    if not isinstance(dataset, Dataset4D):
        raise PtyroTypeError(f"{algorithm}: expected a Dataset4D, got {type(dataset).__name__}")
    if not isinstance(state, ReconState):
        raise PtyroTypeError(f"{algorithm}: expected a ReconState, got {type(state).__name__}")
    if int(iterations) < 0:
        raise PtyroValueError(f"iterations: expected a number of passes >= 0, got {iterations!r}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise PtyroValueError(
            f"chunk_size: expected a number of positions per device >= 1 (or None: chosen from the window, modes and slices), got {chunk_size!r}"
        )
    n = int(np.prod(dataset.array.shape[:-2]))
    window = tuple(int(v) for v in dataset.array.shape[-2:])
    if tuple(state.probe.shape[-2:]) != window:
        raise PtyroValueError(f"{algorithm}: probe window {tuple(state.probe.shape[-2:])} differs from the pattern shape {window}")
    if int(state.positions.shape[0]) != n:
        raise PtyroValueError(f"{algorithm}: state has {state.positions.shape[0]} positions, dataset has {n}")
    if not np.allclose(state.sampling, dataset.grid.sampling, rtol=1e-5):
        raise PtyroValueError(f"{algorithm}: state sampling {state.sampling} Å differs from the dataset grid sampling {dataset.grid.sampling} Å")
    return n, window  # type: ignore[return-value]


def _active_indices(indices: Any, n: int) -> np.ndarray:
    if indices is None:
        return np.arange(n)
    idx = np.asarray(indices).reshape(-1)
    if idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size:
        raise PtyroValueError(f"indices: expected distinct integer scan indices in [0, {n}), got {np.asarray(indices).ravel()[:8]!r} ({idx.size} values)")
    return np.sort(idx)


#: waves of 128 × 128 (complex64: 1 MiB) that a chunk of a step holds at once: a chunk's far
#: fields stay in the cache between the passes the step makes over them (RECON-B multislice 10 %
#: faster than at 16, RECON-A the same), and XLA compiles the step's unrolled per-position loop
#: in 20-30 MiB less heap (RECON-A: 71 against 83-93 MiB); probe modes count down to
#: CHUNK_MIN_POSITIONS positions
CHUNK_WAVES = 8
CHUNK_MIN_POSITIONS = 4


def _chunk_positions(chunk_size: int | None, window: tuple[int, int], modes: int, slices: int) -> int:
    """Positions per device per chunk: ``chunk_size`` when given, else as many as keep about
    :data:`CHUNK_WAVES` waves of 128 × 128 (scaled to the window) per pair of slices in flight,
    and, however many probe modes, at least :data:`CHUNK_MIN_POSITIONS` where the slices allow."""
    if chunk_size is not None:
        return int(chunk_size)
    waves = CHUNK_WAVES * 128 * 128 / (window[0] * window[1])
    pairs = (slices + 1) // 2
    # probe modes do not take a chunk below CHUNK_MIN_POSITIONS positions (where the slices allow):
    # each chunk is one turn of a loop, and each position's share of it is added on its own
    # (RECON-B mixed state, 4 modes: 4 positions a chunk 0.89x the time of 2)
    return max(1, int(waves // (modes * pairs)), min(CHUNK_MIN_POSITIONS, int(waves // pairs)))


def _position_projection(nominal: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The corrections per-position corrections may not carry: a translation (the object's shift)
    and an isotropic scaling of the scan about its centre (the scale that trades against the
    probe; the global map's business): basis (n, 2, 3) and its pseudo-inverse (3, n, 2) over
    the active positions. Rotation and shear stay free (with ``affine`` the map fits the rotation)."""
    n = nominal.shape[0]
    x = nominal - nominal[active > 0].mean(axis=0)
    basis = np.zeros((n, 2, 3))
    basis[:, 0, 0] = 1.0
    basis[:, 1, 1] = 1.0
    basis[:, :, 2] = x
    flat = (basis * active[:, None, None]).reshape(2 * n, 3)
    pinv = (np.linalg.pinv(flat.T @ flat) @ flat.T).reshape(3, n, 2)
    return basis.astype(np.float32), pinv.astype(np.float32)


def scan_map(affine: Any) -> dict[str, float]:
    """The scan's global map fitted by ``position_corrected``: its scale change (√|det A| − 1)
    and rotation (rad)."""
    a = np.asarray(affine, np.float64)
    return {"scale_change": float(math.sqrt(abs(np.linalg.det(a))) - 1.0), "rotation": float(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))}


def _summary(report: list[dict]) -> str:
    r = report[-1]
    line = f"reconstruction: {r['pass']} passes, loss {r['loss_name']!r} ({r['loss_reason']}): final {r['loss']:.5g} per pattern"
    if r.get("noise_floor"):
        line += f", expected noise floor {r['noise_floor']:.5g} (ratio {r['loss'] / r['noise_floor']:.3f}"
        line += "; at the shot noise)" if r["loss"] <= 1.05 * r["noise_floor"] else "; above the shot noise: not converged, or a model error)"
    elif len(report) > 1 and report[-2]["loss"] > 0:
        line += f", no noise floor (data not counted); last pass changed it by {100 * (r['loss'] / report[-2]['loss'] - 1):+.2f} %"
    if "aberrations" in r:
        line += "; fitted aberration change " + ", ".join(f"{k} {v:+.2f}" + (" rad" if k.startswith("phi") else " Å") for k, v in r["aberrations"].items())
    if "scan" in r:
        line += f"; scan scale change {100 * r['scan']['scale_change']:+.3f} %, rotation {math.degrees(r['scan']['rotation']):+.3f}°"
    return line


# long: 58 of its lines are the signature (the engine's public options, one per line) and the docstring; the body sets the step up in order and hands over to _loop
def run_reconstruction(
    dataset: Dataset4D,
    state: ReconState,
    *,
    algorithm: str = "single_slice",
    loss: Any = "auto",
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
    fit_aberrations: bool = False,
    fit_positions: bool = False,
    affine: bool = False,
    scan_scale: str = "hold",
    fit_thickness: bool = False,
    orthogonalize: bool = False,
    num_modes: int | None = None,
    propagator: Any = "fresnel",
    probe_start: int | None = None,
    position_start: int = 1,
    lr_schedule: str = "cosine",
    object_max_amplitude: float | None = 1.0,
    phase_positive: bool = False,
    fix_probe_intensity: bool = True,
    remove_phase_ramp: bool | str = False,
    probe_support: float | None = None,
    tv_weight: float = 0.0,
    depth_weight: float = 0.0,
    detector_blur: float = 0.0,
    mask: Any = None,
    memory_budget: float | None = None,
    group_shifts: bool = True,
    chunk_size: int | None = None,
    streams: int | None = None,
    indices: Any = None,
    report: list | None = None,
    constraints: Sequence[Callable[[dict], dict]] = (),
    regularisers: Sequence[Callable[[dict], Any]] = (),
    backend: Any = "auto",
) -> ReconState:
    """The shared engine (a small driver around the pure :func:`recon_step`); see
    :func:`single_slice` for the public options.

    A new algorithm is a configuration of this engine (``docs/plugins.md``): its name
    (``algorithm``: the progress bar, the report, the checkpoint's fingerprint; unknown names
    start from single-slice's learning rates), its options, and its own ``constraints`` (pure
    functions ``params -> params`` of the parameter dict, applied inside the jitted step after
    the built-in ones) and ``regularisers`` (pure functions ``params -> scalar``, added to the
    loss; their gradient joins the data term's). They are part of the step's static
    configuration (:class:`StepConfig`): pass module-level functions, so that a second run
    reuses the compiled step."""
    n, window = _check_inputs(dataset, state, algorithm, iterations, chunk_size)
    for what, fns in (("constraints", constraints), ("regularisers", regularisers)):
        if callable(fns) or not all(callable(f) for f in fns):
            raise PtyroTypeError(f"{what}: expected a sequence of functions of the parameter dict, got {fns!r:.80}")
    if lr_schedule not in ("cosine", "exponential", "constant"):
        raise PtyroValueError(f"lr_schedule: expected 'cosine', 'exponential' or 'constant', got {lr_schedule!r}")
    if scan_scale not in ("hold", "fit"):
        raise PtyroValueError(f"scan_scale: expected 'hold' (the scan's step is calibrated; only its rotation is fitted) or 'fit', got {scan_scale!r}")
    active_idx = _active_indices(indices, n)
    if num_modes is not None and int(num_modes) > state.probe.shape[0]:
        state = replace(state, probe=add_probe_modes(state.probe, int(num_modes)))
    num_slices = int(state.object.shape[0])
    mesh = device_mesh() if mesh is None else mesh
    ndev = int(mesh.size)
    b = round_batch_size(int(batch_size), ndev, len(active_idx))
    slots = {"adam": 2, "rmsprop": 2, "sgd": 1, "adagrad": 1}.get(optimizer if isinstance(optimizer, str) else "", 2)
    need = estimate_memory(dataset, state, batch_size=b, num_devices=ndev, optimizer_slots=slots)
    check_memory(
        need,
        what=f"reconstruction '{algorithm}' (batch {b}, {state.probe.shape[0]} mode(s), {num_slices} slice(s), object {tuple(state.object.shape[-2:])})",
        knob=f"reduce batch_size (now {batch_size}), the number of probe modes or slices, or crop the scan",
        budget=memory_budget,
    )

    # a checkpoint of another dataset, calibration or model is refused, naming what differs
    ck = _read_resume(checkpoint, fingerprint(state, state.positions, algorithm)) if resume else None
    if ck is not None:
        state, seed, target = ck["state"], ck["seed"], ck["target_iteration"]
        nominal = np.asarray(ck["nominal_positions"], np.float32)
    else:
        target, nominal = int(state.iteration) + int(iterations), np.asarray(state.positions, np.float32)
    start_iter = int(state.iteration)

    # ---------------- the data and the loss they choose
    source = _PatternBatches(pattern_source(dataset))
    loss, gain, loss_reason, counted = _choose_loss(loss, source, active_idx)
    source.gain = gain
    scale = source.mean_pattern_sum(active_idx)
    if not scale > 0:
        raise PtyroValueError(f"{algorithm}: the dataset holds no intensity (mean pattern sum {scale!r}); expected positive counts")

    # ---------------- parameters and their learning rates
    params = _parameters(state, n, fit_aberrations=fit_aberrations, fit_positions=fit_positions, affine=affine, fit_thickness=fit_thickness)
    groups = list(params)
    if probe_start is None:
        probe_start = 3 if fit_aberrations else 1
    starts = {"probe": int(probe_start), "positions": int(position_start), "affine": int(position_start)}
    k_alpha = _aperture_radius(state.probe, state.sampling)
    probe_power = float(ck["extras"]["probe_power"]) if ck is not None and "probe_power" in ck["extras"] else _power(state.probe)
    lrs = _learning_rates(algorithm, learning_rates, groups, probe_scale=math.sqrt(probe_power * 128 * 128 / (window[0] * window[1])))
    if not fit_object:
        lrs["object"] = 0.0
    if not fit_probe:
        lrs["probe"] = 0.0
    steps_per_pass = len(batch_bounds(len(active_idx), b))
    grouped = None if (fit_positions or not group_shifts) else shift_groups(nominal, state.sampling, window, max_groups=max(b // 2, 1))
    # a position's transforms: one per slice, and one more where its probe is shifted by an FFT of its own
    nstreams = step_streams(streams, mesh, b, (num_slices + (grouped is None)) * int(state.probe.shape[0]) * int(np.prod(state.probe.shape[-2:])))
    far_name = _far_backend(backend, state, params, ndev, grouped=grouped is not None)
    cfg = StepConfig(
        algorithm=algorithm, window=window, sampling=(float(state.sampling[0]), float(state.sampling[1])), energy=float(state.energy),
        dtype=str(np.dtype(state.object.dtype)), num_slices=num_slices, propagator=propagator, detector_blur=float(detector_blur),
        loss=loss, floor=_floor_name(loss) if counted else None,
        optimizer=optimizer, learning_rates=tuple(lrs.items()), lr_schedule=lr_schedule,
        total_steps=int(iterations) * steps_per_pass, starts=tuple((g, int(starts.get(g, 0)) * steps_per_pass) for g in groups),
        tv_weight=float(tv_weight), depth_weight=float(depth_weight),
        object_max_amplitude=None if object_max_amplitude is None else float(object_max_amplitude),
        phase_positive=bool(phase_positive), orthogonalize=bool(orthogonalize), fix_probe_intensity=bool(fix_probe_intensity),
        remove_phase_ramp=_ramp_mode(remove_phase_ramp), scan_scale=scan_scale, grouped=grouped is not None,
        chunk_size=_chunk_positions(chunk_size, window, int(state.probe.shape[0]), num_slices), batch=b, ndev=ndev, mesh=mesh if ndev > 1 else None, constraints=tuple(constraints), regularisers=tuple(regularisers),
        backend=far_name,
    )  # fmt: skip
    opt_state = _init_optimizer(cfg, params)
    if ck is not None:
        params = _restore(params, ck["params"], "params")
        opt_state = _restore(opt_state, ck["opt_state"], "optimizer state")

    probe_centroid = np.asarray(ck["extras"]["probe_centroid"], np.float64) if ck is not None and "probe_centroid" in ck["extras"] else _centroid(state.probe)
    consts = _constants(state, cfg, nominal, active_idx, n, scale, probe_power, probe_centroid, k_alpha, grouped, mask, probe_support, fit_positions)
    return _loop(
        dataset=dataset, state=state, cfg=cfg, params=params, opt_state=opt_state, consts=consts, source=source, mesh=mesh,
        active_idx=active_idx, start_iter=start_iter, target=target, seed=seed, progress=progress, callback=callback,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, nominal=nominal, k_alpha=k_alpha, report=report,
        loss_reason=loss_reason, extras={"probe_power": np.asarray(probe_power), "probe_centroid": probe_centroid},
        streams=nstreams,
    )  # fmt: skip


def _far_backend(backend: Any, state: ReconState, params: dict, ndev: int, *, grouped: bool = True) -> str:
    """The name of the back end that runs the step's far fields and their gradient (``backend``
    ``"auto" | "xla" | NAME``, the rules of :mod:`ptyro_core.backends`): a registered back end
    offering :class:`~ptyro_core.protocols.WindowFarFields` runs them for a single-slice object
    whose fitted parameters are the object, the probe and its aberrations (the step's far-field
    path, :func:`_gradient`); everything else is XLA's (``auto``), or an error naming why (a
    named back end). ``auto`` also leaves to XLA the steps whose positions each shift the probe
    (not ``grouped``): there the probe's per-position shifts are XLA's anyway and ptyro-native's
    kernels gained nothing (RECON-L, 1.03-1.06x the wall time, 0.95-0.98x the CPU time in two
    A/B runs); a named back end runs them."""
    name = check_backend_name(backend)
    slices = int(state.object.shape[0])
    other = sorted(set(params) - FAR_PARAMS)
    if name not in ("auto", XLA) and (slices > 1 or other):
        why = f"a {slices}-slice object" if slices > 1 else f"fitting {', '.join(other)}"
        raise PtyroValueError(f"backend: {name!r} runs the far fields of single-slice reconstructions that fit the object and the probe only, "
                              f"and this one has {why}; use 'auto' or 'xla'")  # fmt: skip
    if name == XLA or slices > 1 or other or (name == "auto" and not grouped):
        return XLA
    return resolve_backend(name, state.probe.dtype, windowed=True, needs=WindowFarFields, what="window far-field", who="ptyro_invert",
                           single_device=ndev == 1)[0]  # fmt: skip


def _read_resume(checkpoint: Any, expected: dict) -> dict | None:
    """The checkpoint to resume from, if one exists at ``checkpoint`` and matches ``expected``
    (:func:`ptyro_invert.checkpoint.fingerprint` of this run)."""
    from pathlib import Path

    return check_resume(checkpoint, expected) if checkpoint is not None and Path(checkpoint).exists() else None


def _parameters(state: ReconState, n: int, *, fit_aberrations: bool, fit_positions: bool, affine: bool, fit_thickness: bool) -> dict[str, Any]:
    """The fitted parameters, a dict PyTree keyed by group (the learning rates' keys); new groups
    are made on the host (no eager program: see :func:`_on_device`)."""
    real = _real_dtype(state.object.dtype)
    params: dict[str, Any] = {"object": state.object, "probe": state.probe}
    if fit_aberrations:
        params["aberrations"] = _on_device(np.zeros((len(ABERRATION_TERMS),), real))
    if fit_positions:
        params["positions"] = _on_device(np.zeros((n, 2), real))
        if affine:
            params["affine"] = _on_device(np.eye(2, dtype=real))
    if fit_thickness:
        if int(state.object.shape[0]) < 2:
            raise PtyroValueError(f"fit_thickness: needs a multislice object (2+ slices), got {state.object.shape[0]} slice(s)")
        params["thickness"] = state.slice_thickness
    return params


def _real_dtype(dtype: Any) -> np.dtype:
    """The real dtype of a (complex) dtype, without a device program (``x.real`` compiles one)."""
    return np.empty((), dtype).real.dtype


def _on_device(x: Any, dtype: Any = None) -> Any:
    """A host value on the default device, by a transfer. ``jnp.asarray`` of a NumPy array or a
    number compiles an eager program per shape and dtype ("stage", "convert_element_type"), and
    the process keeps every compiled program, about 1.4 MiB of heap each: RECON-A's set-up made
    37 of them, 50 MiB of its peak (benchmarks/profile_memory.py)."""
    return jax.device_put(np.asarray(x, dtype))


def _power(probe: Any) -> float:
    """Σ|P|² of the probe modes, on the host in float64 (no device program)."""
    p = np.asarray(probe)
    return float(np.sum(p.real.astype(np.float64) ** 2 + p.imag.astype(np.float64) ** 2))


@functools.partial(jax.jit, static_argnums=0)
def _init_optimizer(cfg: StepConfig, params: dict) -> Any:
    """The optimizer's state for ``params``: one program (eagerly, each zeros_like of each group
    compiles one), cached with the step's configuration."""
    return _optimizer(cfg).init(params)


def _centroid(probe: Any) -> np.ndarray:
    """The centroid (cycles per pixel, FFT order) of the probe's power in its bright-field disc."""
    f = np.sum(np.abs(np.fft.fft2(np.asarray(probe))) ** 2, axis=0) * _disc(probe)
    f = f / np.sum(f)
    return np.array([np.sum(f * np.fft.fftfreq(f.shape[0])[:, None]), np.sum(f * np.fft.fftfreq(f.shape[1])[None, :])])


def _constants(state: ReconState, cfg: StepConfig, nominal: np.ndarray, active_idx: np.ndarray, n: int, scale: float, probe_power: float,
               probe_centroid: np.ndarray, k_alpha: float, grouped: Any, mask: Any, probe_support: float | None, fit_positions: bool) -> dict[str, Any]:  # fmt: skip
    """The arrays a step reads and does not change (replicated on every device)."""
    real = _real_dtype(cfg.dtype)
    window = cfg.window
    active = np.zeros(n, np.float32)
    active[active_idx] = 1.0
    # every constant is made on the host and transferred (_on_device): no eager device program
    consts: dict[str, Any] = {
        "positions": _on_device(nominal),
        "centre": _on_device(nominal[active_idx].mean(axis=0)),
        "scale": _on_device(scale, real),
        # the power the probe is held at: the starting state's (kept in checkpoints, so that a
        # resumed run holds exactly the same value)
        "probe_power": _on_device(probe_power, real),
        "probe_centroid": _on_device(probe_centroid, real),
        "disc": _on_device(_disc(state.probe), real),
        "thickness": state.slice_thickness,
        "active": _on_device(active),
        "aber_basis": _on_device(aberration_basis(window, cfg.sampling, k_alpha)),
    }
    if fit_positions:
        basis, pinv = _position_projection(nominal.astype(np.float64), active)
        consts["pos_basis"], consts["pos_pinv"] = _on_device(basis), _on_device(pinv)
    if mask is not None:
        mask_arr = np.asarray(mask, np.float32)  # centred, as the patterns and the model's far fields
        if mask_arr.shape != window:
            raise PtyroValueError(f"mask: expected shape {window} (the detector), got {mask_arr.shape}")
        consts["mask"] = _on_device(mask_arr)
    if probe_support is not None:
        lam = wavelength(state.energy)
        kx = np.fft.fftfreq(window[0], state.sampling[0])[:, None]
        ky = np.fft.fftfreq(window[1], state.sampling[1])[None, :]
        consts["support"] = _on_device((np.sqrt(kx**2 + ky**2) * lam * 1e3 <= float(probe_support)).astype(np.float32))
    if grouped is not None:
        start, group, shifts = grouped
        consts["start"], consts["group"] = _on_device(start), _on_device(group)
        consts["ramps"] = _on_device(shift_ramp(shifts, window, dtype=state.probe.dtype, host=True))  # the groups' shifts, as the step uses them
    return consts


class _Steps:
    """The steps of a run. With one stream, one jitted program per step (:func:`recon_step`).
    With ``streams`` k > 1 (one CPU device), each batch in k equal parts whose gradients
    (:func:`recon_part`) are computed at once, each from its own thread (XLA runs a CPU program's
    FFTs one after another on one thread), then summed by one update (:func:`recon_update_parts`),
    which also makes the next step's shared parameters (the probe's sub-pixel shifts: once per
    step, not once per part): the same step, up to the order of the sums."""

    def __init__(self, cfg: StepConfig, consts: dict, source: Any, mesh: Any, streams: int) -> None:
        self.cfg, self.consts, self.source, self.mesh, self.k = cfg, consts, source, mesh, int(streams)
        self.shard = scan_sharding(mesh)
        if self.k > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.shared_fn, self.part, self.update = _jitted_parts(mesh)
            self.part_cfg = dataclasses.replace(cfg, batch=cfg.batch // self.k)
            self.shared: Any = None  # the current parameters after _shared (the update makes the next)
            self.pool: Any = ThreadPoolExecutor(max_workers=self.k, thread_name_prefix="ptyro-step")
        else:
            self.step = _jitted_step(mesh)

    def prepare(self, idx: np.ndarray) -> tuple[list[tuple[Any, Any, Any]], Any]:
        """A batch's k parts (patterns, indices, weights) on the device(s), and its weight: the
        last batch padded to the full batch with zero-weight entries."""
        b, n = self.cfg.batch, len(idx)
        w = np.zeros(b, np.float32)
        w[:n] = 1.0
        if n < b:
            idx = np.concatenate([idx, np.full(b - n, idx[-1])])
        h = b // self.k
        host = _on_host(self.mesh)
        parts = []
        for j in range(self.k):
            sl = slice(j * h, (j + 1) * h)
            # each process reads only the patterns of its own devices (from memory or disk)
            where = (idx[sl].astype(np.int32), w[sl])
            parts.append((self.source.batch(idx[sl], self.mesh), *(where if host else jax.device_put(where, self.shard))))
        return parts, np.float32(n)

    def _part(self, shared: dict, piece: tuple[Any, Any, Any], wsum: Any) -> Any:
        return jax.block_until_ready(self.part(self.part_cfg, shared, *piece, wsum, self.consts))

    def __call__(self, params: dict, opt_state: Any, batch: tuple[list, Any], *, first: bool) -> tuple[dict, Any, Any]:
        pieces, wsum = batch
        if self.k == 1:
            if first:  # the set-up's freed heap returned (~10 MiB off the peak), compiled (jit reuses it), freed again
                _give_back_freed_heap()
                self.step.lower(self.cfg, params, opt_state, *pieces[0], self.consts).compile()
                _give_back_freed_heap()
            return self.step(self.cfg, params, opt_state, *pieces[0], self.consts)
        if self.shared is None:
            self.shared = self.shared_fn(self.cfg, params, self.consts)
        if first:
            _give_back_freed_heap()
            self.part.lower(self.part_cfg, self.shared, *pieces[0], wsum, self.consts).compile()
        futures = [self.pool.submit(self._part, self.shared, piece, wsum) for piece in pieces]
        params, opt_state, values, self.shared = self.update(self.cfg, params, opt_state, tuple(f.result() for f in futures), self.consts)
        if first:
            _give_back_freed_heap()
        return params, opt_state, values

    def close(self) -> None:
        if self.k > 1:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _loop(*, dataset: Dataset4D, state: ReconState, cfg: StepConfig, params: dict, opt_state: Any, consts: dict, source: Any, mesh: Any,
          active_idx: np.ndarray, start_iter: int, target: int, seed: int, progress: bool, callback: Any, checkpoint: Any,
          checkpoint_every: int, nominal: np.ndarray, k_alpha: float, report: list | None, loss_reason: str,
          extras: dict, streams: int) -> ReconState:  # fmt: skip
    """The passes: batches in a seeded random order, the jitted step, the per-pass report,
    checkpoints and the callback."""
    # fresh buffers: the step donates them, and the caller's state must survive (copied where
    # they are, then placed: jnp.copy compiles a program per shape, and a copy straight onto a
    # mesh of several devices may keep the first device's buffer)
    params = replicate(jax.device_put(params, may_alias=False), mesh)
    opt_state = replicate(jax.device_put(opt_state, may_alias=False), mesh)
    consts = replicate(consts, mesh)
    steps = _Steps(cfg, consts, source, mesh, streams)
    n_act, b = len(active_idx), cfg.batch
    loss_name = cfg.loss if isinstance(cfg.loss, str) else getattr(cfg.loss, "__name__", "custom")
    report = [] if report is None else report

    def current_state(it: int, hist: list) -> ReconState:
        pos = _effective_positions(params, jnp.arange(nominal.shape[0]), consts) if "positions" in params else consts["positions"]
        probe = params["probe"]
        if "aberrations" in params:
            probe = apply_aberrations(probe, params["aberrations"], consts["aber_basis"])
        probe = orthogonalize_modes(probe) if cfg.orthogonalize else probe
        return replace(
            state,
            object=params["object"],
            probe=probe,
            positions=pos,
            slice_thickness=params.get("thickness", consts["thickness"]),
            # joined on the host: a device concatenate compiles anew for every length (heap growth per pass)
            loss=jax.device_put(np.concatenate([np.asarray(state.loss, np.float32), np.asarray(hist, np.float32)])),
            iteration=_on_device(it, np.int32),
        )

    from ptyro_core.progress import progress_bar

    hist: list[float] = []
    bar = progress_bar(total=max(target - start_iter, 0), desc=cfg.algorithm, disable=not progress)
    out = current_state(start_iter, hist)
    bounds = batch_bounds(n_act, b)

    def order(it: int) -> np.ndarray:  # a pass's patterns, in its seeded random order
        return active_idx[np.random.default_rng([int(seed), it]).permutation(n_act)]

    nxt: Any = steps.prepare(order(start_iter)[bounds[0][0] : bounds[0][1]]) if start_iter < target else None
    try:
        for it in range(start_iter, target):
            t0 = time.perf_counter()
            perm = order(it)
            acc: list[Any] = []
            for j, (lo, hi) in enumerate(bounds):
                batch = nxt
                params, opt_state, value = steps(params, opt_state, batch, first=not acc and it == start_iter)
                acc.append((value, hi - lo))
                # the next batch is read while this step runs; after a pass's last step, the next
                # pass's first (the pass's end waits for its losses: the step then has its input)
                if j + 1 < len(bounds):
                    nxt = steps.prepare(perm[bounds[j + 1][0] : bounds[j + 1][1]])
                elif it + 1 < target:
                    nxt = steps.prepare(order(it + 1)[bounds[0][0] : bounds[0][1]])
                if len(acc) > 2:  # at most two steps in flight: their input batches are all that is queued
                    jax.block_until_ready(acc[-3][0])
            vals = np.sum([np.asarray(v, np.float64) * k for v, k in acc], axis=0) / n_act
            hist.append(float(vals[0]))
            out = current_state(it + 1, hist)
            entry: dict[str, Any] = {"pass": it + 1, "loss": float(vals[0]), "loss_name": loss_name, "loss_reason": loss_reason,
                                     "noise_floor": float(vals[1]) if cfg.floor else None, "time_s": time.perf_counter() - t0,
                                     "streams": steps.k, "backend": cfg.backend}  # fmt: skip
            if "aberrations" in params:
                entry["aberrations"] = aberrations_in_angstrom(params["aberrations"], k_alpha, cfg.energy)
            if "affine" in params:
                entry["scan"] = scan_map(params["affine"])
            if "positions" in params:
                entry["position_correction_rms"] = float(np.sqrt(np.mean(np.sum(np.asarray(params["positions"])[active_idx] ** 2, -1))))
            report.append(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{hist[-1]:.4g}")
            if checkpoint is not None and ((it + 1 - start_iter) % max(int(checkpoint_every), 1) == 0 or it + 1 == target):
                save_checkpoint(
                    checkpoint, out, params=params, opt_state=opt_state, nominal_positions=nominal,
                    seed=seed, target_iteration=target, algorithm=cfg.algorithm, extras=extras,
                )  # fmt: skip
            if callback is not None and callback(out) is False:
                break
    finally:
        bar.close()
        steps.close()
        source.close()
    if cfg.remove_phase_ramp == "centroid" and cfg.num_slices == 1:
        o, p = jax.jit(_remove_ramp)(params["object"], params["probe"], consts["probe_centroid"], consts["disc"])
        params = {**params, "object": o, "probe": p}
        out = current_state(int(out.iteration), hist)
    elif cfg.remove_phase_ramp == "plane" and cfg.num_slices == 1:
        pos = np.asarray(out.positions, np.float64)[active_idx] / np.asarray(cfg.sampling)
        o, p = remove_phase_plane(params["object"], params["probe"], pos)
        params = {**params, "object": o, "probe": p}
        out = current_state(int(out.iteration), hist)
    if progress and report:
        print(_summary(report), file=sys.stderr, flush=True)
    return out


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
    ``chunk_size``: positions per device computed at once inside a step; the gradient of the
    batch is accumulated over its chunks (same result up to round-off). By default (None) a chunk
    holds about 16 waves of 128 × 128 per slice pair (:func:`_chunk_positions`): a cache-sized
    working set, 16 positions for one mode and one slice, 4 for four modes, 8 for three slices.
    The chunks assume a loss that is a weighted mean over patterns, as every registered loss is.
    ``streams``: parts of each batch whose gradients are computed at once, each from its own
    thread, then summed into one update (the same step up to round-off; :func:`step_streams`).
    By default one per core on a single CPU device (``PTYRO_STREAMS`` overrides), 1 on
    accelerators and on a mesh of several devices: XLA runs a CPU program's FFTs on one thread.
    ``backend``: who computes a single-slice step's far fields and their gradient: ``"auto"``
    (the default) a registered back end that offers it (ptyro-native's ``native`` CPU kernel,
    when installed) on a single CPU device for complex64 waves where the positions fall on a few
    sub-pixel shifts (``group_shifts``), else XLA; ``"xla"``; or a back end's name (an error says
    why where it cannot run). The same step up to float32 round-off; multislice objects and fitted
    positions, scan or thicknesses always run XLA.

    Forgiving nominal optics and counted data: ``loss="auto"`` (the default) chooses ``poisson``
    for counts (integers, or integer multiples of one quantum, which is divided out) and
    ``amplitude`` otherwise; the gradient is that of the loss per electron, so the default rates
    do not depend on the dose (the probe's default is scaled to the window's rms probe
    amplitude). ``fit_aberrations`` fits C10, C12/φ12 and C30 as real parameters (the group
    ``aberrations``, rad at the aperture edge, default rate 0.3) from the first pass, the pixel-wise
    probe joining at ``probe_start`` (default 3 then, else 1); the returned probe includes them.
    Position corrections carry no translation and no isotropic scaling of the scan (projected out
    after every step: the scale trades against the probe); the global map (``affine``) has its scale held (``scan_scale="hold"``, the
    default: only the rotation is fitted) or fitted (``"fit"``). ``remove_phase_ramp`` moves the
    object's linear phase ramp (degenerate with a probe tilt) out at the end of the run: ``True``
    or ``"centroid"`` by holding the probe's bright-field centroid, ``"plane"`` by fitting the
    object's phase plane over the scanned area (:func:`remove_phase_plane`; what
    ``ptyro_workflows`` uses for patterns it re-centred on their centres of mass). Off by default:
    on RECON-A (centred simulated data) there is no spurious ramp.
    ``indices`` reconstructs on a subset of the scan positions (a live caller's warm start:
    pass the previous result as the state). ``report``: a list that receives one dict per pass
    (``loss``, ``loss_name``, ``loss_reason``, ``noise_floor`` (the loss expected at the shot
    noise of counted data, else None), ``time_s``, ``streams`` (parts of each batch computed at
    once), ``backend`` (of the far fields), ``aberrations`` (changes in Å, φ12 in rad),
    ``scan`` (scale change, rotation), ``position_correction_rms``); with ``progress`` a one-line
    summary (loss against the noise floor) is printed at the end.
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
