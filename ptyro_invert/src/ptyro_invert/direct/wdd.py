"""Wigner-distribution deconvolution (WDD; Rodenburg & Bates 1992): the complex object without
the weak-phase assumption (thin specimen, coherent probe).

Transforming G(k, Q) (``_common``) over the detector k to ρ turns its correlation over k into
a product (discrete, numpy's conventions, N detector pixels):

    H(ρ, Q) = IFFT_k G = N · χ_P(ρ, Q) · χ_O(ρ, Q),
    χ_P = IFFT_k [P̃*(k) P̃(k − Q)],   χ_O = IFFT_k [Õ*(k) Õ(k + Q)].

χ_O is recovered by a Wiener filter, χ_O = H χ_P* / (N (|χ_P|² + ε·max|χ_P|²)), and
Σ_ρ χ_O(ρ, Q) = Õ(Q) Õ*(0), so Õ(Q) = D(Q)/√D(0): the object on the scan lattice, its phase
and amplitude. Costs the data's 4D FFT (:func:`wigner_data`) and two detector-sized FFTs of
the probe per Q, only for the Q within twice the aperture (elsewhere D(Q) = 0;
:func:`_overlapping`): O(N_R N_k (log N_R + log N_k)).
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
from ptyro_invert.direct import _common
from ptyro_invert.direct._common import Lattice, check_inputs, finish, probe_fourier, probe_geometry, scan_array, scan_lattice, shift_fourier

__all__ = ["wigner_data", "wdd_object", "wdd"]


@functools.partial(jax.jit, static_argnames=("n", "q_batch"))
def _deconvolve(h: jax.Array, q: jax.Array, p0: jax.Array, probe: tuple, floor: jax.Array, ramp: jax.Array, n: int, q_batch: int) -> jax.Array:
    """D(Q) = Σ_ρ χ_O(ρ, Q) for each row of ``h`` (Qx, Qy): H(ρ, Q) of the patterns in centred
    order (H·``ramp``* is H in FFT order, ``ramp`` = e^{2πi (N//2)·ρ/N}) at frequency ``q``."""

    def one(a: tuple[jax.Array, jax.Array]) -> jax.Array:
        hq, qq = a
        chi_p = jnp.fft.ifft2(jnp.conj(p0) * shift_fourier(probe[0], probe[1], probe[2], qq))
        return jnp.sum(hq * jnp.conj(ramp * chi_p) / (n * (jnp.abs(chi_p) ** 2 + floor)))

    return jax.lax.map(one, (h, q), batch_size=q_batch)


def wigner_data(dataset: Dataset4D, mesh: Any = None, rows: Any = None) -> tuple[jax.Array, float]:
    """(H(ρ, Q) (Rx·Ry, Qx, Qy), the mean dose per pattern): the patterns (centred) Fourier
    transformed over the scan (R → Q) and inversely over the detector (k → ρ); with ``rows``
    (flat indices of Q, the first Q = 0) only those rows (n, Qx, Qy), the detector's transform
    made only for them. Without a mesh on the host by ``scipy.fft`` (threaded; XLA's CPU FFT
    over the leading scan axes is 5–7× slower, measured on 32² × 128²), with one by XLA on the
    sharded patterns."""
    if mesh is None:
        a = np.asarray(dataset.array, np.float32)
        workers = os.cpu_count() or 1
        h = sp_fft.ifft2(_scan_transform(a, rows, workers), axes=(1, 2), workers=workers, overwrite_x=True)
        dose = float(np.real(h[0, 0, 0])) / a.shape[0] / a.shape[1]  # H(ρ = 0, Q = 0) = Σ_R Σ_k I / N_k
        dose *= a.shape[2] * a.shape[3]
        h = jnp.asarray(h)
    else:
        arr = scan_array(dataset, mesh)
        dose = float(jnp.mean(jnp.sum(arr, axis=(-2, -1))))
        s = jnp.fft.fft2(arr, axes=(0, 1)).reshape((-1,) + arr.shape[-2:])
        h = jnp.fft.ifft2(s if rows is None else s[jnp.asarray(rows)], axes=(1, 2))
    if not dose > 0:
        raise PtyroValueError("direct: the patterns sum to zero; expected diffraction intensities")
    return h, dose


def _scan_transform(a: np.ndarray, rows: Any, workers: int) -> np.ndarray:
    """The real patterns ``a`` (Rx, Ry, Qx, Qy) Fourier transformed over the scan, at the flat
    frequency indices ``rows`` (all when None): (n, Qx, Qy). Half the transform is made (a real
    FFT over the scan): S(−Q, k) = S(Q, k)* for real intensities, so a row of the other half is
    the conjugate of its mirror's."""
    rx, ry = a.shape[:2]
    half = sp_fft.rfft2(a, axes=(0, 1), workers=workers)  # (Rx, Ry // 2 + 1, Qx, Qy)
    i, j = np.divmod(np.arange(rx * ry) if rows is None else np.asarray(rows), ry)
    mirror = j > ry // 2
    out = half[np.where(mirror, (-i) % rx, i), np.where(mirror, (-j) % ry, j)]
    out[mirror] = np.conj(out[mirror])
    return out


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


def wdd_object(dataset: Dataset4D, state: ReconState, *, epsilon: float = 0.01, q_batch: int = 16, mesh: Any = None) -> tuple[jax.Array, Lattice]:
    """(complex object (Rx, Ry) on the scan lattice, mean amplitude 1, the lattice) by WDD with
    the Wiener parameter ``epsilon`` (relative to the largest |χ_P|²)."""
    check_inputs(dataset, state, "wdd")
    if not float(epsilon) > 0:
        raise PtyroValueError(f"wdd: expected epsilon > 0 (the Wiener filter's relative noise floor), got {epsilon}")
    if int(q_batch) < 1:
        raise PtyroValueError(f"wdd: expected q_batch >= 1 spatial frequencies, got {q_batch}")
    lat = scan_lattice(dataset.positions, dataset.scan_shape, who="wdd")
    p0 = probe_fourier(state)
    qf = lat.frequencies().reshape(-1, 2)
    rows = _overlapping(qf, p0, dataset.grid.reciprocal_sampling)
    h, dose = wigner_data(dataset, mesh, rows)
    nx, ny = h.shape[-2:]
    ramp = np.exp(2j * np.pi * (nx // 2) * np.arange(nx) / nx)[:, None] * np.exp(2j * np.pi * (ny // 2) * np.arange(ny) / ny)[None, :]
    floor = float(epsilon) * float(jnp.max(jnp.abs(jnp.fft.ifft2(jnp.abs(p0) ** 2)))) ** 2
    q = jnp.asarray(qf[rows], jnp.float32)
    fn = functools.partial(_deconvolve, n=nx * ny, q_batch=int(q_batch))
    shared = (p0, probe_geometry(state), jnp.float32(floor), jnp.asarray(ramp, jnp.complex64))
    d_rows = _common.map_rows(fn, mesh, (h, q), shared) / dose
    d = jnp.zeros(qf.shape[0], d_rows.dtype).at[jnp.asarray(rows)].set(d_rows).reshape(lat.shape)
    ok = jnp.sqrt(jnp.maximum(jnp.real(d[0, 0]), 1e-30))
    obj = jnp.fft.ifft2(d / ok)
    return obj / jnp.mean(jnp.abs(obj)), lat


def wdd(dataset: Dataset4D, state: ReconState, *, epsilon: float = 0.01, q_batch: int = 16, mesh: Any = None) -> ReconState:
    """Wigner-distribution deconvolution: the object's phase on the state's object grid
    (:func:`wdd_object` has the amplitude too). ``q_batch`` spatial frequencies are
    deconvolved at once (memory ∝ q_batch × detector pixels); ``mesh`` splits the work over its
    devices along the scan."""
    obj, lat = wdd_object(dataset, state, epsilon=epsilon, q_batch=q_batch, mesh=mesh)
    phase = jnp.angle(obj * jnp.exp(-1j * jnp.angle(jnp.mean(obj))))
    return finish(state, phase, lat)
