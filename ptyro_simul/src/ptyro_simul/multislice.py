"""Multislice: transmission exp(iσV) per slice, then Fresnel propagation by that slice's thickness,
looped with ``jax.lax.scan``; the ``multislice`` simulator component for 4D-STEM.

Conventions: probe positions are (x, y) Å in the potential's frame (pixel [i, j] at
(i·dx, j·dy)), the position of the probe's centre; the probe array is centred at index n // 2,
so it is moved by ``position − (n//2)·d`` with a Fourier phase ramp (differentiable with respect
to the positions; the potential is periodic, so the probe wraps around the cell). Detection is
the unitary forward FFT of the exit wave, centred (zero frequency at n // 2).

``multislice`` is a :class:`~ptyro_core.protocols.PlannedSimulator`: ``plan(potential, probe,
...)`` computes the transmission functions, the propagator's kernels (for any
:class:`~ptyro_core.protocols.KernelPropagator`) and the probe's FFT once, and resolves the
far-field back end (:mod:`ptyro_simul.backend`); ``apply(plan, positions)`` runs a batch.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from ptyro_core import Grid, PotentialSlices, ProbeModes, PtyroTypeError, PtyroValueError
from ptyro_core.conventions import energy2sigma, fft2, ifft2, shift_ramp
from ptyro_core.protocols import KernelPropagator, PlannedSimulator
from ptyro_simul.backend import resolve_backend
from ptyro_simul.propagator import antialias_aperture

__all__ = [
    "resolve_propagator",
    "transmission",
    "multislice_exit_wave",
    "plane_wave_exit",
    "shift_phase",
    "shifted_probes",
    "fresnel_far_field",
    "crop_windows",
    "MultislicePlan",
    "Multislice",
    "MultisliceSimulator",
    "multislice",
    "check_window",
]


def resolve_propagator(propagator: Any) -> Callable[..., Array]:
    """A propagator component: a registered name (looked up now, outside jit) or a callable."""
    if isinstance(propagator, str):
        import ptyro_core

        return ptyro_core.get("propagator", propagator)
    if not callable(propagator):
        raise PtyroTypeError(f"propagator: expected a registered name or a callable, got {propagator!r}")
    return propagator


def _complex_dtype(x: Any) -> Any:
    return jnp.complex128 if jnp.result_type(x) == jnp.float64 else jnp.complex64


def transmission(potential: PotentialSlices, energy: float, *, bandlimit: bool = True) -> Array:
    """Transmission functions t = exp(iσV) (s, nx, ny), σ the interaction constant at ``energy``,
    band-limited to 2/3 of the Nyquist frequency like the propagator (``bandlimit=False`` for
    the raw exponential).

    Both factors of t·ψ must be limited to 2/3 Nyquist: their product then reaches at most 4/3
    Nyquist, and what wraps around the grid lands beyond 2/3 Nyquist, where the propagator's
    aperture removes it. Without the limit on t, high-angle scattering aliases back into the kept
    band (SrTiO3, 256² over 31.24 Å: ADF off by ~20 % against a converged calculation / abTEM)."""
    sigma = energy2sigma(energy)
    arr = potential.array
    ctype = _complex_dtype(arr)
    t = jnp.exp(1j * sigma * arr).astype(ctype)
    if not bandlimit:
        return t
    aperture = antialias_aperture(potential.grid, jnp.real(jnp.zeros((), ctype)).dtype)
    return jnp.fft.ifft2(jnp.fft.fft2(t) * aperture[None]).astype(ctype)


def _check_grid(wave: Any, potential: PotentialSlices) -> None:
    if tuple(wave.shape[-2:]) != tuple(potential.grid.gpts):
        raise PtyroValueError(f"wave: last two axes {tuple(wave.shape[-2:])} do not match the potential's grid {potential.grid.gpts}")


def multislice_exit_wave(
    wave: Any,
    potential: PotentialSlices,
    energy: float,
    propagator: Any = "fresnel",
    *,
    tilt: tuple[float, float] = (0.0, 0.0),
) -> Array:
    """Exit wave of ``wave`` (..., nx, ny) through ``potential``: for every slice, multiply by
    exp(iσV) and propagate by that slice's thickness (``jax.lax.scan`` over slices).

    ``propagator`` is a registered name or a callable ``(wave, dz, grid, energy, *, tilt)``; for a
    :class:`~ptyro_core.protocols.KernelPropagator` (``"fresnel"``) the kernels of all slices
    are computed once, outside the loop.
    Differentiable with respect to the wave, the potential (and its slice thicknesses).
    """
    if not isinstance(potential, PotentialSlices):
        raise PtyroTypeError(f"potential: expected ptyro_core.PotentialSlices, got {type(potential).__name__}")
    wave = jnp.asarray(wave)
    _check_grid(wave, potential)
    prop = resolve_propagator(propagator)
    return _exit_wave(wave, potential, float(energy), prop, (float(tilt[0]), float(tilt[1])))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _exit_wave(wave: Array, potential: PotentialSlices, energy: float, prop: Any, tilt: tuple[float, float]) -> Array:
    ctype = jnp.result_type(wave, _complex_dtype(potential.array))
    ops = _slice_operators(potential, energy, prop, tilt, ctype)
    return _propagate(wave.astype(ctype), ops, potential.grid, energy, prop, tilt)


def _slice_operators(potential: PotentialSlices, energy: float, prop: Any, tilt: tuple[float, float], ctype: Any,
                     grid: Any = None) -> tuple[Array, Array]:  # fmt: skip
    """What every position shares: the transmission functions and, for a propagator that declares
    its kernel (:class:`~ptyro_core.protocols.KernelPropagator`), the kernels of all slices
    (``grid``: the grid they are applied on, default the potential's); else the thicknesses."""
    trans = transmission(potential, energy).astype(ctype)
    if isinstance(prop, KernelPropagator):
        g = potential.grid if grid is None else grid
        return trans, jax.vmap(lambda dz: prop.kernel(dz, g, energy, tilt=tilt, dtype=ctype))(potential.slice_thickness)
    return trans, potential.slice_thickness


def _expand(t: Array, ndim: int) -> Array:
    """``t`` (..., nx, ny) made broadcastable against waves of ``ndim`` axes: ones inserted before
    the grid axes."""
    return t.reshape(t.shape[:-2] + (1,) * (ndim - t.ndim) + t.shape[-2:])


def _kernel_loop(wave: Array, trans: Array, kernels: Array, crop: Callable[[Array], Array] | None = None) -> Array:
    """The multislice loop with the kernels (s, ...) of a kernel propagator: w ← IFFT(k · FFT(t · w)) per
    slice, with unnormalised FFTs (forward then inverse is the identity, so no scaling passes).
    ``crop`` is applied to each transmission function as it is used (the windowed path: a gather
    that XLA fuses into the multiplication, so no crop of every slice is ever stored)."""

    def step(w: Array, xs: tuple[Array, Array]) -> tuple[Array, None]:
        t, k = xs
        t = t if crop is None else crop(t)
        return jnp.fft.ifft2(jnp.fft.fft2(w * _expand(t, w.ndim)) * _expand(k, w.ndim)), None

    out, _ = jax.lax.scan(step, wave, (trans, kernels))
    return out


def _propagate(wave: Array, ops: tuple[Array, Array], grid: Grid, energy: float, prop: Any, tilt: tuple[float, float],
               crop: Callable[[Array], Array] | None = None) -> Array:  # fmt: skip
    """The multislice loop over slices for waves (..., nx, ny) on ``grid``, transmission functions
    (s, ...) broadcasting against them (after ``crop``, see :func:`_kernel_loop`) and the
    operators of :func:`_slice_operators`."""
    trans, second = ops
    if isinstance(prop, KernelPropagator):
        return _kernel_loop(wave, trans, second, crop)
    ctype = wave.dtype

    def gstep(w: Array, xs: tuple[Array, Array]) -> tuple[Array, None]:
        t, dz = xs
        w = w * _expand(t if crop is None else crop(t), w.ndim)
        flat = w.reshape((-1,) + tuple(grid.gpts))
        flat = jax.vmap(lambda x: prop(x, dz, grid, energy, tilt=tilt))(flat)
        return flat.reshape(w.shape).astype(ctype), None

    out, _ = jax.lax.scan(gstep, wave, (trans, second))
    return out


#: bytes of one compute chunk's waves: a step over a chunk of positions keeps its working set in
#: cache (at 256x256 a chunk of 8 positions runs 1.3x faster per position than a batch of 64)
CHUNK_BYTES = 4 << 20


def _in_chunks(fn: Callable[[Array], Array], positions: Array, bytes_per_position: int) -> Array:
    """``fn(positions)`` evaluated over chunks of the batch (``jax.lax.map``) of at most
    :data:`CHUNK_BYTES` of waves each: as few chunks as fit, of equal size, the last padded by
    repeating the last position (at most one position per chunk is wasted)."""
    b = int(positions.shape[0])
    cap = max(1, CHUNK_BYTES // max(int(bytes_per_position), 1))
    nchunks = -(-b // cap)
    if nchunks <= 1:
        return fn(positions)
    c = -(-b // nchunks)
    pad = nchunks * c - b
    if pad:
        positions = jnp.concatenate([positions, jnp.repeat(positions[-1:], pad, axis=0)], axis=0)
    out = jax.lax.map(fn, positions.reshape((nchunks, c) + positions.shape[1:]))
    return out.reshape((nchunks * c,) + out.shape[2:])[:b]


def plane_wave_exit(
    potential: PotentialSlices,
    energy: float,
    propagator: Any = "fresnel",
    *,
    tilt: tuple[float, float] = (0.0, 0.0),
) -> Array:
    """HRTEM: exit wave (nx, ny) of a unit-amplitude plane wave (|ψ| = 1 per pixel) through the
    potential, band-limited to 2/3 Nyquist like every multislice step."""
    ctype = _complex_dtype(potential.array)
    wave = jnp.ones(tuple(potential.grid.gpts), ctype)
    return multislice_exit_wave(wave, potential, energy, propagator, tilt=tilt)


def shift_phase(shifts: Array, grid: Any, dtype: Any = jnp.complex64) -> Array:
    """exp(−2πi k·s) (b, nx, ny) in FFT order for shifts (b, 2) Å on ``grid``
    (:func:`ptyro_core.conventions.shift_ramp`)."""
    return shift_ramp(shifts, grid.gpts, grid.sampling, dtype)


def shifted_probes(probe_fourier: Array, positions: Array, grid: Any) -> Array:
    """Real-space probe modes (b, m, nx, ny) centred at ``positions`` (b, 2) Å, from the FFT
    (m, nx, ny) of probe modes centred at index n // 2."""
    centre = jnp.asarray([(grid.gpts[0] // 2) * grid.sampling[0], (grid.gpts[1] // 2) * grid.sampling[1]])
    ramp = shift_phase(jnp.asarray(positions) - centre.astype(jnp.asarray(positions).dtype)[None, :], grid, probe_fourier.dtype)
    return ifft2(probe_fourier[None, :, :, :] * ramp[:, None, :, :])


def _wave_bytes(probe_fourier: Array) -> int:
    return int(probe_fourier.shape[0] * probe_fourier.shape[-1] * probe_fourier.shape[-2] * jnp.dtype(probe_fourier.dtype).itemsize)


def _window_starts(grid: Grid, window: Grid, positions: Array, real: Any) -> tuple[Array, Array, Array]:
    (dx, dy), (wx, wy) = grid.sampling, window.gpts
    pos = positions.astype(real)
    i0 = jnp.round(jax.lax.stop_gradient(pos[:, 0]) / dx).astype(jnp.int32)
    j0 = jnp.round(jax.lax.stop_gradient(pos[:, 1]) / dy).astype(jnp.int32)
    frac = pos - jnp.stack([i0.astype(pos.dtype) * dx, j0.astype(pos.dtype) * dy], axis=-1)
    return i0, j0, frac + jnp.asarray([(wx // 2) * dx, (wy // 2) * dy], pos.dtype)[None, :]


def _window_crop(grid: Grid, window: Grid, positions: Array, real: Any) -> tuple[Callable[[Array], Array], Array, Array]:
    """``crop(t)``: transmission functions t (..., nx, ny) on ``grid`` cut periodically to each
    probe's window (..., b, 1, wx, wy); the positions of the probes in their windows (b, 2) Å (in
    ``real``); and the windows' first pixels in the potential (b, 2) int32."""
    (nx, ny), (wx, wy) = grid.gpts, window.gpts
    i0, j0, centre = _window_starts(grid, window, positions, real)
    offsets = jnp.stack([(i0 - wx // 2) % nx, (j0 - wy // 2) % ny], axis=-1).astype(jnp.int32)
    return crop_windows(offsets, (nx, ny), (wx, wy)), centre, offsets


def crop_windows(offsets: Array, gpts: tuple[int, ...], window: tuple[int, ...]) -> Callable[[Array], Array]:
    """``crop(t)``: t (..., nx, ny) cut periodically to the windows (wx, wy) whose first pixels are
    ``offsets`` (b, 2), as (..., b, 1, wx, wy) (the 1 broadcasts over probe modes)."""
    ix = (offsets[:, 0:1] + jnp.arange(window[0])[None, :]) % gpts[0]  # (b, wx)
    iy = (offsets[:, 1:2] + jnp.arange(window[1])[None, :]) % gpts[1]  # (b, wy)
    return lambda t: t[..., ix[:, None, :, None], iy[:, None, None, :]]


def fresnel_far_field(waves: Array, head: tuple[Array, Array], last: tuple[Array, Array],
                      crop: Callable[[Array], Array] | None = None) -> Array:  # fmt: skip
    """|FFT(exit wave)|² (unitary FFT, FFT order) of waves (..., nx, ny) through the slices with the
    kernels of a kernel propagator, with no FFT beyond the 2 per slice the algorithm needs (one
    fewer per position than propagating and then transforming): the XLA far field, and the
    reference every far-field back end (:class:`~ptyro_core.protocols.FarFieldBackend`) matches.
    ``head``: the transmission functions and kernels of every slice but the last (s − 1, ...),
    run by :func:`_kernel_loop`; ``last``: the last slice's transmission function and
    |kernel|²/N (see :func:`_far_field_operators`).

    The last slice's propagation is a multiplication by its kernel in Fourier space, so its
    inverse FFT and the detector's forward FFT cancel: the pattern is |FFT(t_s ψ)|² · |P_s|² / N.
    """
    w = _kernel_loop(waves, *head, crop)
    t = last[0] if crop is None else crop(last[0])
    wk = jnp.fft.fft2(w * _expand(t, w.ndim))
    return (jnp.real(wk) ** 2 + jnp.imag(wk) ** 2) * _expand(last[1], w.ndim)


def _far_field_operators(trans: Array, kernels: Array) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """The operators of :func:`fresnel_far_field`, split once per plan (split inside the loop over
    chunks, the slices are copied for every chunk: ~15 % of SIM-A's time)."""
    last = kernels[-1]
    mask = (jnp.real(last) ** 2 + jnp.imag(last) ** 2) / (last.shape[-1] * last.shape[-2])
    return (trans[:-1], kernels[:-1]), (trans[-1], mask)


def check_window(window: Any, grid: Any, name: str = "window") -> tuple[int, int]:
    """``window`` (wx, wy) as a tuple of ints, each within ``0 < w <= grid.gpts``; ``name`` is what
    the error calls it."""
    w = (int(window[0]), int(window[1]))
    if not (0 < w[0] <= grid.gpts[0] and 0 < w[1] <= grid.gpts[1]):
        raise PtyroValueError(f"{name}: expected 0 < window <= the potential's grid {list(grid.gpts)}, got {list(w)}")
    return w


def _check_inputs(potential: Any, probe: Any, window: Any) -> tuple[int, int] | None:
    """Raise a clear error unless ``potential`` and ``probe`` fit together (the probe on the
    potential's grid, or on the window's); the window as ints."""
    if not isinstance(potential, PotentialSlices):
        raise PtyroTypeError(f"potential: expected ptyro_core.PotentialSlices, got {type(potential).__name__}")
    if not isinstance(probe, ProbeModes):
        raise PtyroTypeError(f"probe: expected ptyro_core.ProbeModes, got {type(probe).__name__}")
    if window is not None:
        window = check_window(window, potential.grid)
    expected = tuple(potential.grid.gpts) if window is None else window
    if tuple(probe.grid.gpts) != expected or not all(abs(a - b) <= 1e-6 * b for a, b in zip(probe.grid.sampling, potential.grid.sampling)):
        raise PtyroValueError(
            f"probe: grid {probe.grid.gpts} x {probe.grid.sampling} Å does not match {expected} x {potential.grid.sampling} Å "
            "(the potential's sampling and its gpts, or the window's)"
        )
    return window


@dataclasses.dataclass(frozen=True)
class MultislicePlan:
    """What every scan position of a multislice run shares (a PyTree; see
    :meth:`Multislice.plan`): the slice ``operators`` (transmission functions and, for a kernel
    propagator, the kernels, split for the far field) and the probe's FFT ``probe_fourier``
    (m, nx, ny) as leaves; as static metadata the potential's ``grid``, the ``window`` grid
    (None: the full grid), ``energy`` (eV), ``propagator``, ``tilt`` (mrad) and the far-field
    back end (``backend`` its name, ``far_field`` the component; None for XLA)."""

    operators: Any
    probe_fourier: Array
    grid: Grid
    window: Grid | None
    energy: float
    propagator: Any
    tilt: tuple[float, float]
    backend: str = "xla"
    far_field: Any = None


jax.tree_util.register_dataclass(
    MultislicePlan,
    data_fields=["operators", "probe_fourier"],
    meta_fields=["grid", "window", "energy", "propagator", "tilt", "backend", "far_field"],
)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _plan_arrays(potential: PotentialSlices, probe: ProbeModes, propagator: Any, tilt: tuple[float, float], windowed: bool) -> Any:
    """The arrays of a :class:`MultislicePlan`: the slice operators (on the window's grid when
    ``windowed``; for a kernel propagator split for the far-field loop) and the probe's FFT, in
    the waves' dtype."""
    ctype = jnp.result_type(probe.array, _complex_dtype(potential.array))
    ops = _slice_operators(potential, probe.energy, propagator, tilt, ctype, probe.grid if windowed else None)
    pk = fft2(probe.array.astype(ctype))
    return (_far_field_operators(*ops) if isinstance(propagator, KernelPropagator) else ops), pk


@jax.jit
def _intensities(plan: MultislicePlan, positions: Array) -> Array:
    """Centred patterns (b, nx, ny) summed over modes, in cache-sized chunks of positions, on the
    full grid or in a window around each probe, from the arrays of ``plan``; the far field of a
    kernel propagator on the plan's back end."""
    pk = plan.probe_fourier
    real = jnp.real(jnp.zeros((), pk.dtype)).dtype
    kernel = isinstance(plan.propagator, KernelPropagator)

    def chunk(pos: Array) -> Array:
        crop, grid, offsets = None, plan.grid, None
        if plan.window is not None:
            crop, pos, offsets = _window_crop(plan.grid, plan.window, pos, real)
            grid = plan.window
        waves = shifted_probes(pk, pos, grid)
        if kernel and plan.far_field is not None:
            intensity = plan.far_field(waves, plan.operators[0], plan.operators[1], offsets)
        elif kernel:
            intensity = fresnel_far_field(waves, plan.operators[0], plan.operators[1], crop)
        else:
            exit_k = fft2(_propagate(waves, plan.operators, grid, plan.energy, plan.propagator, plan.tilt, crop))
            intensity = jnp.real(exit_k) ** 2 + jnp.imag(exit_k) ** 2
        return jnp.fft.fftshift(jnp.sum(intensity, axis=1), axes=(-2, -1))

    return _in_chunks(chunk, positions, _wave_bytes(pk))


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _exit_waves(potential: PotentialSlices, probe: ProbeModes, positions: Array, propagator: Any, tilt: tuple[float, float],
                windowed: bool) -> Array:  # fmt: skip
    # jitted as a whole (one compile per shape) rather than dispatched op by op
    ctype = jnp.result_type(probe.array, _complex_dtype(potential.array))
    ops = _slice_operators(potential, probe.energy, propagator, tilt, ctype, probe.grid if windowed else None)
    pk, grid, crop = fft2(probe.array.astype(ctype)), potential.grid, None
    if windowed:
        crop, positions, _ = _window_crop(potential.grid, probe.grid, positions, potential.array.dtype)
        grid = probe.grid
    return _propagate(shifted_probes(pk, positions, grid), ops, grid, probe.energy, propagator, tilt, crop)


@dataclasses.dataclass(frozen=True, repr=False)
class Multislice(PlannedSimulator):
    """The ``multislice`` simulator component: ``multislice(potential, probe)(positions) ->
    intensities (b, nx, ny)``, centred diffraction patterns of the probe at each position after
    multislice through the potential, summed over probe modes (a :class:`MultisliceSimulator`).

    Plan once, apply many: :meth:`plan` computes the transmission functions, the kernels of a
    kernel propagator and the probe's FFT once (:func:`ptyro_simul.stem.iter_4dstem` does it
    once per simulation); :meth:`apply` runs a batch of positions as one array, propagated in
    cache-sized chunks, so memory grows with the batch only.

    Options: ``propagator`` a registered name or a callable; ``tilt`` (θx, θy) in mrad;
    ``backend`` ``"auto" | "xla" | NAME`` the far field's back end (:mod:`ptyro_simul.backend`);
    ``window=(wx, wy)``: propagate each probe only in a wx × wy window (same sampling) cropped
    from the periodic potential around it (``probe`` must then be built on
    ``Grid(window, potential.grid.sampling)``; patterns are (b, wx, wy), with the coarser
    reciprocal sampling 1/(wx·dx)). Cost falls with the window area; the accuracy cost is the
    probe intensity that would have spread beyond the window (it wraps around the window
    instead) plus the coarser detector pixels: on SrTiO3 [001] (3x3x2 cells, 96² grid, 0.122 Å,
    20 mrad, 200 keV) with a 48² window, BF (0-20 mrad) within 0.5 %, ADF (30-60 mrad) within
    7 % on a Sr column and up to 20 % on the weak signals between columns (benchmarks/README.md
    has the SIM-A figures).
    """

    def plan(self, potential: PotentialSlices, probe: ProbeModes, *, propagator: Any = "fresnel", tilt: tuple[float, float] = (0.0, 0.0),
             window: tuple[int, int] | None = None, backend: str = "auto") -> MultislicePlan:  # fmt: skip
        """The :class:`MultislicePlan` of a run: inputs checked, propagator and back end resolved
        (outside ``jit``), the shared arrays computed."""
        window = _check_inputs(potential, probe, window)
        prop = resolve_propagator(propagator)
        tilt = (float(tilt[0]), float(tilt[1]))
        ctype = jnp.result_type(probe.array, _complex_dtype(potential.array))
        name, far_field = resolve_backend(backend, ctype, windowed=window is not None, kernel=isinstance(prop, KernelPropagator))
        ops, pk = _plan_arrays(potential, probe, prop, tilt, window is not None)
        return MultislicePlan(ops, pk, potential.grid, None if window is None else probe.grid, float(probe.energy), prop, tilt, name, far_field)

    def apply(self, plan: MultislicePlan, positions: Any) -> Array:
        """Patterns (b, nx, ny) for positions (b, 2) Å from ``plan``."""
        positions = jnp.asarray(positions)
        if positions.ndim != 2 or positions.shape[-1] != 2:
            raise PtyroValueError(f"positions: expected an array (b, 2) of (x, y) Å, got shape {positions.shape}")
        return _intensities(plan, positions)

    def __call__(  # type: ignore[override]
        self, potential: PotentialSlices, probe: ProbeModes, *, propagator: Any = "fresnel", tilt: tuple[float, float] = (0.0, 0.0),
        window: tuple[int, int] | None = None, backend: str = "auto",
    ) -> "MultisliceSimulator":  # fmt: skip
        return MultisliceSimulator(potential, probe, propagator, tilt, window, backend)

    def __repr__(self) -> str:
        return "multislice"


#: the ``multislice`` simulator component
multislice = Multislice()


class MultisliceSimulator:
    """``fn(positions (b, 2) Å) -> intensities (b, nx, ny)`` of :data:`multislice` for one
    potential and probe (each call plans and applies; :meth:`plan` once and
    ``multislice.apply(plan, positions)`` per batch to share the plan), and their
    :meth:`exit_waves`."""

    def __init__(self, potential: PotentialSlices, probe: ProbeModes, propagator: Any = "fresnel", tilt: tuple[float, float] = (0.0, 0.0),
                 window: tuple[int, int] | None = None, backend: str = "auto") -> None:  # fmt: skip
        self.window = _check_inputs(potential, probe, window)
        self.potential, self.probe = potential, probe
        self.propagator = resolve_propagator(propagator)
        self.tilt = (float(tilt[0]), float(tilt[1]))
        self.backend = backend

    def plan(self) -> MultislicePlan:
        return multislice.plan(self.potential, self.probe, propagator=self.propagator, tilt=self.tilt, window=self.window, backend=self.backend)

    def exit_waves(self, positions: Any) -> Array:
        """Exit waves (b, m, nx, ny) for positions (b, 2) Å (in each probe's window when windowed)."""
        return _exit_waves(self.potential, self.probe, jnp.asarray(positions), self.propagator, self.tilt, self.window is not None)

    def __call__(self, positions: Any) -> Array:
        return multislice.apply(self.plan(), positions)


def bandlimit_mask(grid: Any) -> Array:
    """Centred mask of the 2/3-Nyquist band limit (1 inside), matching centred patterns."""
    return jnp.fft.fftshift(antialias_aperture(grid), axes=(-2, -1))
