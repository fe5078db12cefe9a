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

import functools
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


def structure_factors(xy: Array, sigmas: Array | None, slices: Array, weights: Array, grid: Grid, nslices: int, capacity: int, crop: Any = None) -> Array:
    """S(k) (nslices, nx, ny//2 + 1) complex of weighted entries ``xy`` (m, 2) Å in slices
    ``slices`` (m,) int (outside 0..nslices-1: dropped), weights (m,), rms displacements
    ``sigmas`` (m,) Å or None; at most ``capacity`` entries per slice are summed. ``crop`` =
    (x indices, y indices) of the half grid: S on that sub-grid only."""
    kx_np, ky_np = frequencies(grid)
    if crop is not None:
        kx_np, ky_np = kx_np[crop[0]], ky_np[crop[1]]
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
# structure factor (the same separable product as above) times its node's table. t(k, d) falls
# as exp(−2π d k): the nodes from which it is below 1e-4 of f(k) beyond a quarter of the grid's
# largest frequency (d ≳ 1 Å at 0.1 Å pixels) are summed on that sub-grid only (1/16 of the work).

#: node spacing Δu in u = log1p(d / d_s) (interpolation error ~0.03 Δu² of F at any k)
TAIL_DU = 0.2
#: d_s / min(dx, dy): the node scale near the face
TAIL_SCALE = 0.25


def tail_nodes(reach: float, grid: Grid) -> tuple[float, int]:
    """(d_s, number of nodes M) of the d table for an element that reaches ``reach`` Å."""
    d_s = TAIL_SCALE * float(min(grid.sampling))
    return d_s, int(math.ceil(math.log1p(reach / d_s) / TAIL_DU)) + 2


#: the far nodes' corrections are summed on the frequencies |kx|, ky ≤ this fraction of the
#: grid's largest (their t(k, d) beyond it is below TAIL_CROP_TOL of f(k))
TAIL_CROP = 0.25
TAIL_CROP_TOL = 1e-4


@functools.lru_cache(maxsize=64)
def tail_setup(component: Any, z: int, grid: Grid, reach: float) -> tuple[np.ndarray, int, tuple[np.ndarray, np.ndarray]]:
    """(table, m_split, crop): 2π a₀e t(k, d_m) / (dx dy) on the half grid at each node, (M, nx,
    ny//2 + 1) float64, its last node (beyond ``reach``) zero so the interpolation ends
    continuously; the first node from which every table is below TAIL_CROP_TOL of f(k) outside
    the crop; the crop's (x, y) indices."""
    from ptyro_simul.potentials import A0E

    d_s, m = tail_nodes(reach, grid)
    kx, ky = frequencies(grid)
    k = np.sqrt(kx[:, None] ** 2 + ky[None, :] ** 2)
    nodes = d_s * np.expm1(TAIL_DU * np.arange(m))
    t = np.stack([np.asarray(component.tail_factor(k, float(d), int(z)), np.float64) for d in nodes[:-1]] + [np.zeros_like(k)])
    kc = TAIL_CROP * min(np.abs(kx).max(), ky.max())
    ix, iy = np.nonzero(np.abs(kx) <= kc)[0], np.nonzero(ky <= kc)[0]
    outside = np.ones(k.shape, bool)
    outside[np.ix_(ix, iy)] = False
    ratio = np.max(np.abs(t[:, outside]) / np.maximum(np.abs(t[0, outside]), 1e-300), axis=1) if outside.any() else np.zeros(m)
    small = ratio <= 2 * TAIL_CROP_TOL  # t(k, 0) = f(k)/2
    m_split = m
    while m_split > 1 and small[m_split - 1]:
        m_split -= 1
    return 2 * np.pi * A0E * t / (grid.sampling[0] * grid.sampling[1]), int(m_split), (ix, iy)


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


def virtual_plan(face: np.ndarray, node: np.ndarray, m: int, m_split: int) -> tuple[tuple[np.ndarray, ...], tuple[tuple[int, int], ...]]:
    """Host: the occupied (face, node) virtual slices, numbered compactly in two tiers (nodes
    below ``m_split``: the whole grid; from it on: the crop). Returns, per tier, (ids of the
    lower-node entries, ids of the upper-node entries) (n, O) (−1 where unused or in the other
    tier), the face and node of each virtual slice (padded to a bucketed count with face −1),
    and per tier (count, capacity); count 0 when the tier is empty."""
    ok = face >= 0
    arrays: list[np.ndarray] = []
    sizes = []
    for lo_node, hi_node in ((0, m_split), (m_split, m)):
        width = hi_node - lo_node
        ids = []
        for nd in (node, node + 1):
            inside = ok & (nd >= lo_node) & (nd < hi_node)
            ids.append(np.where(inside, face * max(width, 1) + nd - lo_node, -1))
        raw = np.concatenate([i.ravel() for i in ids])
        used = np.unique(raw[raw >= 0])
        count = next((b for b in CAPACITY_BUCKETS if b >= used.size), used.size) if used.size else 0
        index = np.full(int(face.max(initial=0) + 2) * max(width, 1) + 1, -1, np.int64)
        index[used] = np.arange(used.size)
        both = [np.where(i >= 0, index[np.maximum(i, 0)], -1).astype(np.int32) for i in ids]
        v_face = np.full(max(count, 1), -1, np.int32)
        v_node = np.zeros(max(count, 1), np.int32)
        v_face[: used.size], v_node[: used.size] = used // max(width, 1), used % max(width, 1) + lo_node
        flat = np.concatenate([b.ravel() for b in both])
        cap = slice_capacity(flat, count, flat.size) if count else 0
        arrays += [*both, v_face, v_node]
        sizes.append((int(count), int(cap)))
    return tuple(arrays), tuple(sizes)


def traced_plan(face: Array, node: Array, nfaces: int, m: int, m_split: int) -> tuple[tuple[Array, ...], tuple[tuple[int, int], ...]]:
    """In a trace: :func:`virtual_plan` with every (face, node) pair of each tier a virtual slice."""
    ok = face >= 0
    arrays: list[Array] = []
    sizes = []
    for lo_node, hi_node in ((0, m_split), (m_split, m)):
        width = hi_node - lo_node
        for nd in (node, node + 1):
            arrays.append(jnp.where(ok & (nd >= lo_node) & (nd < hi_node), face * max(width, 1) + nd - lo_node, -1))
        v = jnp.arange(nfaces * max(width, 1), dtype=jnp.int32)
        arrays += [jnp.where(width > 0, v // max(width, 1), -1), v % max(width, 1) + lo_node]
        sizes.append((nfaces * width, 2 * face.size if width else 0))
    return tuple(arrays), tuple(sizes)


def face_corrections(
    xy: Array,
    z: Array,
    s_c: Array,
    bounds: Array,
    layout: tuple[Array, ...],
    sizes: tuple[tuple[int, int], ...],
    setup: tuple[np.ndarray, int, tuple[np.ndarray, np.ndarray]],
    reach: float,
    grid: Grid,
    nslices: int,
) -> Array:
    """The finite projection's face corrections c_s − c_s+1 of one element's atoms (positions
    ``xy`` (n, 2), ``z`` (n,), centre slices ``s_c``), half spectra (nslices, nx, ny//2 + 1).
    ``layout`` = (face, node, then per tier: lo ids, hi ids, v_face, v_node) from
    :func:`face_layout` and :func:`virtual_plan` (or :func:`traced_plan`), ``sizes`` its
    (count, capacity) per tier, ``setup`` from :func:`tail_setup`; differentiable in ``xy`` and
    ``z``."""
    face, node = layout[0], layout[1]
    table, _m_split, (ix, iy) = setup
    d_s, _ = tail_nodes(reach, grid)
    ok = face >= 0
    d = jnp.abs(bounds[jnp.maximum(face, 0)] - z[:, None])
    t = jnp.log1p(d / d_s) / TAIL_DU - node.astype(z.dtype)
    sign = jnp.where(face <= s_c[:, None], -1.0, 1.0).astype(z.dtype)
    w = jnp.concatenate([jnp.where(ok, sign * (1 - t), 0).ravel(), jnp.where(ok, sign * t, 0).ravel()])
    n, o = face.shape
    pts = jnp.broadcast_to(xy[:, None, :], (n, o, 2)).reshape(n * o, 2)
    pts = jnp.concatenate([pts, pts])
    nyh = table.shape[2]
    c = jnp.zeros((nslices + 1, table.shape[1], nyh), jnp.result_type(z.dtype, jnp.complex64))
    for tier, (count, cap) in enumerate(sizes):
        if count == 0:
            continue
        lo, hi, v_face, v_node = layout[2 + 4 * tier : 6 + 4 * tier]
        crop = None if tier == 0 else (ix, iy)
        sf = structure_factors(pts, None, jnp.concatenate([lo.ravel(), hi.ravel()]), w, grid, count, cap, crop=crop)
        tab = table if crop is None else table[:, ix][:, :, iy]
        term = sf * jnp.asarray(tab, z.dtype)[v_node]
        fi = jnp.where(v_face >= 0, v_face, nslices + 1)
        if crop is None:
            c = c.at[fi].add(term, mode="drop")
        else:
            c = c.at[fi[:, None, None], jnp.asarray(ix)[None, :, None], jnp.asarray(iy)[None, None, :]].add(term, mode="drop")
    return c[:-1] - c[1:]
