"""Stand-ins used only while ``ptyro_simul`` lacks them (its ``structures`` module, its
``multislice`` simulator): a few built-in crystals along [001] and a plain multislice simulator
over the registered propagator. Everything else resolves through the registry; once
``ptyro_simul`` provides these, they are used instead and nothing here runs.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Atoms, PotentialSlices, ProbeModes, PtyroValueError, get

__all__ = ["CRYSTALS", "builtin_crystal", "multislice"]

#: name -> (cell (a, b, c) Å, [(Z, fractional x, y, z), ...])
CRYSTALS: dict[str, tuple[tuple[float, float, float], list[tuple[int, float, float, float]]]] = {
    "SrTiO3": ((3.905, 3.905, 3.905), [(38, 0, 0, 0), (22, 0.5, 0.5, 0.5), (8, 0.5, 0.5, 0), (8, 0.5, 0, 0.5), (8, 0, 0.5, 0.5)]),
}


def builtin_crystal(name: str, repeat: Any = (1, 1, 1), zone_axis: Any = (0, 0, 1)) -> Atoms:
    if name not in CRYSTALS:
        raise PtyroValueError(f"[specimen] structure: unknown built-in crystal {name!r}; known: {', '.join(CRYSTALS)}, or a structure file path")
    if tuple(zone_axis) != (0, 0, 1):
        raise PtyroValueError(f"[specimen] zone_axis {list(zone_axis)}: only [0, 0, 1] is available for built-in crystals here")
    cell, basis = CRYSTALS[name]
    nx, ny, nz = (int(v) for v in repeat)
    frac = np.array([b[1:] for b in basis])
    z = np.array([b[0] for b in basis])
    shifts = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1).reshape(-1, 3)
    pos = ((frac[None] + shifts[:, None]) * np.asarray(cell)[None, None]).reshape(-1, 3)
    return Atoms(pos.astype(np.float32), np.tile(z, len(shifts)), (cell[0] * nx, cell[1] * ny, cell[2] * nz))


def multislice(potential: PotentialSlices, probe: ProbeModes, *, propagator: str = "fresnel", **_: Any) -> Any:
    """``fn(positions (b, 2) Å) -> (b, nx, ny)`` centred intensities, summed over probe modes:
    transmit exp(iσV) and propagate slice by slice (``jax.lax.scan``)."""
    from ptyro_simul.constants import energy2sigma

    prop = get("propagator", propagator)
    grid, energy = potential.grid, probe.energy
    sigma = energy2sigma(energy)
    kx, ky = grid.frequencies()
    pk = jnp.fft.fft2(jnp.fft.ifftshift(probe.array, axes=(-2, -1)), norm="ortho")

    def one(pos: Any) -> Any:
        ramp = jnp.exp(-2j * jnp.pi * (kx * pos[0] + ky * pos[1])).astype(pk.dtype)
        psi = jnp.fft.ifft2(pk * ramp[None], norm="ortho")

        def step(w: Any, xs: Any) -> tuple[Any, None]:
            v, dz = xs
            w = w * jnp.exp(1j * sigma * v).astype(w.dtype)[None]
            return jax.vmap(lambda m: prop(m, dz, grid, energy))(w), None

        psi, _ = jax.lax.scan(step, psi, (potential.array, potential.slice_thickness))
        return jnp.sum(jnp.abs(jnp.fft.fftshift(jnp.fft.fft2(psi, norm="ortho"), axes=(-2, -1))) ** 2, axis=0)

    return jax.vmap(one)
