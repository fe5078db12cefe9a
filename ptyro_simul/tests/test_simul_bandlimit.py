"""The transmission function is band-limited to 2/3 Nyquist like the propagator, so that t·ψ
cannot alias high-angle scattering back into the kept band (the benchmarks compare the
resulting SIM-A images with abTEM's, which band-limits t the same way)."""

import jax.numpy as jnp

from ptyro_core import Grid, get
from ptyro_simul.multislice import transmission
from ptyro_simul.propagator import antialias_cutoff
from ptyro_simul.structures import build_crystal

ENERGY = 200e3


def _potential(gpts: int):
    atoms = build_crystal("SrTiO3", repeat=(2, 2, 4))
    grid = Grid.from_extent(atoms.cell[:2], gpts=gpts)
    return get("potential", "kirkland")(atoms, grid, slice_thickness=1.9525)


def test_transmission_spectrum_is_band_limited() -> None:
    pot = _potential(48)
    t = transmission(pot, ENERGY)
    spec = jnp.abs(jnp.fft.fft2(t)) ** 2
    kx, ky = pot.grid.frequencies()
    outside = (kx**2 + ky**2) >= antialias_cutoff(pot.grid) ** 2
    frac = float(jnp.sum(spec * outside[None]) / jnp.sum(spec))
    assert frac < 1e-10, frac
    raw = jnp.abs(jnp.fft.fft2(transmission(pot, ENERGY, bandlimit=False))) ** 2
    assert float(jnp.sum(raw * outside[None]) / jnp.sum(raw)) > 1e-4  # there was something to remove
