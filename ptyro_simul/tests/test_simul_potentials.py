"""Kirkland potential: Bessel functions, the published formulas, integrals, slicing, periodicity,
gradients, conformance."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, special

import ptyro_core
from ptyro_core import Atoms, Grid, PtyroTypeError, PtyroValueError
from ptyro_core._pytree import replace
from ptyro_core.testing import check_conformance
from ptyro_simul.potentials import (
    A0E,
    ParametrizedPotential,
    bessel_k0,
    bessel_k1,
    kirkland,
    kirkland_parameters,
    kirkland_potential_3d,
    kirkland_projected,
    kirkland_scattering_factor,
)


def test_bessel_against_scipy(x64):
    x = np.geomspace(1e-5, 40.0, 400)
    np.testing.assert_allclose(np.asarray(bessel_k0(jnp.asarray(x))), special.k0(x), rtol=3e-7)
    np.testing.assert_allclose(np.asarray(bessel_k1(jnp.asarray(x))), special.k1(x), rtol=3e-7)


def test_a0e_constant():
    # Bohr radius (0.529177 Å) times e / (4π ε0) (14.39964 V·Å)
    assert A0E == pytest.approx(0.529177210903 * 14.3996454784, rel=1e-7)


def test_table_covers_all_elements():
    table = kirkland_parameters()
    assert sorted(table) == list(range(1, 104))
    assert all(p.shape == (12,) for p in table.values())


@pytest.mark.parametrize("z", [6, 38, 79])
def test_projected_matches_numeric_z_integration(z, x64):
    # v_z(r) = ∫ V(√(r² + z²)) dz of the published 3D potential, by scipy quadrature
    p = jnp.asarray(kirkland_parameters()[z])
    v3 = lambda r: float(kirkland_potential_3d(jnp.asarray(r), p))  # noqa: E731
    for r in (0.05, 0.3, 1.0, 2.5):
        numeric = 2 * integrate.quad(lambda t: v3(math.hypot(r, t)), 0, np.inf, limit=200)[0]
        assert float(kirkland_projected(jnp.asarray(r), p)) == pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("z", [1, 8, 22, 38, 92])
def test_projected_integral_is_scattering_factor_at_zero(z):
    # ∫ v_z dA = (h² / (2π m0 e)) f(0) = 2π a0e f(0)
    f0 = float(kirkland_scattering_factor(0.0, z))
    assert kirkland.integral(z) == pytest.approx(2 * math.pi * A0E * f0, rel=1e-4)


@pytest.mark.parametrize("z", [8, 38])
def test_cutoff_error_is_stated_and_small(z):
    rc, err = kirkland.cutoff(z)
    assert 0.5 <= rc < 8 and err <= kirkland.cutoff_tolerance
    rc3, err3 = kirkland.cutoff(z, "finite")
    assert rc3 >= rc and err3 <= kirkland.cutoff_tolerance


def _single(z, xyz, cell=(8.0, 8.0, 8.0), n=64, dz=8.0, projection="infinite", **options):
    atoms = Atoms(np.array([xyz], np.float32), np.array([z]), cell=cell)
    grid = Grid.from_extent(cell[:2], gpts=(n, n))
    return kirkland(atoms, grid, slice_thickness=dz, projection=projection, **options), grid


def test_pixel_sum_matches_integral():
    pot, grid = _single(8, (4.0, 4.0, 4.0), n=128)
    total = float(jnp.sum(pot.array)) * grid.sampling[0] * grid.sampling[1]
    assert total == pytest.approx(kirkland.integral(8), rel=1e-2)


def test_sampled_values_match_formula():
    # the real-space path samples v_z at pixel centres (the Fourier path is tested in k space)
    pot, grid = _single(14, (4.0, 4.0, 4.0), n=64, method="real")
    dx = grid.sampling[0]
    p = jnp.asarray(kirkland_parameters()[14])
    # pixel (32 + 4, 32) is 4 dx from the atom, inside the untapered region
    r = 4 * dx
    assert float(pot.array[0, 36, 32]) == pytest.approx(float(kirkland_projected(jnp.asarray(r), p)), rel=1e-4)


def test_finite_and_infinite_agree_in_total():
    cell = (6.0, 6.0, 12.0)
    atoms = Atoms(np.array([[3.0, 3.0, 5.3], [1.0, 2.0, 6.9]], np.float32), np.array([6, 8]), cell=cell)
    grid = Grid.from_extent(cell[:2], gpts=(48, 48))
    inf = kirkland(atoms, grid, slice_thickness=1.0)
    fin = kirkland(atoms, grid, slice_thickness=1.0, projection="finite")
    assert fin.array.shape == inf.array.shape == (12, 48, 48)
    assert float(jnp.sum(fin.array)) == pytest.approx(float(jnp.sum(inf.array)), rel=5e-3)
    # the finite projection spreads each atom over neighbouring slices, the infinite does not
    assert int(jnp.sum(jnp.sum(inf.array, axis=(1, 2)) > 1e-3)) == 2
    assert int(jnp.sum(jnp.sum(fin.array, axis=(1, 2)) > 1e-3)) > 3
    # projected sum over slices ~ infinite projection, pixel by pixel
    np.testing.assert_allclose(np.asarray(fin.array.sum(0)), np.asarray(inf.array.sum(0)), atol=0.02 * float(inf.array.max()))


def test_finite_projection_splits_straddling_atom():
    # an atom on a slice boundary gives equal halves to both slices
    pot, _ = _single(6, (4.0, 4.0, 4.0), cell=(8.0, 8.0, 8.0), n=32, dz=4.0, projection="finite")
    s = np.asarray(jnp.sum(pot.array, axis=(1, 2)))
    assert s[0] == pytest.approx(s[1], rel=1e-4)


def test_periodic_images_and_boundaries():
    # an atom across the boundary equals the rolled potential of an atom in the middle
    n, cell = 32, (4.0, 4.0, 4.0)
    mid, _ = _single(38, (2.0, 2.0, 1.0), cell=cell, n=n, dz=4.0)
    edge, _ = _single(38, (0.0, 2.0, 1.0), cell=cell, n=n, dz=4.0)
    np.testing.assert_allclose(np.asarray(edge.array), np.roll(np.asarray(mid.array), -n // 2, axis=1), rtol=1e-4, atol=1e-3)
    # Sr's window (4.7 Å) is wider than the 4 Å cell: images overlap and are all summed
    grid = Grid.from_extent(cell[:2], gpts=(n, n))
    total = float(jnp.sum(mid.array)) * grid.sampling[0] * grid.sampling[1]
    assert total == pytest.approx(kirkland.integral(38), rel=2e-2)


def test_crystal_potential_is_periodic():
    from ptyro_simul.structures import build_crystal

    atoms = build_crystal("SrTiO3", repeat=(2, 2, 1))
    grid = Grid.from_extent(atoms.cell[:2], gpts=(64, 64))
    pot = kirkland(atoms, grid, slice_thickness=atoms.cell[2] / 2)
    a = np.asarray(pot.array)
    np.testing.assert_allclose(a, np.roll(a, 32, axis=1), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(a, np.roll(a, 32, axis=2), rtol=1e-4, atol=1e-3)


def test_errors():
    atoms = Atoms(np.zeros((1, 3), np.float32), np.array([6]), cell=(4.0, 4.0, 4.0))
    with pytest.raises(PtyroValueError, match="projection"):
        kirkland(atoms, Grid((16, 16), (0.25, 0.25)), slice_thickness=1.0, projection="half")
    with pytest.raises(PtyroValueError, match="does not match the cell"):
        kirkland(atoms, Grid((16, 16), (0.2, 0.2)), slice_thickness=1.0)
    with pytest.raises(PtyroValueError, match="slice_thickness"):
        kirkland(atoms, Grid((16, 16), (0.25, 0.25)), slice_thickness=-1.0)
    partial = ParametrizedPotential("only-carbon", {6: kirkland_parameters()[6]}, kirkland_projected)
    with pytest.raises(PtyroValueError, match="Z = 8"):
        partial(Atoms(np.zeros((1, 3), np.float32), np.array([8]), cell=(4.0, 4.0, 4.0)), Grid((16, 16), (0.25, 0.25)), slice_thickness=1.0)
    with pytest.raises(PtyroValueError, match="3D potential"):
        partial(atoms, Grid((16, 16), (0.25, 0.25)), slice_thickness=1.0, projection="finite")


def test_third_party_parametrization_reuses_framework():
    # a custom radial function (a single Gaussian) gets slicing, cutoff and periodicity for free
    def gauss(r, p):
        return p[0] * jnp.exp(-(r**2) / p[1])

    pz = ParametrizedPotential("toy", {1: [10.0, 0.5]}, gauss)
    pot, grid = _single(1, (4.0, 4.0, 4.0), n=64)
    toy = pz(Atoms(np.array([[4.0, 4.0, 4.0]], np.float32), np.array([1]), cell=(8.0, 8.0, 8.0)), grid, slice_thickness=8.0)
    total = float(jnp.sum(toy.array)) * grid.sampling[0] ** 2
    assert total == pytest.approx(10.0 * math.pi * 0.5, rel=pz.cutoff_tolerance + 1e-3)


@pytest.mark.parametrize("projection", ["infinite", "finite"])
def test_kirkland_conformance(projection):
    check_conformance("potential", ptyro_core.get("potential", "kirkland"), slice_thickness=2.0, projection=projection)


def test_traced_numbers_refused():
    atoms = Atoms(np.zeros((1, 3), np.float32), np.array([6]), cell=(4.0, 4.0, 4.0))
    grid = Grid((16, 16), (0.25, 0.25))

    def f(numbers):
        return kirkland(replace(atoms, numbers=numbers), grid, slice_thickness=4.0).array

    with pytest.raises(PtyroTypeError, match="concrete"):
        jax.jit(f)(atoms.numbers)
