"""PRISM: fast 4D-STEM simulation through a plane-wave scattering matrix (C. Ophus, "A fast
image simulation algorithm for scanning transmission electron microscopy", Adv. Struct. Chem.
Imaging 3:13, 2017).

Multislice is linear in the incoming wave, so the exit wave of any probe is the sum of the exit
waves of the plane waves it is made of. PRISM computes those once (the S-matrix, one multislice
run per plane wave inside the probe aperture) and then builds every probe position's exit wave
as a weighted sum: weights c_k exp(−2πi k·r₀), the probe's Fourier coefficients times the
position phase.

With an interpolation factor f > 1 the plane waves are taken on every f-th point of the
reciprocal lattice (spacing f / L for a cell of size L): f² times fewer multislice runs. A probe
built from that coarser lattice repeats every L / f, so only a window of size L / f around the
probe (here: centred on its pixel) is summed and transformed; the diffraction patterns then have
(nx/f, ny/f) pixels of f / L Å⁻¹. The cost is the error of cutting the probe's tails at the
window edge; f = 1 is exact (identical to multislice to round-off).

Conventions (shared with ``multislice``): per slice, transmit t = exp(iσV) then propagate by the
slice thickness with the chosen propagator (Fresnel, band-limited to 2/3 Nyquist); detection is
the unitary forward FFT of the exit wave, patterns centred (zero frequency at index n // 2),
intensities summed over probe modes. The probe is given centred in its grid (index n // 2);
positions are where its centre goes, (x, y) Å.

``prism`` is a :class:`~ptyro_core.protocols.PlannedSimulator`: its plan is the
:class:`PrismSimulator` (the S-matrix and the probe's coefficients, a PyTree), built once per
simulation by :func:`ptyro_simul.stem.iter_4dstem` (the route of ``ptyro simulate``) and passed
to the jitted batch function; ``apply(plan, positions)`` is the per-position half.
"""

import functools
import math
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ptyro_core import PotentialSlices, ProbeModes, PtyroTypeError, PtyroValueError
from ptyro_core._pytree import is_tracer
from ptyro_core.conventions import energy2wavelength
from ptyro_core.protocols import PlannedSimulator
from ptyro_simul.multislice import multislice_exit_wave, resolve_propagator
from ptyro_simul.propagator import antialias_cutoff

__all__ = ["Prism", "PrismSimulator", "prism", "beam_indices", "build_smatrix", "smatrix_memory"]


def beam_indices(
    probe: ProbeModes,
    interpolation: int,
    *,
    semiangle_cutoff: float | None = None,
    threshold: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """FFT-order indices (ix, iy) of the S-matrix plane waves.

    Every ``interpolation``-th reciprocal-lattice point inside the 2/3-Nyquist band limit, inside
    ``semiangle_cutoff`` (mrad) when given, and, when the probe array is concrete, where the
    probe has Fourier intensity above ``threshold`` times its maximum (its aperture).
    """
    grid = probe.grid
    f = int(interpolation)
    nx, ny = grid.gpts
    kx = np.fft.fftfreq(nx, grid.sampling[0])[:, None]  # numpy: static, also under an outer jit
    ky = np.fft.fftfreq(ny, grid.sampling[1])[None, :]
    k2 = kx**2 + ky**2
    mask = (np.arange(nx)[:, None] % f == 0) & (np.arange(ny)[None, :] % f == 0) & (k2 < antialias_cutoff(grid) ** 2)
    if semiangle_cutoff is not None:
        kmax = float(semiangle_cutoff) * 1e-3 / energy2wavelength(probe.energy)
        mask &= k2 <= kmax**2
    if not is_tracer(probe.array):
        power = np.sum(np.abs(np.fft.fft2(np.asarray(probe.array))) ** 2, axis=0)
        mask &= power > threshold * power.max()
    ix, iy = np.nonzero(mask)
    if ix.size == 0:
        raise PtyroValueError("prism: no plane waves selected; the probe has no Fourier support inside the band limit")
    return ix, iy


def smatrix_memory(num_beams: int, gpts: tuple[int, int], dtype: Any = jnp.complex64) -> int:
    """Bytes of the S-matrix (num_beams, nx, ny)."""
    return int(num_beams) * int(gpts[0]) * int(gpts[1]) * np.dtype(dtype).itemsize


@functools.partial(jax.jit, static_argnames=("energy", "propagator", "dtype"))
def _smatrix_batch(potential: PotentialSlices, bx: Array, by: Array, *, energy: float, propagator: Any, dtype: Any) -> Array:
    """Exit waves of the plane waves at FFT indices (bx, by); jitted once per shape and setting."""
    grid = potential.grid
    real = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    kx = jnp.fft.fftfreq(grid.gpts[0], grid.sampling[0]).astype(real)[bx]
    ky = jnp.fft.fftfreq(grid.gpts[1], grid.sampling[1]).astype(real)[by]
    x, y = grid.coordinates(real)
    # separable plane waves exp(2πi (kx x + ky y)) (k, nx, ny)
    ex = jnp.exp(2j * jnp.pi * kx[:, None] * x[:, 0][None, :]).astype(dtype)
    ey = jnp.exp(2j * jnp.pi * ky[:, None] * y[0, :][None, :]).astype(dtype)
    waves = ex[:, :, None] * ey[:, None, :]
    # the same multislice (transmit exp(iσV), then propagate; lax.scan) as the simulator
    # ``multislice``, batched over the plane waves
    return multislice_exit_wave(waves, potential, energy, propagator).astype(dtype)


def build_smatrix(
    potential: PotentialSlices,
    energy: float,
    ix: np.ndarray,
    iy: np.ndarray,
    *,
    propagator: Any = "fresnel",
    beam_batch: int | None = None,
    dtype: Any = jnp.complex64,
    progress: bool = False,
) -> Array:
    """Exit waves (num_beams, nx, ny) of the plane waves exp(2πi k·r) at FFT indices (ix, iy)
    after multislice through ``potential`` (``ptyro_simul.multislice.multislice_exit_wave``:
    transmit, then propagate, per slice; lax.scan)."""
    prop = resolve_propagator(propagator)
    run = functools.partial(_smatrix_batch, potential, energy=float(energy), propagator=prop, dtype=dtype)

    n = int(ix.size)
    batch = n if not beam_batch else max(1, min(int(beam_batch), n))
    jrun = run
    if batch >= n:
        return jrun(jnp.asarray(ix), jnp.asarray(iy))
    from ptyro_core.progress import progress_bar

    pad = (-n) % batch
    ixp = np.concatenate([ix, np.repeat(ix[-1:], pad)])
    iyp = np.concatenate([iy, np.repeat(iy[-1:], pad)])
    parts = []
    for s in progress_bar(range(0, n + pad, batch), desc="PRISM S-matrix", unit="batch", disable=not progress, leave=True):
        parts.append(jrun(jnp.asarray(ixp[s : s + batch]), jnp.asarray(iyp[s : s + batch])))
    return jnp.concatenate(parts, axis=0)[:n]


@attrs.frozen(eq=False)
class PrismSimulator:
    """``fn(positions (b, 2) Å) -> intensities``: the per-position half of PRISM.

    ``smatrix`` (num_beams, nx, ny) exit waves, ``coefficients`` (m, num_beams) the probe's
    normalised Fourier coefficients, ``kx``/``ky`` (num_beams,) the beams' frequencies (Å⁻¹).
    ``output="full"`` returns (b, nx, ny) patterns (each coarse pixel's intensity spread evenly
    over its f × f block, so sums and detector integrals are kept); ``"cropped"`` the native
    (b, nx/f, ny/f) patterns at f / L Å⁻¹.
    """

    smatrix: Array
    coefficients: Array
    kx: Array
    ky: Array
    grid: Any
    interpolation: int
    output: str = "full"
    crop_first: bool = False

    @property
    def num_beams(self) -> int:
        return int(self.smatrix.shape[0])

    @property
    def pattern_shape(self) -> tuple[int, int]:
        nx, ny = self.grid.gpts
        f = self.interpolation
        return (nx, ny) if self.output == "full" else (nx // f, ny // f)

    def exit_waves(self, positions: Any) -> Array:
        """Exit waves (b, m, wx, wy) in the window around each position (the whole cell at f = 1)."""
        pos = jnp.asarray(positions)
        if pos.ndim != 2 or pos.shape[-1] != 2:
            raise PtyroValueError(f"prism: positions must have shape (b, 2) (x, y in Å), got {tuple(pos.shape)}")
        real = jnp.real(self.smatrix[:1, :1, :1]).dtype
        pos = pos.astype(real)
        (dx, dy), (nx, ny) = self.grid.sampling, self.grid.gpts
        f = self.interpolation
        cx, cy = (nx // 2) * dx, (ny // 2) * dy
        phase = jnp.exp(-2j * jnp.pi * ((pos[:, 0:1] - cx) * self.kx[None, :] + (pos[:, 1:2] - cy) * self.ky[None, :]))
        weights = self.coefficients[None, :, :] * phase[:, None, :].astype(self.coefficients.dtype)  # (b, m, k)
        if f == 1:
            return jnp.einsum("bmk,kxy->bmxy", weights, self.smatrix)
        wx, wy = nx // f, ny // f
        px = jnp.round(jax.lax.stop_gradient(pos[:, 0]) / dx).astype(jnp.int32)
        py = jnp.round(jax.lax.stop_gradient(pos[:, 1]) / dy).astype(jnp.int32)
        ixw = (px[:, None] - wx // 2 + jnp.arange(wx, dtype=jnp.int32)[None, :]) % nx  # (b, wx)
        iyw = (py[:, None] - wy // 2 + jnp.arange(wy, dtype=jnp.int32)[None, :]) % ny
        if self.crop_first:
            # gather each window of the S-matrix, then sum the beams: fewest operations (f² fewer)
            def one(w: Array, ix: Array, iy: Array) -> Array:
                return jnp.einsum("mk,kxy->mxy", w, self.smatrix[:, ix[:, None], iy[None, :]])

            return jax.vmap(one)(weights, ixw, iyw)
        # sum the beams over the whole cell as one matrix product, then cut the windows: more
        # operations, but dense and fast on CPUs, where the window gathers are memory-bound
        full = jnp.einsum("bmk,kxy->bmxy", weights, self.smatrix)
        return jax.vmap(lambda w, ix, iy: w[:, ix[:, None], iy[None, :]])(full, ixw, iyw)

    def __call__(self, positions: Any) -> Array:
        pos = jnp.asarray(positions)
        if pos.ndim != 2 or pos.shape[-1] != 2:
            raise PtyroValueError(f"prism: positions must have shape (b, 2) (x, y in Å), got {tuple(pos.shape)}")
        return _apply(self, pos)  # jitted: one compilation per shape (inlined under an outer jit)

    def intensities(self, positions: Any) -> Array:
        """The un-jitted body of ``__call__``."""
        waves = self.exit_waves(positions)
        pattern = jnp.sum(jnp.abs(jnp.fft.fft2(waves, norm="ortho")) ** 2, axis=1)
        pattern = jnp.fft.fftshift(pattern, axes=(-2, -1))
        f = self.interpolation
        if f == 1 or self.output == "cropped":
            return pattern
        full = jnp.repeat(jnp.repeat(pattern, f, axis=-2), f, axis=-1) / (f * f)
        return jnp.roll(full, (-(f // 2), -(f // 2)), axis=(-2, -1))


jax.tree_util.register_dataclass(
    PrismSimulator, data_fields=["smatrix", "coefficients", "kx", "ky"], meta_fields=["grid", "interpolation", "output", "crop_first"]
)


@jax.jit
def _apply(sim: PrismSimulator, positions: Array) -> Array:
    return sim.intensities(positions)


def _check_options(potential: Any, probe: Any, interpolation: Any, output: str, backend: Any) -> int:
    """The interpolation factor as an int, after a clear error for any input PRISM cannot use."""
    if not isinstance(potential, PotentialSlices):
        raise PtyroTypeError(f"prism: potential must be a PotentialSlices, got {type(potential).__name__}")
    if not isinstance(probe, ProbeModes):
        raise PtyroTypeError(f"prism: probe must be a ProbeModes, got {type(probe).__name__}")
    if potential.grid != probe.grid:
        raise PtyroValueError(f"prism: probe grid {probe.grid} differs from potential grid {potential.grid}")
    if isinstance(interpolation, bool) or not float(interpolation).is_integer() or int(interpolation) < 1:
        raise PtyroValueError(f"prism: interpolation must be a positive integer, got {interpolation!r}")
    f = int(interpolation)
    if potential.grid.gpts[0] % f or potential.grid.gpts[1] % f:
        raise PtyroValueError(f"prism: interpolation {f} must divide the grid size {potential.grid.gpts}; pick gpts that are multiples of {f}")
    if output not in ("full", "cropped"):
        raise PtyroValueError(f"prism: output must be 'full' or 'cropped', got {output!r}")
    if str(backend).strip().lower() not in ("auto", "xla"):
        raise PtyroValueError(f"prism: backend must be 'auto' or 'xla' (PRISM runs on XLA), got {backend!r}")
    return f


class Prism(PlannedSimulator):
    """The ``prism`` simulator: ``prism(potential, probe, **options)`` builds the S-matrix now and
    returns ``fn(positions) -> intensities`` (a :class:`PrismSimulator`, which is also the plan
    of :meth:`plan`; :meth:`apply` is its per-position half).

    ``interpolation`` f (integer ≥ 1 dividing both grid sizes); ``propagator`` a registered name
    (resolved here, outside any jit) or a callable; ``semiangle_cutoff`` (mrad) limits the plane
    waves to an aperture (default: the probe's own Fourier support, or the band limit if the
    probe is traced); ``output`` "full" (b, nx, ny) or "cropped" (b, nx/f, ny/f); ``beam_batch``
    builds the S-matrix in batches of plane waves (bounded memory, tqdm progress with
    ``progress=True``); ``crop_first`` picks how the windows are summed (default: gather the
    windows first on accelerators, one dense product then crop on CPUs; same result);
    ``backend`` "auto" or "xla" (PRISM runs on XLA). The :class:`PrismSimulator` is a PyTree
    (jit/vmap/grad-able).
    """

    def plan(self, potential: PotentialSlices, probe: ProbeModes, *, interpolation: int = 1, propagator: Any = "fresnel",
             semiangle_cutoff: float | None = None, output: str = "full", beam_batch: int | None = None, beam_threshold: float = 1e-10,
             progress: bool = False, max_memory: float | None = None, crop_first: bool | None = None, backend: str = "auto") -> "PrismSimulator":  # fmt: skip
        f = _check_options(potential, probe, interpolation, output, backend)
        grid = potential.grid
        ix, iy = beam_indices(probe, f, semiangle_cutoff=semiangle_cutoff, threshold=beam_threshold)
        dtype = jnp.result_type(probe.array, jnp.complex64)
        from ptyro_core.pipeline import check_memory

        check_memory(
            2 * smatrix_memory(ix.size if not beam_batch else ix.size + min(int(beam_batch), ix.size), grid.gpts, dtype),
            what=f"the PRISM S-matrix ({ix.size} plane waves on {grid.gpts[0]}x{grid.gpts[1]})",
            knob="raise interpolation, lower semiangle_cutoff, or set beam_batch",
            budget=max_memory,
        )
        smatrix = build_smatrix(potential, probe.energy, ix, iy, propagator=propagator, beam_batch=beam_batch, dtype=dtype, progress=progress)
        real = jnp.float64 if dtype == jnp.complex128 else jnp.float32
        kx = jnp.fft.fftfreq(grid.gpts[0], grid.sampling[0]).astype(real)[jnp.asarray(ix)]
        ky = jnp.fft.fftfreq(grid.gpts[1], grid.sampling[1]).astype(real)[jnp.asarray(iy)]
        # the probe is centred at c = (n // 2) d: at r0 it is ψ(r − (r0 − c)), i.e. coefficients
        # P̂(k) exp(−2πi k·(r0 − c)); the position phase is applied per position (PrismSimulator)
        coeffs = jnp.fft.fft2(probe.array, norm="ortho")[:, jnp.asarray(ix), jnp.asarray(iy)].astype(dtype)  # (m, k)
        (nx, ny) = grid.gpts
        # ψ(r) = s Σ_k c_k e^{2πi k·r}: Σ over a window of N/f² pixels of |ψ|² = s² (N/f²) Σ|c_k|²;
        # with c_k = P̂(k)/√N the window then carries norm 1 when s = f / sqrt(Σ_k |P̂(k)|²)
        norm = jnp.sqrt(jnp.sum(jnp.abs(coeffs) ** 2))
        coeffs = coeffs * (f / (norm * math.sqrt(nx * ny)))
        if crop_first is None:  # dense products on CPUs, the f²-cheaper window gathers on accelerators
            crop_first = jax.default_backend() != "cpu"
        return PrismSimulator(smatrix, coeffs.astype(dtype), kx, ky, grid, f, output, bool(crop_first))

    def apply(self, plan: "PrismSimulator", positions: Any) -> Array:
        return plan(positions)

    def __call__(self, potential: PotentialSlices, probe: ProbeModes, **options: Any) -> "PrismSimulator":  # type: ignore[override]
        return self.plan(potential, probe, **options)

    def __repr__(self) -> str:
        return "prism"


#: the ``prism`` simulator component
prism = Prism()
