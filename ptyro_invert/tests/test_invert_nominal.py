"""A reconstruction that forgives nominal optics and counted data (issue 21, part B): the loss the
data choose, the noise floor, fitted aberrations, constrained position correction, warm start."""

import sys

if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.test_util import check_grads

import ptyro_core
from ptyro_core import Dataset4D, PtyroValueError, replace
from ptyro_invert import reconstruct
from ptyro_invert.losses import amplitude_loss, choose_loss, expected_loss_per_pixel, poisson_loss
from ptyro_invert.recon import (
    StepConfig,
    aberration_basis,
    aberrations_in_angstrom,
    apply_aberrations,
)
from ptyro_invert.synthetic import hexagonal_phase, phase_metrics, scanned_region, setup, simulate, with_object

LR = {"object": 0.05, "probe": 0.005}


@pytest.fixture(scope="module")
def case():
    grid, scan, st0 = setup(gpts=48, sampling=0.2, scan=(8, 8), step=0.6, aberrations={"C10": 60.0}, padding_px=10)
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.7, 0.9)))[None])
    return grid, scan, st0, truth


# --------------------------------------------------------------------------- the loss the data choose


@settings(max_examples=25, deadline=None)
@given(st.floats(1e-6, 1e3), st.integers(0, 2**31 - 1))
def test_choose_loss_finds_counts_in_any_unit(quantum, seed):
    counts = np.random.default_rng(seed).poisson(5.0, (3, 8, 8)).astype(np.float64)
    counts[0, 0, 0] = 1.0  # the smallest count is one quantum
    name, gain, _ = choose_loss((counts * quantum).astype(np.float32))
    assert name == "poisson"
    # float32 data cannot tell a quantum within ~1e-5 (relative) of a whole number from integer
    # counts: either reading is right at the resolution asked for here (1e-4)
    assert abs(gain * quantum - 1.0) < 1e-4 or (gain == 1.0 and abs(quantum - round(quantum)) < 1e-4 * quantum), (gain, quantum)


@pytest.mark.parametrize("adu", [1, 2, 3])
def test_choose_loss_finds_adu_per_count(adu):
    # a detector storing `adu` units per electron as whole numbers: the counts are data / adu.
    # Independent check: Poisson counts have variance = mean, so after the gain the dispersion
    # var/mean is 1 (with gain 1 it would be `adu`).
    lam = 4.0
    counts = np.random.default_rng(adu).poisson(lam, (16, 16, 16))
    name, gain, why = choose_loss((adu * counts).astype(np.uint16))
    assert name == "poisson" and gain == pytest.approx(1.0 / adu)
    scaled = adu * counts * gain
    assert abs(scaled.var() / scaled.mean() - 1.0) < 0.1
    assert (f"gain 1/{adu}" in why) == (adu > 1)
    # few nonzero values cannot tell a quantum from chance: gain 1
    sparse = np.zeros((4, 8, 8), np.uint16)
    sparse[0, :2, :3] = 2
    assert choose_loss(sparse)[:2] == ("poisson", 1.0)


def test_remove_phase_plane_moves_a_ramp_into_the_probe_and_keeps_every_pattern(case):
    """Object·e^{ig·r} with probe·e^{−ig·u} predicts the same patterns (a degeneracy): the
    plane fit takes a ramp put into the object out, the probe takes the tilt, and the
    predicted intensities do not change (independent check: the forward model)."""
    from ptyro_invert.forward import predict_patterns
    from ptyro_invert.recon import remove_phase_plane

    grid, scan, st0, truth = case
    obj = np.asarray(truth.object)
    x, y = np.meshgrid(np.arange(obj.shape[-2]), np.arange(obj.shape[-1]), indexing="ij")
    g = np.array([0.031, -0.017])  # rad per pixel
    ramped = with_object(truth, (obj * np.exp(1j * (g[0] * x + g[1] * y)))[None, 0])
    centres = np.asarray(truth.positions, np.float64) / np.asarray(truth.sampling)
    o, p = remove_phase_plane(ramped.object, ramped.probe, centres)
    fixed = replace(ramped, object=o, probe=p)
    before = np.asarray(predict_patterns(ramped))
    np.testing.assert_allclose(np.asarray(predict_patterns(fixed)), before, rtol=2e-3, atol=2e-4 * before.max())
    # no phase plane is left over the scanned area (the ramp put in, and the truth's own slope)
    lo, hi = np.floor(centres.min(0)).astype(int), np.ceil(centres.max(0)).astype(int) + 1
    ph = np.angle(np.asarray(o)[0])[lo[0] : hi[0], lo[1] : hi[1]]
    xx, yy = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
    coef, *_ = np.linalg.lstsq(np.stack([np.ones(xx.size), xx.ravel(), yy.ravel()], 1), ph.ravel(), rcond=None)
    assert np.all(np.abs(coef[1:]) < 1e-3 * np.abs(g).max()), coef
    with pytest.raises(PtyroValueError, match="remove_phase_ramp: expected"):
        reconstruct(simulate(truth, grid, scan), truth, iterations=1, remove_phase_ramp="sideways")


def test_choose_loss_floats_and_bad_data():
    rng = np.random.default_rng(0)
    assert choose_loss(rng.random((4, 8, 8)))[0] == "amplitude"  # noise-free simulation
    assert choose_loss(-rng.random((4, 8, 8)))[0] == "amplitude"
    assert choose_loss(np.zeros((2, 4, 4)))[0] == "amplitude"


@pytest.mark.parametrize("lam", [0.02, 0.7, 6.0, 80.0, 4000.0])
def test_noise_floor_matches_monte_carlo(lam):
    # independent check: the mean of each loss over Poisson draws at the true rate
    m = np.random.default_rng(3).poisson(lam, (200_000, 1, 1)).astype(np.float32)
    p = np.full_like(m, lam)
    for name, fn in (("poisson", poisson_loss), ("amplitude", amplitude_loss)):
        mc = float(fn(p, m))
        assert abs(float(expected_loss_per_pixel(name, lam)) - mc) < 0.01 * max(mc, 0.05), (name, lam, mc)
    assert abs(float(expected_loss_per_pixel("poisson", 1e6)) - 0.5) < 1e-6  # Wilks: ½ per bright pixel


def test_auto_loss_and_convergence_report(case):
    grid, scan, st0, truth = case
    counts = simulate(truth, grid, scan, dose=1e4)
    report: list = []
    out = reconstruct(counts, st0, iterations=8, batch_size=8, learning_rates=LR, progress=False, report=report)
    assert report[-1]["loss_name"] == "poisson" and "counts" in report[-1]["loss_reason"]
    ratio = report[-1]["loss"] / report[-1]["noise_floor"]
    assert report[0]["loss"] / report[0]["noise_floor"] > 2 * ratio  # falls towards the floor
    assert 0.7 < ratio < 1.3, ratio  # measured 1.01: fitted down to the shot noise
    # the same counts divided by the dose: the same choice, the same reconstruction
    scaled = Dataset4D(np.asarray(counts.array) / 1e4, counts.positions, grid=counts.grid, energy=counts.energy)
    rep2: list = []
    out2 = reconstruct(scaled, st0, iterations=8, batch_size=8, learning_rates=LR, progress=False, report=rep2)
    assert rep2[-1]["loss_name"] == "poisson"
    np.testing.assert_allclose(np.asarray(out2.object), np.asarray(out.object), atol=2e-3)
    # noise-free floats: amplitude, no floor
    rep3: list = []
    reconstruct(simulate(truth, grid, scan), st0, iterations=1, batch_size=8, learning_rates=LR, progress=False, report=rep3)
    assert rep3[0]["loss_name"] == "amplitude" and rep3[0]["noise_floor"] is None


# --------------------------------------------------------------------------- aberrations


def test_aberration_phase_is_the_simulators_chi():
    # independent: the registered probe (ptyro-simul) with C10, C12/φ12, C30 changed
    grid, scan, st0 = setup(gpts=64, sampling=0.15, scan=(2, 2), step=0.5, aberrations={"C10": 150.0})
    k_alpha = 25e-3 / 0.019687  # 25 mrad at 300 keV, 1/Å
    basis = aberration_basis((64, 64), st0.sampling, k_alpha)
    delta = {"C10": 40.0, "C12": 15.0, "phi12": 0.4, "C30": 2e5}
    lam = 0.0196875
    q = np.pi * lam * k_alpha**2
    coef = np.array([delta["C10"] * q, delta["C12"] * q * np.cos(2 * delta["phi12"]), delta["C12"] * q * np.sin(2 * delta["phi12"]),
                     delta["C30"] * np.pi * lam**3 * k_alpha**4 / 2])  # fmt: skip
    got = apply_aberrations(st0.probe, jnp.asarray(coef, jnp.float32), jnp.asarray(basis))
    probe = ptyro_core.get("probe", "aberrated")
    want = probe(grid, 300e3, semiangle_cutoff=25.0, aberrations={"C10": 190.0, "C12": 15.0, "phi12": 0.4, "C30": 2e5}).array
    overlap = abs(np.vdot(np.asarray(want), np.asarray(got))) / np.linalg.norm(want) / np.linalg.norm(got)
    assert overlap > 0.999, overlap
    back = aberrations_in_angstrom(coef, k_alpha, 300e3)
    for k, v in delta.items():
        assert abs(back[k] - v) < 1e-3 * max(abs(v), 1.0), (k, back[k], v)


def test_aberration_gradient(case):
    p = jnp.asarray(case[2].probe)
    basis = jnp.asarray(aberration_basis((48, 48), (0.2, 0.2), 1.0))

    def f(c):
        q = apply_aberrations(p.astype(jnp.complex128), c, basis.astype(jnp.float64))
        return jnp.sum(jnp.abs(q[..., :20, :]) ** 2)

    with jax.enable_x64(True):
        check_grads(f, (jnp.asarray([0.3, -0.2, 0.1, 0.05], jnp.float64),), order=1, modes=["rev"], atol=1e-5, rtol=1e-4)


def test_defocus_25_percent_off_is_recovered(case):
    grid, scan, st0, truth = case
    _, _, true_st = setup(gpts=48, sampling=0.2, scan=(8, 8), step=0.6, aberrations={"C10": 75.0}, padding_px=10)
    ds = simulate(replace(true_st, object=truth.object), grid, scan)
    report: list = []
    out = reconstruct(ds, st0, iterations=20, batch_size=4, learning_rates=LR, fit_aberrations=True, progress=False, report=report)
    fitted = 60.0 + report[-1]["aberrations"]["C10"]
    assert abs(fitted - 75.0) < 7.5, fitted  # within 10 % of the truth (from 25 % off)
    rmse, corr = phase_metrics(out.object[0], truth.object[0], scanned_region(st0))
    plain = reconstruct(ds, st0, iterations=20, batch_size=4, learning_rates=LR, progress=False)
    rmse0, _ = phase_metrics(plain.object[0], truth.object[0], scanned_region(st0))
    assert rmse < rmse0, (rmse, rmse0)


# --------------------------------------------------------------------------- positions


def test_position_corrections_carry_no_global_map(case):
    grid, scan, st0, truth = case
    rng = np.random.default_rng(7)
    err = rng.normal(0.0, 0.1 / np.sqrt(2), st0.positions.shape).astype(np.float32)
    ds = simulate(truth, grid, scan, positions=np.asarray(st0.positions) + err)
    report: list = []
    out = reconstruct(ds, st0, "position_corrected", iterations=6, batch_size=8, learning_rates={**LR, "positions": 0.05},
                      progress=False, report=report)  # fmt: skip
    d = np.asarray(out.positions, np.float64) - np.asarray(st0.positions, np.float64)
    x = np.asarray(st0.positions, np.float64) - np.asarray(st0.positions, np.float64).mean(0)
    # the isotropic scale of the total correction (least squares of d = t + s·x): held at zero
    s = np.sum((d - d.mean(0)) * x) / np.sum(x * x)
    assert abs(s) < 1e-5, s
    assert abs(report[-1]["scan"]["scale_change"]) < 1e-6

    # the jitter itself is absorbed, up to its own translation and isotropic scale
    def rest(v):
        v = v - v.mean(0)
        return v - np.sum(v * x) / np.sum(x * x) * x

    rms = lambda v: float(np.sqrt(np.mean(np.sum(v**2, -1))))  # noqa: E731
    assert rms(rest(d - err)) < 0.5 * rms(rest(err)), (rms(rest(err)), rms(rest(d - err)))
    with pytest.raises(PtyroValueError, match="scan_scale"):
        reconstruct(ds, st0, "position_corrected", iterations=1, scan_scale="free", progress=False)


# --------------------------------------------------------------------------- warm start, static config


def test_warm_start_on_a_growing_subset(case):
    grid, scan, st0, truth = case
    ds = simulate(truth, grid, scan)
    first = reconstruct(ds, st0, iterations=3, batch_size=8, learning_rates=LR, progress=False, indices=np.arange(32))
    assert int(first.iteration) == 3
    more = reconstruct(ds, first, iterations=3, batch_size=8, learning_rates=LR, progress=False, indices=np.arange(64))
    assert int(more.iteration) == 6 and more.loss.shape == (6,)
    rmse, _ = phase_metrics(more.object[0], truth.object[0], scanned_region(st0))
    rmse1, _ = phase_metrics(first.object[0], truth.object[0], scanned_region(st0))
    assert rmse < rmse1, (rmse, rmse1)
    with pytest.raises(PtyroValueError, match="indices"):
        reconstruct(ds, st0, iterations=1, indices=[0, 64], progress=False)


def test_step_config_is_the_jit_key():
    fields = {f.name: None for f in dataclasses.fields(StepConfig)}
    a = StepConfig(**{**fields, "dtype": "complex64", "window": (8, 8)})
    b = StepConfig(**{**fields, "dtype": "complex128", "window": (8, 8)})
    assert hash(a) == hash(StepConfig(**{**fields, "dtype": "complex64", "window": (8, 8)}))
    assert a != b  # the dtype is part of the key


def test_scan_scale_fitted_when_asked(case):
    grid, scan, st0, truth = case
    nominal = np.asarray(st0.positions, np.float64)
    c = nominal.mean(0)
    ds = simulate(truth, grid, scan, positions=(c + 1.03 * (nominal - c)).astype(np.float32))  # the scan 3 % larger than nominal
    report: list = []
    # the probe held at the true one: the scale is then not traded against it
    reconstruct(ds, st0, "position_corrected", iterations=24, batch_size=8, scan_scale="fit", fit_probe=False,
                learning_rates={**LR, "positions": 0.02, "affine": 5e-3}, progress=False, report=report)  # fmt: skip
    assert 0.02 < report[-1]["scan"]["scale_change"] < 0.04, report[-1]["scan"]  # measured +2.85 %


# --------------------------------------------------------------------------- the workflow's keys and figure


def test_workflow_keys_and_convergence_figure(tmp_path):
    config = pytest.importorskip("ptyro_workflows.config")
    figures = pytest.importorskip("ptyro_workflows.figures")
    r = config.reconstruction_config({"reconstruction": {"fit_aberrations": True}})["reconstruction"]
    assert r["fit_aberrations"] is True and r["loss"] == "auto" and r["scan_scale"] == "hold"
    with pytest.raises(ptyro_core.PtyroTypeError, match="fit_aberrations"):
        config.reconstruction_config({"reconstruction": {"fit_aberrations": "yes"}})
    with pytest.raises(PtyroValueError, match="scan_scale"):
        config.reconstruction_config({"reconstruction": {"scan_scale": "free"}})
    path = tmp_path / "loss.png"
    figures.plot_loss(path, np.array([5.0, 2.0, 1.1]), name="poisson", noise_floor=[1.0, 1.0, 1.02])
    assert path.exists() and path.stat().st_size > 1000
