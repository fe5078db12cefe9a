"""Parallax (tilt-corrected bright field): the aberration fit from the shifts (exact on model
shifts, a hypothesis property), the optics recovered from simulated data with known optics,
the scan rotation against the DPC curl fit of :mod:`ptyro_invert.calibrate`, the optics file
and its round trip through ``ptyro reconstruct``."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_core import Dataset4D, PtyroValueError
from ptyro_invert import calibrate
from ptyro_invert import synthetic as syn
from ptyro_invert.direct import parallax as px
from ptyro_invert.direct.icom import com_field
from ptyro_core.conventions import energy2wavelength as wavelength

ENERGY = 300e3
#: scan step (Å): a 20 Å field, 8x the largest parallax shift (2 Å at the fit radius): the
#: shifts are well inside the field (the finite-field bias is tested on a 10 Å field below)
STEP = 0.5


def test_shift_basis_is_minus_the_gradient_of_chi_over_2pi():
    """The analytic gradient against JAX's derivative of χ's basis functions."""
    lam = wavelength(ENERGY)
    k = np.random.default_rng(0).uniform(-1.2, 1.2, (7, 2))
    jac = jax.vmap(jax.jacfwd(lambda q: px.chi_basis(q, lam, tuple(px.ORDERS))))(jnp.asarray(k, jnp.float32))
    ref = -np.asarray(jac, np.float64).transpose(0, 2, 1) / (2 * math.pi)
    got = px._shift_basis(k, lam, tuple(px.ORDERS))
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_chi_basis_matches_the_polar_formula():
    """χ = (2π/λ) Σ C (λk)^{n+1}/(n+1) cos(m(φ − φ_nm)) with the fit's cartesian coefficients."""
    lam = wavelength(ENERGY)
    ab = {"C10": -80.0, "C12": 12.0, "phi12": 0.4, "C21": 900.0, "phi21": 1.1, "C23": 300.0, "phi23": 0.3, "C30": 2e4}
    fit = px.AberrationFit(ab, 0.0, False, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)), 0.0)
    k = np.random.default_rng(1).uniform(-1.0, 1.0, (9, 2))
    kk, ph = np.linalg.norm(k, axis=1), np.arctan2(k[:, 1], k[:, 0])
    ref = np.zeros(len(k))
    for sym, (n, m) in px.ORDERS.items():
        ref += ab[sym] * (lam * kk) ** (n + 1) / (n + 1) * np.cos(m * (ph - ab.get("phi" + sym[1:], 0.0)))
    assert np.allclose(np.asarray(px._chi_of(fit, k, ENERGY)), 2 * np.pi / lam * ref, rtol=1e-4, atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    c10=st.floats(-300, 300).filter(lambda v: abs(v) > 20),
    c12=st.floats(0, 40), phi12=st.floats(0, math.pi - 1e-3),
    c21=st.floats(0, 3000), phi21=st.floats(0, 2 * math.pi - 1e-3),
    rot=st.floats(-80, 80),
)  # fmt: skip
def test_fit_shifts_recovers_model_shifts_exactly(c10, c12, phi12, c21, phi21, rot):
    lam = wavelength(ENERGY)
    k = np.stack(np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9), indexing="ij"), -1).reshape(-1, 2)
    k = k[np.linalg.norm(k, axis=1) <= 1]
    coef = np.array([c10, c12 * math.cos(2 * phi12), c12 * math.sin(2 * phi12), c21 * math.cos(phi21), c21 * math.sin(phi21), 0.0, 0.0])
    s_det = np.einsum("nij,j->ni", px._shift_basis(k, lam, px.DEFAULT_ORDERS), coef) + [0.3, -0.2]
    t = math.radians(rot)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    s_raster = s_det @ r  # = R(-θ) s_det: what an unrotated raster sees
    fit = px.fit_shifts(k, s_raster, ENERGY)
    ab = fit.aberrations
    assert abs(fit.rotation - rot) < 1e-3
    assert ab["C10"] == pytest.approx(c10, abs=1e-3 * max(1.0, abs(c10)))
    assert ab["C12"] == pytest.approx(c12, abs=1e-2)
    assert ab["C21"] == pytest.approx(c21, abs=0.5)
    if c12 > 1:
        assert math.cos(2 * (ab["phi12"] - phi12)) > 0.9999
    assert fit.rms < 1e-6


@settings(max_examples=15, deadline=None)
@given(c10=st.floats(-300, 300).filter(lambda v: abs(v) > 30), c12=st.floats(0, 15), phi12=st.floats(0, math.pi - 1e-3),
       rot=st.floats(-80, 80), transposed=st.booleans())  # fmt: skip
def test_fit_shifts_fits_the_transpose(c10, c12, phi12, rot, transposed):
    """A transposed raster (defocus larger than the astigmatism) is found, with the rotation
    and the coefficients; given the wrong frame, defocus and astigmatism exchange their sizes."""
    lam = wavelength(ENERGY)
    k = np.stack(np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9), indexing="ij"), -1).reshape(-1, 2)
    k = k[np.linalg.norm(k, axis=1) <= 1]
    coef = np.array([c10, c12 * math.cos(2 * phi12), c12 * math.sin(2 * phi12)])
    s_det = np.einsum("nij,j->ni", px._shift_basis(k, lam, ("C10", "C12")), coef)
    m = px._rot(rot) @ (px._SWAP if transposed else np.eye(2))
    s_raster = s_det @ m  # s_det = m s_raster
    fit = px.fit_shifts(k, s_raster, ENERGY, orders=("C10", "C12"), transpose=None)
    assert fit.transpose == transposed
    assert abs((fit.rotation - rot + 90) % 180 - 90) < 1e-3
    assert fit.aberrations["C10"] == pytest.approx(c10, rel=1e-4)
    assert fit.aberrations["C12"] == pytest.approx(c12, abs=1e-3)
    wrong = px.fit_shifts(k, s_raster, ENERGY, orders=("C10", "C12"), transpose=not transposed)
    assert abs(wrong.aberrations["C10"]) < wrong.aberrations["C12"]


def test_window_is_round():
    w = np.asarray(px._window((32, 32), 0.25))
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1]) and np.allclose(w, w[:, ::-1])
    assert w[16, 16] == 1.0 and w[0, 0] == 0.0 and 0 < w[16, 0] < 0.1


def test_moved_window_is_the_window_shifted():
    """A whole-step shift moves the (shrunk) window by exactly those steps; half a step moves
    its centroid by half a step (not rounded to the raster)."""
    w0 = np.asarray(px._window((32, 32), 0.25, np.zeros((1, 2)), 0.6))[0]
    w = np.asarray(px._window((32, 32), 0.25, np.array([[3.0, -5.0], [0.5, 0.0], [1.0, 0.0]]), 0.6))
    assert np.allclose(w[0], np.roll(w0, (3, -5), axis=(0, 1)), atol=1e-6)
    x = np.arange(32)[:, None]
    centroid = [float(np.sum(x * v) / np.sum(v)) for v in (w0, w[1], w[2])]
    assert centroid[1] - centroid[0] == pytest.approx(0.5, abs=0.01) and centroid[2] - centroid[0] == pytest.approx(1.0, abs=1e-4)


def small_field_case(c10: float = -100.0):
    """Noise-free, the raster's field 10 Å (40 x 40 at 0.25 Å): shifts up to 2 Å at the fit
    radius, a fifth of the field."""
    grid, scan, state = syn.setup(gpts=32, sampling=0.25, scan=(40, 40), step=0.25, energy=ENERGY, semiangle_cutoff=20.0, aberrations={"C10": c10})
    truth = syn.with_object(state, np.exp(1j * amorphous_phase(tuple(state.object.shape[-2:]), state.sampling)))
    return syn.simulate(truth, grid, scan, dose=None)


def test_no_finite_field_bias_on_a_small_field():
    """The window moves with each bin's image: on a 10 Å field the defocus is unbiased (a
    window fixed on the raster gave +5.5 % and a false C12 of 4.5 Å here; measured now
    100.54 Å, C12 0.11 Å)."""
    fit = px.fit_aberrations(small_field_case())
    assert fit.defocus == pytest.approx(100.0, rel=0.01)
    assert fit.aberrations["C12"] < 1.0


def amorphous_phase(shape, sampling, rms=0.2, corr=0.5, seed=0):
    w = np.random.default_rng(seed).standard_normal(shape)
    kx = np.fft.fftfreq(shape[0], sampling[0])[:, None]
    ky = np.fft.fftfreq(shape[1], sampling[1])[None, :]
    ph = np.real(np.fft.ifft2(np.fft.fft2(w) * np.exp(-2 * np.pi**2 * corr**2 * (kx**2 + ky**2))))
    return ph * rms / ph.std()


@functools.lru_cache(maxsize=None)
def parallax_case(rotation: float = 0.0, c10: float = -100.0, c12: float = 10.0, phi12: float = 0.5):
    """Amorphous weak phase (0.2 rad rms), 40 x 40 scan at STEP Å, 32 x 32 patterns, 20 mrad,
    defocus 100 Å, astigmatism 10 Å at 0.5 rad, 1e5 e/Å² (25,000 electrons per pattern: the
    acceptance benchmark's dose; at 4000 the fitted C12 scatters by ±0.6 Å between noise
    seeds, more than the 5 % tolerance, measured); the raster rotated
    by ``rotation`` degrees while the dataset keeps the unrotated positions."""
    ab = {"C10": c10, "C12": c12, "phi12": phi12}
    grid, scan, state = syn.setup(gpts=32, sampling=0.25, scan=(40, 40), step=STEP, energy=ENERGY, semiangle_cutoff=20.0, aberrations=ab)
    truth = syn.with_object(state, np.exp(1j * amorphous_phase(tuple(state.object.shape[-2:]), state.sampling)))
    pos = None
    if rotation:
        p = np.asarray(state.positions, np.float64)
        c = p.mean(0)
        t = math.radians(rotation)
        pos = (p - c) @ np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]).T + c
    return syn.simulate(truth, grid, scan, positions=pos, dose=1e5 * STEP * STEP), state, truth, ab


def test_fit_aberrations_recovers_defocus_and_astigmatism():
    ds, _, _, ab = parallax_case()
    fit = px.fit_aberrations(ds)
    # measured (refined by the transfer by default: shifts of about 3 steps): defocus 99.75 Å (0.25 %), C12 9.91 Å at 0.498 rad,
    # rotation 0.03°, not transposed (the shift fit alone: 99.56 Å, 9.79 Å at 0.503 rad, -0.03°)
    assert fit.defocus == pytest.approx(100.0, rel=0.02)
    assert fit.aberrations["C12"] == pytest.approx(10.0, rel=0.05)
    assert abs(fit.aberrations["phi12"] - 0.5) < 0.05
    assert abs(fit.rotation) < 1.0 and not fit.transpose


def test_large_defocus_converges_from_zero_shifts():
    """Shifts of 8 steps at the fit radius (the old alignment without a model between passes
    stopped at 27 % off): the linear model between passes carries them."""
    ds, *_ = parallax_case(0.0, -200.0, 10.0, 2.0)
    fit = px.fit_aberrations(ds)
    # measured: 202.47 Å (1.2 %), C12 10.65 Å at 2.00 rad
    assert fit.defocus == pytest.approx(200.0, rel=0.02)
    assert fit.aberrations["C12"] == pytest.approx(10.0, abs=1.0)


def test_rotation_agrees_with_the_curl_fit():
    ds, state, _, _ = parallax_case(rotation=10.0)
    fit = px.fit_aberrations(ds)
    # measured (refined by the transfer): rotation 9.93°, defocus 99.66 Å (0.3 %), C12 9.99 Å (the shift fit alone: 9.96°, 99.61, 10.34)
    assert fit.rotation == pytest.approx(10.0, abs=0.5)
    assert fit.defocus == pytest.approx(100.0, rel=0.02)
    assert fit.aberrations["C12"] == pytest.approx(10.0, rel=0.05)
    # the same rotation from the DPC field's curl (calibrate.scan_rotation), modulo 180°
    rf = calibrate.scan_rotation(np.asarray(com_field(ds)), step=(STEP, STEP))
    assert not rf.transpose
    assert abs((rf.rotation - fit.rotation + 90.0) % 180.0 - 90.0) < 10.0


def test_transposed_raster_is_fitted():
    """The same data with the positions' axes swapped: the fit finds the transpose, the
    defocus and the astigmatism (whose azimuth is mirrored: φ12 → π/2 − φ12)."""
    ds, *_ = parallax_case()
    pos = np.asarray(ds.positions).reshape(ds.scan_shape + (2,))
    swapped = Dataset4D(np.asarray(ds.array).transpose(1, 0, 2, 3), pos.transpose(1, 0, 2).reshape(-1, 2)[:, ::-1].copy(), grid=ds.grid, energy=ds.energy)
    fit = px.fit_aberrations(swapped)
    assert fit.transpose
    assert fit.defocus == pytest.approx(100.0, rel=0.02)
    assert fit.aberrations["C12"] == pytest.approx(10.0, rel=0.05)


def test_parallax_component_image_and_fitted_probe(tmp_path):
    ds, state, truth, ab = parallax_case()
    blank = syn.setup(gpts=32, sampling=0.25, scan=(40, 40), step=STEP, energy=ENERGY, semiangle_cutoff=20.0, aberrations={})[2]
    out = px.parallax(ds, blank, optics_out=tmp_path / "optics.toml")
    rmse, corr = syn.phase_metrics(out.object[0], truth.object[0], syn.scanned_region(state, margin=-1.0))
    assert corr > 0.5, (rmse, corr)
    # the probe is rebuilt from the fitted optics: it overlaps the true probe, the blank one does not
    ov = lambda a, b: float(np.abs(np.vdot(np.asarray(a), np.asarray(b))))  # noqa: E731
    assert ov(out.probe[0], state.probe[0]) > 0.9 > ov(blank.probe[0], state.probe[0]) + 0.2
    text = (tmp_path / "optics.toml").read_text()
    assert "[probe]" in text and "C10 = -" in text and "phi12 =" in text


def test_bad_options():
    ds, state, _, _ = parallax_case()
    with pytest.raises(PtyroValueError, match="correction must be 'none', 'flip' or 'wiener', got 'bogus'"):
        px.parallax(ds, state, correction="bogus")
    with pytest.raises(PtyroValueError, match="unknown aberration 'C99'"):
        px.fit_aberrations(ds, orders=("C10", "C99"))
    with pytest.raises(PtyroValueError, match="expected bin_size >= 1"):
        px.fit_aberrations(ds, bin_size=0)
    with pytest.raises(PtyroValueError, match="expected frequencies and shifts of shape"):
        px.fit_shifts(np.zeros((5, 2)), np.zeros((4, 2)), ENERGY)


def test_cli_parallax_optics_seed_an_iterative_run(tmp_path):
    pytest.importorskip("ptyro_workflows")
    from ptyro_workflows.cli import main
    from ptyro_workflows.io import load_reconstruction, save_dataset

    ds, _, _, _ = parallax_case()
    data = save_dataset(tmp_path / "data.h5", ds)
    optics = tmp_path / "optics.toml"
    args = ["reconstruct", str(data), "--semiangle-cutoff", "20", "-q"]
    assert main([*args, "--algorithm", "parallax", "--algorithm-option", f"optics_out={optics}", "-o", str(tmp_path / "px.h5")]) == 0
    direct = load_reconstruction(tmp_path / "px.h5")
    assert direct.object.shape[0] == 1 and np.std(np.angle(np.asarray(direct.object))) > 0.01
    assert main([*args, "--optics-from", str(optics), "--iterations", "1", "-o", str(tmp_path / "it.h5")]) == 0
    seeded = load_reconstruction(tmp_path / "it.h5")
    assert np.abs(np.vdot(np.asarray(seeded.probe[0]), np.asarray(direct.probe[0]))) > 0.8
    # an optics file with a bad key is refused before anything runs
    bad = tmp_path / "bad.toml"
    bad.write_text("[probe]\nC99 = 1.0\n")
    assert main([*args, "--optics-from", str(bad), "-o", str(tmp_path / "x.h5")]) == 2


def test_coherence_newton_is_the_derivative_of_the_coherence():
    """The analytic gradient and Hessian of the joint alignment's objective against JAX's
    automatic derivatives of the objective itself."""
    rng = np.random.default_rng(3)
    nb, nq, nm = 6, 40, 3
    Fq = jnp.asarray(rng.standard_normal((nb, nq)) + 1j * rng.standard_normal((nb, nq)), jnp.complex64)
    fq = jnp.asarray(rng.uniform(-0.3, 0.3, (nq, 2)), jnp.float32)
    mono = jnp.asarray(rng.standard_normal((nb, nm)), jnp.float32)
    c = jnp.asarray(rng.standard_normal(2 * nm) * 0.3, jnp.float32)
    val, g, h = px._coherence_newton(c, Fq, fq, mono)
    assert float(val) == pytest.approx(float(px._coherence(c, Fq, fq, mono)), rel=1e-5)
    g_ref = jax.grad(px._coherence)(c, Fq, fq, mono)
    h_ref = jax.hessian(px._coherence)(c, Fq, fq, mono)
    assert np.allclose(g, g_ref, rtol=1e-4, atol=1e-5 * np.abs(g_ref).max())
    assert np.allclose(h, h_ref, rtol=1e-3, atol=1e-4 * np.abs(h_ref).max())


def test_splat_conserves_weight_and_places_points():
    """Bilinear splatting: every point inside the grid deposits its whole weight; a point on a
    pixel lands there alone; a constant image splats to that constant wherever covered."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 9, (3, 5, 5, 2))
    w = np.array([1.0, 2.0, 0.5])
    num, den = px._splat(np.full((3, 5, 5), 0.7), x, w, (10, 10))
    assert den.sum() == pytest.approx(25 * w.sum())
    assert np.allclose(num[den > 0], 0.7 * den[den > 0])
    x[:] = [4.0, 6.0]
    _, den = px._splat(np.ones((3, 5, 5)), x, w, (10, 10))
    assert den[4, 6] == pytest.approx(25 * w.sum()) and np.count_nonzero(den) == 1


def test_given_optics_image_without_measuring():
    """With the true optics given, nothing is measured and the image is as good as with the
    fitted optics (quantem's prlx does this); it is the same as tcbf_image with given_optics."""
    ds, state, truth, ab = parallax_case()
    blank = syn.setup(gpts=32, sampling=0.25, scan=(40, 40), step=STEP, energy=ENERGY, semiangle_cutoff=20.0, aberrations={})[2]
    region = syn.scanned_region(state, margin=-1.0)
    given = px.parallax(ds, blank, aberrations=ab, rotation=0.0, transpose=False)
    fitted = px.parallax(ds, blank)
    _, c_given = syn.phase_metrics(given.object[0], truth.object[0], region)
    _, c_fit = syn.phase_metrics(fitted.object[0], truth.object[0], region)
    assert c_given > 0.5 and c_given > c_fit - 0.02, (c_given, c_fit)
    phase, _ = px.tcbf_image(ds, blank, px.given_optics(ab))
    assert np.allclose(np.angle(np.asarray(given.object[0])), np.asarray(phase), atol=1e-5)
    # the probe is the given optics' probe
    assert np.abs(np.vdot(np.asarray(given.probe[0]), np.asarray(state.probe[0]))) > 0.99


def test_given_optics_bad_input():
    ds, state, _, _ = parallax_case()
    with pytest.raises(PtyroValueError, match="unknown aberration 'C99'"):
        px.parallax(ds, state, aberrations={"C10": -100.0, "C99": 1.0})
    with pytest.raises(PtyroValueError, match=r"aberration C10 = nan; expected a finite number"):
        px.given_optics({"C10": float("nan")})
    with pytest.raises(PtyroValueError, match="rotation=5.0 is given only with aberrations"):
        px.parallax(ds, state, rotation=5.0)


def test_guard_band_removes_the_small_defocus_bias():
    """At 20 Å defocus the double-overlap transfer 2 sin χ(Q) is small at low Q and the
    one-sideband frequencies just outside each disc, spread into it by the window, pulled the
    shifts outwards: noise-free +3.1 % of C10 without the guard band (guard=0), 1.4 % with the
    default 2 frequency steps (compare.py's geometry: 25 mrad, 48² patterns at 0.2 Å, 19 Å field)."""
    grid, scan, state = syn.setup(gpts=48, sampling=0.2, scan=(48, 48), step=0.4, energy=ENERGY, semiangle_cutoff=25.0, aberrations={"C10": -20.0})
    truth = syn.with_object(state, np.exp(1j * amorphous_phase(tuple(state.object.shape[-2:]), state.sampling)))
    fit = px.fit_aberrations(syn.simulate(truth, grid, scan, dose=None))
    assert fit.defocus == pytest.approx(20.0, rel=0.02)
    assert fit.aberrations["C12"] < 0.2


def one_hot_transfer_objective(x, F, kp, which, wp, wb, q, k_alpha, lam, orders):
    """The exact-transfer objective as first written (every Q, χ evaluated at k_p ∓ Q
    directly, each bin's transfer a one-hot matrix product) at x = (coefficients, the raster's
    turn in radians): the reference for the fast form."""
    c, t = x[:-1], x[-1]
    q = q @ np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]).T
    basis = lambda k: np.asarray(px.chi_basis(jnp.asarray(k), lam, orders), np.float64)  # noqa: E731
    chi = lambda k: basis(k.reshape(-1, 2)).reshape(k.shape[:-1] + (-1,)) @ c  # noqa: E731
    km, kq = kp[:, None] - q[None], kp[:, None] + q[None]
    chi0 = chi(kp)[:, None]
    g = np.where(np.sum(km**2, -1) < k_alpha**2, np.exp(1j * (chi0 - chi(km))), 0) - np.where(np.sum(kq**2, -1) < k_alpha**2, np.exp(-1j * (chi0 - chi(kq))), 0)
    onehot = np.zeros((len(wb), len(kp)))
    onehot[which, np.arange(len(kp))] = wp
    T = onehot @ g
    Fq = F.reshape(len(wb), -1)
    num = np.abs(np.sum(wb[:, None] * Fq * np.conj(T), 0)) ** 2
    den = np.sum(wb[:, None] * np.abs(T) ** 2, 0) + 1e-6
    return -np.sum(num / den) / np.sum(np.abs(Fq) ** 2)


@functools.cache
def transfer_problem(orders=("C10", "C12", "C21", "C23")):
    """A small random problem: 3-pixel-to-9-pixel bins of a disc, real images' FFTs on a 6 x 7
    scan (odd and even axes: Nyquist rows are their own conjugates on one only)."""
    rng = np.random.default_rng(5)
    k_alpha, step = 1.0, 0.4
    g = np.arange(-5, 6) * 0.2
    kp = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    kp = kp[np.linalg.norm(kp, axis=1) < k_alpha]
    which = np.unique(np.floor(kp / 0.5 + 0.5), axis=0, return_inverse=True)[1].reshape(-1)
    nb = which.max() + 1
    F = np.fft.fft2(rng.standard_normal((nb, 6, 7)))
    q = np.stack(np.meshgrid(np.fft.fftfreq(6, step), np.fft.fftfreq(7, step), indexing="ij"), -1).reshape(-1, 2) @ px._rot(20.0).T
    wp = rng.uniform(0.5, 1.5, len(kp))
    wb = rng.uniform(0.2, 1.0, nb)
    c = {"C10": [-60.0], "C12": [8.0, -3.0], "C21": [300.0, -200.0], "C23": [150.0, 100.0], "C30": [5e4]}
    c = np.concatenate([c[o] for o in orders])
    return np.append(c, 0.05), F, kp, which, wp, wb, q, k_alpha, wavelength(ENERGY), orders


@pytest.mark.parametrize("orders", [("C10", "C12"), ("C10", "C12", "C21", "C23"), ("C10", "C12", "C30")])
def test_fast_transfer_objective_equals_the_one_hot_form(orders):
    """The Taylor-series phases, the rows of pixels, the half plane of Q against the direct
    float64 one-hot form (χ of degree 2, 3 and 4: the odd and even Taylor terms)."""
    c, F, kp, which, wp, wb, q, k_alpha, lam, orders = transfer_problem(orders)
    args, degree = px._transfer_problem(F, kp, which, wp, wb, q, k_alpha, orders)
    fast = float(px._transfer_objective(jnp.asarray(c, jnp.float32), *args, lam, orders, degree))
    ref = one_hot_transfer_objective(c, F, kp, which, wp, wb, q, k_alpha, lam, orders)
    assert fast == pytest.approx(ref, rel=2e-4)
    # not a constant: another defocus changes it
    assert abs(one_hot_transfer_objective(c + np.eye(len(c))[0] * 30, F, kp, which, wp, wb, q, k_alpha, lam, orders) - ref) > 1e-3 * abs(ref)
    assert abs(one_hot_transfer_objective(c + np.eye(len(c))[-1] * 0.3, F, kp, which, wp, wb, q, k_alpha, lam, orders) - ref) > 1e-3 * abs(ref)


def test_transfer_gradient_and_fisher_matrix():
    """The Gauss–Newton form's value and gradient (coefficients and the raster's turn) against
    central differences of the one-hot reference, with an aperture wide enough that no k_p ∓ Q
    crosses its edge (the aperture is not differentiated: its edge moves with the turn); its
    matrix symmetric positive semi-definite and, at the optimum of noise-free data (F = Φ T
    exactly), the objective's Hessian (central differences of that gradient)."""
    c, F, kp, which, wp, wb, q, _, lam, orders = transfer_problem(("C10", "C21"))  # degree 3: odd and even Taylor terms; small to compile
    k_alpha = 10.0
    args, degree = px._transfer_problem(F, kp, which, wp, wb, q, k_alpha, orders)
    v, g, h = (np.asarray(x, np.float64) for x in px._transfer_gauss_newton(jnp.asarray(c, jnp.float32), *args, lam, orders, degree))
    f = lambda x: one_hot_transfer_objective(x, F, kp, which, wp, wb, q, k_alpha, lam, orders)  # noqa: E731
    assert v == pytest.approx(f(c), rel=2e-4)
    steps = np.array([0.2, 2.0, 2.0, 0.01])
    fd = np.array([(f(c + s * e) - f(c - s * e)) / (2 * s) for s, e in zip(steps, np.eye(len(c)))])
    np.testing.assert_allclose(g, fd, rtol=0.02, atol=1e-3 * np.abs(fd).max())
    np.testing.assert_allclose(h, h.T, rtol=1e-5, atol=1e-6 * np.abs(h).max())
    assert np.linalg.eigvalsh(h).min() > -1e-6 * np.abs(h).max()
    # noise-free data made by the model itself: there the Fisher matrix is the Hessian
    gr, gi, _, _ = px._transfer_fields(jnp.asarray(c, jnp.float32), *args[1:5], lam, orders, degree)
    Tb = np.asarray(jax.lax.complex(px._bin_rows(gr, args[6], args[7]), px._bin_rows(gi, args[6], args[7])))
    phi = np.exp(1j * np.arange(Tb.shape[1]))
    exact = (Tb * phi[None]).astype(np.complex64)
    args2 = (jnp.asarray(exact),) + args[1:]
    _, g2, h2 = px._transfer_gauss_newton(jnp.asarray(c, jnp.float32), *args2, lam, orders, degree)
    grad = lambda x: np.asarray(px._transfer_gauss_newton(jnp.asarray(x, jnp.float32), *args2, lam, orders, degree)[1], np.float64)  # noqa: E731
    hess = np.stack([(grad(c + s * e) - grad(c - s * e)) / (2 * s) for s, e in zip(steps, np.eye(len(c)))], 1)  # of the gradient checked above
    assert np.abs(np.asarray(g2)).max() < 1e-3 * np.abs(np.asarray(h2)).max()
    np.testing.assert_allclose(np.asarray(h2), hess, rtol=0.05, atol=0.02 * np.abs(hess).max())


def test_fit_transfer_recovers_the_defocus_from_a_wrong_start():
    """From optics 10 % off (given, nothing measured) the exact-transfer fit returns to the
    truth (measured: C10 −99.5 Å, C12 9.9 Å)."""
    ds, _, _, ab = parallax_case()
    fit = px.fit_transfer(ds, px.given_optics({"C10": -90.0, "C12": 8.0, "phi12": 0.6}))
    assert fit.aberrations["C10"] == pytest.approx(-100.0, rel=0.02)
    assert fit.aberrations["C12"] == pytest.approx(10.0, rel=0.1)


def test_no_guard_band_where_the_disc_holds_few_frequencies():
    """The guard band is left out where the bright-field disc's radius is fewer than
    GUARD_MIN_DISC_STEPS frequency steps (here 20 mrad at 300 kV over a 10 Å field: about 10):
    there it would empty most discs (a crystal's few cells lost their Bragg frequencies: C12 28 Å
    for 0.5 Å, measured), so guard=2 measures exactly what guard=0 does; a wide field keeps it."""
    ds = small_field_case()
    k_alpha = 20e-3 / 0.019687
    assert k_alpha * 10.0 < px.GUARD_MIN_DISC_STEPS
    a = px.measure_shifts(ds, guard=2.0)[1]
    b = px.measure_shifts(ds, guard=0.0)[1]
    np.testing.assert_array_equal(a, b)
    grid, scan, state = syn.setup(gpts=48, sampling=0.2, scan=(48, 48), step=0.4, energy=ENERGY, semiangle_cutoff=25.0, aberrations={"C10": -20.0})
    wide = syn.simulate(syn.with_object(state, np.exp(1j * amorphous_phase(tuple(state.object.shape[-2:]), state.sampling))), grid, scan, dose=None)
    assert not np.array_equal(px.measure_shifts(wide, guard=2.0)[1], px.measure_shifts(wide, guard=0.0)[1])


def test_default_refines_by_the_transfer_where_the_shifts_are_small():
    """transfer=None (True, the default, always refines) follows transfer_wanted both ways: the −100 Å case on 0.5 Å steps (largest
    fitted shift about 3 steps, below TRANSFER_MAX_STEPS) is refined, the −200 Å case (about 6
    steps) is not; the rule itself on made-up shifts either side of the limit."""
    small, *_ = parallax_case()
    large, *_ = parallax_case(0.0, -200.0, 10.0, 2.0)
    for ds, wanted in ((small, True), (large, False)):
        measured, fit = px.measure_and_fit(ds)
        assert px.transfer_wanted(fit, measured[3]) is wanted
        assert px.fit_aberrations(ds, transfer=None).aberrations == px.fit_aberrations(ds, transfer=wanted).aberrations
    lat = px.scan_lattice(np.asarray(small.positions), small.scan_shape)
    limit = px.TRANSFER_MAX_STEPS * STEP
    for size, wanted in ((0.9 * limit, True), (1.1 * limit, False)):
        fit = px.given_optics({"C10": -10.0})._replace(model_shifts=np.array([[size, 0.0], [0.0, -0.5 * size]]))
        assert px.transfer_wanted(fit, lat) is wanted
    assert not px.transfer_wanted(px.given_optics({"C10": -10.0}), lat)  # no bins: nothing to refine


@pytest.mark.parametrize("rotation", [0.0, 40.0])
def test_a_crystals_aliased_shifts_do_not_decide_the_optics(rotation):
    """A periodic specimen (a 3.16 Å honeycomb) at −100 Å: its bright-field images' shifts (up
    to 2 Å, more than half the lattice period) are aliased, and the shift fit alone lands far
    off (C10 −86 to −214 Å with microns of coma, phase correlation 0.17, measured before the
    search); the search of defocus and raster turns under the exact transfer finds the truth,
    with the raster turned by 40° (between the search's 30° steps) too."""
    grid, scan, state = syn.setup(gpts=32, sampling=0.25, scan=(24, 24), step=0.5, energy=ENERGY, semiangle_cutoff=20.0, aberrations={"C10": -100.0})
    truth = syn.with_object(state, np.exp(1j * syn.hexagonal_phase(tuple(state.object.shape[-2:]), state.sampling, peaks=(0.1, 0.06))))
    pos = None
    if rotation:
        p = np.asarray(state.positions, np.float64)
        t = math.radians(rotation)
        pos = (p - p.mean(0)) @ np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]).T + p.mean(0)
    ds = syn.simulate(truth, grid, scan, positions=pos, dose=5000.0)
    shift_fit = px.fit_aberrations(ds, transfer=False)
    assert abs(shift_fit.aberrations["C10"] + 100.0) > 10.0 or shift_fit.aberrations.get("C21", 0.0) > 2000.0  # the case is the hard one
    fit = px.fit_aberrations(ds)
    assert abs(fit.aberrations["C10"] + 100.0) < 5.0, fit.aberrations
    assert fit.aberrations.get("C21", 0.0) < 1000.0, fit.aberrations
    assert abs((fit.rotation - rotation + 90.0) % 180.0 - 90.0) < 3.0, fit.rotation
    if not rotation:
        blank = syn.setup(gpts=32, sampling=0.25, scan=(24, 24), step=0.5, energy=ENERGY, semiangle_cutoff=20.0, aberrations={})[2]
        out = px.parallax(ds, blank)
        _, corr = syn.phase_metrics(out.object[0], truth.object[0], syn.scanned_region(state, margin=-1.0))
        assert corr > 0.6, corr
