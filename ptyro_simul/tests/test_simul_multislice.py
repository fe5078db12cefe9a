"""Multislice and 4D-STEM physics: empty specimen, weak-phase grating, symmetry, shift
equivariance, Z contrast, ABF, detectors, frozen phonons, gradients, conformance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import special

import ptyro_core
from ptyro_core import Grid, PotentialSlices, ScanPositions
from ptyro_core._pytree import replace
from ptyro_core.testing import check_conformance
from ptyro_simul.constants import energy2sigma
from ptyro_simul.detectors import AnnularDetector, COMDetector, PixelatedDetector, SegmentedDetector
from ptyro_simul.multislice import MultisliceSimulator, bandlimit_mask, multislice, multislice_exit_wave, plane_wave_exit
from ptyro_simul.potentials import kirkland
from ptyro_simul.probe import aberrated_probe
from ptyro_simul.stem import cbed, iter_4dstem, simulate_4dstem
from ptyro_simul.structures import build_crystal

A = 3.905


@pytest.fixture(scope="module")
def srtio3():
    """SrTiO3 [001], one cell wide, 4 cells thick, 64x64 (0.061 Å: band limit 137 mrad at 200 keV)."""
    atoms = build_crystal("SrTiO3", repeat=(1, 1, 4))
    grid = Grid.from_extent(atoms.cell[:2], gpts=(64, 64))
    pot = kirkland(atoms, grid, slice_thickness=A / 2)
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=25.0)
    return pot, probe


def test_empty_specimen_gives_probe_diffraction():
    grid = Grid((32, 32), (0.2, 0.2))
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0, aberrations={"C10": -30.0})
    pot = PotentialSlices(jnp.zeros((3, 32, 32)), jnp.array([2.0, 2.0, 2.0]), grid=grid)
    out = multislice(pot, probe)(jnp.array([[1.3, 2.7]]))[0]
    own = jnp.abs(jnp.fft.fftshift(jnp.fft.fft2(probe.array[0], norm="ortho"))) ** 2
    np.testing.assert_allclose(np.asarray(out), np.asarray(own), atol=1e-6)
    assert float(jnp.sum(out * bandlimit_mask(grid))) == pytest.approx(1.0, abs=1e-5)


def test_weak_phase_grating_matches_first_order():
    # V = V0 cos(2π g x): exit = ψ (1 + iσV0/2 (e^{2πigx} + e^{-2πigx})) to first order, so each
    # ±g disc holds (σV0/2)² of the probe's own pattern (exactly J1(σV0)² for a phase grating)
    grid = Grid((64, 64), (0.1, 0.1))
    energy = 200e3
    probe = aberrated_probe(grid, energy, semiangle_cutoff=10.0)
    sigma = energy2sigma(energy)
    v0 = 0.05 / sigma
    x, _ = grid.coordinates()
    g = 8 / grid.extent[0]
    v = jnp.broadcast_to(v0 * jnp.cos(2 * jnp.pi * g * x), grid.gpts)
    pot = PotentialSlices(v[None], jnp.array([0.5]), grid=grid)
    pattern = np.asarray(multislice(pot, probe)(jnp.array([[3.2, 3.2]]))[0])
    own = np.asarray(jnp.abs(jnp.fft.fftshift(jnp.fft.fft2(probe.array[0], norm="ortho"))) ** 2)
    first_order = (sigma * v0 / 2) ** 2
    np.testing.assert_allclose(pattern.sum(), 1.0, atol=1e-5)
    for shift in (8, -8):
        disc = np.roll(own, shift, axis=0)
        mask = disc > 1e-3 * disc.max()
        ratio = pattern[mask].sum() / disc[mask].sum()
        assert ratio == pytest.approx(first_order, rel=2e-3)
        assert ratio == pytest.approx(special.j1(sigma * v0) ** 2, rel=2e-4)
    assert pattern[own > 1e-3 * own.max()].sum() == pytest.approx(special.j0(sigma * v0) ** 2, rel=1e-4)


def test_symmetric_specimen_gives_symmetric_pattern(srtio3):
    pot, probe = srtio3
    p = np.asarray(cbed(pot, probe, jnp.array([0.0, 0.0])))[1:, 1:]  # drop the unpaired Nyquist row/column
    scale = p.max()
    np.testing.assert_allclose(p, p[::-1, :], atol=1e-5 * scale)
    np.testing.assert_allclose(p, p[:, ::-1], atol=1e-5 * scale)
    np.testing.assert_allclose(p, p.T, atol=1e-5 * scale)


@pytest.mark.parametrize("m", [(3, -5), (16, 7)])
def test_shifted_probe_and_specimen_give_shifted_exit_wave(m):
    # any periodic specimen: moving probe and specimen by whole pixels moves the exit wave
    grid = Grid((32, 32), (0.25, 0.25))
    v = 20.0 * jax.random.uniform(jax.random.PRNGKey(sum(m)), (2, 32, 32))
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=25.0, aberrations={"C10": 20.0})

    @jax.jit
    def exit_wave(v, p):
        return multislice(PotentialSlices(v, jnp.array([1.5, 2.0]), grid=grid), probe).exit_waves(p)[0, 0]

    p0 = jnp.array([[2.0, 3.0]])
    e0 = exit_wave(v, p0)
    e1 = exit_wave(jnp.roll(v, m, axis=(1, 2)), p0 + jnp.array([[m[0] * 0.25, m[1] * 0.25]]))
    np.testing.assert_allclose(np.asarray(e1), np.roll(np.asarray(e0), m, axis=(0, 1)), atol=2e-5)
    assert float(jnp.max(jnp.abs(e1 - e0))) > 1e-2  # the shift is not trivial


def test_shifted_scan_gives_shifted_image():
    # HAADF image over a 2x2-cell crystal: a scan moved by one lattice vector is the same image
    atoms = build_crystal("SrTiO3", repeat=(2, 2, 1))
    grid = Grid.from_extent(atoms.cell[:2], gpts=(48, 48))
    pot = kirkland(atoms, grid, slice_thickness=A / 2)
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0)
    scan = ScanPositions.raster((0.0, 0.0), (A, A), (3, 3))
    moved = ScanPositions(scan.positions + jnp.array([[A, 0.0]]), shape=(3, 3))
    det = [AnnularDetector(30, 60, name="adf")]
    a = simulate_4dstem(pot, probe, scan, detectors=det, progress=False)["adf"]
    b = simulate_4dstem(pot, probe, moved, detectors=det, progress=False)["adf"]
    np.testing.assert_allclose(b, a, rtol=1e-4)
    assert a.std() > 1e-3 * a.mean()  # the image has contrast


def test_haadf_z_contrast_and_abf_oxygen(srtio3):
    pot, probe = srtio3
    sites = np.array([[0, 0], [A / 2, A / 2], [A / 2, 0], [A / 4, A / 4]], np.float32)  # Sr, Ti-O, O, empty
    dets = {"haadf": AnnularDetector(60, 130), "abf": AnnularDetector(12.5, 25)}
    out = simulate_4dstem(pot, probe, ScanPositions(sites), detectors=dets, batch_size=4, progress=False)
    haadf, abf = out["haadf"], out["abf"]
    assert haadf[0] > haadf[1] > haadf[2] > haadf[3]  # Sr (Z=38) > Ti-O (22+8) > O (8) > vacuum
    assert abf[2] < 0.95 * abf[3]  # ABF: the O column is dark against the empty site


def test_detectors_from_one_run_agree(srtio3):
    pot, probe = srtio3
    scan = ScanPositions.raster((0.0, 0.0), (A, A), (2, 3))
    dets = [PixelatedDetector(), AnnularDetector(30, 100, name="adf"), SegmentedDetector(5, 25, 4, rotation=0.3), COMDetector()]
    out = simulate_4dstem(pot, probe, scan, detectors=dets, batch_size=4, progress=False)
    assert out["pixelated"].shape == (2, 3, 64, 64)
    assert out["adf"].shape == (2, 3)
    seg = next(k for k in out if k.startswith("segmented"))
    assert out[seg].shape == (2, 3, 4) and out["com"].shape == (2, 3, 2)
    pats = jnp.asarray(out["pixelated"].reshape(-1, 64, 64))
    np.testing.assert_allclose(out["adf"].ravel(), np.asarray(dets[1].reduce(pats, pot.grid, 200e3)), rtol=1e-5)
    # the segments tile their annulus
    ring = AnnularDetector(5, 25).reduce(pats, pot.grid, 200e3)
    np.testing.assert_allclose(out[seg].sum(-1).ravel(), np.asarray(ring), rtol=1e-5)
    # COM is zero on the symmetric Sr column and points away from it nearby... by symmetry
    # the pattern at (x, y) mirrors the one at (-x, y): COM_x flips sign
    com = COMDetector().reduce(jnp.asarray(out["pixelated"][:, 0].reshape(-1, 64, 64)), pot.grid, 200e3)
    assert abs(float(com[0, 0])) < 1e-3


def test_batches_stream_and_match(srtio3):
    pot, probe = srtio3
    scan = ScanPositions.raster((0.0, 0.0), (A, A), (3, 2))
    det = {"bf": AnnularDetector(0, 25)}
    chunks = list(iter_4dstem(pot, probe, scan, detectors=det, batch_size=4, progress=False))
    assert [(s, e) for s, e, _ in chunks] == [(0, 4), (4, 6)]
    full = simulate_4dstem(pot, probe, scan, detectors=det, batch_size=2, progress=False)["bf"]
    np.testing.assert_allclose(np.concatenate([np.asarray(c["bf"]) for _, _, c in chunks]), full.ravel(), rtol=1e-5)


def test_frozen_phonons_reproducible_and_averaged():
    from ptyro_simul.phonons import debye_waller_to_sigma, frozen_phonon_configurations, frozen_phonon_potentials

    atoms = build_crystal("SrTiO3", repeat=(1, 1, 2))
    assert debye_waller_to_sigma(8 * np.pi**2 * 0.01) == pytest.approx(0.1)
    c1 = frozen_phonon_configurations(atoms, 3, seed=7, sigmas={"Sr": 0.1, "Ti": 0.08, "O": 0.1})
    c2 = frozen_phonon_configurations(atoms, 3, seed=7, sigmas={"Sr": 0.1, "Ti": 0.08, "O": 0.1})
    np.testing.assert_array_equal(np.asarray(c1[2].positions), np.asarray(c2[2].positions))
    d = np.concatenate([np.asarray(c.positions - atoms.positions) for c in c1])
    d = np.where(np.abs(d) > 1.0, 0.0, d)  # ignore wrap-around
    assert 0.04 < d.std() < 0.16
    grid = Grid.from_extent(atoms.cell[:2], gpts=(32, 32))
    pots = frozen_phonon_potentials(atoms, grid, num_configs=2, slice_thickness=A / 2, seed=1, debye_waller={"Sr": 0.6, "Ti": 0.5, "O": 0.7})
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0)
    pos = jnp.array([0.3, 0.2])
    avg = cbed(pots, probe, pos)
    each = [multislice(p, probe)(pos[None])[0] for p in pots]
    np.testing.assert_allclose(np.asarray(avg), np.asarray((each[0] + each[1]) / 2), rtol=1e-4, atol=1e-7)
    assert float(jnp.max(jnp.abs(each[0] - each[1]))) > 1e-5  # the configurations differ


def test_plane_wave_exit_hrtem():
    grid = Grid((32, 32), (0.2, 0.2))
    pot = PotentialSlices(jnp.zeros((2, 32, 32)), jnp.array([1.0, 1.0]), grid=grid)
    np.testing.assert_allclose(np.asarray(jnp.abs(plane_wave_exit(pot, 200e3))), 1.0, atol=1e-5)
    v = jnp.zeros((1, 32, 32)).at[0, 16, 16].set(50.0)
    out = plane_wave_exit(PotentialSlices(v, jnp.array([1e-3]), grid=grid), 200e3)
    # a negligible propagation distance: exit ≈ band-limited exp(iσV)
    assert float(jnp.angle(out[16, 16])) > 0
    assert float(jnp.sum(jnp.abs(out) ** 2)) == pytest.approx(32 * 32, rel=1e-2)


def test_generic_propagator_path_matches_fresnel():
    from ptyro_simul.propagator import fresnel

    grid = Grid((32, 32), (0.25, 0.25))
    v = 20.0 * jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32))
    pot = PotentialSlices(v, jnp.array([1.5, 2.0]), grid=grid)
    w = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0).array
    a = multislice_exit_wave(w, pot, 200e3, fresnel)
    b = multislice_exit_wave(w, pot, 200e3, lambda *args, **kw: fresnel(*args, **kw))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_windowed_mode_matches_full_grid():
    atoms = build_crystal("SrTiO3", repeat=(3, 3, 2))
    grid = Grid.from_extent(atoms.cell[:2], gpts=(96, 96))
    pot = kirkland(atoms, grid, slice_thickness=A / 2)
    scan = ScanPositions(np.array([[1.5 * A, 1.5 * A], [1.5 * A, A]], np.float32))  # Ti-O and O columns
    dets = {"adf": AnnularDetector(30, 60), "bf": AnnularDetector(0, 20)}
    full = simulate_4dstem(pot, aberrated_probe(grid, 200e3, semiangle_cutoff=20.0), scan, detectors=dets, progress=False)
    sub = Grid((48, 48), grid.sampling)
    win = simulate_4dstem(pot, aberrated_probe(sub, 200e3, semiangle_cutoff=20.0), scan, detectors=dets, progress=False, window=(48, 48))
    np.testing.assert_allclose(win["bf"], full["bf"], rtol=1e-2)
    np.testing.assert_allclose(win["adf"], full["adf"], rtol=0.1)
    with pytest.raises(ptyro_core.PtyroValueError, match="window"):
        multislice(pot, aberrated_probe(grid, 200e3, semiangle_cutoff=20.0), window=(48, 48))


def test_multislice_conformance():
    check_conformance("simulator", ptyro_core.get("simulator", "multislice"))


# --------------------------------------------------------------------------- gradients (float64)


@pytest.fixture
def small(x64):
    grid = Grid((16, 16), (0.25, 0.25))
    v = 10.0 * jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16), jnp.float64)
    pot = PotentialSlices(v, jnp.array([1.5, 2.0]), grid=grid)
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=30.0, aberrations={"C10": 10.0}, dtype=jnp.complex128)
    pos = jnp.array([[1.9, 2.1], [2.4, 1.7]])
    w = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 16, 16)))
    return grid, pot, probe, pos, w


def test_gradient_wrt_potential(small):
    grid, pot, probe, pos, w = small
    f = jax.jit(lambda v: jnp.sum(w * MultisliceSimulator(replace(pot, array=v), probe)(pos)))
    check_grads(f, (pot.array,), order=1, modes=("fwd", "rev"))


def test_gradient_wrt_aberrations(small):
    grid, pot, probe, pos, w = small

    def f(c10, c30):
        pr = aberrated_probe(grid, 200e3, semiangle_cutoff=30.0, aberrations={"C10": c10, "C30": c30}, dtype=jnp.complex128)
        return jnp.sum(w * MultisliceSimulator(pot, pr)(pos))

    check_grads(jax.jit(f), (10.0, 1e4), order=1, modes=("fwd", "rev"))


def test_gradient_wrt_positions(small):
    grid, pot, probe, pos, w = small
    f = jax.jit(lambda p: jnp.sum(w * MultisliceSimulator(pot, probe)(p)))
    check_grads(f, (pos,), order=1, modes=("fwd", "rev"))


def test_gradient_wrt_slice_thickness(small):
    grid, pot, probe, pos, w = small
    f = jax.jit(lambda t: jnp.sum(w * MultisliceSimulator(replace(pot, slice_thickness=t), probe)(pos)))
    check_grads(f, (pot.slice_thickness,), order=1, modes=("fwd", "rev"))
