"""Calibration of raw 4D-STEM data: what a detector file does not say, found from the patterns.

Pure functions on arrays (numpy or JAX); those that act on every pattern (:func:`center_of_mass`,
:func:`shift_patterns`, :func:`recentre`, :func:`repair_pixels`) are written with ``jax.numpy``
and can be ``jit``-ed and ``vmap``-ed; the fits (a few numbers from a few arrays) use numpy.

Conventions (``../shared/DESIGN.md``): array axis 0 is x; pixel coordinates are array indices
(the centred zero frequency of an ``n``-pixel axis is at index ``n // 2``); scan arrays are
(Rx, Ry, ...). A scan *rotation* θ (degrees, counter-clockwise from x towards y) and a
*transpose* describe where the raster lies in the detector's frame, as
:func:`raster_positions` builds it: the raster (i·step_x, j·step_y) — or (j·step_x, i·step_y)
when transposed — rotated by θ about its centre. This is the convention of
``[scan] rotation`` in the configurations.

Physics used (checked in the tests against analytic fields): the centre of mass of a pattern of
a thin specimen is (1/2π)·∇φ in cycles per Å (the detector's forward FFT, numpy's sign), a
gradient field, so its curl vanishes in the right frame: the rotation and transpose are those
that minimise the curl (py4DSTEM's method). The curl is taken in Fourier space (the field's
component across k̂, weighted by the signal-to-noise power of each frequency, so that counting
noise does not swamp it) and is linear in (cos θ, sin θ): the minimum over θ is the smallest
eigenvector of a 2×2 quadratic form, exact, no angle grid. A
curl cannot tell θ from θ + 180°; that is decided by the sign of the integrated phase: thin
specimens of atoms give sparse positive phase peaks, so the phase's skewness must be positive.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import PtyroValueError

__all__ = [
    "DiscFit",
    "RotationFit",
    "center_of_mass",
    "bright_field_disc",
    "fit_descan",
    "shift_patterns",
    "recentre",
    "raster_positions",
    "dpc_curl",
    "scan_rotation",
    "icom_phase",
    "find_bad_pixels",
    "repair_pixels",
]


class DiscFit(NamedTuple):
    """The bright-field disc of a (mean) pattern: centre (x, y) in pixel indices, radius in pixels."""

    center: tuple[float, float]
    radius: float


class RotationFit(NamedTuple):
    """Scan rotation (degrees, in [0, 360)) and transpose from the DPC field's curl.

    ``curl`` is the relative curl ``Σcurl² / Σ(curl² + div²)`` (0 for a pure gradient, 0.5 for
    an unrelated frame) at the found frame; ``angles`` (degrees) with ``curl_plain`` and
    ``curl_transposed`` are the whole curve for a figure; ``skew`` is the skewness of the
    integrated phase that fixed the 180° ambiguity."""

    rotation: float
    transpose: bool
    curl: float
    angles: np.ndarray
    curl_plain: np.ndarray
    curl_transposed: np.ndarray
    skew: float


def _check_pattern_stack(name: str, a: Any, min_ndim: int = 2) -> None:
    if getattr(a, "ndim", 0) < min_ndim:
        raise PtyroValueError(f"{name}: expected an array of at least {min_ndim} dimensions (..., Qx, Qy), got shape {tuple(getattr(a, 'shape', ()))}")


def center_of_mass(patterns: Any, mask: Any = None) -> jax.Array:
    """Centre of mass of each pattern, (..., 2) in pixel indices (x = axis −2, y = axis −1).

    ``mask`` (Qx, Qy), optional, weights the pixels (1 keeps, 0 drops). A pattern that sums to
    zero gives the detector centre (n // 2). ``jit``-able."""
    _check_pattern_stack("center_of_mass", patterns)
    p = jnp.asarray(patterns, jnp.float32)
    if mask is not None:
        p = p * jnp.broadcast_to(jnp.asarray(mask, jnp.float32), p.shape)
    nx, ny = p.shape[-2:]
    tot = jnp.sum(p, axis=(-2, -1))
    safe = jnp.where(tot > 0, tot, 1.0)
    cx = jnp.einsum("...xy,x->...", p, jnp.arange(nx, dtype=jnp.float32)) / safe
    cy = jnp.einsum("...xy,y->...", p, jnp.arange(ny, dtype=jnp.float32)) / safe
    cx = jnp.where(tot > 0, cx, nx // 2)
    cy = jnp.where(tot > 0, cy, ny // 2)
    return jnp.stack([cx, cy], axis=-1)


def bright_field_disc(mean_pattern: Any, *, threshold: float = 0.5) -> DiscFit:
    """Centre and radius of the bright-field disc of a pattern (usually the mean pattern).

    The plateau is the median of the pixels above ``threshold`` × the maximum, the background
    the median of the rest; each pixel is weighted by its fraction of the way from background
    to plateau (clipped to [0, 1]), so the centre is that weight's centroid and the radius
    √(Σweight/π), both sub-pixel. Raises when no disc stands out."""
    m = np.asarray(mean_pattern, np.float64)
    if m.ndim != 2:
        raise PtyroValueError(f"bright_field_disc: expected a 2D pattern (Qx, Qy), got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise PtyroValueError("bright_field_disc: the pattern has non-finite values; expected finite intensities")
    top = float(m.max())
    bright = m > threshold * top
    if top <= 0 or bright.sum() < 3:
        raise PtyroValueError(
            f"bright_field_disc: no bright-field disc found (max {top:.3g}, {int(bright.sum())} pixels above {threshold} of it); expected a pattern with a bright central disc"
        )
    plateau = float(np.median(m[bright]))
    bg = float(np.median(m[~bright])) if (~bright).any() else 0.0
    if plateau <= bg:
        raise PtyroValueError(f"bright_field_disc: the disc plateau {plateau:.3g} is not above the background {bg:.3g}; expected a bright central disc")
    w = np.clip((m - bg) / (plateau - bg), 0.0, 1.0)
    # weights far from the disc are dark-field scattering, not disc: keep a generous window
    x, y = np.nonzero(bright)
    c0 = np.array([x.mean(), y.mean()])
    r0 = math.sqrt(bright.sum() / math.pi)
    xx, yy = np.meshgrid(np.arange(m.shape[0]), np.arange(m.shape[1]), indexing="ij")
    w = np.where((xx - c0[0]) ** 2 + (yy - c0[1]) ** 2 <= (1.5 * r0 + 2.0) ** 2, w, 0.0)
    area = float(w.sum())
    cx = float((w * xx).sum() / area)
    cy = float((w * yy).sum() / area)
    return DiscFit((cx, cy), math.sqrt(area / math.pi))


def fit_descan(com: Any, mode: str = "plane", *, weights: Any = None) -> np.ndarray:
    """The descan (the pattern centre the beam would have without a specimen) at each scan
    position, (Rx, Ry, 2), from per-pattern centres of mass ``com`` (Rx, Ry, 2).

    ``mode``: ``"plane"`` fits c = a + b·i + c·j per component by least squares (a linear
    descan; the specimen's DPC signal averages out but for its mean over the scan and its linear
    trend, which the plane takes too: re-centred patterns no longer say what the object's mean
    phase gradient is, so ``ptyro_workflows`` removes the reconstructed phase plane); ``"free"`` keeps each position's own centre
    (every pattern centred on its own centre of mass: removes the DPC signal too, for data whose
    descan is not linear); ``"constant"`` is the mean centre. ``weights`` (Rx, Ry) optional."""
    c = np.asarray(com, np.float64)
    if c.ndim != 3 or c.shape[-1] != 2:
        raise PtyroValueError(f"fit_descan: expected centres of shape (Rx, Ry, 2), got {c.shape}")
    if mode == "free":
        return c.copy()
    rx, ry = c.shape[:2]
    w = np.ones((rx, ry)) if weights is None else np.asarray(weights, np.float64)
    if mode == "constant":
        mean = (c * w[..., None]).sum(axis=(0, 1)) / w.sum()
        return np.broadcast_to(mean, c.shape).copy()
    if mode != "plane":
        raise PtyroValueError(f"fit_descan: unknown mode {mode!r}; expected 'plane', 'free' or 'constant'")
    ii, jj = np.meshgrid(np.arange(rx, dtype=np.float64), np.arange(ry, dtype=np.float64), indexing="ij")
    a = np.stack([np.ones(rx * ry), ii.ravel(), jj.ravel()], axis=1)
    sw = np.sqrt(w.ravel())[:, None]
    coef, *_ = np.linalg.lstsq(a * sw, c.reshape(-1, 2) * sw, rcond=None)
    return (a @ coef).reshape(rx, ry, 2)


def shift_patterns(patterns: Any, shifts: Any, method: str = "linear") -> jax.Array:
    """Each pattern moved by ``shifts`` (..., 2) pixels (x, y), sub-pixel. ``jit``-able.

    ``method="linear"`` (default): the whole-pixel part exactly, the fraction by linear
    interpolation between the two neighbouring whole-pixel shifts (a convex combination:
    counts stay non-negative, their sum and centre of mass move exactly; a slight blur of at
    most half a pixel). ``"fourier"``: the shift theorem, exact for band-limited patterns, but a
    sharp disc edge rings and the negative lobes are clipped to 0, which moves the centre of mass
    of counted data by a few hundredths of a pixel (measured): too much for the DPC signal of a
    defocused probe. Both are circular (the detector's edges are assumed dark)."""
    if method not in ("linear", "fourier"):
        raise PtyroValueError(f"shift_patterns: unknown method {method!r}; expected 'linear' or 'fourier'")
    _check_pattern_stack("shift_patterns", patterns)
    p = jnp.asarray(patterns, jnp.float32)
    s = jnp.asarray(shifts, jnp.float32)
    nx, ny = p.shape[-2:]
    s = jnp.broadcast_to(s, p.shape[:-2] + (2,))
    lead = (1,) * (p.ndim - 2)
    kx = jnp.fft.fftfreq(nx).astype(jnp.float32).reshape(lead + (nx, 1))
    ky = jnp.fft.fftfreq(ny).astype(jnp.float32).reshape(lead + (1, ny))
    sx, sy = s[..., 0, None, None], s[..., 1, None, None]
    if method == "fourier":
        tx = jnp.exp(-2j * jnp.pi * sx * kx)
        ty = jnp.exp(-2j * jnp.pi * sy * ky)
    else:
        ix, iy = jnp.floor(sx), jnp.floor(sy)
        fx, fy = sx - ix, sy - iy
        tx = jnp.exp(-2j * jnp.pi * ix * kx) * ((1 - fx) + fx * jnp.exp(-2j * jnp.pi * kx))
        ty = jnp.exp(-2j * jnp.pi * iy * ky) * ((1 - fy) + fy * jnp.exp(-2j * jnp.pi * ky))
    out = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(p) * tx * ty))
    out = jnp.maximum(out, 0.0)
    before = jnp.sum(p, axis=(-2, -1), keepdims=True)
    after = jnp.sum(out, axis=(-2, -1), keepdims=True)
    return out * jnp.where(after > 0, before / jnp.where(after > 0, after, 1.0), 1.0)


def recentre(patterns: Any, centers: Any, method: str = "linear") -> jax.Array:
    """Patterns moved so that ``centers`` (..., 2), pixel indices, land on the detector centre
    (nx // 2, ny // 2), as the forward models expect (``method``: see :func:`shift_patterns`).
    ``jit``-able."""
    _check_pattern_stack("recentre", patterns)
    nx, ny = patterns.shape[-2:]
    c = jnp.asarray(centers, jnp.float32)
    target = jnp.broadcast_to(jnp.asarray([nx // 2, ny // 2], jnp.float32), c.shape)
    return shift_patterns(patterns, target - c, method)


def raster_positions(scan_shape: tuple[int, int], step: tuple[float, float], rotation: float = 0.0, transpose: bool = False) -> np.ndarray:
    """Scan positions (Rx·Ry, 2) Å, row-major over (Rx, Ry): the raster (i·step_x, j·step_y) —
    (j·step_x, i·step_y) when ``transpose`` — rotated by ``rotation`` degrees about its centre."""
    rx, ry = (int(s) for s in scan_shape)
    ii, jj = np.meshgrid(np.arange(rx, dtype=np.float64), np.arange(ry, dtype=np.float64), indexing="ij")
    a, b = (jj, ii) if transpose else (ii, jj)
    pos = np.stack([a.ravel() * step[0], b.ravel() * step[1]], axis=-1)
    c = pos.mean(axis=0, keepdims=True)
    t = math.radians(rotation)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (pos - c) @ r.T + c


def _scan_directions(rotation: float, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (detector frame) of the scan's i and j directions, as :func:`raster_positions`."""
    t = math.radians(rotation)
    ex, ey = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    return (ey, ex) if transpose else (ex, ey)


def _scan_components(dpc: np.ndarray, rotation: float, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    u, v = _scan_directions(rotation, transpose)
    return dpc @ u, dpc @ v


def _mirror(a: np.ndarray, odd_axis: int) -> np.ndarray:
    """(2Rx, 2Ry) extension of a scan-frame field component: mirrored about the scan's edges
    (half-sample), with a sign change across ``odd_axis``, as the derivative along that axis of
    an evenly mirrored phase is: the extended field of a gradient stays a gradient, with no
    edge jumps for the FFT."""
    s0 = -1.0 if odd_axis == 0 else 1.0
    s1 = -1.0 if odd_axis == 1 else 1.0
    top = np.concatenate([a, s1 * a[:, ::-1]], axis=1)
    return np.concatenate([top, s0 * top[::-1, :]], axis=0)


def _spectra(dpc: np.ndarray, step: tuple[float, float]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Fourier transforms of the detector components (x, y) of the DPC field, mirrored as a
    field's i component (``"ix"``, ``"iy"``) and j component (``"jx"``, ``"jy"``) would be;
    the frequencies k_i, k_j and a weight per frequency: the signal-to-noise power (the power
    over its median, less 1, at least 0), so that white counting noise does not swamp the curl."""
    d = np.asarray(dpc, np.float64)
    if d.ndim != 3 or d.shape[-1] != 2 or min(d.shape[:2]) < 3:
        raise PtyroValueError(f"scan_rotation: expected a DPC field of shape (Rx, Ry, 2) with Rx, Ry >= 3, got {d.shape}")
    d = d - d.mean(axis=(0, 1))
    f = {f"{ax}{c}": np.fft.fft2(_mirror(d[..., n], k)) for ax, k in (("i", 0), ("j", 1)) for n, c in enumerate("xy")}
    rx, ry = d.shape[:2]
    ki = np.fft.fftfreq(2 * rx, d=step[0])[:, None]
    kj = np.fft.fftfreq(2 * ry, d=step[1])[None, :]
    power = sum(np.abs(v) ** 2 for v in f.values())
    w = np.maximum(power / max(float(np.median(power)), 1e-300) - 1.0, 0.0)
    w[0, 0] = 0.0
    return f, ki, kj, w


def _curl_forms(dpc: np.ndarray, step: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, float]:
    """curl(θ) = cosθ·P + sinθ·Q for each transpose, in Fourier space (k̂_i ĝ_j − k̂_j ĝ_i of
    the mirrored field, weighted): the 2×2 forms [[PP, PQ], [PQ, QQ]] and the field's weighted
    energy Σ(|ĝ_i|² + |ĝ_j|²), θ-independent, to normalise them."""
    f, ki, kj, w = _spectra(dpc, step)
    kk = np.hypot(ki, kj)
    kk[0, 0] = np.inf
    sw = np.sqrt(w)
    ui, uj = ki / kk * sw, kj / kk * sw
    # plain: g_i = c·x + s·y, g_j = −s·x + c·y → curl = c(k̂i ĝj,y − k̂j ĝi,x) − s(k̂i ĝj,x + k̂j ĝi,y)
    p0, q0 = ui * f["jy"] - uj * f["ix"], -(ui * f["jx"] + uj * f["iy"])
    # transposed: g_i = −s·x + c·y, g_j = c·x + s·y → curl = c(k̂i ĝj,x − k̂j ĝi,y) + s(k̂i ĝj,y + k̂j ĝi,x)
    p1, q1 = ui * f["jx"] - uj * f["iy"], ui * f["jy"] + uj * f["ix"]

    def dot(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sum(np.real(np.conj(a) * b)))

    forms = [np.array([[dot(p, p), dot(p, q)], [dot(p, q), dot(q, q)]]) for p, q in ((p0, q0), (p1, q1))]
    total = 0.5 * float(np.sum(w * sum(np.abs(v) ** 2 for v in f.values())))
    return forms[0], forms[1], total


def dpc_curl(dpc: Any, rotation: float, transpose: bool = False, *, step: tuple[float, float] = (1.0, 1.0)) -> float:
    """Relative curl Σcurl²/Σ(curl² + div²) of the DPC field ``dpc`` (Rx, Ry, 2, detector
    frame, e.g. centres of mass minus the descan) seen in the scan frame given by ``rotation``
    (degrees) and ``transpose``: 0 for a gradient field in the right frame."""
    plain, trans, total = _curl_forms(np.asarray(dpc, np.float64), step)
    f = trans if transpose else plain
    t = math.radians(rotation)
    cs = np.array([math.cos(t), math.sin(t)])
    return float(cs @ f @ cs / total) if total > 0 else 0.0


def icom_phase(dpc: Any, rotation: float, transpose: bool = False, *, step: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Integrated centre of mass (Rx, Ry): φ with ∇φ = the DPC field's scan-frame components,
    by Fourier integration of the mirrored field (no edge jumps; mean 0). With the DPC field in
    cycles/Å and ``step`` in Å this is the phase / 2π."""
    d = np.asarray(dpc, np.float64)
    gi, gj = _scan_components(d - d.mean(axis=(0, 1)), rotation, transpose)
    rx, ry = gi.shape
    ki = np.fft.fftfreq(2 * rx, d=step[0])[:, None]
    kj = np.fft.fftfreq(2 * ry, d=step[1])[None, :]
    k2 = ki**2 + kj**2
    k2[0, 0] = 1.0
    ph = (ki * np.fft.fft2(_mirror(gi, 0)) + kj * np.fft.fft2(_mirror(gj, 1))) / (2j * np.pi * k2)
    ph[0, 0] = 0.0
    out = np.real(np.fft.ifft2(ph))[:rx, :ry]
    return out - out.mean()


def _skew(a: np.ndarray) -> float:
    a = a - a.mean()
    s = a.std()
    return float(np.mean(a**3) / s**3) if s > 0 else 0.0


def scan_rotation(dpc: Any, *, step: tuple[float, float] = (1.0, 1.0), resolve_180: bool = True) -> RotationFit:
    """Scan rotation and transpose from the curl of the DPC field ``dpc`` (Rx, Ry, 2) in the
    detector frame (centres of mass minus the descan; any units).

    The frame that minimises the relative curl wins (exactly, from the 2×2 forms); θ and
    θ + 180° have the same curl and are told apart by the skewness of :func:`icom_phase`
    (positive for atoms) unless ``resolve_180`` is False."""
    d = np.asarray(dpc, np.float64)
    plain, trans, total = _curl_forms(d, step)
    if total <= 0:
        raise PtyroValueError("scan_rotation: the DPC field is constant (no curl nor divergence); expected a specimen that deflects the beam")
    best = []
    for f, tr in ((plain, False), (trans, True)):
        vals, vecs = np.linalg.eigh(f)
        v = vecs[:, 0]
        best.append((vals[0] / total, math.degrees(math.atan2(v[1], v[0])) % 180.0, tr))
    curl, rot, tr = min(best)
    ph = icom_phase(d, rot, tr, step=step)
    sk = _skew(ph)
    if resolve_180 and sk < 0:
        rot, sk = rot + 180.0, -sk
    angles = np.arange(0.0, 180.0, 0.5)
    cs = np.stack([np.cos(np.radians(angles)), np.sin(np.radians(angles))], -1)
    curves = [np.einsum("ai,ij,aj->a", cs, f, cs) / total for f in (plain, trans)]
    return RotationFit(float(rot % 360.0), bool(tr), float(curl), angles, curves[0], curves[1], float(sk))


def _neighbours(img: np.ndarray) -> np.ndarray:
    """The 8 neighbours of each pixel, (8, nx, ny), edges reflected."""
    p = np.pad(img, 1, mode="reflect")
    nx, ny = img.shape
    return np.stack([p[1 + dx : 1 + dx + nx, 1 + dy : 1 + dy + ny] for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy])


def find_bad_pixels(
    mean_pattern: Any, *, n_frames: int = 1, ratio: float = 3.0, nsigma: float = 8.0, dead_counts: float = 25.0
) -> tuple[np.ndarray, np.ndarray]:
    """Hot and dead pixels of a detector from its mean pattern (over ``n_frames`` patterns of
    counts): boolean masks ``(hot, dead)`` of shape (Qx, Qy).

    Hot: brighter than ``ratio`` × the brightest of its 8 neighbours *and* by more than
    ``nsigma`` Poisson standard deviations of that neighbour (a disc edge or a Bragg spot is
    never ``ratio`` × brighter than all its neighbours). Dead: below 2 % of its neighbours'
    median where that median means at least ``dead_counts`` counts summed over the frames."""
    m = np.asarray(mean_pattern, np.float64)
    if m.ndim != 2 or min(m.shape) < 3:
        raise PtyroValueError(f"find_bad_pixels: expected a 2D pattern of at least 3x3 pixels, got shape {m.shape}")
    if n_frames < 1:
        raise PtyroValueError(f"find_bad_pixels: n_frames must be >= 1, got {n_frames}")
    nb = _neighbours(m)
    mx = nb.max(axis=0)
    med = np.median(nb, axis=0)
    sigma = np.sqrt((mx + 1.0 / n_frames) / n_frames)
    hot = (m > ratio * mx) & (m - mx > nsigma * sigma)
    dead = (m < 0.02 * med) & (med * n_frames >= dead_counts)
    return hot, dead


def repair_pixels(patterns: Any, bad: Any) -> jax.Array:
    """Patterns with the ``bad`` pixels (Qx, Qy) boolean replaced by the mean of their good
    3×3 neighbours (0 where none is good). ``jit``-able."""
    _check_pattern_stack("repair_pixels", patterns)
    p = jnp.asarray(patterns, jnp.float32)
    b = jnp.broadcast_to(jnp.asarray(bad, bool), p.shape)
    nx, ny = p.shape[-2:]
    good = (~b).astype(jnp.float32)
    pad = [(0, 0)] * (p.ndim - 2) + [(1, 1), (1, 1)]
    pp = jnp.pad(p * good, pad)
    gp = jnp.pad(good, pad)
    s = sum(pp[..., 1 + dx : 1 + dx + nx, 1 + dy : 1 + dy + ny] for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy)
    n = sum(gp[..., 1 + dx : 1 + dx + nx, 1 + dy : 1 + dy + ny] for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy)
    fill = s / jnp.where(n > 0, n, 1.0)
    return jnp.where(b, fill, p)
