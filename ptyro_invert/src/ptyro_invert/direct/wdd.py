"""Wigner-distribution deconvolution (WDD; Rodenburg & Bates 1992): the complex object without
the weak-phase assumption (thin specimen, coherent probe).

Transforming G(k, Q) (``_common``) over the detector k to ρ turns its correlation over k into
a product (discrete, numpy's conventions, N detector pixels):

    H(ρ, Q) = IFFT_k G = N · χ_P(ρ, Q) · χ_O(ρ, Q),
    χ_P = IFFT_k [P̃*(k) P̃(k − Q)],   χ_O = IFFT_k [Õ*(k) Õ(k + Q)].

χ_O is recovered by a Wiener filter, χ_O = H χ_P* / (N (|χ_P|² + ε·max|χ_P|²)), and
Σ_ρ χ_O(ρ, Q) = Õ(Q) Õ*(0), so Õ(Q) = D(Q)/√D(0): the object on the scan lattice, its phase
and amplitude.

Cost, only for the Q within twice the aperture (elsewhere D(Q) = 0; :func:`_overlapping`),
taken a pair Q, Q' (its mirror, −Q on the lattice) at a time (:func:`mirror_pairs`):
- the data: a real FFT over the scan, then one detector FFT per pair (H(ρ, Q') = H*(−ρ, Q)
  for real intensities; :func:`wigner_data`);
- the probe: P̃(k − Q) is a roll of the FFT of the probe times the shift's sub-pixel ramp, made
  once per distinct sub-pixel part (few: the scan's frequencies step by a fixed fraction of a
  detector pixel; where they are more than the pairs, one FFT per Q: :func:`_use_bank`); then
  one inverse FFT per Q for χ_P, or one per pair where every shift is
  whole pixels (χ_P(ρ, −Q) = e^{−2πi Q·ρ} χ_P*(−ρ, Q): the probe window a whole multiple of
  the scanned field, as in the SrTiO3 benchmark).
O(N_R N_k (log N_R + log N_k)); on SrTiO3 (32² × 128², 593 kept Q) 297 data and 297 probe
FFTs of 128², where the former route made 593 and 1,186.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft as sp_fft

from ptyro_core import Dataset4D, PtyroValueError, ReconState
from ptyro_core.sources import aligned_empty
from ptyro_invert.direct import _common
from ptyro_invert.direct._common import Lattice, check_inputs, finish, probe_fourier, probe_geometry, scan_array, scan_lattice, shift_fourier

__all__ = ["wigner_data", "wdd_object", "wdd"]


def _den(chi: jax.Array, floor: jax.Array, n: int) -> jax.Array:
    return n * (jnp.abs(chi) ** 2 + floor)


def _centring(shape: tuple[int, ...]) -> tuple[int, int]:
    """The roll (N // 2 per axis) that multiplies an inverse FFT's output by the centring ramp
    e^{2πi (N//2)·ρ/N}: the patterns are centred, so H(ρ, Q) is H in FFT order times it, and
    rolling P̃*(k) P̃(k − Q) by it gives ramp·χ_P from the same FFT (|ramp| = 1, ramp(−ρ) =
    ramp*(ρ))."""
    return shape[-2] // 2, shape[-1] // 2


def _pair_sums(hq: jax.Array, x: jax.Array, x_m: jax.Array, floor: jax.Array, n: int) -> jax.Array:
    """(D(Q), D(Q')) from H(ρ, Q) ``hq`` and the centring-rolled P̃*(k) P̃(k − Q) ``x`` and
    P̃*(k) P̃(k − Q') ``x_m``: D(Q) = Σ_ρ H (ramp χ_P)*/(N(|χ_P|² + floor)), and with H(ρ, Q') =
    H*(−ρ, Q), D(Q') = (Σ_ρ H(ρ, Q) W(−ρ, Q'))*, W = ramp χ_P/(N(|χ_P|² + floor)); W(−ρ, Q')
    comes from the forward FFT (IFFT(x)(−ρ) = FFT(x)(ρ)/N)."""
    chi = jnp.fft.ifft2(x)  # ramp·χ_P(ρ, Q)
    chi_m = jnp.fft.fft2(x_m) / n  # (ramp·χ_P)(−ρ, Q')
    return jnp.stack([jnp.sum(hq * jnp.conj(chi) / _den(chi, floor, n)), jnp.conj(jnp.sum(hq * chi_m / _den(chi_m, floor, n)))])


@functools.partial(jax.jit, static_argnames=("n", "q_batch"))
def _deconvolve_mirrored(h: jax.Array, shift: jax.Array, p0: jax.Array, floor: jax.Array, n: int, q_batch: int) -> jax.Array:
    """(D(Q), D(−Q)) (pairs, 2) from H(ρ, Q) alone where Q and −Q shift the probe by whole
    detector pixels ``shift`` (pairs, 2) and −``shift``: then χ_P(ρ, −Q) = e^{−2πi Q·ρ}
    χ_P*(−ρ, Q) exactly (the shift's ramp is periodic on the window), H(ρ, −Q) = H*(−ρ, Q)
    (real intensities), so with T = H (ramp χ_P)*/(N(|χ_P|² + floor)), D(Q) = Σ_ρ T and
    D(−Q) = (Σ_ρ T e^{2πi Q·ρ})*: one FFT of the probe per pair."""
    nx, ny = p0.shape
    centre = jnp.asarray(_centring(p0.shape), jnp.int32)
    p0c = jnp.roll(jnp.conj(p0), _centring(p0.shape), axis=(0, 1))
    ix = jnp.arange(nx, dtype=jnp.int32)
    iy = jnp.arange(ny, dtype=jnp.int32)

    def one(a: tuple[jax.Array, jax.Array]) -> jax.Array:
        hq, s = a
        chi = jnp.fft.ifft2(p0c * jnp.roll(p0, s + centre, axis=(0, 1)))  # ramp·χ_P
        t = hq * jnp.conj(chi) / _den(chi, floor, n)
        ex = jnp.exp((2j * jnp.pi / nx) * ((s[0] * ix) % nx).astype(jnp.float32)).astype(jnp.complex64)  # e^{2πi Q·ρ}, exact modulo N
        ey = jnp.exp((2j * jnp.pi / ny) * ((s[1] * iy) % ny).astype(jnp.float32)).astype(jnp.complex64)
        return jnp.stack([jnp.sum(t), jnp.conj(ex @ t @ ey)])

    return jax.lax.map(one, (h, shift), batch_size=q_batch)


@functools.partial(jax.jit, static_argnames=("n", "q_batch"))
def _deconvolve_pairs(h: jax.Array, shifts: jax.Array, classes: jax.Array, p0: jax.Array, bank: jax.Array, floor: jax.Array, n: int, q_batch: int) -> jax.Array:
    """(D(Q), D(Q')) (pairs, 2) from H(ρ, Q) where Q' is Q's mirror on the scan lattice
    (:func:`_pair_sums`): P̃(k − Q) is ``bank[class]`` (the FFT of the probe times the shift's
    sub-pixel ramp) rolled by the shift's whole pixels; ``shifts`` (pairs, 2, 2) and
    ``classes`` (pairs, 2) for Q and Q'."""
    centre = jnp.asarray(_centring(p0.shape), jnp.int32)
    p0c = jnp.roll(jnp.conj(p0), _centring(p0.shape), axis=(0, 1))

    def one(a: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        hq, s, c = a
        x = p0c * jnp.roll(bank[c[0]], s[0] + centre, axis=(0, 1))
        x_m = p0c * jnp.roll(bank[c[1]], s[1] + centre, axis=(0, 1))
        return _pair_sums(hq, x, x_m, floor, n)

    return jax.lax.map(one, (h, shifts, classes), batch_size=q_batch)


@functools.partial(jax.jit, static_argnames=("n", "q_batch"))
def _deconvolve_each(h: jax.Array, q: jax.Array, p0: jax.Array, probe: tuple, floor: jax.Array, n: int, q_batch: int) -> jax.Array:
    """:func:`_deconvolve_pairs` where the shifts' sub-pixel parts are too many to share: P̃(k − Q)
    transformed for each of ``q`` (pairs, 2, 2) Å⁻¹ (:func:`shift_fourier`)."""
    centre = _centring(p0.shape)
    p0c = jnp.roll(jnp.conj(p0), centre, axis=(0, 1))

    def one(a: tuple[jax.Array, jax.Array]) -> jax.Array:
        hq, qq = a
        x = p0c * jnp.roll(shift_fourier(probe[0], probe[1], probe[2], qq[0]), centre, axis=(0, 1))
        x_m = p0c * jnp.roll(shift_fourier(probe[0], probe[1], probe[2], qq[1]), centre, axis=(0, 1))
        return _pair_sums(hq, x, x_m, floor, n)

    return jax.lax.map(one, (h, q), batch_size=q_batch)


def mirror_pairs(rows: Any, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(Q, Q') for the flat scan-frequency indices ``rows``: each pair a frequency and its
    mirror (−i mod Rx, −j mod Ry), every row in exactly one pair, Q (ascending, Q = 0 first)
    in the real FFT's half (j ≤ Ry // 2; Q' = Q where the mirror is itself)."""
    rx, ry = shape
    r = np.asarray(rows, np.int64)
    i, j = np.divmod(r, ry)
    mi, mj = (-i) % rx, (-j) % ry
    mirror = mi * ry + mj
    first = (j < mj) | ((j == mj) & (i <= mi))
    q = np.unique(np.where(first, r, mirror))
    i, j = np.divmod(q, ry)
    return q, ((-i) % rx) * ry + (-j) % ry


def wigner_data(dataset: Dataset4D, mesh: Any = None, rows: Any = None) -> tuple[jax.Array, float]:
    """(H(ρ, Q) (n, Qx, Qy), the mean dose per pattern): the patterns (centred) Fourier
    transformed over the scan (R → Q) and inversely over the detector (k → ρ) at the flat
    scan-frequency indices ``rows``, which must lie in the real FFT's half (j ≤ Ry // 2; by
    default every Q there that :func:`mirror_pairs` takes): H(ρ, −Q) = H*(−ρ, Q) gives the rest. Without a mesh
    on the host by ``scipy.fft`` (threaded; a real FFT over the scan, the rows gathered into
    a buffer that the detector's transform overwrites and JAX then reads in place; XLA's CPU
    FFT over the leading scan axes is 5–7× slower, measured on 32² × 128²), with one by XLA
    on the sharded patterns."""
    rx, ry = dataset.scan_shape
    half_y = ry // 2 + 1
    r = mirror_pairs(np.arange(rx * ry), (rx, ry))[0] if rows is None else np.asarray(rows, np.int64)
    i, j = np.divmod(r, ry)
    if np.any(j >= half_y):
        raise PtyroValueError(f"wdd: scan frequency rows {r[j >= half_y][:4].tolist()} lie outside the real FFT's half; expected j <= {ry // 2}")
    if mesh is None:
        a = np.asarray(dataset.array, np.float32)
        workers = os.cpu_count() or 1
        half = sp_fft.rfft2(a, axes=(0, 1), workers=workers)  # (Rx, Ry // 2 + 1, Qx, Qy)
        dose = float(np.sum(half[0, 0].real, dtype=np.float64)) / (rx * ry)  # G(Q = 0) summed over k
        buf = aligned_empty((len(r),) + a.shape[2:], np.complex64)
        np.take(half.reshape((-1,) + a.shape[2:]), i * half_y + j, axis=0, out=buf)
        del half
        h = jax.device_put(sp_fft.ifft2(buf, axes=(1, 2), workers=workers, overwrite_x=True))
    else:
        arr = scan_array(dataset, mesh)
        dose = float(jnp.mean(jnp.sum(arr, axis=(-2, -1))))
        s = jnp.fft.fft2(arr, axes=(0, 1)).reshape((-1,) + arr.shape[-2:])
        h = jnp.fft.ifft2(s[jnp.asarray(i * ry + j)], axes=(1, 2))
    if not dose > 0:
        raise PtyroValueError("direct: the patterns sum to zero; expected diffraction intensities")
    return h, dose


def _overlapping(q: np.ndarray, p0: Any, recip: Any) -> np.ndarray:
    """Flat indices (ascending; Q = 0 first) of the spatial frequencies ``q`` (n, 2) Å⁻¹ at which
    the aperture overlaps its copy shifted by Q, |Q| ≤ 2 k_max + 2 detector pixels (k_max the
    largest |k| where |P̃|² exceeds 1e-8 of its peak): elsewhere P̃*(k) P̃(k − Q) = 0, so χ_P
    and the Wiener-filtered D(Q) vanish (a probe of finite window has sinc tails beyond the
    aperture; the margin keeps them), and neither the data's detector transform nor the
    deconvolution is made there."""
    pk = np.abs(np.asarray(p0)) ** 2
    nx, ny = pk.shape
    rx, ry = float(recip[0]), float(recip[1])
    kx = np.fft.fftfreq(nx) * nx * rx
    ky = np.fft.fftfreq(ny) * ny * ry
    kk = np.hypot(kx[:, None], ky[None, :])
    k_max = float(kk[pk > 1e-8 * pk.max()].max())
    return np.flatnonzero(np.hypot(q[:, 0], q[:, 1]) <= 2 * k_max + 2 * max(rx, ry))


#: sub-pixel parts of the probe's shifts closer than this (detector pixels) are one: the
#: positions' float32 rounding (~1e-7 of a step) moves a shift by ~1e-6 pixel, and a shift off
#: by 5e-6 pixel turns the probe's Fourier ramp by ≤ 2e-5 rad at the window's edge (~1e-6 rad
#: inside the probe), the size of the float32 ramp's own error
SHIFT_TOLERANCE = 1e-5


def _use_bank(parts: int, pairs: int) -> bool:
    """Whether the shifted probes come from a bank of ``parts`` sub-pixel shifts' FFTs (then
    rolled) rather than one FFT per Q: where the bank is no larger than the pairs (its FFTs
    and memory then at most the data's; e.g. 225 parts for 1,154 pairs on 48² × 32²)."""
    return parts <= pairs


def _probe_shifts(q: np.ndarray, state: ReconState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The probe's shifts by ``q`` (…, 2) Å⁻¹ in detector pixels, split into whole pixels
    (…, 2) int32 and the index (…) of each one's sub-pixel part in the distinct parts (m, 2)
    (to :data:`SHIFT_TOLERANCE`)."""
    px = q * (np.asarray(state.probe.shape[-2:]) * np.asarray(state.sampling, np.float64))
    whole = np.round(px)
    frac = np.round((px - whole) / SHIFT_TOLERANCE) * SHIFT_TOLERANCE + 0.0  # +0.0: no −0
    parts, index = np.unique(frac.reshape(-1, 2), axis=0, return_inverse=True)
    return whole.astype(np.int32), index.reshape(q.shape[:-1]).astype(np.int32), parts


def _shift_bank(state: ReconState, parts: np.ndarray) -> jax.Array:
    """FFTs (m, Qx, Qy) of the probe times e^{2πi f·r/N} for the sub-pixel parts f (m, 2) px."""
    p = probe_geometry(state)[0]
    nx, ny = p.shape
    ix = np.fft.fftfreq(nx) * nx
    iy = np.fft.fftfreq(ny) * ny
    ramps = np.exp(2j * np.pi * (parts[:, 0, None, None] * ix[None, :, None] / nx + parts[:, 1, None, None] * iy[None, None, :] / ny))
    return jnp.fft.fft2(p[None] * jnp.asarray(ramps, jnp.complex64), norm="ortho")


def wdd_object(dataset: Dataset4D, state: ReconState, *, epsilon: float = 0.01, q_batch: int | None = None, mesh: Any = None) -> tuple[jax.Array, Lattice]:
    """(complex object (Rx, Ry) on the scan lattice, mean amplitude 1, the lattice) by WDD with
    the Wiener parameter ``epsilon`` (relative to the largest |χ_P|²). Each frequency Q and its
    mirror Q' (:func:`mirror_pairs`) share the data's transform H(ρ, Q); the probe's shifted
    transforms are rolls of the few distinct sub-pixel shifts' FFTs, and where every shift is
    whole pixels (the probe window a whole multiple of the scan's extent) Q' costs no FFT."""
    check_inputs(dataset, state, "wdd")
    if not float(epsilon) > 0:
        raise PtyroValueError(f"wdd: expected epsilon > 0 (the Wiener filter's relative noise floor), got {epsilon}")
    if q_batch is None:
        q_batch = 1 if jax.default_backend() == "cpu" else 16  # CPU: one at a time measured fastest (SrTiO3 case)
    if int(q_batch) < 1:
        raise PtyroValueError(f"wdd: expected q_batch >= 1 pairs of spatial frequencies, got {q_batch}")
    lat = scan_lattice(dataset.positions, dataset.scan_shape, who="wdd")
    p0 = probe_fourier(state)
    qf = lat.frequencies().reshape(-1, 2)
    rows = _overlapping(qf, p0, dataset.grid.reciprocal_sampling)
    first, mirror = mirror_pairs(rows, lat.shape)
    h, dose = wigner_data(dataset, mesh, first)
    nx, ny = h.shape[-2:]
    floor = jnp.float32(float(epsilon) * float(jnp.max(jnp.abs(jnp.fft.ifft2(jnp.abs(p0) ** 2)))) ** 2)
    pair_q = np.stack([qf[first], qf[mirror]], axis=1)  # (pairs, 2 (Q, Q'), 2)
    whole, cls, parts = _probe_shifts(pair_q, state)
    kw = {"n": nx * ny, "q_batch": int(q_batch)}
    if len(parts) == 1 and not parts.any() and np.array_equal(whole[:, 1], -whole[:, 0]):
        d_pairs = _common.map_rows(functools.partial(_deconvolve_mirrored, **kw), mesh, (h, jnp.asarray(whole[:, 0])), (p0, floor))
    elif _use_bank(len(parts), len(first)):
        bank = _shift_bank(state, parts)
        d_pairs = _common.map_rows(functools.partial(_deconvolve_pairs, **kw), mesh, (h, jnp.asarray(whole), jnp.asarray(cls)), (p0, bank, floor))
    else:
        q = jnp.asarray(pair_q, jnp.float32)
        d_pairs = _common.map_rows(functools.partial(_deconvolve_each, **kw), mesh, (h, q), (p0, probe_geometry(state), floor))
    kept = np.zeros(qf.shape[0] + 1, bool)
    kept[rows] = True
    skip = qf.shape[0]  # out of range: dropped by the scatter
    to_q = jnp.asarray(np.where(kept[first], first, skip))
    to_m = jnp.asarray(np.where(kept[mirror] & (mirror != first), mirror, skip))
    d = jnp.zeros(qf.shape[0], d_pairs.dtype).at[to_q].set(d_pairs[:, 0], mode="drop").at[to_m].set(d_pairs[:, 1], mode="drop")
    d = d.reshape(lat.shape) / dose
    ok = jnp.sqrt(jnp.maximum(jnp.real(d[0, 0]), 1e-30))
    obj = jnp.fft.ifft2(d / ok)
    return obj / jnp.mean(jnp.abs(obj)), lat


def wdd(dataset: Dataset4D, state: ReconState, *, epsilon: float = 0.01, q_batch: int | None = None, mesh: Any = None) -> ReconState:
    """Wigner-distribution deconvolution: the object's phase on the state's object grid
    (:func:`wdd_object` has the amplitude too). ``q_batch`` pairs of spatial frequencies are
    deconvolved at once (memory ∝ q_batch × detector pixels; default 1 on a CPU, where the
    FFTs' working set then stays in cache, 16 on an accelerator); ``mesh`` splits the work over its
    devices along the scan."""
    obj, lat = wdd_object(dataset, state, epsilon=epsilon, q_batch=q_batch, mesh=mesh)
    phase = jnp.angle(obj * jnp.exp(-1j * jnp.angle(jnp.mean(obj))))
    return finish(state, phase, lat)
