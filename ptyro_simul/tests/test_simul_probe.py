"""Probes: normalisation, partial coherence (focal spread, source size), conformance."""

import jax.numpy as jnp
import numpy as np
import pytest

import ptyro_core
from ptyro_core import Grid, PtyroValueError
from ptyro_core.testing import check_conformance
from ptyro_simul.probe import aberrated_probe, partially_coherent_probe

GRID = Grid((48, 48), (0.12, 0.12))


def test_coherent_limit_is_the_aberrated_probe():
    a = aberrated_probe(GRID, 200e3, semiangle_cutoff=20.0, aberrations={"C10": 20.0})
    b = partially_coherent_probe(GRID, 200e3, semiangle_cutoff=20.0, aberrations={"C10": 20.0})
    assert b.num_modes == 1
    np.testing.assert_allclose(np.asarray(b.array), np.asarray(a.array), atol=1e-6)


def test_focal_spread_modes_and_weights():
    p = partially_coherent_probe(GRID, 200e3, semiangle_cutoff=20.0, focal_spread=40.0, num_focal=5)
    assert p.num_modes == 5
    assert float(jnp.sum(jnp.abs(p.array) ** 2)) == pytest.approx(1.0, abs=1e-5)
    occ = np.asarray(p.occupancies)
    # Gauss-Hermite weights: symmetric, peaked at the mean defocus
    np.testing.assert_allclose(occ, occ[::-1], rtol=1e-5)
    assert occ[2] == occ.max()
    # the incoherent sum is broader than the coherent in-focus probe (lower peak intensity)
    coh = aberrated_probe(GRID, 200e3, semiangle_cutoff=20.0)
    assert float(jnp.max(jnp.sum(jnp.abs(p.array) ** 2, 0))) < float(jnp.max(jnp.abs(coh.array) ** 2))


def test_source_size_blurs_by_its_rms():
    # intensity = coherent probe convolved with the Gaussian source: variances add
    coh = aberrated_probe(GRID, 200e3, semiangle_cutoff=20.0)
    s = 0.3
    p = partially_coherent_probe(GRID, 200e3, semiangle_cutoff=20.0, source_size=s, num_source=4)
    assert p.num_modes == 16
    x, _ = GRID.coordinates()
    c = 24 * 0.12

    def var_x(i):
        return float(jnp.sum(i * (x - c) ** 2) / jnp.sum(i))

    v0 = var_x(jnp.abs(coh.array[0]) ** 2)
    v1 = var_x(jnp.sum(jnp.abs(p.array) ** 2, 0))
    assert v1 - v0 == pytest.approx(s**2, rel=0.05)  # the Airy tails wrap around the 5.8 Å cell


def test_orthogonalized_modes():
    p = partially_coherent_probe(GRID, 200e3, semiangle_cutoff=20.0, focal_spread=30.0, source_size=0.2, num_focal=3, num_source=2, orthogonalize=True, num_modes=4)
    assert p.num_modes == 4
    flat = p.array.reshape(4, -1)
    gram = np.asarray(flat.conj() @ flat.T)
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5)
    assert float(jnp.sum(jnp.abs(p.array) ** 2)) == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(np.asarray(p.occupancies)) <= 1e-6)


def test_errors():
    with pytest.raises(PtyroValueError, match="focal_spread"):
        partially_coherent_probe(GRID, 200e3, semiangle_cutoff=20.0, focal_spread=-1.0)
    with pytest.raises(PtyroValueError, match="semiangle_cutoff"):
        partially_coherent_probe(GRID, 200e3, semiangle_cutoff=500.0)


@pytest.mark.parametrize(("name", "options"), [("aberrated", {}), ("partially_coherent", {"focal_spread": 30.0, "num_focal": 2})])
def test_probe_conformance(name, options):
    check_conformance("probe", ptyro_core.get("probe", name), **options)
