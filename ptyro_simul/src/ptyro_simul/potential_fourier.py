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

__all__ = ["frequencies", "scattering_table", "structure_factors", "slice_capacity", "CAPACITY_BUCKETS", "fourier_spectrum", "fourier_slices"]

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


def fourier_spectrum(
    tables: Sequence[np.ndarray],
    entries: Sequence[tuple[Array, Array | None, Array, Array, int]],
    grid: Grid,
    nslices: int,
) -> Array:
    """Σ over element groups of table × S(k): the slices' half spectra (nslices, nx, ny//2 + 1)
    complex. ``entries[i] = (xy, sigmas, slices, weights, capacity)`` of the element whose table
    (from :func:`scattering_table`) is ``tables[i]``."""
    acc = None
    for table, (xy, sig, sl, w, cap) in zip(tables, entries):
        sf = structure_factors(xy, sig, sl, w, grid, nslices, cap)
        term = sf * jnp.asarray(table, xy.dtype)[None]
        acc = term if acc is None else acc + term
    assert acc is not None
    return acc


def fourier_slices(
    tables: Sequence[np.ndarray],
    entries: Sequence[tuple[Array, Array | None, Array, Array, int]],
    grid: Grid,
    nslices: int,
) -> Array:
    """Real potential slices (nslices, nx, ny) V·Å: :func:`fourier_spectrum`, inverse-transformed."""
    return jnp.fft.irfft2(fourier_spectrum(tables, entries, grid, nslices), s=tuple(grid.gpts), axes=(-2, -1))


# --------------------------------------------------------------------------- finite projection
# The part of an atom beyond a plane at distance d ≥ 0 from its centre, ∫_d^∞ V dz, has the 2D
# transform 2π a₀e t(k, d) with t(k, 0) = f(k)/2 and t(k, ∞) = 0 (the component's
# ``tail_factor(k, d, z)``). A slice [b_s, b_s+1] of an atom whose centre lies in slice s_c holds
# F·[s = s_c] + c_s − c_s+1 with F = 2π a₀e f(k) and, per face f, c_f = −t(k, z − b_f) for the
# faces at or below the atom (f ≤ s_c) and +t(k, b_f − z) above it: the infinite projection plus
# face corrections, which telescope (the slices of an atom inside the slab sum to F exactly).
# t is tabulated on nodes d_m = d_s (exp(m Δu) − 1) (fine near the face, where t varies on the
# scale of the pixel) and interpolated linearly in u = log1p(d/d_s)/Δu; an interpolated entry
# is two weighted entries of a "virtual slice" (face, node), so each virtual slice is one
# structure factor (the same separable product as above) times its node's table.

#: node spacing Δu in u = log1p(d / d_s) (interpolation error ~0.03 Δu² of F at any k)
TAIL_DU = 0.2
#: d_s / min(dx, dy): the node scale near the face
TAIL_SCALE = 0.25


def tail_nodes(reach: float, grid: Grid) -> tuple[float, int]:
    """(d_s, number of nodes M) of the d table for an element that reaches ``reach`` Å."""
    d_s = TAIL_SCALE * float(min(grid.sampling))
    return d_s, int(math.ceil(math.log1p(reach / d_s) / TAIL_DU)) + 2


def tail_table(component: Any, z: int, grid: Grid, reach: float) -> np.ndarray:
    """2π a₀e t(k, d_m) / (dx dy) on the half grid at each node, (M, nx, ny//2 + 1) float64; the
    last node (beyond ``reach``) is zero, so the interpolation ends continuously."""
    from ptyro_simul.potentials import A0E

    d_s, m = tail_nodes(reach, grid)
    kx, ky = frequencies(grid)
    k = np.sqrt(kx[:, None] ** 2 + ky[None, :] ** 2)
    nodes = d_s * np.expm1(TAIL_DU * np.arange(m))
    t = np.stack([np.asarray(component.tail_factor(k, float(d), int(z)), np.float64) for d in nodes[:-1]] + [np.zeros_like(k)])
    return 2 * np.pi * A0E * t / (grid.sampling[0] * grid.sampling[1])


def face_layout(z: Any, s_c: Any, bounds: Any, reach: float, grid: Grid, min_dz: float) -> tuple[Any, Any]:
    """(face (n, O), node (n, O)) int32: the faces within ``reach`` of each atom (−1 where none)
    and the lower interpolation node of its distance; numpy or jax (no gradient)."""
    xp = np if isinstance(z, np.ndarray) else jnp
    d_s, m = tail_nodes(reach, grid)
    n_off = int(math.ceil(reach / min_dz))
    nfaces = bounds.shape[0]
    face = s_c[:, None] + xp.arange(-n_off, n_off + 2)[None, :]
    fc = xp.clip(face, 0, nfaces - 1)
    d = xp.abs(bounds[fc] - z[:, None])
    node = xp.clip(xp.floor(xp.log1p(d / d_s) / TAIL_DU).astype(xp.int32), 0, m - 2)
    valid = (face >= 0) & (face < nfaces) & (d < d_s * math.expm1(TAIL_DU * (m - 1)))
    return xp.where(valid, fc, -1).astype(xp.int32), node


def virtual_plan(face: np.ndarray, node: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Host: the occupied (face, node) virtual slices, numbered compactly. Returns (vid_lo,
    vid_hi) (n, O) (−1 where unused), the face and node of each virtual slice (padded to a
    bucketed count V with face −1), and V."""
    ok = face >= 0
    raw = np.concatenate([np.where(ok, face * m + node, -1).ravel(), np.where(ok, face * m + node + 1, -1).ravel()])
    used = np.unique(raw[raw >= 0])
    count = next((b for b in CAPACITY_BUCKETS if b >= used.size), max(1, used.size))
    index = np.full(int(face.max(initial=0) + 1) * m + 1, -1, np.int64)
    index[used] = np.arange(used.size)
    lo = np.where(ok, index[np.where(ok, face * m + node, 0)], -1).astype(np.int32)
    hi = np.where(ok, index[np.where(ok, face * m + node + 1, 0)], -1).astype(np.int32)
    v_face = np.full(count, -1, np.int32)
    v_node = np.zeros(count, np.int32)
    v_face[: used.size], v_node[: used.size] = used // m, used % m
    return lo, hi, v_face, v_node, int(count)


def face_corrections(
    xy: Array,
    z: Array,
    s_c: Array,
    bounds: Array,
    layout: tuple[Array, Array, Array, Array, Array, Array],
    table: np.ndarray,
    reach: float,
    grid: Grid,
    nslices: int,
    n_virtual: int,
    capacity: int,
) -> Array:
    """The finite projection's face corrections c_s − c_s+1 of one element's atoms (positions
    ``xy`` (n, 2), ``z`` (n,), centre slices ``s_c``), half spectra (nslices, nx, ny//2 + 1).
    ``layout`` = (face, node, vid_lo, vid_hi, v_face, v_node) from :func:`face_layout` and
    :func:`virtual_plan`; differentiable in ``xy`` and ``z``."""
    face, node, vid_lo, vid_hi, v_face, v_node = layout
    d_s, _ = tail_nodes(reach, grid)
    ok = face >= 0
    d = jnp.abs(bounds[jnp.maximum(face, 0)] - z[:, None])
    t = jnp.log1p(d / d_s) / TAIL_DU - node.astype(z.dtype)
    sign = jnp.where(face <= s_c[:, None], -1.0, 1.0).astype(z.dtype)
    w = jnp.concatenate([jnp.where(ok, sign * (1 - t), 0).ravel(), jnp.where(ok, sign * t, 0).ravel()])
    n, o = face.shape
    pts = jnp.broadcast_to(xy[:, None, :], (n, o, 2)).reshape(n * o, 2)
    sf = structure_factors(jnp.concatenate([pts, pts]), None, jnp.concatenate([vid_lo.ravel(), vid_hi.ravel()]), w, grid, n_virtual, capacity)
    term = sf * jnp.asarray(table, z.dtype)[v_node]
    c = jnp.zeros((nslices + 1,) + term.shape[1:], term.dtype).at[jnp.where(v_face >= 0, v_face, nslices + 1)].add(term, mode="drop")
    return c[:-1] - c[1:]
