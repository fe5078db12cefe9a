"""Direct methods (iCoM, SSB, OBF, WDD, parallax) on simulated data with known ground truth.

Physics checked against what the code does not compute itself: the analytic two-disc overlap
(iCoM's transfer for an in-focus probe, and SSB's beyond the triple overlap), the weak-phase
limit (a weak object's phase recovered by every method), WDD's validity beyond it (a strong
phase that SSB's weak-phase model distorts), and linearity (gradients checked numerically).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from ptyro_core import Dataset4D, PtyroValueError, get
from ptyro_invert import synthetic as syn
from ptyro_invert.direct import icom as icom_mod
from ptyro_invert.direct import ssb as ssb_mod
from ptyro_invert.direct import wdd as wdd_mod
from ptyro_invert.direct._common import scan_lattice
from ptyro_core.conventions import energy2wavelength as wavelength

ENERGY = 300e3
ALPHA = 25.0  # mrad


@functools.lru_cache(maxsize=None)
def case(peaks: tuple[float, float] = (0.1, 0.06), c10: float = 0.0, dose: float | None = None):
    """A 24 x 24 scan at the object pixel (0.2 Å) over a honeycomb phase; 48 x 48 patterns."""
    grid, scan, state = syn.setup(gpts=48, sampling=0.2, scan=(24, 24), step=0.2, energy=ENERGY, semiangle_cutoff=ALPHA, aberrations={"C10": c10})
    ph = syn.hexagonal_phase(tuple(state.object.shape[-2:]), state.sampling, peaks=peaks)
    truth = syn.with_object(state, np.exp(1j * ph))
    return syn.simulate(truth, grid, scan, dose=dose), state, truth


def metrics(out, state, truth):
    return syn.phase_metrics(out.object[0], truth.object[0], syn.scanned_region(state))


# measured (24 x 24 scan, noise-free): icom 0.864 / 0.761 (defocus blurs |P|²), ssb 0.901 / 0.918,
# obf 0.918 / 0.905, wdd 0.919 / 0.939 at C10 = 0 / -40 Å
@pytest.mark.parametrize("name, min_corr", [("icom", (0.84, 0.73)), ("ssb", (0.88, 0.89)), ("obf", (0.89, 0.88)), ("wdd", (0.9, 0.91))])
@pytest.mark.parametrize("c10", [0.0, -40.0])
def test_weak_phase_recovered_through_the_registry(name, min_corr, c10):
    min_corr = min_corr[0] if c10 == 0 else min_corr[1]
    ds, state, truth = case(c10=c10)
    # the pipeline's iterative options are accepted and ignored
    out = get("reconstruction", name)(ds, state, loss="amplitude", iterations=3, batch_size=16, seed=0, progress=False)
    rmse, corr = metrics(out, state, truth)
    assert corr > min_corr, (name, c10, rmse, corr)
    assert out.object.shape == state.object.shape[-3:] and out.probe.shape == state.probe.shape
    # phase is zero outside the scanned area
    reg = syn.scanned_region(state, margin=2.0)
    mask = np.ones(out.object.shape[-2:], bool)
    mask[reg] = False
    assert np.allclose(np.angle(np.asarray(out.object[0]))[mask], 0.0)


def test_wdd_beyond_the_weak_phase_limit():
    """Peaks of 1 rad (10x the weak case): WDD (no weak-phase assumption) scales exactly, its
    error 10x, its correlation unchanged; SSB stays below it."""
    ds, state, truth = case(peaks=(1.0, 0.6))
    e_wdd, c_wdd = metrics(wdd_mod.wdd(ds, state), state, truth)
    _, c_ssb = metrics(ssb_mod.ssb(ds, state), state, truth)
    e_weak, c_weak = metrics(wdd_mod.wdd(*case()[:2]), *case()[1:])
    assert abs(c_wdd - c_weak) < 0.01 and 9.0 < e_wdd / e_weak < 11.0
    assert c_ssb < c_wdd - 0.01


def test_dose_lowers_but_keeps_correlation():
    ds, state, truth = case(dose=4000.0)
    corrs = {n: metrics(get("reconstruction", n)(ds, state), state, truth)[1] for n in ("icom", "ssb", "obf", "wdd")}
    assert all(0.4 < c < 0.95 for c in corrs.values()), corrs


def overlap(q):
    """Two-disc overlap area over a disc's area, centres q (in disc diameters) apart."""
    q = np.clip(q, 0, 1)
    return 2 / np.pi * (np.arccos(q) - q * np.sqrt(1 - q * q))


@functools.lru_cache(maxsize=None)
def transfer_case(periodic: bool = False):
    """A white-noise phase of 1e-3 rad rms, noise-free: each method's measured transfer. With
    ``periodic``, the phase repeats with the scan's field (32 x 32 steps), so that the FFT over
    the scan is exact (no edges)."""
    grid, scan, state = syn.setup(gpts=48, sampling=0.2, scan=(32, 32), step=0.2, energy=ENERGY, semiangle_cutoff=ALPHA, aberrations={"C10": 0.0})
    ox, oy = state.object.shape[-2:]
    pos = np.rint(np.asarray(state.positions) / 0.2).astype(int)
    if periodic:
        ii, jj = np.meshgrid(np.arange(ox) - pos[0, 0], np.arange(oy) - pos[0, 1], indexing="ij")
        ph = 1e-3 * np.random.default_rng(3).standard_normal((32, 32))[ii % 32, jj % 32]
    else:
        ph = 1e-3 * np.random.default_rng(3).standard_normal((ox, oy))
    truth = syn.with_object(state, np.exp(1j * ph))
    ds = syn.simulate(truth, grid, scan)
    on_lattice = ph[pos[:, 0], pos[:, 1]].reshape(32, 32)
    lat = scan_lattice(ds.positions, ds.scan_shape)
    return ds, state, lat, np.fft.fft2(on_lattice)


def ring_transfer(phase_lattice, truth_fft, q, edges):
    """Measured transfer per ring of |Q|: Σ Re(F T*) / Σ |T|² (F the reconstruction's FFT)."""
    f = np.fft.fft2(np.asarray(phase_lattice))
    num = np.real(f * np.conj(truth_fft))
    den = np.abs(truth_fft) ** 2
    which = np.digitize(q, edges)
    return np.array([num[which == i].sum() / den[which == i].sum() for i in range(1, len(edges))])


def ring_mean(values, q, edges):
    which = np.digitize(q, edges)
    return np.array([values[which == i].mean() for i in range(1, len(edges))])


def test_icom_transfer_is_the_probe_autocorrelation():
    ds, state, lat, tf = transfer_case()
    phase, _ = icom_mod.icom_phase(ds)
    q = np.linalg.norm(lat.frequencies(), axis=-1)
    k_alpha = ALPHA * 1e-3 / wavelength(ENERGY)
    theory = overlap(q / (2 * k_alpha))
    edges = np.linspace(0.3, 1.9, 9) * k_alpha
    measured = ring_transfer(phase, tf, q, edges)
    # measured (rings 0.3-1.9 k_alpha): 0.694 0.565 0.476 0.381 0.285 0.182 0.102 0.042 against
    # 0.740 0.626 0.496 0.390 0.290 0.185 0.105 0.039 (the scan's non-periodic edges cost a few % at low Q)
    assert np.max(np.abs(measured - ring_mean(theory, q, edges))) < 0.08, measured
    # the code's own transfer (from the probe) agrees with the analytic curve
    band = (q > 0) & (q < 1.8 * k_alpha)
    assert np.max(np.abs(icom_mod.icom_transfer(state, lat)[band] - theory[band])) < 0.05


def test_ssb_transfer_matches_the_double_overlap():
    ds, state, lat, tf = transfer_case()
    phase, _ = ssb_mod.ssb_phase(ds, state)
    q = np.linalg.norm(lat.frequencies(), axis=-1)
    k_alpha = ALPHA * 1e-3 / wavelength(ENERGY)
    model = ssb_mod.transfer(state, lat)
    edges = np.linspace(0.3, 1.9, 9) * k_alpha
    measured = ring_transfer(phase, tf, q, edges)
    # measured: 0.398 0.563 0.722 0.716 0.528 0.337 0.176 0.063 against 0.470 0.658 0.793 0.768 0.574 0.363 0.200 0.071
    assert np.max(np.abs(measured - ring_mean(model, q, edges))) < 0.12, measured
    assert np.all(measured / ring_mean(model, q, edges) > 0.8)
    # beyond Q = k_alpha there is no triple overlap: T = 2 L(Q) (two lunes)
    outer = (q > 1.05 * k_alpha) & (q < 1.9 * k_alpha)
    assert np.max(np.abs(model[outer] - 2 * overlap(q[outer] / (2 * k_alpha)))) < 0.08
    # SSB transfers more than iCoM there (its known advantage)
    assert np.mean(model[outer]) > 1.5 * np.mean(overlap(q[outer] / (2 * k_alpha)))


def test_transfer_deficit_is_the_scan_edges():
    """SSB's measured transfer on a non-periodic object is 7-15 % below its model (and iCoM's a
    few %); on an object periodic with the scan's field (the scan FFT exact) it matches: the
    deficit is the scan's edges (the FFT over a finite, non-periodic scan), not the filter."""
    ratios = {}
    for periodic in (False, True):
        ds, state, lat, tf = transfer_case(periodic)
        q = np.linalg.norm(lat.frequencies(), axis=-1)
        edges = np.linspace(0.3, 1.9, 9) * ALPHA * 1e-3 / wavelength(ENERGY)
        phase, _ = ssb_mod.ssb_phase(ds, state)
        ratios[periodic] = ring_transfer(phase, tf, q, edges) / ring_mean(ssb_mod.transfer(state, lat), q, edges)
    # measured: edges 0.847 0.855 0.910 0.933 0.920 0.928 0.880 0.887; periodic 0.993 0.991 1.001
    # 0.996 1.004 0.964 0.969 0.991
    assert np.all(np.abs(ratios[True] - 1) < 0.05), ratios[True]
    assert np.mean(ratios[False]) < np.mean(ratios[True]) - 0.05


def test_integrate_gradient_gradients_jit_and_vmap():
    rng = np.random.default_rng(0)
    field = jnp.asarray(rng.standard_normal((8, 6, 2)), jnp.float32)
    vecs = np.array([[0.3, 0.0], [0.05, 0.25]])
    f = functools.partial(icom_mod.integrate_gradient, vectors=vecs, highpass=0.1)
    check_grads(lambda x: jnp.sum(f(x) ** 3), (field,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
    batch = jnp.stack([field, 2 * field])
    out = jax.vmap(jax.jit(f))(batch)
    assert np.allclose(out[1], 2 * out[0], atol=1e-5) and np.allclose(out[0], f(field), atol=1e-5)


def test_integrate_gradient_inverts_an_analytic_gradient():
    """(1/2π)∇φ of φ = cos(2π x / L) on a sheared raster integrates back to φ."""
    vecs = np.array([[0.25, 0.0], [0.1, 0.25]])  # columns a1, a2 (a sheared raster)
    rx, ry = 16, 20
    ii, jj = np.meshgrid(np.arange(rx), np.arange(ry), indexing="ij")
    x = ii * vecs[0, 0] + jj * vecs[0, 1]
    y = ii * vecs[1, 0] + jj * vecs[1, 1]
    # a plane wave periodic on the raster: Q with Q·a1 = 2/rx, Q·a2 = 3/ry
    q = np.linalg.solve(vecs.T, [2 / rx, 3 / ry])
    arg = 2 * np.pi * (q[0] * x + q[1] * y)
    field = np.stack([-q[0] * np.sin(arg), -q[1] * np.sin(arg)], -1)  # (1/2π)∇cos(arg)
    phi = icom_mod.integrate_gradient(jnp.asarray(field, jnp.float32), vecs)
    assert np.allclose(phi, np.cos(arg), atol=1e-4)


def test_ssb_is_linear_in_the_patterns_and_differentiable():
    ds, state, _ = case()
    consts, pix = ssb_mod.sideband_filter(state)
    lat = scan_lattice(ds.positions, ds.scan_shape)
    q = jnp.asarray(lat.frequencies().reshape(-1, 2), jnp.float32)
    from ptyro_invert.direct._common import scan_fft

    def phase_of(p):
        g = scan_fft(p, pix).reshape(len(pix), -1).T
        return jnp.real(jnp.fft.ifft2(ssb_mod.apply_filter(g, q, consts, "ssb", 64).reshape(lat.shape)))

    p = jnp.fft.ifftshift(jnp.asarray(ds.array), axes=(-2, -1))
    check_grads(lambda x: jnp.sum(phase_of(x) ** 2), (p,), order=1, modes=["rev"], atol=5e-2, rtol=5e-2)
    assert np.allclose(phase_of(2 * p), 2 * phase_of(p), atol=1e-5)


def test_bad_inputs_fail_with_one_clear_line():
    ds, state, _ = case()
    shuffled = np.asarray(ds.positions).copy()
    shuffled[[3, 40]] = shuffled[[40, 3]]
    bad = Dataset4D(np.asarray(ds.array), shuffled, grid=ds.grid, energy=ds.energy)
    with pytest.raises(PtyroValueError, match=r"position \(0, 3\) is .* off the raster"):
        get("reconstruction", "ssb")(bad, state)
    with pytest.raises(PtyroValueError, match="unknown option 'epsilon'; expected some of threshold, q_batch"):
        get("reconstruction", "ssb")(ds, state, epsilon=0.1)
    with pytest.raises(PtyroValueError, match="expected epsilon > 0"):
        wdd_mod.wdd(ds, state, epsilon=0.0)
    with pytest.raises(PtyroValueError, match="expected q_batch >= 1"):
        ssb_mod.ssb(ds, state, q_batch=0)
    with pytest.raises(PtyroValueError, match="expected highpass >= 0"):
        icom_mod.icom(ds, state, highpass=-1.0)
    line = Dataset4D(np.asarray(ds.array)[:1], np.asarray(ds.positions)[:24], grid=ds.grid, energy=ds.energy)
    with pytest.raises(PtyroValueError, match="at least 2 x 2 positions"):
        icom_mod.icom(line, state)


@pytest.mark.parametrize("name", ["icom", "dpc", "ssb", "obf", "wdd", "parallax"])
def test_registered_and_conformant(name):
    from ptyro_core.testing import check_conformance

    if name == "parallax":  # the conformance data (a 2 x 2 scan, a tiny bright field) cannot be fitted: said so
        with pytest.raises(PtyroValueError, match="bright-field bins are too few to fit"):
            check_conformance("reconstruction", get("reconstruction", name))
        return
    check_conformance("reconstruction", get("reconstruction", name))


def test_wdd_skips_only_frequencies_where_the_aperture_does_not_overlap_itself(monkeypatch):
    """WDD transforms and deconvolves only the Q with |Q| <= 2 k_max (+2 pixels), where P̃*(k)
    P̃(k − Q) can be non-zero: here (0.2 Å steps, 25 mrad at 300 kV) the scan's corner
    frequencies are skipped, and the object is the one every Q gives, to round-off."""
    ds, state, _ = case(c10=-40.0)
    lat = scan_lattice(ds.positions, ds.scan_shape)
    q = np.asarray(lat.frequencies()).reshape(-1, 2)
    rows = wdd_mod._overlapping(q, wdd_mod.probe_fourier(state), ds.grid.reciprocal_sampling)
    assert rows[0] == 0 and 0 < len(rows) < len(q)
    k_alpha = ALPHA * 1e-3 / wavelength(ENERGY)
    skipped = np.delete(np.hypot(q[:, 0], q[:, 1]), rows)
    assert skipped.min() > 2 * k_alpha
    some, _ = wdd_mod.wdd_object(ds, state)
    monkeypatch.setattr(wdd_mod, "_overlapping", lambda q, p0, recip: np.arange(q.shape[0]))
    every, _ = wdd_mod.wdd_object(ds, state)
    np.testing.assert_allclose(np.asarray(some), np.asarray(every), atol=1e-5)
