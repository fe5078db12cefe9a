"""Atomic potentials: a reusable slicing framework and Kirkland's parametrisation.

The framework
-------------
:class:`ParametrizedPotential` turns a parametrised atomic potential into sliced, projected
potentials (:class:`ptyro_core.PotentialSlices`, V·Å per slice) on a periodic grid. A
parametrisation supplies

- ``parameters``: a mapping ``Z -> 1D array`` of its fitted parameters for each element;
- ``scattering_factor(k, params) -> Å`` (keyword, recommended): the electron scattering factor
  f(k) at |k| in Å⁻¹ (no 2π). With it the default ``method="fourier"`` builds each slice as
  IFFT2[Σ_Z 2π a₀e f_Z(k) S_Z,slice(k)] / (dx dy) with the exact structure factor over the whole
  FFT box (:mod:`ptyro_simul.potential_fourier`): exact at any sub-pixel position (V(k) equals
  2π a₀e f(k) S(k) to float rounding at every grid frequency inside the band limit; the Nyquist row
  and column of a real array cannot hold a complex value), no cutoff radius, periodic tails,
  differentiable in positions and, with ``debye_waller=True``, in the rms displacements
  ``atoms.sigmas`` (the thermally averaged potential, factor exp(−2π² σ² k²)). The component then
  satisfies :class:`ptyro_core.protocols.ScatteringFactor` (``kirkland.scattering_factor(k, z)``);
- ``projected(r, params) -> V·Å``: the projected potential v_z(r) = ∫ V(√(r² + z²)) dz at
  in-plane radii ``r`` (Å, any shape; r > 0 always), for one element's ``params``: used by
  ``method="real"`` (point samples at pixel centres, the former scheme: low at high k, see
  below) and for the cutoff radii;
- ``potential_3d(r, params) -> V`` (optional): the 3D potential V(r), needed only for
  ``projection="finite"``;
- ``tail_factor(k, d, params) -> Å`` (keyword, optional): the transform of the part of the atom
  beyond a plane at distance d (below); with it the finite projection is built in Fourier space
  too (seconds for a thousand atoms) instead of by real-space quadrature.

All functions must be written with ``jax.numpy`` (so the result is jittable and differentiable
with respect to the atom positions); :func:`bessel_k0` and :func:`bessel_k1` are provided. The
framework does everything else, identically for every parametrisation.

**Finite projection, Fourier path** (``tail_factor`` given, as for Kirkland and Lobato): the
part of an atom beyond a plane at distance d from its centre, ∫_d^∞ V dz, has the 2D transform
2π a₀e t(k, d) (``tail_factor(k, d, params) -> Å``, jax, k and d broadcast elementwise; t(k, 0) =
f(k)/2; closed forms for sums of Yukawa and Gaussian terms). Each slice is then the infinite
projection plus, per slice face within reach of the atom (t(0, d) above ``cutoff_tolerance``/10
of f(0)/2; :meth:`ParametrizedPotential.tail_reach`), ± t(k, d) of that face, all in Fourier space
with the exact structure factor (:func:`ptyro_simul.potential_fourier.face_corrections`): no
cutoff radius, no real-space sampling, exact at any sub-pixel position and any height (t is
tabulated on nodes in d and interpolated linearly in log1p(d/d_s), error ~0.1 % of f(k)). The
corrections telescope, so the slices of an atom inside the slab sum to its infinite projection
exactly; an atom on the slab's face keeps its inner half.

**Finite projection without a tail factor** (the former scheme, kept for parametrisations that
supply only ``scattering_factor`` and ``potential_3d``): an atom's in-slice share of its
potential has the log-singular core; it goes through the Fourier path (weight 1 in its own slice;
an atom within h = min(max(dx, dy), Δz/2) of a face is shared linearly between the two slices, ½
each on the face), and only the remainder ∫_slice V dz − w_s ∫ V dz, bounded and smooth for atoms
away from faces, is added by the real-space quadrature below (minutes for a thousand atoms). Over
all slices the remainders cancel, so an atom inside the slab projects to exactly the infinite
projection; an atom on the slab's face keeps its inner half.

**Accuracy of ``method="real"``** (why the Fourier path is the default): point samples of the
log-singular core miss high frequencies; at 0.122 Å pixels, V(k)/[2π a₀e f(k)] for one atom is
0.99 at 10 mrad (200 keV), 0.93 at 40–50 mrad and 0.91 at 60–68 mrad on a pixel, and 0.85 / 0.70
at 40–50 / 60–68 mrad for an atom half a pixel off in x and y (the table is in the README). The
description of the real-space path follows.

- **cutoff**: each element's potential is multiplied by a smooth taper T(r) (1 up to 0.75 r_c,
  then cos² down to 0 at r_c, value and slope continuous; :func:`taper`) at the smallest radius
  ``r_c`` (0.05 Å steps) where the tapered potential misses at most ``cutoff_tolerance``
  (default 0.5 %, relative) of the exact integral ∫ v_z dA (or ∫ V dV for the finite
  projection), computed once per element by a fine radial quadrature.
  :meth:`ParametrizedPotential.cutoff` reports ``(r_c, error)``; Kirkland at 0.5 %: O 1.9 Å,
  C 2.55 Å, Si 3.35 Å, Ti 4.0 Å, Sr 4.7 Å, Au 2.6 Å (3D: about 15 % larger).
- **evaluation**: each atom's tapered radial profile is evaluated on a local window of
  ``(2 ⌈r_c/dx⌉ + 1) × (2 ⌈r_c/dy⌉ + 1)`` pixels around it and scatter-added into its slice, in
  chunks of atoms (memory bounded by ``chunk_elements``); cost O(atoms × window), independent of
  the grid size; jitted once per (elements, grid, slicing). Window indices wrap around the grid,
  so atoms near and across the periodic boundaries, and periodic images of any atom (even when
  the window is wider than the cell), are handled exactly; the potential is periodic with the
  grid extent, which must equal the cell's (a, b).
- **accuracy**: point sampling of the sharply peaked core adds to the cutoff error: the pixel sum
  of a single atom's potential is within 0.8 % of ∫ v_z dA at 0.125 Å sampling, 0.6 % at
  0.0625 Å, 0.5 % (the cutoff error) at 0.03 Å (C and Sr, Kirkland).
- **core**: the projected potential of a point-like nucleus diverges logarithmically; radii below
  r₀ = 0.346·min(dx, dy) (the geometric-mean distance of a square pixel's points from its centre)
  are clamped to r₀, so the atom's own pixel holds the pixel average of the log singularity.
- **slicing**: the cell's c axis is cut into ``n = ⌈c / slice_thickness⌉`` slices of equal
  thickness c / n (or the explicit list of thicknesses given). ``projection="infinite"`` puts
  each atom's full projected potential into the slice that holds its centre.
  ``projection="finite"`` integrates the (tapered, spherically cut) 3D potential over each slice's
  z-range, so an atom straddling slices is split between them; the z-integral uses the
  substitution z = ρ sinh t (which removes the 1/r singularity) and Gauss–Legendre quadrature
  (``num_quadrature`` nodes on each side of the atom's plane); accurate to ~1e-4 relative.
  Both projections give the same total (to the cutoff error) for atoms inside the slab; an atom
  within r_c of the top or bottom face keeps, in the finite projection, only the part of its
  potential inside the slab (e.g. a crystal with atoms at z = 0 loses their upper halves).
- **differentiability**: the result is differentiable with respect to the atom positions (and
  jittable / vmappable over them); the atomic numbers must be concrete (they pick the parameters
  and the window sizes), so close over them rather than tracing them.

A third-party parametrisation (e.g. Lobato & Van Dyck) is therefore::

    from ptyro_simul.potentials import ParametrizedPotential, bessel_k0, bessel_k1

    def projected(r, p):     # p: that element's parameter vector
        ...                   # jax.numpy expression in r, returns V·Å
    def potential_3d(r, p):
        ...                   # returns V
    lobato = ParametrizedPotential("lobato", {z: params_of(z) for z in range(1, 104)}, projected, potential_3d)

and registered with ``register("lobato", lobato, description=...)``.

Kirkland
--------
Kirkland (Advanced Computing in Electron Microscopy, 2nd ed., 2010, Appendix C) fits the electron
scattering factor as f(q) = Σ aᵢ/(q² + bᵢ) + Σ cᵢ exp(−dᵢ q²) (q in Å⁻¹, f in Å). With
a₀e = ħ²/(m₀e) = h²/(4π² m₀ e) = 7.6200 V·Å² (Bohr radius times e/(4πε₀) = 0.52918 Å × 14.3996 V·Å):

    V(r)   = 2π² a₀e Σ aᵢ/r exp(−2πr√bᵢ) + 2π^(5/2) a₀e Σ cᵢ dᵢ^(−3/2) exp(−π² r²/dᵢ)      [V]
    v_z(r) = 4π² a₀e Σ aᵢ K₀(2πr√bᵢ)     + 2π² a₀e Σ (cᵢ/dᵢ) exp(−π² r²/dᵢ)                [V·Å]

and the integral of the projected potential is ∫ v_z dA = (h²/(2π m₀ e)) f(0) = 2π a₀e f(0),
f(0) = Σ aᵢ/bᵢ + Σ cᵢ  (V·Å³ when f is in Å; 2π a₀e = 47.878 V·Å²).
"""

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ptyro_core import Atoms, Grid, PotentialSlices, PtyroTypeError, PtyroValueError
from ptyro_core._pytree import is_tracer
from ptyro_simul import potential_fourier as _pf
from ptyro_simul.constants import ELECTRON_MASS, ELEMENTARY_CHARGE, PLANCK

__all__ = [
    "A0E",
    "bessel_i0",
    "bessel_i1",
    "bessel_k0",
    "bessel_k1",
    "ParametrizedPotential",
    "projected_potential_from_radial",
    "slice_bounds",
    "kirkland_parameters",
    "kirkland_projected",
    "kirkland_potential_3d",
    "kirkland_scattering_factor",
    "kirkland_f",
    "kirkland_tail",
    "kirkland",
    "PIXEL_CORE_FRACTION",
]

#: a₀·e/(4πε₀) = ħ²/(m₀ e) in V·Å² (Kirkland's "a₀ e" product, 0.529177 Å × 14.3996 V·Å)
A0E = PLANCK**2 / (4 * math.pi**2 * ELECTRON_MASS * ELEMENTARY_CHARGE) * 1e20

#: r₀ / pixel size: geometric-mean distance of a unit square's points from its centre
PIXEL_CORE_FRACTION = 0.3460488


# --------------------------------------------------------------------------- Bessel functions
# Abramowitz & Stegun 9.8.1-9.8.8 (relative error below 2e-7); both branches are evaluated on
# clipped arguments so neither produces NaN values or NaN gradients.


def _poly(t: Array, coeffs: Sequence[float]) -> Array:
    out = jnp.zeros_like(t) + coeffs[-1]
    for c in reversed(coeffs[:-1]):
        out = out * t + c
    return out


def bessel_i0(x: Array) -> Array:
    """Modified Bessel function I₀(x) for 0 ≤ x ≤ 3.75 (A&S 9.8.1; used by K₀)."""
    t = (x / 3.75) ** 2
    return _poly(t, (1.0, 3.5156229, 3.0899424, 1.2067492, 0.2659732, 0.0360768, 0.0045813))


def bessel_i1(x: Array) -> Array:
    """Modified Bessel function I₁(x) for 0 ≤ x ≤ 3.75 (A&S 9.8.3; used by K₁)."""
    t = (x / 3.75) ** 2
    return x * _poly(t, (0.5, 0.87890594, 0.51498869, 0.15084934, 0.02658733, 0.00301532, 0.00032411))


def bessel_k0(x: Array) -> Array:
    """Modified Bessel function of the second kind K₀(x), x > 0 (A&S 9.8.5 / 9.8.6), in JAX."""
    x = jnp.asarray(x)
    small = jnp.clip(x, 1e-30, 2.0)
    large = jnp.maximum(x, 2.0)
    h = (small / 2) ** 2
    k_small = -jnp.log(small / 2) * bessel_i0(small) + _poly(h, (-0.57721566, 0.42278420, 0.23069756, 0.03488590, 0.00262698, 0.00010750, 0.00000740))
    u = 2.0 / large
    k_large = jnp.exp(-large) / jnp.sqrt(large) * _poly(u, (1.25331414, -0.07832358, 0.02189568, -0.01062446, 0.00587872, -0.00251540, 0.00053208))
    return jnp.where(x <= 2.0, k_small, k_large)


def bessel_k1(x: Array) -> Array:
    """Modified Bessel function of the second kind K₁(x), x > 0 (A&S 9.8.7 / 9.8.8), in JAX."""
    x = jnp.asarray(x)
    small = jnp.clip(x, 1e-30, 2.0)
    large = jnp.maximum(x, 2.0)
    h = (small / 2) ** 2
    xk1 = small * jnp.log(small / 2) * bessel_i1(small) + _poly(h, (1.0, 0.15443144, -0.67278579, -0.18156897, -0.01919402, -0.00110404, -0.00004686))
    u = 2.0 / large
    k_large = jnp.exp(-large) / jnp.sqrt(large) * _poly(u, (1.25331414, 0.23498619, -0.03655620, 0.01504268, -0.00780353, 0.00325614, -0.00068245))
    return jnp.where(x <= 2.0, xk1 / small, k_large)


# --------------------------------------------------------------------------- slicing helpers


def slice_bounds(cell_c: float, slice_thickness: Any) -> np.ndarray:
    """z boundaries (n + 1,) in Å of the slices of a cell of height ``cell_c``.

    A number Δz gives n = ⌈c/Δz⌉ slices of equal thickness c/n; a sequence gives those
    thicknesses (which must be positive and sum to c within 1e-3 Å).
    """
    if isinstance(slice_thickness, (int, float, np.integer, np.floating)) or np.ndim(slice_thickness) == 0:
        dz = float(slice_thickness)
        if not math.isfinite(dz) or dz <= 0:
            raise PtyroValueError(f"slice_thickness: expected a positive thickness in Å, got {slice_thickness!r}")
        n = max(1, int(math.ceil(cell_c / dz - 1e-6)))
        return np.linspace(0.0, cell_c, n + 1)
    th = np.asarray(slice_thickness, dtype=np.float64).ravel()
    if th.size == 0 or not np.all(np.isfinite(th)) or np.any(th <= 0):
        raise PtyroValueError(f"slice_thickness: expected positive thicknesses in Å, got {slice_thickness!r}")
    if abs(th.sum() - cell_c) > 1e-3:
        raise PtyroValueError(f"slice_thickness: thicknesses sum to {th.sum():.6g} Å, expected the cell height {cell_c:.6g} Å")
    return np.concatenate([[0.0], np.cumsum(th)])


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return x, w


# --------------------------------------------------------------------------- the framework


class ParametrizedPotential:
    """A potential component built from a radial parametrisation (see the module docstring).

    ``ParametrizedPotential(name, parameters, projected, potential_3d=None, *,
    scattering_factor=None, tail_factor=None, cutoff_tolerance=5e-3, num_quadrature=16,
    chunk_elements=2**22)``;
    call it as ``potential(atoms, grid, *, slice_thickness, projection="infinite", method=None,
    debye_waller=False)`` to get :class:`~ptyro_core.PotentialSlices` (V·Å per slice), dtype
    following ``atoms.positions``; ``method`` defaults to ``"fourier"`` when ``scattering_factor``
    is given, else ``"real"``.
    """

    def __init__(
        self,
        name: str,
        parameters: Mapping[int, Any],
        projected: Callable[[Array, Array], Array],
        potential_3d: Callable[[Array, Array], Array] | None = None,
        *,
        scattering_factor: Callable[[Array, Array], Array] | None = None,
        tail_factor: Callable[[Array, Array, Array], Array] | None = None,
        cutoff_tolerance: float = 5e-3,
        num_quadrature: int = 16,
        chunk_elements: int = 2**22,
        max_cutoff: float = 12.0,
    ) -> None:
        if not 0 < cutoff_tolerance < 1:
            raise PtyroValueError(f"cutoff_tolerance: expected a relative error in (0, 1), got {cutoff_tolerance!r}")
        self.name = str(name)
        self.parameters = {int(z): np.asarray(p, dtype=np.float64).ravel() for z, p in parameters.items()}
        self.projected = projected
        self.potential_3d = potential_3d
        self.scattering_factor_fn = scattering_factor
        self.tail_factor_fn = tail_factor
        self.cutoff_tolerance = float(cutoff_tolerance)
        self.num_quadrature = int(num_quadrature)
        self.chunk_elements = int(chunk_elements)
        self.max_cutoff = float(max_cutoff)
        self._jitted: dict[int, Any] = {}
        self._cutoffs: dict[tuple[int, bool], tuple[float, float, float]] = {}
        self._reach: dict[int, float] = {}

    def __repr__(self) -> str:
        return f"ParametrizedPotential({self.name!r}, {len(self.parameters)} elements, cutoff_tolerance={self.cutoff_tolerance})"

    # ------------------------------------------------------------------ per-element setup

    def params(self, z: int) -> np.ndarray:
        try:
            return self.parameters[int(z)]
        except KeyError:
            raise PtyroValueError(
                f"{self.name}: no parameters for Z = {int(z)}; this parametrisation covers Z = {min(self.parameters)}..{max(self.parameters)}"
            ) from None

    def scattering_factor(self, k: Any, z: int) -> np.ndarray:
        """Electron scattering factor f(k) in Å of element ``z`` at |k| in Å⁻¹ (no 2π), float64
        numpy (the :class:`ptyro_core.protocols.ScatteringFactor` protocol); the Fourier-space
        builder (:mod:`ptyro_simul.potential_fourier`) needs nothing else."""
        if self.scattering_factor_fn is None:
            raise PtyroValueError(f"{self.name}: this parametrisation has no scattering factor f(k), so only method='real' is available")
        k = np.asarray(k, dtype=np.float64)
        flat = k.ravel()
        out = np.empty_like(flat)
        step = 65536
        for i in range(0, flat.size, step):
            part = flat[i : i + step]
            out[i : i + step] = self._radial_np(self.scattering_factor_fn, part, z) if part.size else part
        return out.reshape(k.shape)

    def tail_factor(self, k: Any, d: float, z: int) -> np.ndarray:
        """t(k, d) in Å of element ``z`` at |k| Å⁻¹: the 2D transform, in units of 2π a₀e, of the
        part of the atom's potential beyond a plane at distance ``d`` ≥ 0 Å from its centre,
        ∫_d^∞ V dz (t(k, 0) = f(k)/2, t(k, ∞) = 0); float64 numpy. The finite projection's
        Fourier path (:func:`ptyro_simul.potential_fourier.face_corrections`) needs it."""
        if self.tail_factor_fn is None:
            raise PtyroValueError(f"{self.name}: this parametrisation has no tail factor t(k, d)")
        k = np.asarray(k, dtype=np.float64)
        flat = k.ravel()
        out = np.empty_like(flat)
        for i in range(0, flat.size, 65536):
            part = flat[i : i + 65536]
            out[i : i + 65536] = self._radial_np(self.tail_factor_fn, part, z, float(d)) if part.size else part
        return out.reshape(k.shape)

    def tail_reach(self, z: int) -> float:
        """The distance (Å) beyond which the tail t(0, d) is below ``cutoff_tolerance``/10 of
        t(0, 0) = f(0)/2: how far the finite projection's face corrections reach."""
        if int(z) not in self._reach:
            assert self.tail_factor_fn is not None
            d = np.arange(0.0, self.max_cutoff + 1e-9, 0.05)
            with jax.ensure_compile_time_eval(), jax.enable_x64(True):
                t0 = np.asarray(self.tail_factor_fn(jnp.zeros(d.shape, jnp.float64), jnp.asarray(d), jnp.asarray(self.params(z))), np.float64)
            below = np.nonzero(np.abs(t0) <= 0.1 * self.cutoff_tolerance * abs(t0[0]))[0]
            self._reach[int(z)] = float(d[below[0]]) if below.size else float(self.max_cutoff)
        return self._reach[int(z)]

    def _radial_np(self, fn: Callable[..., Array], r: np.ndarray, z: int, *extra: float) -> np.ndarray:
        """Evaluate a radial function ``fn(r, *extra, params)`` in float64 on host (one jit
        compile per function: the radii are padded to a fixed length)."""
        size = 65536
        r = np.asarray(r, dtype=np.float64)
        assert r.size <= size
        padded = np.concatenate([r, np.full(size - r.size, r[-1])])
        key = id(fn)
        with jax.ensure_compile_time_eval(), jax.enable_x64(True):
            if key not in self._jitted:
                self._jitted[key] = jax.jit(fn)
            args = [jnp.asarray(e, jnp.float64) for e in extra]
            out = self._jitted[key](jnp.asarray(padded, jnp.float64), *args, jnp.asarray(self.params(z), jnp.float64))
            return np.asarray(out, dtype=np.float64)[: r.size]

    def integral(self, z: int) -> float:
        """∫ v_z dA in V·Å³ of element ``z``, by a fine radial quadrature of ``projected``."""
        r = np.concatenate([np.geomspace(1e-9, 1e-2, 1000, endpoint=False), np.linspace(1e-2, 60.0, 60000)])
        v = self._radial_np(self.projected, r, z)
        return float(np.trapezoid(v * 2 * np.pi * r, r))

    def cutoff(self, z: int, projection: str = "infinite") -> tuple[float, float]:
        """(r_c in Å, relative error of ∫v dA after cutting and shifting) of element ``z``.

        ``projection="infinite"`` cuts the projected potential at r_c (circle);
        ``"finite"`` cuts the 3D potential at r_c (sphere), which needs a larger radius.
        """
        rc, err, _ = self._cutoff(z, projection == "finite")
        return rc, err

    def _cutoff(self, z: int, three_d: bool = False) -> tuple[float, float, float]:
        """(r_c, relative error, taper start r_t) for element ``z`` (2D or 3D cut)."""
        key = (int(z), bool(three_d))
        if key in self._cutoffs:
            return self._cutoffs[key]
        total = self.integral(z)
        r = np.linspace(1e-6, self.max_cutoff, 24001)
        if three_d:
            assert self.potential_3d is not None
            w = self._radial_np(self.potential_3d, r, z) * 4 * np.pi * r**2
        else:
            w = self._radial_np(self.projected, r, z) * 2 * np.pi * r
        near = np.geomspace(1e-9, 1e-6, 200)
        f_near = self._radial_np(self.potential_3d if three_d else self.projected, near, z)  # type: ignore[arg-type]
        head = float(np.trapezoid(f_near * (4 * np.pi * near**2 if three_d else 2 * np.pi * near), near))
        rc = err = 0.0
        for rc in np.arange(0.5, self.max_cutoff + 1e-9, 0.05):
            kept = head + float(np.trapezoid(w * taper(r, rc), r))
            err = abs(total - kept) / abs(total)
            if err <= self.cutoff_tolerance:
                break
        out = (float(rc), float(err), TAPER_START * float(rc))
        self._cutoffs[key] = out
        return out

    # ------------------------------------------------------------------ the component

    def __call__(
        self,
        atoms: Atoms,
        grid: Grid,
        *,
        slice_thickness: Any,
        projection: str = "infinite",
        method: str | None = None,
        debye_waller: bool = False,
    ) -> PotentialSlices:
        """Sliced projected potential (V·Å) of ``atoms`` on ``grid`` (see the module docstring)."""
        return projected_potential_from_radial(
            self, atoms, grid, slice_thickness=slice_thickness, projection=projection, method=method, debye_waller=debye_waller
        )


#: the taper starts at this fraction of the cutoff radius
TAPER_START = 0.75


def taper(r: Any, rc: float) -> Any:
    """Smooth cutoff: 1 for r ≤ 0.75 r_c, cos² down to 0 (value and slope) at r_c, 0 beyond."""
    xp = jnp if isinstance(r, jax.Array) else np
    rt = TAPER_START * rc
    u = xp.clip((r - rt) / (rc - rt), 0.0, 1.0)
    return xp.cos(0.5 * np.pi * u) ** 2


def _core_radius(grid: Grid) -> float:
    return PIXEL_CORE_FRACTION * min(grid.sampling)


def projected_potential_from_radial(
    parametrization: ParametrizedPotential,
    atoms: Atoms,
    grid: Grid,
    *,
    slice_thickness: Any,
    projection: str = "infinite",
    method: str | None = None,
    debye_waller: bool = False,
) -> PotentialSlices:
    """Slice ``atoms`` with a :class:`ParametrizedPotential` (see the module docstring).

    ``method="fourier"`` (the default when the parametrisation has a scattering factor) builds
    each atom's in-slice potential from f(k) and the exact structure factor; ``"real"`` samples
    the radial functions at pixel centres (the former scheme, low at high k). ``debye_waller``
    (Fourier, infinite projection) damps each atom by exp(−2π² σ² k²) with σ = ``atoms.sigmas``:
    the thermally averaged potential. Returns :class:`~ptyro_core.PotentialSlices` (s, nx, ny) in
    V·Å; traced atom positions (and sigmas) are fine (jit / vmap / grad); the atomic numbers
    must be concrete.
    """
    if not isinstance(atoms, Atoms):
        raise PtyroTypeError(f"atoms: expected ptyro_core.Atoms, got {type(atoms).__name__}")
    if not isinstance(grid, Grid):
        raise PtyroTypeError(f"grid: expected ptyro_core.Grid, got {type(grid).__name__}")
    if projection not in ("infinite", "finite"):
        raise PtyroValueError(f"projection: expected 'infinite' or 'finite', got {projection!r}")
    if projection == "finite" and parametrization.potential_3d is None:
        raise PtyroValueError(f"projection: {parametrization.name!r} has no 3D potential, so only 'infinite' is available")
    if method is None:
        method = "fourier" if parametrization.scattering_factor_fn is not None else "real"
    if method not in ("fourier", "real"):
        raise PtyroValueError(f"method: expected 'fourier' or 'real', got {method!r}")
    if method == "fourier" and parametrization.scattering_factor_fn is None:
        raise PtyroValueError(f"method: {parametrization.name!r} has no scattering factor f(k), so only method='real' is available")
    if debye_waller and (method != "fourier" or projection != "infinite"):
        raise PtyroValueError(
            f"debye_waller: the thermally averaged potential needs method='fourier' and projection='infinite', got method={method!r}, projection={projection!r}"
        )
    for i in range(2):
        if abs(grid.extent[i] - atoms.cell[i]) > 1e-4 * max(1.0, atoms.cell[i]):
            raise PtyroValueError(
                f"grid: extent {grid.extent} Å does not match the cell {atoms.cell[:2]} Å; the potential is periodic "
                "over the cell, so use Grid.from_extent(atoms.cell[:2], sampling=...)"
            )
    if is_tracer(atoms.numbers):
        raise PtyroTypeError("atoms.numbers: expected concrete atomic numbers (close over them, do not trace them)")
    numbers = np.asarray(atoms.numbers)
    bounds = slice_bounds(atoms.cell[2], slice_thickness)
    positions = atoms.positions
    dtype = jnp.dtype(positions.dtype if jnp.issubdtype(positions.dtype, jnp.floating) else jnp.float32)
    # the finite projection in Fourier space: the infinite projection plus face corrections from
    # the component's tail factor (else the former real-space remainder)
    exact = projection == "finite" and method == "fourier" and parametrization.tail_factor_fn is not None
    groups = []
    reaches: list[float] = []
    for z in np.unique(numbers):
        idx = np.nonzero(numbers == z)[0]
        groups.append((int(z), tuple(int(i) for i in idx)))
        parametrization.params(int(z))  # a clear error for an element the table lacks
        if exact:
            reaches.append(parametrization.tail_reach(int(z)))  # concrete setup, outside any trace
        elif method == "real" or projection == "finite":
            parametrization._cutoff(int(z), projection == "finite")
    ramp = _ramp_half_width(grid, bounds)
    host = method == "fourier" and not is_tracer(positions)
    tails: Any = tuple((r, None) for r in reaches) if exact else None
    if host:  # slice of every atom, and the largest occupancy per element, from the concrete positions
        z64 = np.asarray(positions, np.float64)[:, 2]
        s_c = _slice_index_np(bounds, z64)
        all_sl = _entry_slices_np(bounds, z64, s_c, "infinite" if exact else projection, ramp)
        caps = [_pf.slice_capacity(all_sl[list(idx)], bounds.size - 1, all_sl[list(idx)].size) for _, idx in groups]
        capacities: tuple[int, ...] | None = tuple(caps)
        active = jnp.asarray(all_sl >= 0) if projection == "finite" and not exact else None
        layouts: Any = None
        if exact:
            plans = [_tail_plan(parametrization, z, z64[list(idx)], s_c[list(idx)], bounds, r, grid) for (z, idx), r in zip(groups, reaches)]
            tails = tuple((r, sizes) for r, (_, sizes) in zip(reaches, plans))
            layouts = tuple(tuple(jnp.asarray(a) for a in arrays) for arrays, _ in plans)
        s_arg: Any = (jnp.asarray(s_c, jnp.int32), active, layouts)
    else:
        capacities, s_arg = None, None
    cfg = _Slicing(tuple(groups), grid, tuple(float(b) for b in bounds), projection, dtype.name, method, bool(debye_waller), capacities, tails)
    tables = _scattering_tables(parametrization, tuple(z for z, _ in groups), grid, dtype.name) if method == "fourier" else ()
    sig = atoms.sigmas.astype(dtype) if debye_waller else None
    pz = parametrization if method == "real" or projection == "finite" else None
    array = _build(positions.astype(dtype), sig, s_arg, tables, pz, cfg)
    thickness = jax.device_put(np.diff(bounds).astype(dtype))  # no one-operation program to convert it
    return PotentialSlices(array, thickness, grid=grid)


def _tail_plan(
    pz: ParametrizedPotential, zn: int, z: np.ndarray, s_c: np.ndarray, bounds: np.ndarray, reach: float, grid: Grid
) -> tuple[tuple[np.ndarray, ...], tuple[tuple[int, int], ...]]:
    """Host: the layout (face, node, then per tier: lo ids, hi ids, v_face, v_node) and the
    (count, capacity) per tier of one element's face corrections (finite projection)."""
    face, node = _pf.face_layout(z, s_c, bounds, reach, grid, float(np.min(np.diff(bounds))))
    m_split = _pf.tail_setup(pz, zn, grid, reach)[1]
    arrays, sizes = _pf.virtual_plan(face, node, _pf.tail_nodes(reach, grid)[1], m_split)
    return (face, node, *arrays), sizes


def _traced_layout(
    pz: ParametrizedPotential, zn: int, z: Array, s_c: Array, bounds: Array, reach: float, grid: Grid, min_dz: float
) -> tuple[tuple[Array, ...], tuple[tuple[int, int], ...]]:
    """In a trace: the same layout with every (face, node) pair a virtual slice."""
    face, node = _pf.face_layout(jax.lax.stop_gradient(z), s_c, bounds, reach, grid, min_dz)
    m_split = _pf.tail_setup(pz, zn, grid, reach)[1]
    arrays, sizes = _pf.traced_plan(face, node, int(bounds.shape[0]), _pf.tail_nodes(reach, grid)[1], m_split)
    return (face, node, *arrays), sizes


def _ramp_half_width(grid: Grid, bounds: np.ndarray) -> float:
    """Half-width h (Å) of the z ramp that shares an atom's singular part between two slices
    when it lies within h of a slice face (finite projection, Fourier path)."""
    return float(min(max(grid.sampling), 0.5 * float(np.min(np.diff(bounds)))))


def _slice_index_np(bounds: np.ndarray, z: np.ndarray) -> np.ndarray:
    n = bounds.size - 1
    return np.clip(np.searchsorted(bounds, z, side="right") - 1, 0, n - 1).astype(np.int32)


def _ramp_weights(z: Any, lo: Any, hi: Any, h: float) -> tuple[Any, Any, Any]:
    """(w_below, w_own, w_above): the shares of the ramp [z − h, z + h] below the slice face
    ``lo``, inside [lo, hi] and above ``hi`` (numpy or jax)."""
    xp = jnp if isinstance(z, jax.Array) else np
    w_lo = xp.clip((lo - (z - h)) / (2 * h), 0.0, 0.5)
    w_hi = xp.clip(((z + h) - hi) / (2 * h), 0.0, 0.5)
    return w_lo, 1.0 - w_lo - w_hi, w_hi


def _entry_slices_np(bounds: np.ndarray, z: np.ndarray, s_c: np.ndarray, projection: str, h: float) -> np.ndarray:
    """Slice indices of the Fourier-path entries (n,) or (n, 3); -1 where unused."""
    if projection == "infinite":
        return s_c
    w = np.stack(_ramp_weights(z, bounds[s_c], bounds[s_c + 1], h), axis=1)
    sl = s_c[:, None] + np.arange(-1, 2)[None, :]
    return np.where(w > 0, sl, -1)


def _entries(
    pos: Array, sig: Array | None, s_c: Array, bounds: Array, projection: str, h: float, active: Array | None = None
) -> tuple[Array, Array | None, Array, Array]:
    """(xy (m, 2), sigmas (m,) or None, slices (m,), weights (m,)) of the Fourier-path entries."""
    if projection == "infinite":
        return pos[:, :2], sig, s_c, jnp.ones(s_c.shape, pos.dtype)
    w = jnp.stack(_ramp_weights(pos[:, 2], bounds[s_c], bounds[s_c + 1], h), axis=1)  # (n, 3)
    sl = s_c[:, None] + jnp.arange(-1, 2, dtype=s_c.dtype)[None, :]
    if active is not None:
        sl = jnp.where(active, sl, -1)
    n = pos.shape[0]
    xy = jnp.broadcast_to(pos[:, None, :2], (n, 3, 2)).reshape(3 * n, 2)
    sig3 = None if sig is None else jnp.repeat(sig, 3)
    return xy, sig3, sl.reshape(-1), w.reshape(-1)


@dataclasses.dataclass(frozen=True)
class _Slicing:
    """The static settings of one potential build (numbers, strings and tuples, written out in
    full by :mod:`ptyro_core.exec_cache`): the element groups ``(Z, atom indices)``, the grid,
    the slice boundaries (Å), the projection, dtype and method, the per-element slice capacities
    (host positions) and the finite projection's ``(reach, tier sizes)`` per element."""

    groups: tuple[tuple[int, tuple[int, ...]], ...]
    grid: Grid
    bounds: tuple[float, ...]
    projection: str
    dtype: str
    method: str = "real"
    debye_waller: bool = False
    capacities: tuple[int, ...] | None = None
    tails: tuple[tuple[float, tuple[tuple[int, int], ...] | None], ...] | None = None


@functools.lru_cache(maxsize=64)
def _scattering_tables(pz: ParametrizedPotential, zs: tuple[int, ...], grid: Grid, dtype: str) -> tuple[np.ndarray, ...]:
    """The Fourier path's table per element (:func:`ptyro_simul.potential_fourier.scattering_table`),
    in ``dtype``, made once per component, elements and grid."""
    return tuple(np.asarray(_pf.scattering_table(pz, z, grid), dtype) for z in zs)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _build(positions: Array, sigmas: Array | None, host: tuple[Array, Array | None, Any] | None, tables: tuple[Any, ...],
           pz: ParametrizedPotential | None, cfg: _Slicing) -> Array:  # fmt: skip
    """Positions (n, 3), sigmas or None, (slice indices, active entries, layouts) or None, the
    Fourier tables -> potential slices. A top-level function whose settings are static
    arguments, so that a warm start runs it untraced (:mod:`ptyro_core.exec_cache`); ``pz`` (the
    component) only where the trace needs it (``method="real"``, the finite projection), else
    None (then the key is the settings written out)."""
    groups, grid, projection, method, tails = cfg.groups, cfg.grid, cfg.projection, cfg.method, cfg.tails
    bounds_np = np.asarray(cfg.bounds)
    nslices = bounds_np.size - 1
    h = _ramp_half_width(grid, bounds_np)
    min_dz = float(np.min(np.diff(bounds_np)))
    bounds_j = jnp.asarray(bounds_np, positions.dtype)
    if method == "real":
        assert pz is not None
        out = jnp.zeros((nslices,) + tuple(grid.gpts), positions.dtype)
        for z, idx in groups:
            pos = positions[np.asarray(idx)]
            if projection == "infinite":
                out = _add_infinite(out, pz, z, pos, grid, bounds_j)
            else:
                out = _add_finite(out, pz, z, pos, grid, bounds_j, bounds_np)
        return out
    act_host, layouts = None, None
    if host is None:
        z_all = jax.lax.stop_gradient(positions[:, 2])
        s_all = jnp.clip(jnp.searchsorted(bounds_j, z_all, side="right") - 1, 0, nslices - 1).astype(jnp.int32)
    else:
        s_all, act_host, layouts = host
    entry_projection = "infinite" if tails is not None else projection
    entries = []
    for gi, (_z, idx) in enumerate(groups):
        ii = np.asarray(idx)
        pos, s_c = positions[ii], s_all[ii]
        sig = None if sigmas is None else sigmas[ii]
        active = None if act_host is None else act_host[ii]
        xy, sg, sl, w = _entries(pos, sig, s_c, bounds_j, entry_projection, h, active)
        cap = cfg.capacities[gi] if cfg.capacities is not None else int(sl.shape[0])
        entries.append((xy, sg, sl, w, cap))
    if tails is not None:
        assert pz is not None
        spectrum = _pf.fourier_spectrum(tables, entries, grid, nslices)
        for gi, (zn, idx) in enumerate(groups):
            ii = np.asarray(idx)
            reach, sizes = tails[gi]
            pos, s_c = positions[ii], s_all[ii]
            if layouts is None or sizes is None:
                layout, sizes = _traced_layout(pz, zn, pos[:, 2], s_c, bounds_j, reach, grid, min_dz)
            else:
                layout = layouts[gi]
            setup = _pf.tail_setup(pz, zn, grid, reach)
            spectrum = spectrum + _pf.face_corrections(pos[:, :2], pos[:, 2], s_c, bounds_j, layout, sizes, setup, reach, grid, nslices)
        return jnp.fft.irfft2(spectrum, s=tuple(grid.gpts), axes=(-2, -1)).astype(positions.dtype)
    out = _pf.fourier_slices(tables, entries, grid, nslices).astype(positions.dtype)
    if projection == "finite":
        assert pz is not None
        for z, idx in groups:
            ii = np.asarray(idx)
            out = _add_finite(out, pz, z, positions[ii], grid, bounds_j, bounds_np, s_c=s_all[ii], ramp=h)
    return out


def _windows(pos: Array, grid: Grid, rc: float) -> tuple[Array, Array, Array, Array]:
    """Per atom: wrapped pixel indices (n, Wx), (n, Wy) and offsets from the atom (Å)."""
    (dx, dy), (nx, ny) = grid.sampling, grid.gpts
    wx, wy = int(math.ceil(rc / dx)), int(math.ceil(rc / dy))
    x, y = pos[:, 0], pos[:, 1]
    ix0 = jnp.floor(jax.lax.stop_gradient(x) / dx).astype(jnp.int32)
    iy0 = jnp.floor(jax.lax.stop_gradient(y) / dy).astype(jnp.int32)
    ox = jnp.arange(-wx, wx + 1, dtype=jnp.int32)
    oy = jnp.arange(-wy, wy + 1, dtype=jnp.int32)
    ix = ix0[:, None] + ox[None, :]
    iy = iy0[:, None] + oy[None, :]
    px = ix.astype(pos.dtype) * dx - x[:, None]
    py = iy.astype(pos.dtype) * dy - y[:, None]
    return ix % nx, iy % ny, px, py


def _chunks(n: int, per_atom: int, budget: int) -> int:
    return max(1, min(n, budget // max(1, per_atom)))


def _scan_atoms(out: Array, pos: Array, chunk: int, body: Callable[[Array, Array, Array], Array]) -> Array:
    """Add ``body(out, pos_chunk, valid_chunk)`` over chunks of atoms with lax.scan."""
    n = pos.shape[0]
    nchunks = -(-n // chunk)
    pad = nchunks * chunk - n
    valid = jnp.concatenate([jnp.ones((n,), pos.dtype), jnp.zeros((pad,), pos.dtype)])
    width = pos.shape[1]
    if pad:
        pos = jnp.concatenate([pos, jnp.broadcast_to(pos[-1:], (pad, width))], axis=0)
    pos_c = pos.reshape(nchunks, chunk, width)
    valid_c = valid.reshape(nchunks, chunk)
    if nchunks == 1:
        return body(out, pos_c[0], valid_c[0])

    def step(acc: Array, xs: tuple[Array, Array]) -> tuple[Array, None]:
        return body(acc, xs[0], xs[1]), None

    out, _ = jax.lax.scan(step, out, (pos_c, valid_c))
    return out


def _window_size(rc: float, grid: Grid) -> int:
    return (2 * int(math.ceil(rc / grid.sampling[0])) + 1) * (2 * int(math.ceil(rc / grid.sampling[1])) + 1)


def _add_infinite(out: Array, pz: ParametrizedPotential, z: int, pos: Array, grid: Grid, bounds: Array) -> Array:
    rc, _, _ = pz._cutoff(z)
    params = jnp.asarray(pz.params(z), pos.dtype)
    r0 = _core_radius(grid)
    nslices = out.shape[0]
    chunk = _chunks(pos.shape[0], _window_size(rc, grid), pz.chunk_elements)

    def body(acc: Array, p: Array, valid: Array) -> Array:
        ix, iy, px, py = _windows(p, grid, rc)
        r = jnp.sqrt(jnp.maximum(px[:, :, None] ** 2 + py[:, None, :] ** 2, r0**2))
        rr = jnp.minimum(r, rc)
        v = pz.projected(rr, params) * taper(rr, rc) * valid[:, None, None]
        s = jnp.clip(jnp.searchsorted(bounds, jax.lax.stop_gradient(p[:, 2]), side="right") - 1, 0, nslices - 1)
        return acc.at[s[:, None, None], ix[:, :, None], iy[:, None, :]].add(v.astype(acc.dtype))

    return _scan_atoms(out, pos, chunk, body)


def _add_finite(
    out: Array,
    pz: ParametrizedPotential,
    z: int,
    pos: Array,
    grid: Grid,
    bounds: Array,
    bounds_np: np.ndarray,
    *,
    s_c: Array | None = None,
    ramp: float = 0.0,
) -> Array:
    """Add the finite projection of element ``z`` by real-space quadrature. With ``s_c`` (the
    slice of each atom) only the remainder is added: each window slice gets ∫_slice V dz − w_s
    ∫ V dz, where w_s is the atom's ramp share of that slice, whose w_s v_z went through the
    Fourier path; the log-singular core then cancels (exactly for atoms at least ``ramp`` from a
    face, by symmetry for atoms on a face)."""
    rc, _, _ = pz._cutoff(z, True)
    params = jnp.asarray(pz.params(z), pos.dtype)
    r0 = _core_radius(grid)
    nslices = out.shape[0]
    min_dz = float(np.min(np.diff(bounds_np)))
    ns_w = min(nslices, int(math.ceil(2 * rc / min_dz)) + 2)
    xq_np, wq_np = _gauss_legendre(pz.num_quadrature)
    xq, wq = jnp.asarray(xq_np, pos.dtype), jnp.asarray(wq_np, pos.dtype)
    remainder = s_c is not None
    chunk = _chunks(pos.shape[0], _window_size(rc, grid) * (ns_w * 2 + (3 if remainder else 0)) * pz.num_quadrature, pz.chunk_elements)
    if s_c is not None:
        pos = jnp.concatenate([pos, s_c[:, None].astype(pos.dtype)], axis=1)  # the slice rides along as a 4th column
    v3 = pz.potential_3d
    assert v3 is not None

    def segment(rho: Array, t0: Array, t1: Array) -> Array:
        # ∫_{t0}^{t1} V(ρ cosh t) ρ cosh t dt by Gauss-Legendre (z = ρ sinh t)
        half = (t1 - t0) / 2
        shape = (1,) * half.ndim + (-1,)
        t = (t0 + t1)[..., None] / 2 + half[..., None] * xq.reshape(shape)
        rr = jnp.minimum(rho[..., None] * jnp.cosh(t), rc)
        f = v3(rr, params) * taper(rr, rc) * rr
        return half * jnp.sum(f * wq.reshape(shape), axis=-1)

    def body(acc: Array, p: Array, valid: Array) -> Array:
        if remainder:
            own = jax.lax.stop_gradient(p[:, 3]).astype(jnp.int32)
            p = p[:, :3]
        ix, iy, px, py = _windows(p, grid, rc)
        rho = jnp.sqrt(jnp.maximum(px[:, :, None] ** 2 + py[:, None, :] ** 2, r0**2))  # (n, Wx, Wy)
        za = p[:, 2]
        s_lo = jnp.clip(jnp.searchsorted(bounds, jax.lax.stop_gradient(za) - rc, side="right") - 1, 0, nslices - 1)
        s = s_lo[:, None] + jnp.arange(ns_w, dtype=s_lo.dtype)[None, :]  # (n, ns_w)
        sc = jnp.clip(s, 0, nslices - 1)
        z0 = bounds[sc] - za[:, None]
        z1 = bounds[sc + 1] - za[:, None]
        in_range = (s < nslices).astype(p.dtype) * valid[:, None]
        zmax = jnp.sqrt(jnp.maximum(rc**2 - rho**2, 1e-12))  # (n, Wx, Wy)
        lo = jnp.clip(z0[:, :, None, None], -zmax[:, None], zmax[:, None])  # (n, ns_w, Wx, Wy)
        hi = jnp.clip(z1[:, :, None, None], -zmax[:, None], zmax[:, None])
        rho_b = jnp.broadcast_to(rho[:, None], lo.shape)
        t_lo = jnp.arcsinh(lo / rho_b)
        t_hi = jnp.arcsinh(hi / rho_b)
        mid = jnp.clip(jnp.zeros_like(t_lo), t_lo, t_hi)
        halves = segment(jnp.broadcast_to(rho_b, (2,) + lo.shape), jnp.stack([t_lo, mid]), jnp.stack([mid, t_hi]))
        v = halves[0] + halves[1]
        if remainder:
            # the own slice's faces (per atom), and per pixel: half the (cut) column, and the parts
            # of it below and above the own slice (the own slice minus the column, without the core)
            t_max = jnp.arcsinh(zmax / rho)  # (n, Wx, Wy)
            z_own = jnp.stack([bounds[own], bounds[own + 1]], axis=1) - za[:, None]  # (n, 2)
            lo_own = jnp.clip(z_own[:, 0, None, None], -zmax, zmax)
            hi_own = jnp.clip(z_own[:, 1, None, None], -zmax, zmax)
            seg = segment(
                jnp.broadcast_to(rho, (3,) + rho.shape),
                jnp.stack([jnp.zeros_like(t_max), -t_max, jnp.arcsinh(hi_own / rho)]),
                jnp.stack([t_max, jnp.arcsinh(lo_own / rho), t_max]),
            )
            column = (2 * seg[0])[:, None]  # (n, 1, Wx, Wy)
            w_lo, w_c, w_hi = _ramp_weights(za, bounds[own], bounds[own + 1], ramp)
            d = s - own[:, None]
            w = jnp.where(d == -1, w_lo[:, None], 0.0) + jnp.where(d == 1, w_hi[:, None], 0.0)
            own_rest = (-(seg[1] + seg[2]))[:, None] + (1.0 - w_c)[:, None, None, None] * column
            v = jnp.where((d == 0)[:, :, None, None], own_rest, v - w[:, :, None, None] * column)
        v = v * in_range[:, :, None, None]
        return acc.at[sc[:, :, None, None], ix[:, None, :, None], iy[:, None, None, :]].add(v.astype(acc.dtype))

    return _scan_atoms(out, pos, chunk, body)


# --------------------------------------------------------------------------- Kirkland


@functools.cache
def kirkland_parameters() -> dict[int, np.ndarray]:
    """Kirkland's parameters per Z as (a1, a2, a3, b1, b2, b3, c1, c2, c3, d1, d2, d3)."""
    text = resources.files("ptyro_simul").joinpath("data", "kirkland_parameters.json").read_text()
    table = json.loads(text)
    return {int(e["Z"]): np.array([*e["a"], *e["b"], *e["c"], *e["d"]], dtype=np.float64) for e in table["elements"]}


def _split(p: Array, ndim: int) -> tuple[Array, Array, Array, Array]:
    """The four parameter groups, shaped (1, ..., 1, 3) to broadcast against r[..., None]."""
    shape = (1,) * ndim + (3,)
    return tuple(p[i : i + 3].reshape(shape) for i in (0, 3, 6, 9))  # type: ignore[return-value]


def kirkland_projected(r: Array, p: Array) -> Array:
    """Kirkland's projected potential v_z(r) in V·Å at radii ``r`` Å (r > 0)."""
    rr = jnp.asarray(r)[..., None]
    a, b, c, d = _split(p, rr.ndim - 1)
    kterm = jnp.sum(a * bessel_k0(2 * jnp.pi * rr * jnp.sqrt(b)), axis=-1)
    gterm = jnp.sum(c / d * jnp.exp(-(jnp.pi**2) * rr**2 / d), axis=-1)
    return 4 * jnp.pi**2 * A0E * kterm + 2 * jnp.pi**2 * A0E * gterm


def kirkland_potential_3d(r: Array, p: Array) -> Array:
    """Kirkland's 3D potential V(r) in V at radii ``r`` Å (r > 0)."""
    rr = jnp.asarray(r)[..., None]
    a, b, c, d = _split(p, rr.ndim - 1)
    yterm = jnp.sum(a / rr * jnp.exp(-2 * jnp.pi * rr * jnp.sqrt(b)), axis=-1)
    gterm = jnp.sum(c * d**-1.5 * jnp.exp(-(jnp.pi**2) * rr**2 / d), axis=-1)
    return 2 * jnp.pi**2 * A0E * yterm + 2 * jnp.pi**2.5 * A0E * gterm


def kirkland_f(k: Array, p: Array) -> Array:
    """Kirkland's f(k) in Å at |k| Å⁻¹ for one element's parameter vector ``p`` (jax)."""
    k2 = jnp.asarray(k)[..., None] ** 2
    a, b, c, d = _split(p, k2.ndim - 1)
    return jnp.sum(a / (k2 + b), axis=-1) + jnp.sum(c * jnp.exp(-d * k2), axis=-1)


def kirkland_scattering_factor(q: Any, z: int) -> np.ndarray:
    """Kirkland's electron scattering factor f(q) in Å at q in Å⁻¹ (numpy, for checks)."""
    p = kirkland_parameters()[int(z)]
    a, b, c, d = p[0:3], p[3:6], p[6:9], p[9:12]
    q2 = np.asarray(q, dtype=np.float64)[..., None] ** 2
    return np.sum(a / (q2 + b), axis=-1) + np.sum(c * np.exp(-d * q2), axis=-1)


def kirkland_tail(k: Array, d: Array, p: Array) -> Array:
    """Kirkland's tail factor t(k, d) in Å (see :meth:`ParametrizedPotential.tail_factor`): the
    transform of ∫_d^∞ V dz over the plane at height z is, per Yukawa term (the Sommerfeld
    integral), 2π² a₀e a · 2π e^(−κz)/κ with κ = 2π √(k² + b), and per Gaussian term
    2π^(3/2) a₀e c d^(−1/2) e^(−d k²) e^(−π² z²/d); integrated over z ≥ d₀:

        t(k, d₀) = ½ Σ a/(k² + b) exp(−2π d₀ √(k² + b)) + ½ Σ c exp(−d k²) erfc(π d₀ / √d)

    (t(k, 0) = f(k)/2). ``k`` and ``d`` broadcast elementwise."""
    import jax.scipy.special  # here, not at import: 9 ms of every start, for the finite projection only

    k = jnp.asarray(k)
    kk = k[..., None]
    dd = jnp.broadcast_to(jnp.asarray(d, kk.dtype), k.shape)[..., None]
    a, b, c, dg = _split(p, kk.ndim - 1)
    yterm = jnp.sum(a / (kk**2 + b) * jnp.exp(-2 * jnp.pi * dd * jnp.sqrt(kk**2 + b)), axis=-1)
    gterm = jnp.sum(c * jnp.exp(-dg * kk**2) * jax.scipy.special.erfc(jnp.pi * dd / jnp.sqrt(dg)), axis=-1)
    return 0.5 * (yterm + gterm)


#: the registered ``kirkland`` potential component
kirkland = ParametrizedPotential(
    "kirkland", kirkland_parameters(), kirkland_projected, kirkland_potential_3d, scattering_factor=kirkland_f, tail_factor=kirkland_tail
)
