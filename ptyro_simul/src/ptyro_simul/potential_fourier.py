"""Projected potentials built in Fourier space from a scattering factor f(k): exact at any
sub-pixel position, for every parametrisation that exposes f(k).

The projected potential of the atoms j of element Z in one slice is, on the periodic grid
(first Born approximation, Kirkland eq. 5.9),

    V_slice(r) = IFFT2[ Σ_Z 2π a₀e f_Z(|k|) S_Z,slice(k) ] / (dx dy),
    S_Z,slice(k) = Σ_j w_j exp(−2πi k·r_j) exp(−2π² σ_j² k²),

over the whole FFT box (every frequency of the grid, no band limit and no cutoff radius: f is
used to all k, and its long-range tail is periodic with the cell). The structure factor is
separable, exp(−2πi (kx x + ky y)) = exp(−2πi kx x) · exp(−2πi ky y), so one slice of one element
is one matrix product (nx × n) @ (n × (ny/2 + 1)) of the per-atom phase rows (the real output
needs only ky ≥ 0). The optional Debye–Waller factor exp(−2π² σ² k²) (σ: rms displacement per
direction, Å; B = 8π²σ²) is separable too. Everything is differentiable in the positions and in
σ; the slice each entry belongs to is an integer (no gradient).

The atoms are sorted by slice so that each slice's product runs over at most ``capacity``
entries (the largest slice occupancy, computed on the host when the positions are concrete; when
they are traced, every entry is a candidate for every slice, which is exact but costs the number
of slices times more).

Components expose f(k) as ``component.scattering_factor(k, z)`` (k in Å⁻¹, f in Å; numpy in,
numpy out; see :class:`ptyro_core.protocols.ScatteringFactor`), which is all this module needs.
"""

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import Array

from ptyro_core import Grid

__all__ = ["frequencies", "scattering_table", "structure_factors", "slice_capacity", "CAPACITY_BUCKETS", "fourier_slices"]

#: slice capacities are rounded up to one of these (few recompilations when occupancies vary)
CAPACITY_BUCKETS: tuple[int, ...] = tuple(sorted({int(math.ceil(8 * 1.25**i)) for i in range(80)}))


def frequencies(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(kx (nx,), ky (ny//2 + 1,)) in Å⁻¹: numpy's FFT order in x, the rfft half in y."""
    (nx, ny), (dx, dy) = grid.gpts, grid.sampling
    return np.fft.fftfreq(nx, dx), np.fft.rfftfreq(ny, dy)


def scattering_table(component: Any, z: int, grid: Grid) -> np.ndarray:
    """2π a₀e f_Z(|k|) / (dx dy) on the (nx, ny//2 + 1) half grid, float64 (V·Å after the
    unnormalised inverse FFT divides by nx·ny)."""
    from ptyro_simul.potentials import A0E

    kx, ky = frequencies(grid)
    k = np.sqrt(kx[:, None] ** 2 + ky[None, :] ** 2)
    f = np.asarray(component.scattering_factor(k, int(z)), np.float64)
    return 2 * np.pi * A0E * f / (grid.sampling[0] * grid.sampling[1])


def slice_capacity(slices: np.ndarray, nslices: int, total: int) -> int:
    """The bucketed largest occupancy of the slice indices ``slices`` (entries outside
    0..nslices-1 do not count), at most ``total``."""
    s = np.asarray(slices).ravel()
    s = s[(s >= 0) & (s < nslices)]
    need = int(np.bincount(s, minlength=nslices).max()) if s.size else 1
    cap = next((b for b in CAPACITY_BUCKETS if b >= need), need)
    return max(1, min(int(total), cap))


def structure_factors(xy: Array, sigmas: Array | None, slices: Array, weights: Array, grid: Grid, nslices: int, capacity: int) -> Array:
    """S(k) (nslices, nx, ny//2 + 1) complex of weighted entries ``xy`` (m, 2) Å in slices
    ``slices`` (m,) int (outside 0..nslices-1: dropped), weights (m,), rms displacements
    ``sigmas`` (m,) Å or None; at most ``capacity`` entries per slice are summed."""
    kx_np, ky_np = frequencies(grid)
    rdtype = xy.dtype
    cdtype = jnp.result_type(rdtype, jnp.complex64)
    kx, ky = jnp.asarray(kx_np, rdtype), jnp.asarray(ky_np, rdtype)
    ex = jnp.exp((-2j * jnp.pi) * (xy[:, 0:1] * kx[None, :]).astype(cdtype))  # (m, nx)
    ey = jnp.exp((-2j * jnp.pi) * (xy[:, 1:2] * ky[None, :]).astype(cdtype))  # (m, nyh)
    if sigmas is not None:
        s2 = (2 * jnp.pi**2) * sigmas[:, None] ** 2
        ex = ex * jnp.exp(-s2 * kx[None, :] ** 2)
        ey = ey * jnp.exp(-s2 * ky[None, :] ** 2)
    ex = ex * weights[:, None].astype(cdtype)
    m = xy.shape[0]
    slices = jnp.where((slices >= 0) & (slices < nslices), slices, nslices).astype(jnp.int32)
    order = jnp.argsort(slices)
    ordered = slices[order]
    start = jnp.searchsorted(ordered, jnp.arange(nslices, dtype=jnp.int32), side="left")
    idx = start[:, None] + jnp.arange(capacity, dtype=jnp.int32)[None, :]  # (S, K)
    idc = jnp.clip(idx, 0, m - 1)
    valid = (idx < m) & (ordered[idc] == jnp.arange(nslices, dtype=jnp.int32)[:, None])
    g = order[idc]
    a = jnp.where(valid[..., None], ex[g], 0)  # (S, K, nx)
    return jnp.einsum("skx,sky->sxy", a, ey[g])


def fourier_slices(
    tables: Sequence[np.ndarray],
    entries: Sequence[tuple[Array, Array | None, Array, Array, int]],
    grid: Grid,
    nslices: int,
) -> Array:
    """Real potential slices (nslices, nx, ny) V·Å: Σ over element groups of table × S(k),
    inverse-transformed. ``entries[i] = (xy, sigmas, slices, weights, capacity)`` of the element
    whose table (from :func:`scattering_table`) is ``tables[i]``."""
    acc = None
    for table, (xy, sig, sl, w, cap) in zip(tables, entries):
        sf = structure_factors(xy, sig, sl, w, grid, nslices, cap)
        term = sf * jnp.asarray(table, xy.dtype)[None]
        acc = term if acc is None else acc + term
    assert acc is not None
    return jnp.fft.irfft2(acc, s=tuple(grid.gpts), axes=(-2, -1))
