"""Multislice propagates a batch in cache-sized chunks of positions (``CHUNK_BYTES``): the chunking,
including a padded last chunk, changes nothing but the speed, on the full grid and in windows,
and gradients flow through it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptyro_simul.multislice as ms
from ptyro_core import Grid
from ptyro_simul.multislice import multislice
from ptyro_simul.potentials import kirkland
from ptyro_simul.probe import aberrated_probe
from ptyro_simul.structures import build_crystal


@pytest.fixture(scope="module")
def case():
    atoms = build_crystal("SrTiO3", repeat=(2, 2, 2))
    grid = Grid.from_extent(atoms.cell[:2], gpts=(40, 40))
    pot = kirkland(atoms, grid, slice_thickness=3.905 / 2)
    rng = np.random.default_rng(5)
    positions = jnp.asarray(rng.uniform(1.0, 6.0, (7, 2)), jnp.float32)  # 7 positions: chunks of 3 pad 2
    return grid, pot, positions


def _with_chunk_bytes(monkeypatch, n_positions_per_chunk, wave_bytes, fn):
    monkeypatch.setattr(ms, "CHUNK_BYTES", n_positions_per_chunk * wave_bytes)
    jax.clear_caches()  # CHUNK_BYTES is read when a batch function is traced
    try:
        return np.asarray(fn())
    finally:
        jax.clear_caches()


@pytest.mark.parametrize("window", [None, (24, 24)])
@pytest.mark.parametrize("per_chunk", [1, 3, 4])
def test_chunks_change_nothing(case, monkeypatch, window, per_chunk):
    grid, pot, positions = case
    pgrid = grid if window is None else Grid(window, grid.sampling)
    probe = aberrated_probe(pgrid, 200e3, semiangle_cutoff=20.0)
    wave_bytes = int(np.prod(pgrid.gpts)) * 8
    sim = multislice(pot, probe, window=window)
    whole = _with_chunk_bytes(monkeypatch, 1000, wave_bytes, lambda: sim(positions))
    chunked = _with_chunk_bytes(monkeypatch, per_chunk, wave_bytes, lambda: sim(positions))
    assert whole.shape == (7,) + tuple(pgrid.gpts)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=2e-6 * float(whole.max()))
    # and the patterns are real diffraction patterns (each sums to about the probe's 1)
    np.testing.assert_allclose(chunked.sum(axis=(-2, -1)), 1.0, atol=3e-3)


def test_gradient_through_chunks(case, monkeypatch):
    grid, pot, positions = case
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0)
    wave_bytes = int(np.prod(grid.gpts)) * 8

    def grads():
        f = lambda p: jnp.sum(multislice(pot, probe)(p) * jnp.arange(40.0)[None, :, None])  # noqa: E731
        return jax.grad(f)(positions)

    g1 = _with_chunk_bytes(monkeypatch, 1000, wave_bytes, grads)
    g2 = _with_chunk_bytes(monkeypatch, 2, wave_bytes, grads)
    assert np.all(np.isfinite(g1)) and float(np.abs(g1).max()) > 0
    np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-4 * float(np.abs(g1).max()))
