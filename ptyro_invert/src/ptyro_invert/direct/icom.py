"""Integrated centre of mass (iCoM / integrated DPC) and segmented-detector DPC.

For a thin specimen the centre of mass of each pattern is (in cycles per Å, the detector's
forward FFT) ⟨k⟩(R) = (1/2π) ∇(φ ⊛ |P|²)(R) (Waddell & Chapman 1979; Lazić et al. 2016), a
gradient field; its Fourier-space inverse gradient

    Φ_iCoM(Q) = −i Q·C(Q) / (|Q|² + q_hp²)

(C the scan FFT of the centre-of-mass field, Q the lattice's frequencies in the object frame,
``highpass`` q_hp in Å⁻¹ the regulariser, 0 by default) is the phase convolved with the
probe's intensity: a weak or strong phase transferred by T_iCoM(Q) = FT[|P|²](Q)
= Σ_k P̃(k) P̃*(k − Q) (the normalised two-disc overlap for an in-focus probe).

A segmented detector (``dpc``: annular sectors, e.g. the quadrants of a DPC detector) measures
only each segment's total S_s; its centre-of-mass estimate Σ_s S_s k̄_s / Σ_s S_s (k̄_s the
segment's centroid under the unscattered disc) is a linear response M·⟨k⟩ to a small deflection
⟨k⟩ of the disc (a 2 × 2 matrix, 16/(3π²)·I for quadrants under a uniform disc), which
:func:`segment_response` measures by shifting the mean pattern; M⁻¹ turns the segments' signal
into the DPC field, integrated by the same :func:`integrate_gradient`.

The centres of mass and the descan are :mod:`ptyro_invert.calibrate`'s; the scan's rotation
and transpose are in the positions (``[scan] rotation``, or
:func:`ptyro_invert.calibrate.scan_rotation` to find them).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Dataset4D, PtyroValueError, ReconState
from ptyro_core.conventions import energy2wavelength
from ptyro_invert.calibrate import fit_descan
from ptyro_invert.direct._common import (
    Lattice,
    check_inputs,
    finish,
    probe_fourier,
    probe_geometry,
    project_patterns,
    scan_array,
    scan_lattice,
    shift_fourier,
)

__all__ = [
    "com_weights",
    "com_field",
    "integrate_gradient",
    "icom_transfer",
    "icom_phase",
    "icom",
    "segment_masks",
    "segment_response",
    "segmented_field",
    "dpc_phase",
    "dpc",
]


def com_weights(gpts: tuple[int, int], mask: Any = None) -> np.ndarray:
    """The centre of mass's weights (Qx·Qy, 3) float32: [m, m·(x − nx//2), m·(y − ny//2)] per
    pixel (pixel indices about the detector centre, flattened in the patterns' order; ``mask``
    (Qx, Qy) m, default 1). Centred coordinates keep the float32 sums' round-off at the size of
    the disc, not of the detector."""
    nx, ny = (int(g) for g in gpts)
    m = np.ones((nx, ny), np.float64) if mask is None else np.asarray(mask, np.float64)
    if m.shape != (nx, ny):
        raise PtyroValueError(f"icom: expected a mask of shape {(nx, ny)} (the patterns' pixels), got {m.shape}")
    x, y = np.meshgrid(np.arange(nx) - nx // 2, np.arange(ny) - ny // 2, indexing="ij")
    return np.stack([m, m * x, m * y], -1).reshape(nx * ny, 3).astype(np.float32)


def com_field(dataset: Dataset4D, *, descan: str = "constant", mask: Any = None, mesh: Any = None) -> jax.Array:
    """The DPC field (Rx, Ry, 2) in Å⁻¹ (detector = object frame): each pattern's centre of mass
    minus the descan (:func:`ptyro_invert.calibrate.fit_descan` with ``descan`` = "constant",
    "plane" or "free"); ``mask`` (Qx, Qy) weights the pixels. The patterns' three moments come
    from one pass over them (:func:`~ptyro_invert.direct._common.project_patterns`); a pattern
    that sums to zero sits at the detector centre, as in
    :func:`ptyro_invert.calibrate.center_of_mass`."""
    mom = np.asarray(project_patterns(dataset, com_weights(dataset.grid.gpts, mask), mesh), np.float64)
    tot = mom[..., :1]
    com = np.where(tot > 0, mom[..., 1:] / np.where(tot > 0, tot, 1.0), 0.0)
    field = (com - fit_descan(com, descan)) * np.asarray(dataset.grid.reciprocal_sampling, np.float64)
    return jnp.asarray(field, jnp.float32)


def integrate_gradient(field: jax.Array, vectors: Any, highpass: float = 0.0) -> jax.Array:
    """φ (Rx, Ry) with (1/2π)∇φ = ``field`` (Rx, Ry, 2) on the raster with step vectors
    ``vectors`` (2×2, columns a₁, a₂, Å), by the regularised Fourier inverse gradient; mean 0.
    Linear, ``jit``-able and differentiable."""
    field = jnp.asarray(field)
    rx, ry = field.shape[:2]
    q = Lattice((rx, ry), np.zeros(2), np.asarray(vectors, np.float64)).frequencies()
    return _integrate(field, jnp.asarray(q, field.dtype), float(highpass) ** 2)


@jax.jit
def _integrate(field: jax.Array, q: jax.Array, highpass2: Any) -> jax.Array:
    c = jnp.fft.fft2(field, axes=(0, 1))
    q2 = q[..., 0] ** 2 + q[..., 1] ** 2 + highpass2
    num = q[..., 0] * c[..., 0] + q[..., 1] * c[..., 1]
    phi = jnp.where(q2 > 0, -1j * num / jnp.where(q2 > 0, q2, 1.0), 0.0)
    return jnp.real(jnp.fft.ifft2(phi))


def icom_transfer(state: ReconState, lattice: Lattice) -> np.ndarray:
    """T_iCoM(Q) = Σ_k P̃(k) P̃*(k − Q) (real part) on the lattice's frequencies."""
    q = jnp.asarray(lattice.frequencies().reshape(-1, 2), jnp.float32)
    return np.asarray(_autocorrelation(q, probe_fourier(state), probe_geometry(state))).reshape(lattice.shape)


@jax.jit
def _autocorrelation(q: jax.Array, p0: jax.Array, probe: tuple) -> jax.Array:
    return jax.lax.map(lambda v: jnp.real(jnp.sum(p0 * jnp.conj(shift_fourier(probe[0], probe[1], probe[2], v)))), q, batch_size=64)


def icom_phase(dataset: Dataset4D, *, highpass: float = 0.0, descan: str = "constant", mask: Any = None, mesh: Any = None) -> tuple[jax.Array, Lattice]:
    """(phase (Rx, Ry) rad on the scan lattice, the lattice)."""
    if not float(highpass) >= 0:
        raise PtyroValueError(f"icom: expected highpass >= 0 Å⁻¹, got {highpass}")
    lat = scan_lattice(dataset.positions, dataset.scan_shape, who="icom")
    return integrate_gradient(com_field(dataset, descan=descan, mask=mask, mesh=mesh), lat.vectors, highpass), lat


def icom(dataset: Dataset4D, state: ReconState, *, highpass: float = 0.0, descan: str = "constant", mask: Any = None, mesh: Any = None) -> ReconState:
    """Integrated centre of mass: the phase (convolved with |P|²) on the state's object grid;
    ``highpass`` (Å⁻¹) regularises the low frequencies, ``descan`` and ``mask`` go to the
    centre-of-mass measurement (:func:`com_field`)."""
    check_inputs(dataset, state, "icom")
    phase, lat = icom_phase(dataset, highpass=highpass, descan=descan, mask=mask, mesh=mesh)
    return finish(state, phase, lat)


def segment_masks(gpts: tuple[int, int], reciprocal_sampling: tuple[float, float], energy: float, *, segments: int = 4,
                  rings: tuple[float, ...] = (0.0, math.inf), rotation: float = 0.0) -> np.ndarray:  # fmt: skip
    """A segmented detector's masks (rings·segments, Qx, Qy) on centred patterns: ``segments``
    equal sectors (the first starting at ``rotation`` degrees from the x axis, counter-clockwise
    towards y) in each annulus between consecutive ``rings`` (mrad)."""
    if int(segments) < 3:
        raise PtyroValueError(f"dpc: expected segments >= 3 (sectors per ring; fewer cannot measure a 2D deflection), got {segments}")
    r = np.asarray(rings, np.float64)
    if r.ndim != 1 or len(r) < 2 or np.any(np.diff(r) <= 0) or r[0] < 0:
        raise PtyroValueError(f"dpc: expected rings as increasing semiangles in mrad (at least an inner and an outer), got {list(rings)}")
    nx, ny = gpts
    lam = energy2wavelength(energy)
    kx = (np.arange(nx) - nx // 2) * reciprocal_sampling[0]
    ky = (np.arange(ny) - ny // 2) * reciprocal_sampling[1]
    KX, KY = np.meshgrid(kx, ky, indexing="ij")
    theta = np.hypot(KX, KY) * lam * 1e3
    az = (np.arctan2(KY, KX) - math.radians(rotation)) % (2 * math.pi)
    sector = np.minimum((az / (2 * math.pi) * int(segments)).astype(int), int(segments) - 1)
    masks = [(theta >= lo) & (theta < hi) & (sector == i) for lo, hi in zip(r[:-1], r[1:], strict=True) for i in range(int(segments))]
    return np.stack(masks).astype(np.float32)


def _segment_com(signals: Any, centroids: Any) -> Any:
    """Σ_s S_s k̄_s / Σ_s S_s (…, 2) for signals (…, n) and centroids (n, 2)."""
    return (signals @ centroids) / np.sum(signals, axis=-1, keepdims=True)


def segment_response(mean_pattern: Any, masks: Any, reciprocal_sampling: tuple[float, float], delta: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(the segments' centroids k̄_s (n, 2) Å⁻¹ under ``mean_pattern`` (centred), the response M
    (2 × 2): the segments' centre-of-mass estimate per Å⁻¹ of deflection, measured by shifting
    the mean pattern by ±``delta`` pixels along each axis (Fourier shift))."""
    m = np.asarray(mean_pattern, np.float64)
    w = np.asarray(masks, np.float64).reshape(len(masks), -1)
    nx, ny = m.shape
    d = np.asarray(reciprocal_sampling, np.float64)
    KX, KY = np.meshgrid((np.arange(nx) - nx // 2) * d[0], (np.arange(ny) - ny // 2) * d[1], indexing="ij")
    tot = w @ m.reshape(-1)
    if np.any(tot <= 0):
        raise PtyroValueError(
            "dpc: a segment receives no intensity in the mean pattern; expected every segment under the bright field (reduce rings or segments)"
        )
    cen = np.stack([w @ (m * KX).reshape(-1), w @ (m * KY).reshape(-1)], -1) / tot[:, None]
    fx = np.fft.fftfreq(nx)[:, None]
    fy = np.fft.fftfreq(ny)[None, :]
    resp = np.zeros((2, 2))
    for axis in range(2):
        out = []
        for sgn in (1, -1):
            sh = sgn * delta * np.array([axis == 0, axis == 1], float)
            moved = np.real(np.fft.ifft2(np.fft.fft2(m) * np.exp(-2j * np.pi * (fx * sh[0] + fy * sh[1]))))
            out.append(_segment_com(w @ moved.reshape(-1), cen))
        resp[:, axis] = (out[0] - out[1]) / (2 * delta * d[axis])
    return cen, resp


def segmented_field(signals: Any, centroids: Any, response: Any, descan: str = "constant") -> np.ndarray:
    """The DPC field (Rx, Ry, 2) Å⁻¹ from a segmented detector's signals (Rx, Ry, n):
    M⁻¹ (the segments' centre-of-mass estimate minus its descan)."""
    com = _segment_com(np.asarray(signals, np.float64), np.asarray(centroids, np.float64))
    com = com - fit_descan(com, descan)
    return com @ np.linalg.inv(np.asarray(response, np.float64)).T


def dpc_phase(dataset: Dataset4D, *, segments: int = 4, rings: tuple[float, ...] = (0.0, math.inf), rotation: float = 0.0,
              highpass: float = 0.0, descan: str = "constant", mesh: Any = None) -> tuple[jax.Array, Lattice]:  # fmt: skip
    """(phase (Rx, Ry) rad on the scan lattice, the lattice) from the pixelated patterns summed
    into a segmented detector's segments (:func:`segment_masks`)."""
    if not float(highpass) >= 0:
        raise PtyroValueError(f"dpc: expected highpass >= 0 Å⁻¹, got {highpass}")
    lat = scan_lattice(dataset.positions, dataset.scan_shape, who="dpc")
    masks = segment_masks(dataset.grid.gpts, dataset.grid.reciprocal_sampling, dataset.energy, segments=segments, rings=rings, rotation=rotation)
    signals = np.asarray(project_patterns(dataset, masks.reshape(len(masks), -1).T, mesh), np.float64)
    arr = dataset.array
    if mesh is None and isinstance(arr, np.ndarray):
        mean = np.mean(arr.reshape((-1,) + arr.shape[-2:]), axis=0, dtype=np.float64)
    else:
        arr = scan_array(dataset, mesh)
        mean = np.asarray(jnp.mean(arr.reshape((-1,) + arr.shape[-2:]), axis=0))
    cen, resp = segment_response(mean, masks, dataset.grid.reciprocal_sampling)
    field = segmented_field(signals, cen, resp, descan)
    return integrate_gradient(jnp.asarray(field, jnp.float32), lat.vectors, highpass), lat


def dpc(dataset: Dataset4D, state: ReconState, *, segments: int = 4, rings: tuple[float, ...] = (0.0, math.inf), rotation: float = 0.0,
        highpass: float = 0.0, descan: str = "constant", mesh: Any = None) -> ReconState:  # fmt: skip
    """Segmented-detector DPC: the pixelated patterns summed into ``segments`` sectors per
    annulus between ``rings`` (mrad; default one disc over the whole detector: a quadrant
    detector), the segments' deflection calibrated on the mean pattern
    (:func:`segment_response`) and integrated like iCoM's."""
    check_inputs(dataset, state, "dpc")
    phase, lat = dpc_phase(dataset, segments=segments, rings=rings, rotation=rotation, highpass=highpass, descan=descan, mesh=mesh)
    return finish(state, phase, lat)
