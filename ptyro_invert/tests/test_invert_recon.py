import sys

# pytest's importlib mode names this file "ptyro_invert.tests.<name>" and may register the folder
# ptyro_invert/ as a namespace package "ptyro_invert" first; drop that placeholder so the real
# (installed) package is imported.
if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptyro_core
from ptyro_core import MemoryBudgetError, PtyroValueError, replace
from ptyro_core.pipeline import device_mesh
from ptyro_core.testing import check_conformance
from ptyro_invert import estimate_memory, load_checkpoint, occupancies, reconstruct
from ptyro_invert.checkpoint import read_checkpoint
from ptyro_invert.synthetic import hexagonal_phase, partially_coherent_modes, phase_metrics, scanned_region, setup, simulate, with_object

#: small, fast stand-ins for RECON-A (48×48 patterns, 8×8 scan); fewer positions need a larger step
LR = {"object": 0.05, "probe": 0.005}
ALGORITHMS = ["single_slice", "position_corrected", "mixed_state", "multislice"]


@pytest.fixture(scope="module")
def case():
    grid, scan, st0 = setup(gpts=48, sampling=0.2, scan=(8, 8), step=0.6, aberrations={"C10": 60.0}, padding_px=10)
    true_obj = np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.7, 0.9)))[None]
    truth = with_object(st0, true_obj)
    return grid, scan, st0, truth, simulate(truth, grid, scan)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_registered_and_conformant(name):
    fn = ptyro_core.get("reconstruction", name)
    check_conformance("reconstruction", fn, progress=False)


def test_single_slice_recovers_the_phase(case):
    grid, scan, st0, truth, ds = case
    out = reconstruct(ds, st0, "single_slice", iterations=10, batch_size=8, learning_rates=LR, progress=False)
    rmse, corr = phase_metrics(out.object[0], truth.object[0], scanned_region(st0))
    # the blank start is 0.3 rad RMSE away; measured 0.010 rad / 0.9987
    assert rmse < 0.025 and corr > 0.995, (rmse, corr)
    assert out.loss.shape == (10,) and int(out.iteration) == 10
    assert float(out.loss[-1]) < 0.05 * float(out.loss[0])
    assert float(jnp.max(jnp.abs(out.object))) <= 1.0 + 1e-6  # amplitude constraint
    assert abs(float(jnp.sum(jnp.abs(out.probe) ** 2)) - 1.0) < 1e-4  # fixed probe intensity
    assert bool(jnp.all(st0.object == 1))  # the input state is untouched


def test_poisson_loss_on_counts(case):
    grid, scan, st0, truth, _ = case
    ds = simulate(truth, grid, scan, dose=1e5)
    out = reconstruct(ds, st0, "single_slice", loss="poisson", iterations=10, batch_size=8, learning_rates=LR, progress=False)
    rmse, corr = phase_metrics(out.object[0], truth.object[0], scanned_region(st0))
    assert rmse < 0.06 and corr > 0.98, (rmse, corr)


def _compiles(caplog, fn):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="jax"), jax.log_compiles(True):
        fn()
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling jit(recon_step)")]


def test_step_compiles_once(case, caplog):
    grid, scan, st0, truth, ds = case
    # 64 positions in batches of 12: five full batches and a padded one, over 2 passes
    msgs = _compiles(caplog, lambda: reconstruct(ds, st0, "position_corrected", iterations=2, batch_size=12, progress=False))
    assert len(msgs) == 1, msgs


def test_one_and_two_devices_agree(case):
    grid, scan, st0, truth, ds = case
    assert jax.device_count() >= 2
    kw = dict(iterations=2, batch_size=8, learning_rates=LR, progress=False)
    a = reconstruct(ds, st0, "single_slice", mesh=device_mesh(jax.devices()[:1]), **kw)
    b = reconstruct(ds, st0, "single_slice", mesh=device_mesh(jax.devices()[:2]), **kw)
    np.testing.assert_allclose(np.asarray(a.object), np.asarray(b.object), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(a.loss), np.asarray(b.loss), rtol=1e-4)
    assert len(b.object.sharding.device_set) == 2  # ran replicated over the 2-device mesh


class Interrupt(Exception):
    pass


def test_checkpoint_resume_is_bit_identical(case, tmp_path):
    grid, scan, st0, truth, ds = case
    kw = dict(iterations=3, batch_size=16, learning_rates=LR, progress=False, seed=5)
    straight = reconstruct(ds, st0, "position_corrected", **kw)
    path = tmp_path / "run.h5"

    def stop_after_two(state):
        if int(state.iteration) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        reconstruct(ds, st0, "position_corrected", checkpoint=path, callback=stop_after_two, **kw)
    mid = load_checkpoint(path)
    assert int(mid.iteration) == 2 and read_checkpoint(path)["target_iteration"] == 3
    resumed = reconstruct(ds, st0, "position_corrected", checkpoint=path, **kw)
    assert int(resumed.iteration) == 3
    for f in ("object", "probe", "positions", "loss"):
        assert np.array_equal(np.asarray(getattr(straight, f)), np.asarray(getattr(resumed, f))), f
    final = load_checkpoint(path)
    assert np.array_equal(np.asarray(final.object), np.asarray(straight.object))


def test_memory_estimate_and_refusal(case):
    grid, scan, st0, truth, ds = case
    small = estimate_memory(ds, st0, batch_size=8)
    assert estimate_memory(ds, st0, batch_size=64) > small
    assert estimate_memory(ds, replace(st0, probe=jnp.concatenate([st0.probe] * 4)), batch_size=8) > small
    with pytest.raises(MemoryBudgetError, match="reduce batch_size"):
        reconstruct(ds, st0, "single_slice", iterations=1, batch_size=8, memory_budget=small / 2, progress=False)


def test_position_correction(case):
    grid, scan, st0, truth, _ = case
    rng = np.random.default_rng(7)
    err = rng.normal(0.0, 0.3 / np.sqrt(2), st0.positions.shape).astype(np.float32)
    true_pos = np.asarray(st0.positions) + err
    ds = simulate(truth, grid, scan, positions=true_pos)
    out = reconstruct(ds, st0, "position_corrected", iterations=12, batch_size=8, learning_rates={**LR, "positions": 0.05}, progress=False)
    r = np.asarray(out.positions) - true_pos
    before = np.sqrt(np.mean(np.sum((err - err.mean(0)) ** 2, -1)))
    after = np.sqrt(np.mean(np.sum((r - r.mean(0)) ** 2, -1)))
    assert after < 0.06 and after < before / 4, (before, after)  # measured 0.26 -> 0.025 Å
    rmse, corr = phase_metrics(out.object[0], truth.object[0], scanned_region(st0))
    assert corr > 0.98, corr


def test_mixed_state(case):
    grid, scan, st0, truth, _ = case
    modes = partially_coherent_modes(st0.probe, st0.sampling, source_sigma=0.25, num_modes=2)
    tr = replace(truth, probe=jnp.asarray(modes))
    ds = simulate(tr, grid, scan)
    kw = dict(iterations=12, batch_size=4, learning_rates={"object": 0.05, "probe": 0.002}, progress=False)
    mixed = reconstruct(ds, st0, "mixed_state", num_modes=2, **kw)
    # (that mixed_state beats single_slice on the phase needs RECON-A's longer runs: see README)
    occ, occ_true = np.asarray(occupancies(mixed)), np.asarray(occupancies(tr))  # true (0.66, 0.34)
    # measured (0.69, 0.31) on earlier machines, (0.61, 0.39) on AVX-512 ones (and 0.59 after 24
    # passes): on this 8 x 8 scan the split of power between the modes is weakly determined
    assert np.all(np.abs(occ - occ_true) < 0.08), (occ, occ_true)
    assert np.all(np.diff(occ) <= 0)  # returned sorted by power
    rmse, corr = phase_metrics(mixed.object[0], truth.object[0], scanned_region(st0))
    assert corr > 0.97, (rmse, corr)
    p = np.asarray(mixed.probe).reshape(2, -1)
    assert abs(np.vdot(p[0], p[1])) < 1e-3 * np.vdot(p[0], p[0]).real  # kept orthogonal


def test_multislice_separates_slices():
    grid, scan, st2 = setup(gpts=48, sampling=0.2, scan=(8, 8), step=0.6, aberrations={"C10": 60.0}, num_slices=2, slice_thickness=80.0)
    shape = st2.object.shape[-2:]
    ph1 = hexagonal_phase(shape, st2.sampling, origin=(0.7, 0.9), peaks=(0.6, 0.35))
    ph2 = hexagonal_phase(shape, st2.sampling, origin=(0.3, 0.2), a=4.1, peaks=(0.5, 0.5), rotation=0.35)
    tobj = np.exp(1j * np.stack([ph1, ph2]))
    ds = simulate(with_object(st2, tobj), grid, scan)
    kw = dict(iterations=12, batch_size=8, learning_rates=LR, progress=False)
    ms = reconstruct(ds, st2, "multislice", **kw)
    ss = reconstruct(ds, replace(st2, object=st2.object[:1], slice_thickness=st2.slice_thickness[:1]), "single_slice", **kw)
    reg = scanned_region(st2)
    rec = np.asarray(ms.object)
    c = np.array([[np.corrcoef(np.angle(rec[i][reg]).ravel(), np.angle(tobj[j][reg]).ravel())[0, 1] for j in range(2)] for i in range(2)])
    assert c[0, 0] > c[0, 1] and c[1, 1] > c[1, 0], c
    total = np.exp(1j * (ph1 + ph2))
    assert phase_metrics(rec[0] * rec[1], total, reg)[0] < phase_metrics(ss.object[0], total, reg)[0]


def test_bad_inputs(case):
    grid, scan, st0, truth, ds = case
    with pytest.raises(PtyroValueError, match="unknown group"):
        reconstruct(ds, st0, "single_slice", iterations=1, learning_rates={"objet": 0.1}, progress=False)
    with pytest.raises(PtyroValueError, match="positions"):
        reconstruct(ds, replace(st0, positions=st0.positions[:10]), "single_slice", iterations=1, progress=False)
    with pytest.raises(ptyro_core.UnknownComponentError):
        reconstruct(ds, st0, "no_such_algorithm")
    with pytest.raises(PtyroValueError, match="single-slice"):
        reconstruct(ds, replace(st0, object=jnp.concatenate([st0.object] * 2)), "single_slice", iterations=1, progress=False)


def test_fit_slice_thickness():
    grid, scan, st2 = setup(gpts=48, sampling=0.2, scan=(8, 8), step=0.6, aberrations={"C10": 60.0}, num_slices=2, slice_thickness=80.0)
    shape = st2.object.shape[-2:]
    ph1 = hexagonal_phase(shape, st2.sampling, origin=(0.7, 0.9), peaks=(0.6, 0.35))
    ph2 = hexagonal_phase(shape, st2.sampling, origin=(0.3, 0.2), a=4.1, peaks=(0.5, 0.5), rotation=0.35)
    ds = simulate(with_object(st2, np.exp(1j * np.stack([ph1, ph2]))), grid, scan)
    start = replace(st2, slice_thickness=jnp.full((2,), 60.0, jnp.float32))
    out = reconstruct(ds, start, "multislice", fit_thickness=True, iterations=10, batch_size=8,
                      learning_rates={**LR, "thickness": 2.0}, progress=False)  # fmt: skip
    # the first slice's thickness (the distance to the second slice) moves from 60 Å towards 80 Å
    assert 65.0 < float(out.slice_thickness[0]) < 95.0, out.slice_thickness
