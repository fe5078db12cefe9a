"""Detectors: each reduces a batch of centred diffraction patterns (b, nx, ny) (unitary FFT of
the exit wave, so a pattern sums to the transmitted fraction, 1 for a normalised probe that
scatters nothing outside the band limit) to its signal, so every detector of a run is computed
from the same patterns without re-simulating.

Angles: pattern pixel (i, j) is at spatial frequency ((i − nx//2)/(nx·dx), (j − ny//2)/(ny·dy))
Å⁻¹, i.e. scattering angle λ·k (mrad ×1000); azimuth φ = atan2(ky, kx) measured from the x axis
(array axis 0) towards y, in radians.
"""

import math
from typing import Any

import attrs
import jax.numpy as jnp
from jax import Array

from ptyro_core import Grid, PtyroValueError
from ptyro_simul.constants import energy2wavelength

__all__ = ["PixelatedDetector", "AnnularDetector", "SegmentedDetector", "COMDetector", "scattering_angles"]


def scattering_angles(grid: Grid, energy: float, dtype: Any = jnp.float32) -> tuple[Array, Array]:
    """(αx, αy) in mrad of the pixels of a centred pattern, shapes (nx, 1) and (1, ny)."""
    lam = energy2wavelength(energy)
    kx = (jnp.arange(grid.gpts[0], dtype=dtype) - grid.gpts[0] // 2) / grid.extent[0]
    ky = (jnp.arange(grid.gpts[1], dtype=dtype) - grid.gpts[1] // 2) / grid.extent[1]
    return (kx * lam * 1e3)[:, None], (ky * lam * 1e3)[None, :]


def _check_patterns(patterns: Any, grid: Grid) -> Array:
    p = jnp.asarray(patterns)
    if p.ndim != 3 or tuple(p.shape[-2:]) != tuple(grid.gpts):
        raise PtyroValueError(f"patterns: expected (b, {grid.gpts[0]}, {grid.gpts[1]}), got shape {p.shape}")
    return p


def _angles(inner: float, outer: float, what: str) -> tuple[float, float]:
    i, o = float(inner), float(outer)
    if not (math.isfinite(i) and math.isfinite(o) and 0 <= i < o):
        raise PtyroValueError(f"{what}: expected 0 <= inner < outer (mrad), got inner={inner!r}, outer={outer!r}")
    return i, o


@attrs.frozen
class PixelatedDetector:
    """The full patterns: ``reduce`` returns (b, nx, ny) (4D-STEM: (Rx, Ry, Qx, Qy) over a scan)."""

    name: str = "pixelated"

    def reduce(self, patterns: Any, grid: Grid, energy: float) -> Array:
        return _check_patterns(patterns, grid)

    def signal_shape(self, grid: Grid) -> tuple[int, ...]:
        return tuple(grid.gpts)


@attrs.frozen
class AnnularDetector:
    """Integrated intensity with inner ≤ α < outer (mrad): BF, ABF, ADF, HAADF. ``reduce`` → (b,).

    Warns nothing silently: an outer angle beyond the pattern's band limit (2/3 Nyquist) still
    works but collects nothing there; see :func:`scattering_angles`.
    """

    inner: float
    outer: float
    name: str = attrs.field(default="")

    def __attrs_post_init__(self) -> None:
        i, o = _angles(self.inner, self.outer, "AnnularDetector")
        object.__setattr__(self, "inner", i)
        object.__setattr__(self, "outer", o)
        if not self.name:
            object.__setattr__(self, "name", f"annular_{i:g}-{o:g}")

    def mask(self, grid: Grid, energy: float, dtype: Any = jnp.float32) -> Array:
        ax, ay = scattering_angles(grid, energy, dtype)
        a = jnp.sqrt(ax**2 + ay**2)
        return ((a >= self.inner) & (a < self.outer)).astype(dtype)

    def reduce(self, patterns: Any, grid: Grid, energy: float) -> Array:
        p = _check_patterns(patterns, grid)
        return jnp.sum(p * self.mask(grid, energy, p.dtype)[None], axis=(-2, -1))

    def signal_shape(self, grid: Grid) -> tuple[int, ...]:
        return ()


@attrs.frozen
class SegmentedDetector:
    """An annulus inner ≤ α < outer (mrad) cut into ``nsegments`` equal azimuthal segments; segment
    s covers φ − rotation in [2πs/n, 2π(s+1)/n) (radians, from the x axis towards y).
    ``reduce`` → (b, nsegments); DPC signals are differences of opposite segments."""

    inner: float
    outer: float
    nsegments: int = 4
    rotation: float = 0.0
    name: str = attrs.field(default="")

    def __attrs_post_init__(self) -> None:
        i, o = _angles(self.inner, self.outer, "SegmentedDetector")
        if int(self.nsegments) < 1:
            raise PtyroValueError(f"SegmentedDetector.nsegments: expected a positive integer, got {self.nsegments!r}")
        object.__setattr__(self, "inner", i)
        object.__setattr__(self, "outer", o)
        object.__setattr__(self, "nsegments", int(self.nsegments))
        object.__setattr__(self, "rotation", float(self.rotation))
        if not self.name:
            object.__setattr__(self, "name", f"segmented_{i:g}-{o:g}x{self.nsegments}")

    def masks(self, grid: Grid, energy: float, dtype: Any = jnp.float32) -> Array:
        ax, ay = scattering_angles(grid, energy, dtype)
        a = jnp.sqrt(ax**2 + ay**2)
        phi = jnp.mod(jnp.arctan2(ay, ax) - self.rotation, 2 * jnp.pi)
        seg = jnp.clip(jnp.floor(phi / (2 * jnp.pi / self.nsegments)).astype(jnp.int32), 0, self.nsegments - 1)
        ring = (a >= self.inner) & (a < self.outer)
        ids = jnp.arange(self.nsegments)[:, None, None]
        return ((seg[None] == ids) & ring[None]).astype(dtype)

    def reduce(self, patterns: Any, grid: Grid, energy: float) -> Array:
        p = _check_patterns(patterns, grid)
        return jnp.einsum("bxy,sxy->bs", p, self.masks(grid, energy, p.dtype))

    def signal_shape(self, grid: Grid) -> tuple[int, ...]:
        return (self.nsegments,)


@attrs.frozen
class COMDetector:
    """Centre of mass of each pattern, (b, 2) = (⟨αx⟩, ⟨αy⟩) in mrad (intensity-weighted mean
    scattering angle; proportional to the projected electric field for a thin specimen)."""

    name: str = "com"

    def reduce(self, patterns: Any, grid: Grid, energy: float) -> Array:
        p = _check_patterns(patterns, grid)
        ax, ay = scattering_angles(grid, energy, p.dtype)
        total = jnp.sum(p, axis=(-2, -1))
        cx = jnp.sum(p * ax[None], axis=(-2, -1)) / total
        cy = jnp.sum(p * ay[None], axis=(-2, -1)) / total
        return jnp.stack([cx, cy], axis=-1)

    def signal_shape(self, grid: Grid) -> tuple[int, ...]:
        return (2,)
