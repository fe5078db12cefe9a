"""Wigner-distribution deconvolution (WDD; Rodenburg & Bates 1992): the complex object without
the weak-phase assumption (thin specimen, coherent probe).

Transforming G(k, Q) (``_common``) over the detector k to ρ turns its correlation over k into
a product (discrete, numpy's conventions, N detector pixels):

    H(ρ, Q) = IFFT_k G = N · χ_P(ρ, Q) · χ_O(ρ, Q),
    χ_P = IFFT_k [P̃*(k) P̃(k − Q)],   χ_O = IFFT_k [Õ*(k) Õ(k + Q)].

χ_O is recovered by a Wiener filter, χ_O = H χ_P* / (N (|χ_P|² + ε·max|χ_P|²)), and
Σ_ρ χ_O(ρ, Q) = Õ(Q) Õ*(0), so Õ(Q) = D(Q)/√D(0): the object on the scan lattice, its phase
and amplitude. Costs one detector-sized FFT of the data and two of the probe per Q.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ptyro_core import Dataset4D, PtyroValueError, ReconState
from ptyro_invert.direct import _common
from ptyro_invert.direct._common import Lattice, check_inputs, finish, normalised_patterns, probe_fourier, probe_geometry, scan_fft, scan_lattice, shift_fourier

__all__ = ["wdd_object", "wdd"]


@functools.partial(jax.jit, static_argnames=("n", "q_batch"))
def _deconvolve(g: jax.Array, q: jax.Array, p0: jax.Array, probe: tuple, floor: jax.Array, n: int, q_batch: int) -> jax.Array:
    """D(Q) = Σ_ρ χ_O(ρ, Q) for each row of ``g`` (Qx, Qy) at frequency ``q``."""

    def one(a: tuple[jax.Array, jax.Array]) -> jax.Array:
        gq, qq = a
        h = jnp.fft.ifft2(gq)
        chi_p = jnp.fft.ifft2(jnp.conj(p0) * shift_fourier(*probe, qq))
        return jnp.sum(h * jnp.conj(chi_p) / (n * (jnp.abs(chi_p) ** 2 + floor)))

    return jax.lax.map(one, (g, q), batch_size=q_batch)


def wdd_object(dataset: Dataset4D, state: ReconState, *, epsilon: float = 0.01, q_batch: int = 16, mesh: Any = None) -> tuple[jax.Array, Lattice]:
    """(complex object (Rx, Ry) on the scan lattice, mean amplitude 1, the lattice) by WDD with
    the Wiener parameter ``epsilon`` (relative to the largest |χ_P|²)."""
    check_inputs(dataset, state, "wdd")
    if not float(epsilon) > 0:
        raise PtyroValueError(f"wdd: expected epsilon > 0 (the Wiener filter's relative noise floor), got {epsilon}")
    if int(q_batch) < 1:
        raise PtyroValueError(f"wdd: expected q_batch >= 1 spatial frequencies, got {q_batch}")
    lat = scan_lattice(dataset.positions, dataset.scan_shape, who="wdd")
    pats, _ = normalised_patterns(dataset, mesh)
    nx, ny = pats.shape[-2:]
    n = nx * ny
    g = scan_fft(pats).reshape(nx, ny, -1)  # (Qx, Qy, Rx·Ry) in FFT order
    g = jnp.moveaxis(g, -1, 0)
    p0 = probe_fourier(state)
    floor = float(epsilon) * float(jnp.max(jnp.abs(jnp.fft.ifft2(jnp.abs(p0) ** 2)))) ** 2
    q = jnp.asarray(lat.frequencies().reshape(-1, 2), jnp.float32)
    fn = functools.partial(_deconvolve, n=n, q_batch=int(q_batch))
    d = _common.map_rows(fn, mesh, (g, q), (p0, probe_geometry(state), jnp.float32(floor))).reshape(lat.shape)
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
