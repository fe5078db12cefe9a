"""The ptychographic forward model (shared by every reconstruction algorithm).

Per scan position (probe centre ``r`` in Å, object frame: object pixel [0, 0] at (0, 0) Å):

1. the probe window (px, py) starts at object pixel ``s = r / d − (px // 2, py // 2)``; its integer
   part ``round(s)`` picks the object patch (``jax.lax.dynamic_slice``), its fractional part shifts
   the probe by a Fourier phase ramp ``exp(−2πi k·δ)`` (so positions are differentiable);
2. exit wave: ``ψ = P · O₁``, then for each further slice ``ψ ← propagate(ψ, Δz) · Oₛ`` (a
   ``jax.lax.scan``; the propagator is a registered component, looked up outside ``jit``);
3. intensity ``I = Σ_modes |FFT(ψ)|²`` with the unitary FFT, optionally blurred by a Gaussian
   detector point-spread function (σ in detector pixels).

The far fields come out centred (zero frequency at index ``n // 2``), as
:class:`~ptyro_core.Dataset4D` stores the patterns, so that measured patterns are compared as
they are read, never reordered: the exit wave is multiplied by the phase ramp
``c(x) = exp(2πi (n // 2) x / n)`` (:func:`centring`; ``(−1)^x`` for even ``n``) before its FFT,
which moves the FFT's zero frequency from index 0 to ``n // 2`` exactly (the shift theorem:
``FFT(ψ · c) = fftshift(FFT(ψ))``). The ramp rides on a product the model makes anyway.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ptyro_core import Grid, ReconState, get
from ptyro_core.conventions import centring, shift_ramp, shift_ramp_factors

__all__ = [
    "window_offsets", "window_ramps", "shift_groups", "shifted_probes", "spectrum_shifted", "exit_waves", "centring", "intensities", "mode_power",
    "far_fields", "far_fields_add", "exit_far_fields", "exit_far_fields_add", "blur_transfer", "make_model", "predict_patterns",
]  # fmt: skip


def window_offsets(positions: Array, sampling: tuple[float, float], window: tuple[int, int]) -> tuple[Array, Array]:
    """(integer start pixel (…, 2) int32, fractional shift (…, 2) in pixels, in [-0.5, 0.5])."""
    d = jnp.asarray(sampling, positions.dtype)
    c = jnp.asarray([window[0] // 2, window[1] // 2], positions.dtype)
    start = positions / d - c
    r0 = jax.lax.stop_gradient(jnp.round(start))
    return r0.astype(jnp.int32), start - r0


def window_ramps(positions: Array, sampling: tuple[float, float], window: tuple[int, int], dtype: Any = jnp.complex64) -> tuple[Array, tuple[Array, Array]]:
    """(integer start pixel (b, 2) int32, the Fourier ramps of the fractional shifts as their two
    1D factors (b, px) and (b, py)) of positions (b, 2): for :func:`shifted_probes` with
    ``ramps`` (one probe per position). The factors, not the (b, px, py) ramps: a batch of
    distinct shifts (RECON-L: 64 per step) would otherwise be written out as a whole array each
    step and read back by every chunk (RECON-L: 0.48 s of a 4.8 s pass, in the profiler)."""
    r0, frac = jax.vmap(lambda q: window_offsets(q, sampling, window))(positions)
    return r0, shift_ramp_factors(frac, (int(window[0]), int(window[1])), dtype=dtype)


def shift_groups(positions: Any, sampling: tuple[float, float], window: tuple[int, int], *, max_groups: int = 64,
                 tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:  # fmt: skip
    """Group fixed scan positions by their sub-pixel shift, so that a batch shifts the probe once per
    distinct shift instead of once per position (a raster whose step is a rational number of
    pixels has few: 0.5 Å steps at 0.15 Å pixels give 3 × 3).

    Returns ``(start (n, 2) int32, group (n,) int32, shifts (g, 2) float32)`` with
    ``shifts[group[i]]`` within ``tol`` pixels of position i's own fractional shift, or ``None``
    when there are more than ``max_groups`` distinct shifts (then shift per position)."""
    pos = np.asarray(positions, np.float64).reshape(-1, 2)
    start = pos / np.asarray(sampling, np.float64) - np.asarray([window[0] // 2, window[1] // 2], np.float64)
    r0 = np.round(start)
    frac = start - r0
    keys = np.round(frac / tol).astype(np.int64)
    uniq, group = np.unique(keys, axis=0, return_inverse=True)
    if uniq.shape[0] > max_groups:
        return None
    shifts = np.stack([frac[group.reshape(-1) == g].mean(axis=0) for g in range(uniq.shape[0])])
    return r0.astype(np.int32), group.reshape(-1).astype(np.int32), shifts.astype(np.float32)


def shifted_probes(probe: Array, shifts: Array | None, *, ramps: Array | tuple[Array, Array] | None = None) -> Array:
    """Probe modes (m, px, py) shifted by each of ``shifts`` (g, 2) pixels: (g, m, px, py); one FFT of
    the probe and one inverse FFT per shift. ``ramps``: their Fourier ramps (g, px, py), or the
    ramps' 1D factors ((g, px), (g, py): :func:`window_ramps`), made beforehand
    (:func:`~ptyro_core.conventions.shift_ramp`) where the shifts are fixed: XLA fuses the ramps'
    sines and cosines into the product and its gradient and recomputes them for every pixel of
    every mode (RECON-B mixed state: 8 ms of a 95 ms step); the factors' product it fuses
    without them."""
    if ramps is None:
        ramps = shift_ramp(shifts, (probe.shape[-2], probe.shape[-1]), dtype=probe.dtype)
    return spectrum_shifted(jnp.fft.fft2(probe), ramps)


def spectrum_shifted(spectrum: Array, ramps: Array | tuple[Array, Array]) -> Array:
    """:func:`shifted_probes` from the probe modes' FFT (m, px, py) made beforehand: one inverse
    FFT per shift and mode. A loop over chunks of positions whose probe does not change between
    them takes the probe's FFT once (and its gradient's transpose once) instead of once per
    chunk (RECON-L: 2,048 chunks a pass, 0.1 s of FFTs of the probe each way)."""
    if isinstance(ramps, tuple):
        ramps = ramps[0][:, :, None] * ramps[1][:, None, :]
    return jnp.fft.ifft2(spectrum[None] * ramps[:, None])


#: slices beyond which the slice loop is no longer unrolled (compilation time grows with it)
MAX_UNROLL = 32


def exit_waves(probe: Array, patch: Array, dz: Array, propagate: Callable[[Array, Array], Array] | None) -> Array:
    """Exit waves (m, px, py) of probe modes (m, px, py) through object slices (s, px, py)."""
    psi = probe * patch[0][None]
    if patch.shape[0] == 1:
        return psi
    if propagate is None:
        raise ValueError("exit_waves: a multislice object needs a propagator")

    def body(w: Array, xs: tuple[Array, Array]) -> tuple[Array, None]:
        t, h = xs
        return propagate(w, h) * t[None], None

    # unrolled: a rolled loop stacks each slice's wave for the gradient by copying the whole
    # stack every slice (RECON-B multislice: 25 % of the step's CPU time)
    psi, _ = jax.lax.scan(body, psi, (patch[1:], dz[:-1]), unroll=min(patch.shape[0] - 1, MAX_UNROLL))
    return psi


def blur_transfer(sigma: float, shape: tuple[int, int], dtype: Any = jnp.float32) -> Array:
    """Optical transfer function (FFT order) of a Gaussian detector blur of σ pixels."""
    fx = np.fft.fftfreq(shape[0])[:, None]
    fy = np.fft.fftfreq(shape[1])[None, :]
    return jnp.asarray(np.exp(-2 * np.pi**2 * sigma**2 * (fx**2 + fy**2)), dtype)


def intensities(psi: Array, blur: Array | None = None) -> Array:
    """Σ_modes |FFT(ψ)|² (unitary FFT) centred (zero frequency at index n // 2), optionally
    convolved with a blur (its OTF, FFT order)."""
    return _far_intensities(jnp.fft.fft2(_centred(psi), norm="ortho"), blur, axis=0)


def _centred(x: Array, cen: Any = None) -> Array:
    """Waves (..., px, py) times the :func:`centring` ramp (``cen``, made here if None)."""
    cen = centring((x.shape[-2], x.shape[-1]), jnp.real(x).dtype) if cen is None else cen
    return x * cen.reshape((1,) * (x.ndim - 2) + cen.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def mode_power(f: Array, axis: int) -> Array:
    """Σ |f|² over the probe modes (``axis``). The modes are added one by one, so that XLA makes
    one pass over the far fields: a ``reduce_sum`` over the mode axis went to a reduction of its
    own (YNNPACK's), which has XLA store |Re f|² and |Im f|² of every mode first (RECON-B mixed
    state: 3 passes over the chunk's far fields forward, 3 more for the gradient). The gradient is
    written out as the one product it is: ``2 g conj(f)`` (JAX's cotangent of a real function
    of complex input)."""
    return _mode_power(f, axis)


def _mode_power(f: Array, axis: int) -> Array:
    out = None
    for k in range(f.shape[axis]):
        fk = jax.lax.index_in_dim(f, k, axis, keepdims=False)
        pk = jnp.real(fk) ** 2 + jnp.imag(fk) ** 2
        out = pk if out is None else out + pk
    assert out is not None  # at least one mode
    return out


def _mode_power_fwd(f: Array, axis: int) -> tuple[Array, Array]:
    return _mode_power(f, axis), f


def _mode_power_bwd(axis: int, f: Array, g: Array) -> tuple[Array]:
    return (2 * jnp.expand_dims(g, axis) * jnp.conj(f),)


mode_power.defvjp(_mode_power_fwd, _mode_power_bwd)


def _far_intensities(f: Array, blur: Array | None, axis: int) -> Array:
    i = mode_power(f, axis)
    if blur is not None:
        i = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(i) * blur.reshape((1,) * (i.ndim - 2) + blur.shape)))
    return i


#: positions of a batch whose gradient :func:`far_fields` accumulates in a fully unrolled loop
#: (a rolled loop beyond it, unrolled by this much)
FAR_UNROLL = 32


def far_fields(obj: Array, probes: Array, group: Array, start: Array, window: tuple[int, int]) -> Array:
    """Far fields (b, m, px, py) of a single-slice object (1, ox, oy): for each of the b positions,
    the unitary FFT of ``probes[group[i]]`` (of (g, m, px, py)) times the object's window from pixel
    ``start[i]`` (clamped into the object, as ``jax.lax.dynamic_slice`` does).

    Its gradient is written out (:func:`exit_far_fields`, ``jax.custom_vjp``) so that XLA keeps no
    gathered probes and object windows for it: the forward product reads both straight from their
    arrays, and the gradient adds each position's window into the object's and its probe's
    gradient in place, one position at a time, while that position's data sit in the cache.
    Differentiating the gather-and-multiply instead stores both gathers of the batch and makes
    four more passes over them (RECON-A: 0.5 ms of each 2 ms chunk of 16 positions)."""
    return exit_far_fields(obj, probes, group, start, None, None, window)


def far_fields_add(obj: Array, probes: Array, group: Array, start: Array, ct: Array, go: Array, gp: Array,
                   window: tuple[int, int]) -> tuple[Array, Array]:  # fmt: skip
    """The gradient of :func:`far_fields` for the cotangent ``ct`` (b, m, px, py) of its far fields,
    added to ``go`` (the object's, (1, ox, oy)) and ``gp`` (the probes', (g, m, px, py)) in place:
    a caller that sums the gradient of several batches passes its sums (no zeroed arrays, no
    pass adding them up)."""
    return exit_far_fields_add(obj, probes, group, start, None, None, window, ([], []), ct, go, gp)[:2]


def _unrolled(b: int) -> int:
    return b if b <= FAR_UNROLL else FAR_UNROLL


def _add_first_slice(obj: Array, probes: Array, group: Array, start: Array, c: Array, go: Array, gp: Array | None,
                     window: tuple[int, int], cen: Any = None) -> tuple[Array, Array]:  # fmt: skip
    """The cotangent ``c`` (b, m, px, py) of the waves ``probes[group] · obj[0]``'s windows (times
    ``cen``, the far field's :func:`centring`, where they are the exit waves) taken back: added
    into the object's first slice and the probes' gradients, one position at a time. ``gp``
    None: each position has a probe of its own (``group`` the identity, b probes), whose
    gradient (b, m, px, py) is returned as it is made, not added into zeros position by position."""
    m = probes.shape[1]

    def add(i: Any, acc: tuple[Array, Array | None]) -> tuple[Array, Array | None]:
        go, gp = acc
        o0 = (jnp.int32(0), start[i, 0], start[i, 1])
        p0 = (group[i], jnp.int32(0), jnp.int32(0), jnp.int32(0))
        p = jax.lax.dynamic_slice(probes, p0, (1, m) + window)[0]
        o = jax.lax.dynamic_slice(obj, o0, (1,) + window)
        # the ramp where each product is read (never on c, nor on a copy of the probes): on the
        # window, and on the object's share after its sum over the modes
        do = jnp.sum(c[i] * p, axis=0)[None]
        do, o = (do, o) if cen is None else (_centred(do, cen), _centred(o, cen))
        go = jax.lax.dynamic_update_slice(go, jax.lax.dynamic_slice(go, o0, (1,) + window) + do, o0)
        if gp is not None:
            gp = jax.lax.dynamic_update_slice(gp, jax.lax.dynamic_slice(gp, p0, (1, m) + window) + (c[i] * o)[None], p0)
        return go, gp

    b = c.shape[0]
    go, gp = jax.lax.fori_loop(0, b, add, (go, gp), unroll=_unrolled(b))  # None carries nothing
    if gp is None:
        win = _windows(obj, 0, start, window)
        gp = c * (win if cen is None else _centred(win, cen))[:, None]
    return go, gp


def _windows(obj: Array, k: int, start: Array, window: tuple[int, int]) -> Array:
    """Slice ``k``'s windows (b, px, py) of the object from pixels ``start`` (b, 2)."""
    return jax.vmap(lambda r: jax.lax.dynamic_slice(obj[k], (r[0], r[1]), window))(start)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def exit_far_fields(obj: Array, probes: Array, group: Array, start: Array, dz: Array | None,
                    propagate: Callable[[Array, Array], Array] | None, window: tuple[int, int]) -> Array:  # fmt: skip
    """:func:`far_fields` of a multislice object (s, ox, oy): each position's wave
    ``probes[group[i]]`` times its window of slice 0, then for each further slice k propagated by
    ``dz[k − 1]`` (``propagate(waves (b, m, px, py), dz)``) and multiplied by the window of slice k;
    the unitary FFT of the exit waves. The gradient is written out as :func:`far_fields`' is: the
    windows are read from the object where they are used, never gathered and kept, and each
    position's share is added into the object's slices and its probe's gradient in place."""
    return _exit_far_fields(obj, probes, group, start, dz, propagate, window)[0]


def _exit_far_fields(obj: Array, probes: Array, group: Array, start: Array, dz: Array | None, propagate: Callable[[Array, Array], Array] | None,
                     window: tuple[int, int]) -> tuple[Array, tuple[list, list]]:  # fmt: skip
    """(far fields, (the waves into each propagation, the waves out of it)); one slice: no propagation."""
    x = jnp.take(probes, group, axis=0, mode="clip") * _windows(obj, 0, start, window)[:, None]
    ins, outs = [], []
    for k in range(1, obj.shape[0]):
        assert propagate is not None and dz is not None  # a multislice object (checked by the caller)
        ins.append(x)
        outs.append(propagate(x, dz[k - 1]))
        x = outs[-1] * _windows(obj, k, start, window)[:, None]
    # the exit waves times the centring ramp (fused into the last product): centred far fields
    return jnp.fft.fft2(_centred(x), norm="ortho"), (ins, outs)


def _exit_far_fields_fwd(obj: Array, probes: Array, group: Array, start: Array, dz: Array | None,
                         propagate: Callable[[Array, Array], Array] | None, window: tuple[int, int]) -> tuple[Array, tuple]:  # fmt: skip
    f, (ins, outs) = _exit_far_fields(obj, probes, group, start, dz, propagate, window)
    return f, (obj, probes, group, start, dz, ins, outs)


def _exit_far_fields_bwd(propagate: Callable[[Array, Array], Array] | None, window: tuple[int, int], res: tuple, ct: Array) -> tuple:
    obj, probes, group, start, dz, ins, outs = res
    go, gp, gdz = exit_far_fields_add(obj, probes, group, start, dz, propagate, window, (ins, outs), ct, jnp.zeros_like(obj), jnp.zeros_like(probes))
    return go, gp, None, None, gdz


def exit_far_fields_add(obj: Array, probes: Array, group: Array, start: Array, dz: Array | None, propagate: Callable[[Array, Array], Array] | None,
                        window: tuple[int, int], waves: tuple[list, list], ct: Array, go: Array, gp: Array | None) -> tuple[Array, Array, Array | None]:  # fmt: skip
    """The gradient of :func:`exit_far_fields` for the cotangent ``ct`` of its far fields, added to
    ``go`` (the object's, (s, ox, oy)) and ``gp`` (the probes') in place, and the thicknesses'
    (None for one slice); ``waves``: the waves into and out of each propagation, as the forward
    made them (``_exit_far_fields``). ``gp`` None: a probe per position (``group`` the identity),
    whose gradient is returned, not added to sums."""
    ins, outs = waves
    # the probe indices clamped as the forward's jnp.take(mode="clip") clamps them (dynamic_slice
    # would first wrap a negative one, taking the gradient to another probe than the forward read)
    group = jnp.clip(group, 0, probes.shape[0] - 1)
    # read the windows anew (fused into the products), not the forward's gathered copies
    ob = jax.lax.optimization_barrier(obj)
    # the unitary DFT matrix is symmetric: its transpose is itself (JAX's cotangents, no conjugate)
    c = jnp.fft.fft2(ct, norm="ortho")
    # the cotangent of the exit waves is c times the centring ramp (its own transpose): applied
    # where the last slice's products read c, so that no scaled copy of c is made
    cen: Any = centring(window, jnp.real(c).dtype)
    gdz = None if dz is None else jnp.zeros_like(dz)
    b, last = c.shape[0], obj.shape[0] - 1
    for k in range(last, 0, -1):
        assert propagate is not None and dz is not None and gdz is not None  # a multislice object
        w, f = outs[k - 1], (cen if k == last else None)

        def add(i: Any, go: Array, k: int = k, w: Array = w, c: Array = c, f: Any = f) -> Array:
            o0 = (jnp.int32(k), start[i, 0], start[i, 1])
            cw = c[i] * w[i] if f is None else _centred(c[i] * w[i], f)
            return jax.lax.dynamic_update_slice(go, jax.lax.dynamic_slice(go, o0, (1,) + window) + jnp.sum(cw, axis=0)[None], o0)

        go = jax.lax.fori_loop(0, b, add, go, unroll=_unrolled(b))
        _, back = jax.vjp(propagate, ins[k - 1], dz[k - 1])
        win = _windows(ob, k, start, window)
        c, ch = back(c * (win if f is None else _centred(win, f))[:, None])
        gdz = gdz.at[k - 1].add(ch)
    go, gp = _add_first_slice(ob, probes, group, start, c, go, gp, window, cen if last == 0 else None)
    return go, gp, gdz


exit_far_fields.defvjp(_exit_far_fields_fwd, _exit_far_fields_bwd)


def make_model(
    window: tuple[int, int],
    sampling: tuple[float, float],
    energy: float,
    *,
    propagator: Any = "fresnel",
    num_slices: int = 1,
    detector_blur: float = 0.0,
    far_backend: Any = None,
) -> Callable[[Array, Array, Array, Array], Array]:
    """``model(object (s,ox,oy), probe (m,px,py), dz (s,), position (2,)) -> I (px, py)`` centred
    (:func:`intensities`) for one position; vmap it over positions. Name lookups happen here, outside ``jit``.

    ``model.at_start(object, shifted_probe (m,px,py), dz, start (2,) int32)`` is the same model for a
    probe already shifted by the position's fractional part (see :func:`shift_groups`);
    ``model.at_starts(object, probes (g,m,px,py), group (b,), dz, start (b,2))`` is it for a batch
    whose i-th position takes ``probes[group[i]]`` (:func:`far_fields`, :func:`exit_far_fields`), and
    ``model.far_intensities(far_fields (b,m,px,py))`` the patterns (b,px,py) of the far fields;
    ``model.far_forward(object, probes, group, dz, start) -> (far fields, waves)`` and
    ``model.far_add(object, probes, group, dz, start, waves, cotangent, sums...)`` the far fields
    and their gradient added into the caller's sums (:func:`exit_far_fields_add`; None where the
    slices are too many to unroll). ``far_backend``: a back end that runs the single-slice far
    fields and their gradient (:class:`~ptyro_core.protocols.WindowFarFields`, e.g. ptyro-native's
    ``native``) in ``far_forward`` and ``far_add`` (None: XLA; multislice objects: always XLA)."""
    grid = Grid(tuple(window), tuple(sampling))
    propagate = None
    if num_slices > 1:
        prop = get("propagator", propagator) if isinstance(propagator, str) else propagator
        # one mode at a time, so any propagator written for (nx, ny) waves works
        propagate = lambda w, h: jax.vmap(lambda v: prop(v, h, grid, energy))(w)  # noqa: E731
    blur = blur_transfer(detector_blur, (int(window[0]), int(window[1]))) if detector_blur > 0 else None

    def at_start(obj: Array, p: Array, dz: Array, r0: Array) -> Array:
        patch = jax.lax.dynamic_slice(obj, (jnp.int32(0), r0[0], r0[1]), (obj.shape[0],) + tuple(window))
        psi = exit_waves(p, patch, dz, propagate)
        return intensities(psi, None if blur is None else blur.astype(jnp.real(psi).dtype))

    def model(obj: Array, probe: Array, dz: Array, position: Array) -> Array:
        r0, frac = window_offsets(position, sampling, window)
        return at_start(obj, shifted_probes(probe, frac[None])[0], dz, r0)

    batched = jax.vmap(at_start, in_axes=(None, 0, None, 0))

    win = (int(window[0]), int(window[1]))
    # each position's modes, one at a time (see above)
    propagate_all = None if propagate is None else jax.vmap(propagate, in_axes=(0, None))
    # the far fields' gradient written out (exit_far_fields), up to as many slices as are unrolled
    written = num_slices == 1 or (propagate_all is not None and num_slices <= MAX_UNROLL + 1)

    def at_starts(obj: Array, probes: Array, group: Array, dz: Array, start: Array) -> Array:
        if not written:
            return batched(obj, jnp.take(probes, group, axis=0), dz, start)
        return far_intensities(exit_far_fields(obj, probes, group, start, dz if obj.shape[0] > 1 else None, propagate_all, win))

    native = far_backend if num_slices == 1 else None

    def far_forward(obj: Array, probes: Array, group: Array, dz: Array, start: Array) -> tuple[Array, tuple[list, list]]:
        if native is not None:
            return native.window_far_fields(obj, probes, group, start), ([], [])
        return _exit_far_fields(obj, probes, group, start, dz, propagate_all, win)

    def far_add(obj: Array, probes: Array, group: Array, dz: Array, start: Array, waves: tuple[list, list], ct: Array, go: Array,
                gp: Array | None) -> tuple[Array, Array, Array | None]:  # fmt: skip
        if native is not None:
            return (*native.window_far_fields_add(obj, probes, group, start, ct, go, gp), None)
        return exit_far_fields_add(obj, probes, group, start, dz, propagate_all, win, waves, ct, go, gp)

    def far_intensities(f: Array) -> Array:
        return _far_intensities(f, None if blur is None else blur.astype(jnp.real(f).dtype), axis=1)

    model.at_start = at_start  # type: ignore[attr-defined]
    model.at_starts = at_starts  # type: ignore[attr-defined]
    model.far_intensities = far_intensities  # type: ignore[attr-defined]
    model.far_forward = far_forward if written else None  # type: ignore[attr-defined]
    model.far_add = far_add if written else None  # type: ignore[attr-defined]
    return model


def predict_patterns(
    state: ReconState,
    positions: Any = None,
    *,
    propagator: Any = "fresnel",
    detector_blur: float = 0.0,
    batch_size: int = 256,
) -> Array:
    """Centred diffraction patterns (n, px, py) that ``state`` predicts at ``positions`` (Å,
    object frame; default ``state.positions``); the forward model of every algorithm, also a
    simple simulator for thin or layered specimens."""
    pos = jnp.asarray(state.positions if positions is None else positions)
    model = make_model(
        tuple(state.probe.shape[-2:]), state.sampling, state.energy,
        propagator=propagator, num_slices=int(state.object.shape[0]), detector_blur=detector_blur,
    )  # fmt: skip
    f = jax.jit(jax.vmap(model, in_axes=(None, None, None, 0)))
    out = [f(state.object, state.probe, state.slice_thickness, pos[i : i + batch_size]) for i in range(0, pos.shape[0], batch_size)]
    return jnp.concatenate(out, axis=0)
