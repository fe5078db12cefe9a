"""Tests of the ptyro-lobato plugin: the published form and constraints of the parameterization,
the closed-form projected potential against a numerical Hankel transform of f(g), the Bessel
functions against scipy, the comparison with Kirkland, and the plugin contract."""

import importlib.metadata as md
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, special

import ptyro_core
from ptyro_core import Atoms, DuplicateComponentError, Grid, PtyroValueError
from ptyro_core.testing import check_conformance
from ptyro_lobato import A0E, CITATION, k0, k1, parameters, potential, projected_potential, scattering_factor
from ptyro_lobato.parameters import load_parameters, table

BOHR = 0.529177210903  # Å
E_VA = 14.399645478425668  # e/(4π ε0) in V·Å




# --------------------------------------------------------------------------- the data


def test_package_data_and_citation():
    data = load_parameters()
    assert "Lobato" in data["source"] and "A70" in data["source"]
    assert [e["Z"] for e in data["elements"]] == list(range(1, 104))
    assert "636-649" in CITATION
    a, b = parameters(14)
    assert a.shape == b.shape == (5,) and np.all(b > 0)
    with pytest.raises(PtyroValueError, match="104"):
        parameters(104)


def test_scattering_factor_is_the_published_form(x64):
    """f(g) = Σ a (2 + b g²)/(1 + b g²)², evaluated straight from the JSON."""
    g = np.linspace(0.0, 6.0, 61)
    for entry in load_parameters()["elements"][::17]:
        a, b = np.array(entry["a"]), np.array(entry["b"])
        ref = np.sum(a * (2 + b * g[:, None] ** 2) / (1 + b * g[:, None] ** 2) ** 2, axis=1)
        np.testing.assert_allclose(np.asarray(scattering_factor(g, entry["Z"])), ref, rtol=1e-12)


def test_mott_bethe_limit_for_every_element():
    """The fits obey the Mott–Bethe high-angle limit f(g) → Z / (2π² a₀ g²), i.e. Σ aᵢ/bᵢ =
    Z/(2π² a₀), and the Coulomb limit r V(r) → Z e near the nucleus (constraints of the paper)."""
    a, b = table()
    z = np.arange(1, 104)
    np.testing.assert_allclose(np.sum(a[1:] / b[1:], axis=1), z / (2 * np.pi**2 * BOHR), rtol=1e-8)
    for Z in (1, 29, 103):
        g = 400.0
        assert float(scattering_factor(g, Z)) * 2 * np.pi**2 * BOHR * g**2 / Z == pytest.approx(1.0, rel=1e-3)
        r = 1e-5
        assert float(potential(r, Z)) * r / (Z * E_VA) == pytest.approx(1.0, rel=1e-3)


def test_close_to_kirkland_scattering_factors():
    ks = pytest.importorskip("ptyro_simul.potentials").kirkland_scattering_factor
    g = np.linspace(0.0, 4.0, 81)
    for Z in (6, 14, 22, 38, 79):
        fl, fk = np.asarray(scattering_factor(g, Z), np.float64), ks(g, Z)
        assert np.sqrt(np.sum((fl - fk) ** 2) / np.sum(fk**2)) < 0.02, Z


# --------------------------------------------------------------------------- Bessel functions


def test_bessel_against_scipy(x64):
    x = np.concatenate([np.geomspace(1e-6, 60.0, 400), [2.0 - 1e-9, 2.0, 2.0 + 1e-9]])
    np.testing.assert_allclose(np.asarray(k0(x)), special.k0(x), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(k1(x)), special.k1(x), rtol=1e-12)
    # K0' = -K1, K1' = -K0 - K1/x (A&S 9.6.27)
    dk0 = jax.vmap(jax.grad(k0))(jnp.asarray(x))
    dk1 = jax.vmap(jax.grad(k1))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(dk0), -special.k1(x), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(dk1), -special.k0(x) - special.k1(x) / x, rtol=1e-10)


def test_bessel_float32():
    x = np.geomspace(1e-3, 30.0, 50).astype(np.float32)
    assert k0(x).dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(k0(x)), special.k0(x.astype(np.float64)), rtol=2e-5)
    np.testing.assert_allclose(np.asarray(k1(x)), special.k1(x.astype(np.float64)), rtol=2e-5)


# --------------------------------------------------------------------------- closed forms


def _hankel_projected(Z: int, r: float) -> float:
    """v_z(r) = 2π a₀e ∫ f(g) J0(2π g r) 2π g dg, computed numerically. The slowly decaying 1/g²
    tail is removed with c/(g² + 1) (c = Σ a/b), whose transform 2π c K0(2π r) (scipy) is added
    back, so the quadrature converges; this checks the whole closed form, not its parts."""
    a, b = parameters(Z)
    c = float(np.sum(a / b))

    def f(g: float) -> float:
        bg2 = b * g * g
        return float(np.sum(a * (2 + bg2) / (1 + bg2) ** 2)) - c / (g * g + 1.0)

    rest = integrate.quad(lambda g: f(g) * special.j0(2 * np.pi * g * r) * 2 * np.pi * g, 0.0, 400.0, limit=4000)[0]
    return 2 * np.pi * A0E * (rest + 2 * np.pi * c * special.k0(2 * np.pi * r))


@pytest.mark.parametrize("Z", [6, 38, 79])
def test_projected_potential_matches_numerical_hankel_transform(x64, Z):
    for r in (0.05, 0.3, 1.0, 2.5):
        assert float(projected_potential(r, Z)) == pytest.approx(_hankel_projected(Z, r), rel=2e-6), r


def test_projected_potential_is_the_z_integral_of_the_potential(x64):
    for Z, r in ((8, 0.2), (22, 0.7), (92, 1.5)):
        num = 2 * integrate.quad(lambda z: float(potential(np.hypot(r, z), Z)), 0.0, np.inf, limit=200)[0]
        assert float(projected_potential(r, Z)) == pytest.approx(num, rel=1e-8)


def test_integral_of_projected_potential_is_f0(x64):
    """∫ v_z dA = 2π a₀e f(0) (the g = 0 Fourier component); quadrature in ln r."""
    t = np.linspace(np.log(1e-9), np.log(200.0), 40001)
    r = np.exp(t)
    for Z in (6, 79):
        v = np.asarray(projected_potential(r, Z))
        total = np.trapezoid(v * 2 * np.pi * r * r, t)
        assert total == pytest.approx(2 * np.pi * A0E * float(scattering_factor(0.0, Z)), rel=1e-6)


def test_radial_gradients(x64):
    r = jnp.array([0.07, 0.4, 1.3, 3.0])
    check_grads(jax.jit(lambda x: projected_potential(x, 14)), (r,), order=1, modes=("fwd", "rev"))
    check_grads(jax.jit(lambda x: potential(x, 14)), (r,), order=1, modes=("rev",))
    a, b = (jnp.asarray(p) for p in parameters(14))
    check_grads(jax.jit(lambda aa, bb: projected_potential(r, a=aa, b=bb)), (a, b), order=1, modes=("rev",))


# --------------------------------------------------------------------------- the component


def test_registered_and_conformant():
    comp = ptyro_core.get_registry().component("potential", "lobato")
    assert comp.distribution == "ptyro-lobato" and comp.version == md.version("ptyro-lobato")
    check_conformance("potential", comp.obj, slice_thickness=2.0)


def _single_atom(Z, grid, cell):
    return Atoms(np.array([[cell / 2, cell / 2, 1.0]]), np.array([Z]), cell=(cell, cell, 2.0))


def test_sliced_single_atom_matches_radial_function():
    """The framework's real-space grid potential of one atom equals v_z(r) (minus the cutoff
    shift) away from the nucleus, and its integral is 2π a₀e f(0) to the cutoff tolerance (the
    default Fourier path is checked against f(k) in ptyro_simul's test_simul_potential_fourier)."""
    lob = ptyro_core.get("potential", "lobato")
    cell = 12.8
    grid = Grid((64, 64), (0.2, 0.2))
    out = np.asarray(lob(_single_atom(38, grid, cell), grid, slice_thickness=2.0, method="real").array[0], np.float64)
    total = out.sum() * 0.2 * 0.2
    assert total == pytest.approx(2 * np.pi * A0E * float(scattering_factor(0.0, 38)), rel=2e-2)
    x = (np.arange(64) * 0.2 - cell / 2)[:, None]
    r = np.hypot(x, x.T)
    ring = (r > 0.5) & (r < 1.5)
    exact = np.asarray(projected_potential(r[ring], 38), np.float64)
    assert np.max(np.abs(out[ring] - exact) / exact) < 0.05


def test_lobato_vs_kirkland_projected_potentials(x64):
    """Single-atom projected potentials (area-weighted relative L2 over 0.05 Å < r < 4 Å) agree
    with Kirkland's parametrisation to a few percent. The grid and SrTiO3 figures come from the
    script compare_kirkland.py (README)."""
    pot = pytest.importorskip("ptyro_simul.potentials")
    r = np.linspace(0.05, 4.0, 800)
    for Z in (6, 8, 22, 38, 79):
        vl = np.asarray(projected_potential(r, Z))
        vk = np.asarray(pot.kirkland_projected(jnp.asarray(r), jnp.asarray(pot.kirkland_parameters()[Z])))
        assert np.sqrt(np.sum(r * (vl - vk) ** 2) / np.sum(r * vk**2)) < 0.03, Z


def test_position_gradient_float64(x64):
    lob = ptyro_core.get("potential", "lobato")
    grid = Grid((16, 16), (0.25, 0.25))
    atoms = Atoms(np.array([[1.9, 2.1, 1.0]]), np.array([8]), cell=(4.0, 4.0, 2.0))
    w = jnp.asarray(np.random.default_rng(0).standard_normal((1, 16, 16)))

    def f(pos):
        return jnp.sum(w * lob(ptyro_core.replace(atoms, positions=pos), grid, slice_thickness=2.0).array)

    check_grads(jax.jit(f), (atoms.positions,), order=1, modes=("rev",), eps=1e-4, rtol=1e-3)


# --------------------------------------------------------------------------- plugin contract

CLAIM_LOBATO = """
from ptyro_core import hookimpl

def fake(atoms, grid, *, slice_thickness, projection="infinite"):
    raise RuntimeError("never called")

@hookimpl
def ptyro_register_potentials(register):
    register("lobato", fake, description="another lobato")
"""


def test_second_distribution_claiming_lobato_is_a_clear_duplicate_error(fake_distribution):
    fake_distribution("ptyro-other-lobato", CLAIM_LOBATO)
    reg = ptyro_core.get_registry()
    with pytest.raises(DuplicateComponentError, match="ptyro-lobato.*ptyro-other-lobato|ptyro-other-lobato.*ptyro-lobato"):
        reg.get("potential", "lobato")
    clashes = [b for b in reg.broken if b.name == "lobato"]
    assert {b.distribution for b in clashes} == {"ptyro-lobato", "ptyro-other-lobato"}


def test_listed_by_ptyro_plugins_and_removed_when_disabled(monkeypatch):
    import argparse
    import io

    from ptyro_core.cli import run_plugins

    out = io.StringIO()
    run_plugins(argparse.Namespace(json=True, kind="potential", strict=False), registry=ptyro_core.registry.Registry(), out=out)
    rows = {c["name"]: c for c in json.loads(out.getvalue())["components"]}
    assert rows["lobato"]["distribution"] == "ptyro-lobato"
    # as if uninstalled: the entry point is no longer loaded, the name is gone
    monkeypatch.setenv("PTYRO_DISABLE_PLUGINS", "ptyro-lobato")
    reg = ptyro_core.registry.Registry()
    assert "lobato" not in reg.names("potential")
    with pytest.raises(ptyro_core.UnknownComponentError):
        reg.get("potential", "lobato")
