"""The Fourier-space potential builder: V(k) against the published scattering factors at high k,
for atoms on and off the pixel grid, several Z, Kirkland and Lobato, infinite and finite
projection; frozen phonons against the analytic Debye–Waller damping; gradients; the slice
grouping; errors.

The references are independent of the builder: f(k) from the published formulas written out here
in numpy (float64), the structure factor summed in numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import ptyro_core
from ptyro_core import Atoms, Grid, PtyroValueError
from ptyro_core._pytree import replace
from ptyro_simul.phonons import displace
from ptyro_simul.potentials import A0E, kirkland, kirkland_parameters

N, L = 32, 4.0  # 0.125 Å pixels: band limit 2/3 · 4 Å⁻¹ = 2.67 Å⁻¹ (67 mrad at 200 keV)
DX = L / N
OFFSETS = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)]  # in pixels


def f_kirkland(k, z):
    p = kirkland_parameters()[z]
    a, b, c, d = p[0:3], p[3:6], p[6:9], p[9:12]
    k2 = np.asarray(k, np.float64)[..., None] ** 2
    return np.sum(a / (k2 + b), -1) + np.sum(c * np.exp(-d * k2), -1)


def f_lobato(k, z):
    from ptyro_lobato.parameters import parameters

    a, b = parameters(z)
    bg2 = b * np.asarray(k, np.float64)[..., None] ** 2
    return np.sum(a * (2 + bg2) / (1 + bg2) ** 2, -1)


PARAMETRIZATIONS = {"kirkland": f_kirkland, "lobato": f_lobato}


def _component(name):
    if name == "lobato":
        pytest.importorskip("ptyro_lobato")
    return ptyro_core.get("potential", name)


def _kgrid(n=N, d=DX):
    k1 = np.fft.fftfreq(n, d)
    return k1[:, None], k1[None, :], np.hypot(k1[:, None], k1[None, :])


def _ratio(v, xy, f, z, n=N, d=DX):
    """V(k) / [2π a₀e f(k) S(k)] (complex) from the real-space slice sum ``v`` (n, n)."""
    kx, ky, k = _kgrid(n, d)
    vk = np.fft.fft2(np.asarray(v, np.float64)) * d * d
    s = sum(np.exp(-2j * np.pi * (kx * x + ky * y)) for x, y in xy)
    return vk / (2 * np.pi * A0E * f(k, z) * s), k


def _band(k, n=N, d=DX):
    return k <= (2 / 3) * 0.5 / d


ZS = (6, 38, 79)


@pytest.mark.parametrize(
    "name, projection, zs",
    [("kirkland", "infinite", ZS), ("lobato", "infinite", ZS), ("kirkland", "finite", ZS), ("lobato", "finite", ZS)],
)
def test_vk_matches_scattering_factor_at_high_k(name, projection, zs):
    # C, Sr and Au, one per 6 Å slice (z = 3, 9, 15 Å), each on a pixel, half a pixel off in x,
    # or half off in x and y (every element takes every offset over three builds)
    pot = _component(name)
    f = PARAMETRIZATIONS[name]
    grid = Grid.from_extent((L, L), gpts=(N, N))
    for shift in range(3):
        xy = [(2.0 + OFFSETS[(i + shift) % 3][0] * DX, 2.0 + OFFSETS[(i + shift) % 3][1] * DX) for i in range(len(zs))]
        pos = np.array([[x, y, 3.0 + 6.0 * i] for i, (x, y) in enumerate(xy)], np.float32)
        out = np.asarray(pot(Atoms(pos, np.array(zs), cell=(L, L, 6.0 * len(zs))), grid, slice_thickness=6.0, projection=projection).array)
        for i, z in enumerate(zs):
            r, k = _ratio(out[i], [xy[i]], f, z)
            band = _band(k)
            # infinite: the whole band; finite: the own slice holds all of the singular part (the
            # neighbours' shares are smooth and vanish at high k)
            sel = band if projection == "infinite" else band & (k > 1.5)
            assert np.max(np.abs(r[sel] - 1)) < 0.01, (name, projection, z, xy[i], np.max(np.abs(r[sel] - 1)))
        if projection == "finite":  # the slices together: exact over the whole band, for each element
            kx, ky, k = _kgrid()
            vk = np.fft.fft2(out.sum(0).astype(np.float64)) * DX * DX
            terms = [2 * np.pi * A0E * f(k, z) * np.exp(-2j * np.pi * (kx * x + ky * y)) for z, (x, y) in zip(zs, xy)]
            band = _band(k)
            err = np.abs(vk - sum(terms))[band] / np.min([np.abs(t) for t in terms], axis=0)[band]
            assert np.max(err) < 0.01, (name, xy, np.max(err))


@pytest.mark.parametrize("name", ["kirkland", "lobato"])
def test_real_space_sampling_is_low_at_high_k(name):
    # the former scheme (method="real"): 0.9 at 2.5 Å⁻¹ for an atom on a pixel, ~0.7 half a
    # pixel off in x and y; this is what the Fourier path removes
    pot = _component(name)
    grid = Grid.from_extent((L, L), gpts=(N, N))
    xy = [(2.0 + 0.5 * DX, 2.0 + 0.5 * DX)]
    atoms = Atoms(np.array([[*xy[0], 2.0]], np.float32), np.array([38]), cell=(L, L, 4.0))
    r, k = _ratio(pot(atoms, grid, slice_thickness=4.0, method="real").array[0], xy, PARAMETRIZATIONS[name], 38)
    ring = (k > 2.4) & (k < 2.67)
    assert float(np.mean(np.abs(r[ring]))) < 0.85


@given(x=st.floats(0.0, 4.0, exclude_max=True), y=st.floats(0.0, 4.0, exclude_max=True))
def test_any_subpixel_position_is_exact(x, y):
    grid = Grid.from_extent((L, L), gpts=(N, N))
    atoms = Atoms(np.array([[x, y, 1.0], [1.0, 3.0, 3.0]], np.float32), np.array([8, 8]), cell=(L, L, 4.0))
    out = _jitted_infinite(grid)(atoms.positions)  # traced positions: every atom a candidate for every slice
    pos = np.asarray(atoms.positions, np.float64)
    kx, ky, k = _kgrid()
    vk = np.fft.fft2(np.asarray(out, np.float64)) * DX * DX
    fk = 2 * np.pi * A0E * f_kirkland(k, 8)
    exact = fk * sum(np.exp(-2j * np.pi * (kx * p[0] + ky * p[1])) for p in pos)
    band = _band(k)
    assert np.max(np.abs(vk - exact)[band] / fk[band]) < 0.01  # 1 % of one atom's |V(k)|


_JIT = {}


def _jitted_infinite(grid):
    if grid not in _JIT:
        template = Atoms(np.zeros((2, 3), np.float32), np.array([8, 8]), cell=(L, L, 4.0))

        def f(pos):
            return kirkland(replace(template, positions=pos), grid, slice_thickness=2.0).array.sum(0)

        _JIT[grid] = jax.jit(f)
    return _JIT[grid]


def test_frozen_phonon_average_is_debye_waller_damped(x64):
    # three carbon atoms displaced by σ = 0.1 Å: ⟨V(k)⟩ = 2π a₀e f S₀ D and
    # ⟨|V(k)|²⟩ = |2π a₀e f|² (|S₀|² D² + n (1 − D²)), D = exp(−2π² σ² k²) (analytic)
    n, grid, sigma, m = N, Grid.from_extent((L, L), gpts=(N, N)), 0.1, 1500
    xy0 = np.array([[0.6, 0.9], [2.2, 1.4], [3.1, 3.3]])
    atoms = Atoms(np.c_[xy0, np.full(3, 2.0)], np.array([6, 6, 6]), cell=(L, L, 4.0), sigmas=np.full(3, sigma))

    def one(key):
        a = displace(atoms, key)
        return jnp.fft.fft2(kirkland(a, grid, slice_thickness=4.0).array[0]) * (L / n) ** 2

    keys = jax.random.split(jax.random.PRNGKey(0), m)
    vk = np.asarray(jax.lax.map(one, keys, batch_size=250))
    kx, ky, k = _kgrid(n, L / n)
    s0 = sum(np.exp(-2j * np.pi * (kx * x + ky * y)) for x, y in xy0)
    d = np.exp(-2 * np.pi**2 * sigma**2 * k**2)
    fk = 2 * np.pi * A0E * f_kirkland(k, 6)
    mean_sq = np.mean(np.abs(vk) ** 2, axis=0)
    expect_sq = fk**2 * (np.abs(s0) ** 2 * d**2 + 3 * (1 - d**2))
    for lo, hi in [(0.0, 1.0), (1.0, 2.0), (2.0, 2.67)]:  # up to the band limit (the Nyquist
        ring = (k >= lo) & (k < hi)  # row and column of a real array cannot hold a complex V(k))
        assert np.mean(mean_sq[ring]) == pytest.approx(np.mean(expect_sq[ring]), rel=0.03), (lo, hi)
    # and the thermally averaged potential (debye_waller=True) is the exact mean
    avg = jnp.fft.fft2(kirkland(atoms, grid, slice_thickness=4.0, debye_waller=True).array[0]) * (L / n) ** 2
    band = _band(k)
    np.testing.assert_allclose(np.asarray(avg)[band], (fk * s0 * d)[band], rtol=1e-6, atol=1e-9 * np.max(fk))
    err = np.abs(np.mean(vk, axis=0) - fk * s0 * d)[band]
    assert np.max(err) < 4 * np.max(fk) * np.sqrt(3 / m)  # the Monte-Carlo mean agrees to its noise


@pytest.mark.parametrize("name", ["kirkland", "lobato"])
def test_gradients_wrt_positions(x64, name):
    pot = _component(name)
    cell = (4.0, 4.0, 4.0)
    atoms = Atoms(np.array([[1.03, 2.01, 1.1], [2.9, 1.2, 2.95]]), np.array([6, 8]), cell=cell)
    grid = Grid.from_extent(cell[:2], gpts=(16, 16))
    w = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16)))

    def f(pos):
        return jnp.sum(w * pot(replace(atoms, positions=pos), grid, slice_thickness=2.0).array)

    check_grads(jax.jit(f), (atoms.positions,), order=1, modes=("rev", "fwd"), eps=1e-4, rtol=2e-3)


def test_gradient_wrt_positions_finite_projection(x64):
    # one atom 0.1 Å from a slice face: its face corrections, interpolated in d, are differentiable
    cell = (3.0, 3.0, 4.0)
    atoms = Atoms(np.array([[1.03, 2.01, 2.1]]), np.array([6]), cell=cell)
    grid = Grid.from_extent(cell[:2], gpts=(12, 12))
    w = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 12)))

    def f(pos):
        return jnp.sum(w * kirkland(replace(atoms, positions=pos), grid, slice_thickness=2.0, projection="finite").array)

    check_grads(jax.jit(f), (atoms.positions,), order=1, modes=("rev",), eps=1e-4, rtol=2e-3)


def test_gradient_wrt_debye_waller(x64):
    cell = (4.0, 4.0, 4.0)
    atoms = Atoms(np.array([[1.03, 2.01, 1.1], [2.9, 1.2, 2.95]]), np.array([6, 8]), cell=cell, sigmas=np.array([0.08, 0.1]))
    grid = Grid.from_extent(cell[:2], gpts=(16, 16))
    w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16)))

    def f(pos, sig):
        a = replace(atoms, positions=pos, sigmas=sig)
        return jnp.sum(w * kirkland(a, grid, slice_thickness=2.0, debye_waller=True).array)

    check_grads(jax.jit(f), (atoms.positions, atoms.sigmas), order=1, modes=("rev",), eps=1e-4, rtol=2e-3)


@pytest.mark.parametrize("projection", ["infinite", "finite"])
def test_host_grouping_equals_traced_path(projection):
    # concrete positions: atoms grouped by slice with a bucketed capacity; traced (jit): every
    # atom a candidate for every slice. Both must give the same slices, also with displacements
    # that move atoms across slice faces.
    rng = np.random.default_rng(3)
    pos = np.c_[rng.uniform(0, 4.0, (12, 2)), np.repeat([0.0, 1.0, 2.0, 3.0], 3)]  # atoms on slice faces
    atoms = Atoms(pos.astype(np.float32), np.full(12, 8), cell=(4.0, 4.0, 4.0))
    atoms = displace(replace(atoms, sigmas=jnp.full((12,), 0.15, jnp.float32)), jax.random.PRNGKey(3))
    grid = Grid.from_extent(atoms.cell[:2], gpts=(16, 16))
    eager = kirkland(atoms, grid, slice_thickness=1.0, projection=projection).array
    traced = jax.jit(lambda p: kirkland(replace(atoms, positions=p), grid, slice_thickness=1.0, projection=projection).array)(atoms.positions)
    scale = float(jnp.max(jnp.abs(eager)))
    np.testing.assert_allclose(np.asarray(eager), np.asarray(traced), atol=2e-5 * scale)


def test_atoms_on_slice_faces_share_their_core():
    # an atom on an inner face gives each slice half of its potential, exactly (symmetry); an atom
    # on the slab's face keeps only its inner half (finite projection)
    grid = Grid.from_extent((L, L), gpts=(N, N))
    inner = kirkland(Atoms(np.array([[2.0, 2.0, 4.0]], np.float32), np.array([38]), cell=(L, L, 8.0)), grid, slice_thickness=4.0, projection="finite").array
    np.testing.assert_allclose(np.asarray(inner[0]), np.asarray(inner[1]), rtol=1e-3, atol=1e-3 * float(inner.max()))
    full = kirkland(Atoms(np.array([[2.0, 2.0, 4.0]], np.float32), np.array([38]), cell=(L, L, 8.0)), grid, slice_thickness=8.0).array[0]
    surface = kirkland(Atoms(np.array([[2.0, 2.0, 0.0]], np.float32), np.array([38]), cell=(L, L, 8.0)), grid, slice_thickness=4.0, projection="finite").array
    np.testing.assert_allclose(np.asarray(surface[0]), 0.5 * np.asarray(full), rtol=1e-3, atol=1e-3 * float(full.max()))
    assert float(jnp.max(jnp.abs(surface[1]))) < 1e-3 * float(full.max())


def test_errors_name_the_bad_option():
    atoms = Atoms(np.zeros((1, 3), np.float32), np.array([6]), cell=(4.0, 4.0, 4.0))
    grid = Grid((16, 16), (0.25, 0.25))
    with pytest.raises(PtyroValueError, match="method: expected 'fourier' or 'real', got 'exact'"):
        kirkland(atoms, grid, slice_thickness=4.0, method="exact")
    with pytest.raises(PtyroValueError, match="debye_waller.*projection='finite'"):
        kirkland(atoms, grid, slice_thickness=4.0, projection="finite", debye_waller=True)
    from ptyro_simul.potentials import ParametrizedPotential, kirkland_projected

    no_f = ParametrizedPotential("no-f", {6: kirkland_parameters()[6]}, kirkland_projected)
    with pytest.raises(PtyroValueError, match="no scattering factor"):
        no_f(atoms, grid, slice_thickness=4.0, method="fourier")
    assert isinstance(kirkland, ptyro_core.protocols.ScatteringFactor)


def _tail_reference(f, k, d, z):
    # t(k, d) = f(k)/2 − (1/π) ∫₀^∞ f(√(k² + q²)) sin(2π q d)/q dq: the part of the atom beyond
    # the plane at distance d, from f alone (z-transform of ∫_d^∞ dz), by adaptive quadrature
    from scipy import integrate

    def g(q):
        return float(f(np.hypot(k, q), z))

    w = 2 * np.pi * d
    near = integrate.quad(lambda q: g(q) * np.sin(w * q) / q, 0.0, 1.0, limit=200)[0]
    far = integrate.quad(lambda q: g(q) / q, 1.0, np.inf, weight="sin", wvar=w, limlst=200)[0]
    return g(0.0) / 2 - (near + far) / np.pi


@pytest.mark.parametrize("name", ["kirkland", "lobato"])
def test_tail_factor_is_the_part_beyond_a_plane(name):
    # the closed-form tail factor of each parametrisation against the z-integral of its
    # published f(k) (numpy, independent of the closed forms)
    pot = _component(name)
    f = PARAMETRIZATIONS[name]
    for z in (6, 38):
        for k in (0.0, 1.0, 2.5):
            assert pot.tail_factor(np.array([k]), 0.0, z)[0] == pytest.approx(f(k, z) / 2, rel=1e-9)
            for d in (0.05, 0.3, 1.0, 3.0):
                got = pot.tail_factor(np.array([k]), d, z)[0]
                assert got == pytest.approx(_tail_reference(f, k, d, z), abs=1e-6 * f(k, z)), (z, k, d)


@pytest.mark.parametrize("name", ["kirkland", "lobato"])
def test_finite_slices_are_the_exact_slab_integrals(x64, name):
    # every slice of the finite projection against Σ_j [F δ(s, s_j) + c_s − c_s+1] e^{−2πik·r_j}
    # with c from the tail factor at the exact distances (float64, no interpolation): the table
    # interpolation in d and the assembly, at any k of the band, atoms anywhere in z (on faces,
    # near them, on the slab's faces)
    pot = _component(name)
    grid = Grid.from_extent((L, L), gpts=(N, N))
    bounds = np.array([0.0, 1.5, 3.0, 4.5, 6.0])
    pos = np.array([[0.3, 1.1, 0.0], [2.2, 3.3, 1.52], [1.7, 0.4, 2.21], [3.6, 2.5, 3.0], [1.0, 2.9, 4.47], [2.9, 1.9, 5.9]])
    zs = np.array([38, 8, 38, 22, 8, 38])
    out = np.asarray(pot(Atoms(pos, zs, cell=(L, L, 6.0)), grid, slice_thickness=1.5, projection="finite").array, np.float64)
    kx, ky, k = _kgrid()
    band = _band(k)
    vk = np.fft.fft2(out, axes=(1, 2)) * DX * DX
    expect = np.zeros(vk.shape, complex)
    fmax = 0.0
    for (x, y, zc), z in zip(pos, zs):
        ph = np.exp(-2j * np.pi * (kx * x + ky * y))
        fk = 2 * np.pi * A0E * PARAMETRIZATIONS[name](k, z)
        fmax = max(fmax, float(np.max(fk[band])))
        s_c = min(int(np.searchsorted(bounds, zc, side="right")) - 1, 3)
        c = [(-1 if f <= s_c else 1) * 2 * np.pi * A0E * pot.tail_factor(k, abs(b - zc), z) for f, b in enumerate(bounds)]
        for s in range(4):
            expect[s] += ((fk if s == s_c else 0) + c[s] - c[s + 1]) * ph
    err = np.abs(vk - expect)[:, band]
    assert np.max(err) < 2e-3 * fmax  # the Sr core; relative to each slice's own content:
    ratio = err / (np.abs(expect[:, band]) + 1e-3 * fmax)
    assert np.max(ratio) < 0.01, np.max(ratio)


def test_former_finite_scheme_without_tail_factor_agrees():
    # a parametrisation with f(k) and V(r) but no tail factor falls back to the former finite
    # projection (Fourier core + real-space remainder); both describe the same physics
    from ptyro_simul.potentials import ParametrizedPotential

    former = ParametrizedPotential("former", kirkland.parameters, kirkland.projected, kirkland.potential_3d, scattering_factor=kirkland.scattering_factor_fn)
    grid = Grid.from_extent((L, L), gpts=(16, 16))
    atoms = Atoms(np.array([[2.0, 2.1, 2.7]], np.float32), np.array([38]), cell=(L, L, 6.0))
    new = np.asarray(kirkland(atoms, grid, slice_thickness=2.0, projection="finite").array)
    old = np.asarray(former(atoms, grid, slice_thickness=2.0, projection="finite").array)
    np.testing.assert_allclose(new, old, atol=2e-3 * float(new.max()))
    # the former tapers V to zero at its cutoff radius, so it holds up to a few % less in the
    # slices away from the atom's own (the new path has no cutoff)
    np.testing.assert_allclose(new.sum(axis=(1, 2)), old.sum(axis=(1, 2)), rtol=0.03)
    assert abs(new.sum() / old.sum() - 1) < 5e-3  # the cutoff tolerance
