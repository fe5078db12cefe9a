"""Single-sideband (SSB) ptychography and optimum bright field (OBF), with the probe's
aberrations in the transfer.

For a weak phase object G(k, Q) = i Φ(Q) γ(k, Q), γ = P̃*(k) P̃(k − Q) − P̃(k) P̃*(k + Q)
(``_common``). Both methods are linear filters of G summed over the detector:

- **SSB** (Rodenburg et al. 1993; Pennycook et al. 2015; with aberrations, Yang et al. 2016)
  keeps the double-overlap regions only (k in the aperture and in exactly one of the shifted
  apertures), multiplies by the phase of conj(iγ) there, and sums:
  Φ_SSB(Q) = Σ_{k ∈ D(Q)} G(k, Q) conj(iγ)/|γ| = T_SSB(Q) Φ(Q) with
  T_SSB(Q) = Σ_{k ∈ D(Q)} |γ(k, Q)| (for a flat, in-focus aperture: the double-overlap area
  over the disc's area, 2·L(Q) beyond Q = k_α, L the two-disc overlap).
- **OBF** (Ooe et al. 2021) weights every bright-field pixel by conj(iγ)/|P̃(k)|², the matched
  filter for Poisson noise (variance ∝ |P̃(k)|²), normalised so that the noise is white:
  Φ_OBF(Q) = T_OBF(Q) Φ(Q), T_OBF = sqrt(Σ_k |γ|²/|P̃(k)|²). Its image maximises the
  signal-to-noise ratio at every Q; its transfer is not flat (not a quantitative phase).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Dataset4D, PtyroValueError, ReconState
from ptyro_invert.direct._common import (
    Lattice,
    ProbeGeometry,
    check_inputs,
    finish,
    map_rows,
    pattern_pixels,
    probe_fourier,
    probe_geometry,
    scan_lattice,
    shift_fourier,
)

__all__ = ["sideband_filter", "apply_filter", "transfer", "half_plane", "ssb_phase", "ssb", "obf", "filter_weights"]


def _aperture_pixels(state: ReconState, threshold: float) -> np.ndarray:
    pk = np.abs(np.asarray(probe_fourier(state)))
    return np.flatnonzero(pk.reshape(-1) > threshold * pk.max())


def _weights(q: jax.Array, probe: ProbeGeometry, pix: jax.Array, p0: jax.Array, t: jax.Array, method: str) -> tuple[jax.Array, jax.Array]:
    """(weights on the aperture pixels, transfer) of ``method`` at Q = ``q``."""
    pm = shift_fourier(probe[0], probe[1], probe[2], q).reshape(-1)[pix]
    pp = shift_fourier(probe[0], probe[1], probe[2], -q).reshape(-1)[pix]
    gamma = jnp.conj(p0) * pm - p0 * jnp.conj(pp)
    mag = jnp.abs(gamma)
    if method == "ssb":
        double = (jnp.abs(pm) > t) != (jnp.abs(pp) > t)
        w = jnp.where(double, jnp.conj(1j * gamma) / jnp.where(mag > 0, mag, 1.0), 0.0)
        return w, jnp.sum(jnp.where(double, mag, 0.0))
    i0 = jnp.abs(p0) ** 2
    norm = jnp.sqrt(jnp.sum(mag**2 / i0))
    return jnp.conj(1j * gamma) / i0 / jnp.where(norm > 0, norm, 1.0), norm


def sideband_filter(state: ReconState, method: str = "ssb", threshold: float = 0.5) -> tuple[tuple, jax.Array]:
    """The filter's constants ``(probe geometry, aperture pixels, P̃ there, amplitude
    threshold)`` for ``method`` ("ssb" or "obf") and the aperture pixels (flat indices in FFT
    order where |P̃| > ``threshold`` × its max)."""
    if method not in ("ssb", "obf"):
        raise PtyroValueError(f"sideband_filter: method must be 'ssb' or 'obf', got {method!r}")
    pix = jnp.asarray(_aperture_pixels(state, threshold))
    p0 = probe_fourier(state).reshape(-1)[pix]
    t = threshold * jnp.max(jnp.abs(p0))
    return (probe_geometry(state), pix, p0, t), pix


@functools.partial(jax.jit, static_argnames=("method", "q_batch"))
def _transfer(q: jax.Array, consts: tuple, method: str, q_batch: int) -> jax.Array:
    return jax.lax.map(lambda v: _weights(v, consts[0], consts[1], consts[2], consts[3], method)[1], q, batch_size=q_batch)


def transfer(state: ReconState, lattice: Lattice, method: str = "ssb", threshold: float = 0.5) -> np.ndarray:
    """The method's phase transfer T(Q) (Rx, Ry) on the lattice's frequencies, from the probe:
    what a weak phase's Fourier component is multiplied by (T(0) is set to 0)."""
    consts, _ = sideband_filter(state, method, threshold)
    q = jnp.asarray(lattice.frequencies().reshape(-1, 2), jnp.float32)
    t = np.array(_transfer(q, consts, method, 64)).reshape(lattice.shape)
    t[0, 0] = 0.0
    return t


@functools.partial(jax.jit, static_argnames=("method", "q_batch"))
def apply_filter(g: jax.Array, q: jax.Array, consts: tuple, method: str, q_batch: int) -> jax.Array:
    """Φ(Q) (n,) = Σ_k G(k, Q) w(k, Q) for the rows of ``g`` (n, aperture pixels) at the
    frequencies ``q`` (n, 2); ``consts`` from :func:`sideband_filter`. Linear in ``g``."""
    return jax.lax.map(lambda a: jnp.sum(a[0] * _weights(a[1], consts[0], consts[1], consts[2], consts[3], method)[0]), (g, q), batch_size=q_batch)


def half_plane(lattice: Lattice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frequencies Q (n, 2) of a real FFT's half plane (Rx, Ry // 2 + 1) of the scan
    lattice, flat; the frequencies Q₋ at their negated indices (n, 2); and the flat indices
    where Q₋ ≠ −Q (the Nyquist row and column of an even scan), where the full plane's
    Re F⁻¹ pairs Q with Q₋."""
    rx, ry = lattice.shape
    f = lattice.frequencies()
    ii, jj = np.meshgrid(np.arange(rx), np.arange(ry // 2 + 1), indexing="ij")
    q, qn = f[ii, jj].reshape(-1, 2), f[(-ii) % rx, (-jj) % ry].reshape(-1, 2)
    return q, qn, np.flatnonzero(~np.all(np.abs(qn + q) <= 1e-9 * np.abs(f).max(), axis=1))


def ssb_phase(
    dataset: Dataset4D, state: ReconState, method: str = "ssb", *, threshold: float = 0.5, q_batch: int = 16, mesh: Any = None
) -> tuple[jax.Array, Lattice]:
    """(phase (Rx, Ry) on the scan lattice, the lattice) by SSB or OBF; with a ``mesh``, the
    patterns and the spatial frequencies are split over its devices."""
    check_inputs(dataset, state, method)
    if int(q_batch) < 1:
        raise PtyroValueError(f"{method}: expected q_batch >= 1 spatial frequencies, got {q_batch}")
    lat = scan_lattice(dataset.positions, dataset.scan_shape, who=method)
    consts, pix = sideband_filter(state, method, threshold)
    # φ is real, so Φ(−Q) = Φ(Q)* (G(k, −Q) = G(k, Q)* and w(k, −Q) = w(k, Q)*): only the
    # frequencies of a real FFT's half plane are filtered (half the work), then irfft2
    pats, _ = pattern_pixels(dataset, np.asarray(pix), mesh)
    rx, ry = lat.shape
    g = jnp.fft.rfft2(pats, axes=(0, 1)).reshape(rx * (ry // 2 + 1), len(pix))  # (Rx·(Ry/2+1), n)
    qh, qn, nyq = half_plane(lat)
    q = jnp.asarray(qh, jnp.float32)
    phi = map_rows(functools.partial(apply_filter, method=method, q_batch=int(q_batch)), mesh, (g, q), (consts,))
    # Where the negated index is not −Q (the Nyquist row and column of an even scan), the half
    # plane's partner is the frequency at the negated index, as the full plane's Re F⁻¹ pairs
    # them: Ψ = Σ_k G(k, Q) (w(k, Q) + conj w(k, Q₋)) / 2 there (the live SSB does the same)
    if nyq.size:
        partner = jnp.conj(apply_filter(jnp.conj(g[nyq]), jnp.asarray(qn[nyq], jnp.float32), consts, method, int(q_batch)))
        phi = phi.at[nyq].set(0.5 * (phi[nyq] + partner))
    phi = phi.reshape(rx, ry // 2 + 1).at[0, 0].set(0.0)
    return jnp.fft.irfft2(phi, s=(rx, ry), axes=(0, 1)), lat


def ssb(dataset: Dataset4D, state: ReconState, *, threshold: float = 0.5, q_batch: int = 16, mesh: Any = None) -> ReconState:
    """Single-sideband ptychography: the weak phase object φ from the double-overlap regions of
    G(k, Q), corrected for the state's probe (its aberrations included); the result's object is
    exp(i φ) with transfer T_SSB (:func:`transfer`). ``q_batch`` spatial frequencies are
    filtered at once (memory ∝ q_batch × detector pixels); ``mesh`` splits the work over its
    devices along the scan (:func:`ptyro_invert.direct._common.scan_array`)."""
    phase, lat = ssb_phase(dataset, state, "ssb", threshold=threshold, q_batch=q_batch, mesh=mesh)
    return finish(state, phase, lat)


def obf(dataset: Dataset4D, state: ReconState, *, threshold: float = 0.5, q_batch: int = 16, mesh: Any = None) -> ReconState:
    """Optimum bright field: the signal-to-noise-optimal linear phase image (white noise,
    transfer T_OBF); see the module's notes."""
    phase, lat = ssb_phase(dataset, state, "obf", threshold=threshold, q_batch=q_batch, mesh=mesh)
    return finish(state, phase, lat)


def filter_weights(state: ReconState, q: Any, method: str = "ssb", threshold: float = 0.5, q_batch: int = 64) -> tuple[np.ndarray, jax.Array]:
    """(aperture pixels (flat indices in FFT order), weights w (n, n_pixels)) of ``method`` at the
    frequencies ``q`` (n, 2) Å⁻¹: Φ(Q) = Σ_k G(k, Q) w(k, Q), what :func:`apply_filter` applies,
    as one matrix, for an incremental (live) SSB that adds each pattern's share
    Σ_k I_r(k) w(k, Q) e^{−2πi Q·r} as it arrives."""
    consts, pix = sideband_filter(state, method, threshold)
    qs = jnp.asarray(np.asarray(q, np.float64).reshape(-1, 2), jnp.float32)
    w = jax.lax.map(lambda v: _weights(v, consts[0], consts[1], consts[2], consts[3], method)[0], qs, batch_size=int(q_batch))
    return np.asarray(pix), w
