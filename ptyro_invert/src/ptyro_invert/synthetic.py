"""Known-ground-truth test objects and figures of merit for reconstructions (used by the tests,
the README and ``examples/recon_a.py``)."""

from typing import Any

import jax.numpy as jnp
import numpy as np

from ptyro_core import Dataset4D, Grid, ReconState, ScanPositions, replace
from ptyro_core.conventions import shift_ramp
from ptyro_invert.forward import predict_patterns
from ptyro_invert.recon import initial_state, orthogonalize_modes

__all__ = [
    "hexagonal_phase",
    "scanned_region",
    "phase_metrics",
    "setup",
    "simulate",
    "partially_coherent_modes",
    "with_object",
]


def hexagonal_phase(
    gpts: tuple[int, int],
    sampling: tuple[float, float],
    *,
    origin: tuple[float, float] = (0.0, 0.0),
    a: float = 3.16,
    peaks: tuple[float, float] = (1.0, 0.6),
    width: float = 0.35,
    rotation: float = 0.0,
) -> np.ndarray:
    """Phase (rad) of a MoS2-like projected honeycomb: Gaussian blobs (σ = ``width`` Å) on the two
    sublattices of a hexagonal lattice of constant ``a`` Å, Mo (``peaks[0]``) brighter than S2
    (``peaks[1]``), lattice rotated by ``rotation`` rad and shifted by ``origin`` Å."""
    x = np.arange(gpts[0]) * sampling[0]
    y = np.arange(gpts[1]) * sampling[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    a1 = a * np.array([np.cos(rotation), np.sin(rotation)])
    a2 = a * np.array([np.cos(rotation + np.pi / 3), np.sin(rotation + np.pi / 3)])
    basis = [(np.zeros(2), peaks[0]), ((a1 + a2) / 3, peaks[1])]
    phase = np.zeros(gpts)
    ext = max(gpts[0] * sampling[0], gpts[1] * sampling[1])
    nmax = int(ext / a * 2) + 2
    r = 4 * width
    for i in range(-nmax, nmax + 1):
        for j in range(-nmax, nmax + 1):
            for b, pk in basis:
                p = np.asarray(origin) + i * a1 + j * a2 + b
                if -r <= p[0] <= gpts[0] * sampling[0] + r and -r <= p[1] <= gpts[1] * sampling[1] + r:
                    phase += pk * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * width**2))
    return phase


def scanned_region(state: ReconState, margin: float = 0.0) -> tuple[slice, slice]:
    """Object-pixel slices of the scanned area (the range of probe centres, ± ``margin`` Å)."""
    pos = np.asarray(state.positions)
    d = np.asarray(state.sampling)
    lo = np.floor((pos.min(0) - margin) / d).astype(int)
    hi = np.ceil((pos.max(0) + margin) / d).astype(int) + 1
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def phase_metrics(recon: Any, truth: Any, region: tuple[slice, slice]) -> tuple[float, float]:
    """(phase RMSE in rad after removing the constant phase offset, Pearson correlation of the
    phases) of two transmission functions over ``region``."""
    o = np.asarray(recon)[region]
    t = np.asarray(truth)[region]
    offset = np.angle(np.sum(o * np.conj(t)))
    err = np.angle(o * np.conj(t) * np.exp(-1j * offset))
    rmse = float(np.sqrt(np.mean(err**2)))
    corr = float(np.corrcoef(np.angle(o * np.exp(-1j * offset)).ravel(), np.angle(t).ravel())[0, 1])
    return rmse, corr


def setup(
    *,
    gpts: int = 64,
    sampling: float = 0.2,
    scan: tuple[int, int] = (10, 10),
    step: float = 0.6,
    energy: float = 300e3,
    semiangle_cutoff: float = 25.0,
    aberrations: dict | None = None,
    num_slices: int = 1,
    slice_thickness: float | None = None,
    padding_px: int = 8,
) -> tuple[Grid, ScanPositions, ReconState]:
    """(detector grid, raster scan, starting state with the nominal probe and a blank object)."""
    grid = Grid((gpts, gpts), (sampling, sampling))
    scan_pos = ScanPositions.raster((0.0, 0.0), (scan[0] * step, scan[1] * step), scan)
    dummy = Dataset4D(np.zeros(tuple(scan) + (gpts, gpts), np.float32), scan_pos.positions, grid=grid, energy=energy)
    state = initial_state(
        dummy, semiangle_cutoff=semiangle_cutoff, aberrations=aberrations if aberrations is not None else {"C10": 100.0},
        num_slices=num_slices, slice_thickness=slice_thickness, padding_px=padding_px,
    )  # fmt: skip
    return grid, scan_pos, state


def simulate(
    truth: ReconState,
    grid: Grid,
    scan: ScanPositions,
    *,
    positions: Any = None,
    dose: float | None = None,
    seed: int = 1,
    propagator: Any = "fresnel",
) -> Dataset4D:
    """The dataset ``truth`` produces (at ``positions``, object frame, default its own), with
    Poisson noise at ``dose`` electrons per pattern if given (then in counts)."""
    pats = np.asarray(predict_patterns(truth, positions, propagator=propagator))
    if dose is not None:
        pats = np.random.default_rng(seed).poisson(np.clip(pats, 0, None) * dose).astype(np.float32)
    rx, ry = scan.shape
    return Dataset4D(pats.reshape(rx, ry, *pats.shape[-2:]), scan.positions, grid=grid, energy=truth.energy)


def partially_coherent_modes(probe: Any, sampling: tuple[float, float], *, source_sigma: float = 0.4, num_modes: int = 3) -> np.ndarray:
    """Modes of ``probe`` (1, px, py) blurred by a Gaussian source of rms ``source_sigma`` Å per
    axis: the incoherent sum of shifted copies, orthogonalised, the strongest ``num_modes``
    kept and renormalised to Σ|P|² = 1."""
    probe = np.asarray(probe)
    px, py = probe.shape[-2:]
    pk = np.fft.fft2(probe.reshape(-1, px, py)[0])
    offs = np.linspace(-2.5, 2.5, 7) * source_sigma
    shifts = np.stack(np.meshgrid(offs, offs, indexing="ij"), axis=-1).reshape(-1, 2)  # (49, 2) Å
    weights = np.exp(-np.sum(shifts**2, axis=-1) / (2 * source_sigma**2))
    copies = np.sqrt(weights)[:, None, None] * np.fft.ifft2(pk[None] * np.asarray(shift_ramp(shifts, (px, py), sampling)))
    stack = copies / np.sqrt(np.sum(weights))
    modes = np.asarray(orthogonalize_modes(jnp.asarray(stack, jnp.complex64)))
    modes = modes[:num_modes]
    return (modes / np.sqrt(np.sum(np.abs(modes) ** 2))).astype(np.complex64)


def with_object(state: ReconState, obj: Any) -> ReconState:
    """``state`` with another object (s, ox, oy) or (ox, oy)."""
    o = jnp.asarray(obj, jnp.complex64)
    return replace(state, object=o if o.ndim == 3 else o[None])
