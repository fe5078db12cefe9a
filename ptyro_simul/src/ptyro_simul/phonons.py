"""Frozen phonons: random thermal displacements, seeded and reproducible.

Each atom is displaced by an independent Gaussian of rms σ in x, y and z (σ per element, in Å,
or from a Debye–Waller factor B in Å² as σ = √(B / (8π²))). Configuration ``i`` of a run with
``seed`` always uses the key ``fold_in(PRNGKey(seed), i)``, so any configuration can be rebuilt
on its own. Intensities are averaged over configurations by :mod:`ptyro_simul.stem` when it is
given the list of potentials (``simulate_4dstem(frozen_phonon_potentials(...), probe, ...)``).
"""

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Atoms, Grid, PotentialSlices, PtyroValueError
from ptyro_core._pytree import replace
from ptyro_simul.elements import atomic_number

__all__ = ["debye_waller_to_sigma", "thermal_sigmas", "displace", "frozen_phonon_configurations", "frozen_phonon_potentials"]


def debye_waller_to_sigma(b: float) -> float:
    """rms displacement per direction σ = √(B / (8π²)) in Å for a Debye–Waller B in Å²."""
    if not (math.isfinite(float(b)) and float(b) >= 0):
        raise PtyroValueError(f"debye_waller: expected B >= 0 in Å², got {b!r}")
    return math.sqrt(float(b) / (8 * math.pi**2))


def thermal_sigmas(atoms: Atoms, sigmas: Any = None, debye_waller: Any = None) -> np.ndarray:
    """Per-atom σ (Å): from ``sigmas`` ({symbol: Å} or one number), else ``debye_waller``
    ({symbol: B Å²} or one number), else ``atoms.sigmas``."""
    if sigmas is not None and debye_waller is not None:
        raise PtyroValueError("frozen phonons: give either sigmas or debye_waller, not both")
    numbers = np.asarray(atoms.numbers)
    if sigmas is None and debye_waller is None:
        return np.asarray(atoms.sigmas, np.float64)
    conv = (lambda v: float(v)) if sigmas is not None else debye_waller_to_sigma
    spec = sigmas if sigmas is not None else debye_waller
    if not isinstance(spec, Mapping):
        return np.full(numbers.shape, conv(spec))
    table = {atomic_number(k, where="sigmas"): conv(v) for k, v in spec.items()}
    out = np.array([table.get(int(z), 0.0) for z in numbers])
    if np.any(out < 0):
        raise PtyroValueError(f"sigmas: expected non-negative rms displacements in Å, got {dict(spec)!r}")
    return out


def displace(atoms: Atoms, key: Any, sigmas: Any = None) -> Atoms:
    """``atoms`` with Gaussian displacements (rms ``sigmas`` (n,) Å per direction, default
    ``atoms.sigmas``); jittable. z is not wrapped; x, y wrap into the periodic cell."""
    sig = atoms.sigmas if sigmas is None else jnp.asarray(sigmas, atoms.positions.dtype)
    noise = jax.random.normal(key, atoms.positions.shape, atoms.positions.dtype)
    pos = atoms.positions + noise * sig[:, None]
    cell = jnp.asarray(atoms.cell, pos.dtype)
    xy = jnp.mod(pos[:, :2], cell[None, :2])
    z = jnp.clip(pos[:, 2:], 0.0, cell[2] * (1 - 1e-6))
    return replace(atoms, positions=jnp.concatenate([xy, z], axis=1))


def frozen_phonon_configurations(atoms: Atoms, num_configs: int, *, seed: int = 0, sigmas: Any = None, debye_waller: Any = None) -> list[Atoms]:
    """``num_configs`` displaced copies of ``atoms`` (reproducible for a given ``seed``)."""
    if int(num_configs) < 1:
        raise PtyroValueError(f"num_configs: expected a positive integer, got {num_configs!r}")
    sig = jnp.asarray(thermal_sigmas(atoms, sigmas, debye_waller), atoms.positions.dtype)
    root = jax.random.PRNGKey(int(seed))
    return [displace(atoms, jax.random.fold_in(root, i), sig) for i in range(int(num_configs))]


def frozen_phonon_potentials(
    atoms: Atoms,
    grid: Grid,
    *,
    num_configs: int,
    slice_thickness: Any,
    seed: int = 0,
    sigmas: Any = None,
    debye_waller: Any = None,
    potential: Any = "kirkland",
    projection: str = "infinite",
) -> list[PotentialSlices]:
    """One sliced potential per frozen-phonon configuration (same shapes, so one compile)."""
    pot = potential
    if isinstance(potential, str):
        import ptyro_core

        pot = ptyro_core.get("potential", potential)
    configs = frozen_phonon_configurations(atoms, num_configs, seed=seed, sigmas=sigmas, debye_waller=debye_waller)
    return [pot(c, grid, slice_thickness=slice_thickness, projection=projection) for c in configs]
