"""Integrated centre of mass (iCoM / integrated DPC).

For a thin specimen the centre of mass of each pattern is (in cycles per Å, the detector's
forward FFT) ⟨k⟩(R) = (1/2π) ∇(φ ⊛ |P|²)(R) (Waddell & Chapman 1979; Lazić et al. 2016), a
gradient field; its Fourier-space inverse gradient

    Φ_iCoM(Q) = −i Q·C(Q) / (|Q|² + q_hp²)

(C the scan FFT of the centre-of-mass field, Q the lattice's frequencies in the object frame,
``highpass`` q_hp in Å⁻¹ the regulariser, 0 by default) is the phase convolved with the
probe's intensity: a weak or strong phase transferred by T_iCoM(Q) = FT[|P|²](Q)
= Σ_k P̃(k) P̃*(k − Q) (the normalised two-disc overlap for an in-focus probe).

The centres of mass and the descan are :mod:`ptyro_invert.calibrate`'s; the scan's rotation
and transpose are in the positions (``[scan] rotation``, or
:func:`ptyro_invert.calibrate.scan_rotation` to find them).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Dataset4D, PtyroValueError, ReconState
from ptyro_invert.calibrate import center_of_mass, fit_descan
from ptyro_invert.direct._common import Lattice, check_inputs, finish, probe_fourier, probe_geometry, scan_lattice, shift_fourier

__all__ = ["com_field", "integrate_gradient", "icom_transfer", "icom_phase", "icom"]


def com_field(dataset: Dataset4D, *, descan: str = "constant", mask: Any = None) -> jax.Array:
    """The DPC field (Rx, Ry, 2) in Å⁻¹ (detector = object frame): each pattern's centre of mass
    minus the descan (:func:`ptyro_invert.calibrate.fit_descan` with ``descan`` = "constant",
    "plane" or "free")."""
    com = center_of_mass(jnp.asarray(np.asarray(dataset.array)), mask)
    ref = fit_descan(np.asarray(com), descan)
    return (com - jnp.asarray(ref, com.dtype)) * jnp.asarray(dataset.grid.reciprocal_sampling, com.dtype)[None, None, :]


def integrate_gradient(field: jax.Array, vectors: Any, highpass: float = 0.0) -> jax.Array:
    """φ (Rx, Ry) with (1/2π)∇φ = ``field`` (Rx, Ry, 2) on the raster with step vectors
    ``vectors`` (2×2, columns a₁, a₂, Å), by the regularised Fourier inverse gradient; mean 0.
    Linear, ``jit``-able and differentiable."""
    rx, ry = field.shape[:2]
    lat = Lattice((rx, ry), np.zeros(2), np.asarray(vectors, np.float64))
    q = jnp.asarray(lat.frequencies(), field.dtype)
    c = jnp.fft.fft2(field, axes=(0, 1))
    q2 = q[..., 0] ** 2 + q[..., 1] ** 2 + float(highpass) ** 2
    num = q[..., 0] * c[..., 0] + q[..., 1] * c[..., 1]
    phi = jnp.where(q2 > 0, -1j * num / jnp.where(q2 > 0, q2, 1.0), 0.0)
    return jnp.real(jnp.fft.ifft2(phi))


def icom_transfer(state: ReconState, lattice: Lattice) -> np.ndarray:
    """T_iCoM(Q) = Σ_k P̃(k) P̃*(k − Q) (real part) on the lattice's frequencies."""
    q = jnp.asarray(lattice.frequencies().reshape(-1, 2), jnp.float32)
    return np.asarray(_autocorrelation(q, probe_fourier(state), probe_geometry(state))).reshape(lattice.shape)


@jax.jit
def _autocorrelation(q: jax.Array, p0: jax.Array, probe: tuple) -> jax.Array:
    return jax.lax.map(lambda v: jnp.real(jnp.sum(p0 * jnp.conj(shift_fourier(*probe, v)))), q, batch_size=64)


def icom_phase(dataset: Dataset4D, *, highpass: float = 0.0, descan: str = "constant", mask: Any = None) -> tuple[jax.Array, Lattice]:
    """(phase (Rx, Ry) rad on the scan lattice, the lattice)."""
    if not float(highpass) >= 0:
        raise PtyroValueError(f"icom: expected highpass >= 0 Å⁻¹, got {highpass}")
    lat = scan_lattice(dataset.positions, dataset.scan_shape, who="icom")
    return integrate_gradient(com_field(dataset, descan=descan, mask=mask), lat.vectors, highpass), lat


def icom(dataset: Dataset4D, state: ReconState, *, highpass: float = 0.0, descan: str = "constant", mask: Any = None) -> ReconState:
    """Integrated centre of mass: the phase (convolved with |P|²) on the state's object grid;
    ``highpass`` (Å⁻¹) regularises the low frequencies, ``descan`` and ``mask`` go to the
    centre-of-mass measurement (:func:`com_field`)."""
    check_inputs(dataset, state, "icom")
    phase, lat = icom_phase(dataset, highpass=highpass, descan=descan, mask=mask)
    return finish(state, phase, lat)
