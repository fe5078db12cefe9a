"""Tests of the ptyro-prism plugin: PRISM equals multislice at interpolation 1 (to round-off),
normalisation and symmetry at f > 1, error that shrinks as f decreases, gradients, and the
plugin contract (registry, config selection, conformance)."""

import tomllib

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import ptyro_core
from ptyro_core import Grid, PotentialSlices, ProbeModes, PtyroValueError
from ptyro_core.testing import check_conformance
from ptyro_prism import prism

ENERGY = 200e3




def _crystal(dtype=np.float32, n=48, reps=3):
    """A periodic 'crystal': Gaussian atoms on a square lattice (reps × reps cells), 3 slices."""
    a = 2.4
    grid = Grid((n, n), (reps * a / n, reps * a / n))
    x, y = (np.asarray(c, np.float64) for c in grid.coordinates(np.float32))
    v = np.zeros((n, n))
    for i in range(reps):
        for j in range(reps):
            for (ox, oy, amp) in ((0.0, 0.0, 30.0), (0.5, 0.5, 12.0)):
                cx, cy = (i + ox) * a, (j + oy) * a
                dxp = (x - cx + reps * a / 2) % (reps * a) - reps * a / 2
                dyp = (y - cy + reps * a / 2) % (reps * a) - reps * a / 2
                v = v + amp * np.exp(-(dxp**2 + dyp**2) / 0.08)
    arr = np.stack([v, 0.7 * v, v]).astype(dtype)
    return PotentialSlices(arr, np.full(3, 1.2, dtype), grid=grid), a


def _multislice(pot, probe, pos):
    """The reference: ptyro_simul's ``multislice`` simulator. (Its probe shift broadcasts (b, 2)
    against (2,), so allow rank promotion for this call only.)"""
    with jax.numpy_rank_promotion("allow"):
        return np.asarray(ptyro_core.get("simulator", "multislice")(pot, probe)(pos))


def _probe(grid, semiangle=20.0, defocus=20.0, dtype=jnp.complex64):
    mk = ptyro_core.get("probe", "aberrated")
    return mk(grid, ENERGY, semiangle_cutoff=semiangle, aberrations={"C10": -defocus}, dtype=dtype)


def test_registered_and_selectable_from_a_config():
    comp = ptyro_core.get_registry().component("simulator", "prism")
    assert comp.distribution == "ptyro-prism"
    cfg = tomllib.loads('[simulation]\nsimulator = "prism"\n[simulation.options]\ninterpolation = 2\n')["simulation"]
    pot, _ = _crystal(n=32, reps=2)
    fn = ptyro_core.get("simulator", cfg["simulator"])(pot, _probe(pot.grid), **cfg["options"])
    assert fn.interpolation == 2 and fn(jnp.zeros((1, 2))).shape == (1, 32, 32)


@pytest.mark.parametrize("interpolation", [1, 2])
def test_conformance(interpolation):
    check_conformance("simulator", ptyro_core.get("simulator", "prism"), interpolation=interpolation)


def test_interpolation_one_equals_multislice():
    pot, a = _crystal()
    probe = _probe(pot.grid)
    pos = jnp.asarray([[3.6, 3.6], [3.61, 4.2], [0.3, 6.9], [7.1, 1.0]], jnp.float32)
    ms = _multislice(pot, probe, pos)
    pr = np.asarray(prism(pot, probe, interpolation=1)(pos))
    assert np.max(np.abs(pr - ms)) < 1e-5 * np.max(ms)  # float32 round-off of a sum over ~400 beams
    np.testing.assert_allclose(pr.sum(axis=(1, 2)), ms.sum(axis=(1, 2)), rtol=1e-5)


def test_interpolation_one_equals_multislice_float64(x64):
    pot, a = _crystal(np.float64, n=32, reps=2)
    probe = _probe(pot.grid, semiangle=25.0, dtype=jnp.complex128)
    pos = jnp.asarray([[2.4, 2.4], [1.0, 3.3]], jnp.float64)
    ms = _multislice(pot, probe, pos)
    pr = np.asarray(prism(pot, probe)(pos))
    assert pr.dtype == np.float64
    assert np.max(np.abs(pr - ms)) < 1e-12 * np.max(ms)


def test_vacuum_patterns_sum_to_one_at_any_interpolation():
    grid = Grid((48, 48), (0.15, 0.15))
    vac = PotentialSlices(np.zeros((2, 48, 48), np.float32), np.array([1.0, 1.0], np.float32), grid=grid)
    probe = _probe(grid, semiangle=25.0, defocus=0.0)
    pos = jnp.asarray([[3.6, 3.6], [1.0, 5.0]])
    for f in (1, 3):
        out = prism(vac, probe, interpolation=f)
        full = np.asarray(out(pos))
        np.testing.assert_allclose(full.sum(axis=(1, 2)), 1.0, rtol=1e-4)
        cropped = np.asarray(attrs.evolve(out, output="cropped")(pos))  # same S-matrix, native patterns
        assert cropped.shape == (2, 48 // f, 48 // f)
        np.testing.assert_allclose(cropped.sum(axis=(1, 2)), 1.0, rtol=1e-4)
        assert out.num_beams < 1.3 * (25e-3 / 0.02508 * 7.2) ** 2 * np.pi / f**2 + 8  # beams inside the aperture only


def test_fewer_beams_and_bounded_error_at_higher_interpolation():
    pot, a = _crystal()
    probe = _probe(pot.grid, semiangle=20.0, defocus=0.0)
    pos = jnp.asarray([[3.6, 3.6], [4.8, 4.2]], jnp.float32)
    ms = _multislice(pot, probe, pos)
    errs, beams = [], []
    for f in (1, 2, 3):
        sim = prism(pot, probe, interpolation=f)
        beams.append(sim.num_beams)
        errs.append(np.sum(np.abs(np.asarray(sim(pos)) - ms)) / np.sum(ms))  # total-variation distance
    assert beams[0] > 3.5 * beams[1] and beams[1] > 1.8 * beams[2]
    assert errs[0] < 1e-5 and errs[1] < 0.35 and errs[2] < 0.6, errs


def test_lattice_translation_symmetry():
    """A shift by a lattice vector of a periodic specimen leaves the patterns unchanged (f = 2)."""
    pot, a = _crystal()
    sim = prism(pot, _probe(pot.grid), interpolation=2)
    pos = jnp.asarray([[1.3, 2.1]], jnp.float32)
    np.testing.assert_allclose(np.asarray(sim(pos + a)), np.asarray(sim(pos)), atol=2e-6 * float(jnp.max(sim(pos))))


def test_window_strategies_agree():
    """Gathering S-matrix windows then summing beams equals summing then cropping (f = 2, 4)."""
    pot, a = _crystal()
    probe = _probe(pot.grid)
    pos = jnp.asarray([[1.3, 2.1], [6.9, 0.2]], jnp.float32)
    for f in (2, 4):
        gather = np.asarray(prism(pot, probe, interpolation=f, crop_first=True)(pos))
        dense = np.asarray(prism(pot, probe, interpolation=f, crop_first=False)(pos))
        np.testing.assert_allclose(gather, dense, atol=1e-6 * gather.max())


def test_gradients_float64(x64):
    pot, a = _crystal(np.float64, n=16, reps=1)
    probe = _probe(pot.grid, semiangle=30.0, dtype=jnp.complex128)
    sim = prism(pot, probe, interpolation=1)
    w = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16)))
    check_grads(jax.jit(lambda p: jnp.sum(w * sim(p))), (jnp.asarray([[1.0, 1.3], [0.4, 2.0]]),), order=1, modes=("rev",))

    @jax.jit
    def through_potential(scale):
        scaled = ptyro_core.replace(pot, array=pot.array * scale)
        return jnp.sum(w * prism(scaled, probe, interpolation=2)(jnp.asarray([[1.0, 1.3], [0.4, 2.0]])))

    check_grads(through_potential, (jnp.asarray(0.8),), order=1, modes=("rev",))


def test_errors_name_the_bad_value():
    pot, a = _crystal()
    probe = _probe(pot.grid)
    with pytest.raises(PtyroValueError, match="divide"):
        prism(pot, probe, interpolation=5)
    with pytest.raises(PtyroValueError, match="interpolation"):
        prism(pot, probe, interpolation=0)
    with pytest.raises(PtyroValueError, match="output"):
        prism(pot, probe, output="thumbnail")
    with pytest.raises(ptyro_core.MemoryBudgetError, match="interpolation"):
        prism(pot, probe, max_memory=1e3)
    with pytest.raises(PtyroValueError, match="positions"):
        prism(pot, probe)(jnp.zeros((3,)))


def test_the_pipeline_plans_the_smatrix_once(monkeypatch):
    """Through ``iter_4dstem`` (the route of ``ptyro simulate``) the S-matrix is built once per
    simulation and configuration, not per batch, and the patterns equal calling the simulator on
    each batch; frozen-phonon configurations are planned once each and averaged."""
    import sys

    from ptyro_simul.detectors import PixelatedDetector
    from ptyro_simul.stem import simulate_4dstem

    pot, a = _crystal(n=32, reps=2)
    probe = _probe(pot.grid)
    pos = jnp.asarray(np.random.default_rng(2).uniform(0.0, 2 * a, (10, 2)), jnp.float32)
    pp = sys.modules["ptyro_prism.prism"]  # the module (the package's ``prism`` is the component)
    builds = []
    real = pp.build_smatrix
    monkeypatch.setattr(pp, "build_smatrix", lambda *a, **k: (builds.append(1), real(*a, **k))[1])
    record = {}
    got = simulate_4dstem(pot, probe, pos, detectors=[PixelatedDetector()], batch_size=4, progress=False, simulator="prism",
                          record=record, interpolation=2)["pixelated"]  # fmt: skip
    assert len(builds) == 1 and record["backend"] == "xla"  # 3 batches, one S-matrix
    sim = prism(pot, probe, interpolation=2)
    np.testing.assert_allclose(got, np.asarray(sim(pos)), rtol=0, atol=1e-6 * float(got.max()))
    other = PotentialSlices(pot.array * 0.8, pot.slice_thickness, grid=pot.grid)
    builds.clear()
    mean = simulate_4dstem([pot, other], probe, pos, detectors=[PixelatedDetector()], batch_size=4, progress=False, simulator="prism",
                           interpolation=2)["pixelated"]  # fmt: skip
    assert len(builds) == 2
    expected = (np.asarray(sim(pos)) + np.asarray(prism(other, probe, interpolation=2)(pos))) / 2
    np.testing.assert_allclose(mean, expected, rtol=0, atol=1e-6 * float(expected.max()))
    with pytest.raises(PtyroValueError, match="prism: backend must be 'auto' or 'xla'.*'native'"):
        prism(pot, probe, backend="native")
