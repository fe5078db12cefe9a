"""ptyro_invert.calibrate against analytic fields: known discs, planes, gradient fields."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from ptyro_core import PtyroValueError
from ptyro_invert import calibrate as cal


def _disc(n, center, radius, soft=0.7):
    """A disc with a smooth edge (an error function of width ``soft`` px), analytic centre."""
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    r = np.hypot(x - center[0], y - center[1])
    return 0.5 * (1 - np.vectorize(math.erf)((r - radius) / soft))


def test_center_of_mass_of_a_disc_is_its_centre_and_jits():
    d = _disc(32, (14.3, 17.6), 6.0)
    com = jax.jit(cal.center_of_mass)(jnp.asarray(np.stack([d, d[::-1]])))
    np.testing.assert_allclose(np.asarray(com[0]), [14.3, 17.6], atol=1e-3)
    np.testing.assert_allclose(np.asarray(com[1]), [31 - 14.3, 17.6], atol=1e-3)
    assert np.asarray(cal.center_of_mass(np.zeros((2, 8, 8)))).tolist() == [[4, 4], [4, 4]]


def test_center_of_mass_gradient():
    d = jnp.asarray(_disc(16, (7.2, 8.4), 4.0)) + 0.1
    check_grads(lambda p: jnp.sum(cal.center_of_mass(p) ** 2), (d,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("center,radius", [((32.0, 32.0), 10.0), ((29.37, 34.81), 8.3), ((33.6, 30.2), 12.7)])
def test_bright_field_disc_subpixel(center, radius):
    rng = np.random.default_rng(0)
    m = 200 * _disc(64, center, radius) + rng.uniform(0, 2, (64, 64))
    fit = cal.bright_field_disc(m)
    assert abs(fit.center[0] - center[0]) < 0.05 and abs(fit.center[1] - center[1]) < 0.05
    assert abs(fit.radius - radius) < 0.1


def test_bright_field_disc_refuses_a_flat_pattern():
    with pytest.raises(PtyroValueError, match="no bright-field disc"):
        cal.bright_field_disc(np.zeros((16, 16)))
    with pytest.raises(PtyroValueError, match="2D pattern"):
        cal.bright_field_disc(np.zeros((2, 16, 16)))


def test_fit_descan_recovers_a_plane_under_a_dpc_signal():
    rng = np.random.default_rng(1)
    rx, ry = 12, 10
    i, j = np.meshgrid(np.arange(rx), np.arange(ry), indexing="ij")
    plane = np.stack([30.5 + 0.11 * i - 0.07 * j, 33.2 - 0.05 * i + 0.13 * j], -1)
    signal = 0.3 * np.stack([np.sin(2 * np.pi * i / 4), np.cos(2 * np.pi * j / 5)], -1)
    fit = cal.fit_descan(plane + signal + 0.01 * rng.standard_normal(plane.shape))
    assert np.max(np.abs(fit - plane)) < 0.1  # the signal leaks ~0.08 px into a 12x10 plane fit
    np.testing.assert_allclose(cal.fit_descan(plane, "free"), plane)
    np.testing.assert_allclose(cal.fit_descan(plane, "constant")[0, 0], plane.mean(axis=(0, 1)))
    with pytest.raises(PtyroValueError, match="unknown mode 'cubic'"):
        cal.fit_descan(plane, "cubic")


def test_recentre_puts_the_disc_in_the_middle_and_keeps_counts():
    d = np.stack([_disc(32, (13.4, 18.7), 5.0), _disc(32, (17.1, 15.5), 5.0)]) * 100
    com = cal.center_of_mass(d)
    out = jax.jit(cal.recentre)(jnp.asarray(d), com)
    np.testing.assert_allclose(np.asarray(cal.center_of_mass(out)), [[16, 16], [16, 16]], atol=0.02)
    np.testing.assert_allclose(np.asarray(out.sum(axis=(1, 2))), d.sum(axis=(1, 2)), rtol=1e-5)
    assert float(out.min()) >= 0


def test_shift_patterns_gradient_and_vmap():
    d = jnp.asarray(_disc(16, (8.0, 8.0), 4.0))
    check_grads(
        lambda s: jnp.sum(cal.shift_patterns(d, s) * jnp.arange(16.0)[:, None]), (jnp.array([0.3, -0.2]),), order=1, modes=["rev"], atol=1e-2, rtol=1e-2
    )
    batch = jax.vmap(cal.shift_patterns, in_axes=(None, 0))(d, jnp.array([[1.0, 0.0], [0.0, -2.0]]))
    np.testing.assert_allclose(np.asarray(batch[0]), np.roll(np.asarray(d), 1, axis=0), atol=1e-4)
    np.testing.assert_allclose(np.asarray(batch[1]), np.roll(np.asarray(d), -2, axis=1), atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(rot=st.floats(-360, 360), tr=st.booleans(), sx=st.floats(0.1, 2.0), sy=st.floats(0.1, 2.0))
def test_raster_positions_is_a_rigid_motion_of_the_raster(rot, tr, sx, sy):
    p0 = cal.raster_positions((4, 3), (sx, sy), 0.0, tr)
    p1 = cal.raster_positions((4, 3), (sx, sy), rot, tr)
    d0 = np.linalg.norm(p0[:, None] - p0[None], axis=-1)
    d1 = np.linalg.norm(p1[:, None] - p1[None], axis=-1)
    np.testing.assert_allclose(d0, d1, atol=1e-9)
    np.testing.assert_allclose(p0.mean(0), p1.mean(0), atol=1e-9)


def _atoms_gradient(pos, seed=0):
    """∇φ of a sum of positive Gaussian peaks (an atom-like phase) at positions (N, 2) Å."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-6, 18, (60, 2))
    g = np.zeros_like(pos)
    for c in centres:
        d = pos - c
        e = np.exp(-np.sum(d * d, -1) / (2 * 0.5**2))
        g += -d / 0.5**2 * e[:, None]
    return g


@pytest.mark.parametrize("rot,tr", [(17.0, False), (163.0, True), (250.0, False), (-40.0, True), (0.0, False)])
def test_scan_rotation_from_an_analytic_gradient_field(rot, tr):
    shape, step = (24, 24), (0.5, 0.5)
    pos = cal.raster_positions(shape, step, rot, tr)
    dpc = _atoms_gradient(pos).reshape(*shape, 2)
    fit = cal.scan_rotation(dpc, step=step)
    assert fit.transpose is tr
    assert abs((fit.rotation - rot + 180) % 360 - 180) < 0.5
    assert fit.curl < 0.05 and fit.skew > 0
    # a wrong frame has a large curl: the signal the 'clearly wrong rotation' check uses
    assert cal.dpc_curl(dpc, rot + 30.0, tr, step=step) > 0.1
    assert cal.dpc_curl(dpc, rot, not tr, step=step) > 0.1
    ph = cal.icom_phase(dpc, fit.rotation, fit.transpose, step=step)
    assert ph.shape == shape and abs(ph.mean()) < 1e-9


def test_scan_rotation_refuses_a_constant_field():
    with pytest.raises(PtyroValueError, match="constant"):
        cal.scan_rotation(np.ones((5, 5, 2)))
    with pytest.raises(PtyroValueError, match=r"\(Rx, Ry, 2\)"):
        cal.scan_rotation(np.ones((2, 5, 2)))


def test_bad_pixels_found_exactly_and_repaired():
    rng = np.random.default_rng(3)
    n_frames = 50
    base = 40 * _disc(32, (16, 16), 7.0) + 0.2
    frames = rng.poisson(base, (n_frames, 32, 32)).astype(np.float32)
    hot_idx = [(3, 5), (16, 18), (28, 2)]
    dead_idx = [(15, 14), (20, 16)]
    for x, y in hot_idx:
        frames[:, x, y] += 3000
    for x, y in dead_idx:
        frames[:, x, y] = 0
    hot, dead = cal.find_bad_pixels(frames.mean(0), n_frames=n_frames)
    assert sorted(zip(*np.nonzero(hot))) == hot_idx
    assert sorted(zip(*np.nonzero(dead))) == dead_idx
    fixed = np.asarray(jax.jit(cal.repair_pixels)(frames, hot | dead))
    for x, y in hot_idx + dead_idx:
        assert abs(fixed[:, x, y].mean() - base[x, y]) < 0.25 * base[x, y] + 1
    untouched = ~(hot | dead)
    np.testing.assert_array_equal(fixed[:, untouched], frames[:, untouched])


def test_fit_results_are_pytrees_through_jit():
    fit = cal.DiscFit((1.0, 2.0), 3.0)
    out = jax.jit(lambda f: f)(fit)
    assert isinstance(out, cal.DiscFit) and float(out.radius) == 3.0


@settings(max_examples=10, deadline=None)
@given(sx=st.floats(-3.0, 3.0), sy=st.floats(-3.0, 3.0))
def test_linear_shift_moves_the_centre_of_mass_exactly_and_stays_non_negative(sx, sy):
    rng = np.random.default_rng(4)
    p = rng.poisson(200 * _disc(32, (16.0, 16.0), 6.0)).astype(np.float32)
    out = cal.shift_patterns(p, np.array([sx, sy]), "linear")
    np.testing.assert_allclose(np.asarray(cal.center_of_mass(out)), np.asarray(cal.center_of_mass(p)) + [sx, sy], atol=2e-3)
    assert float(out.min()) >= 0 and abs(float(out.sum()) / p.sum() - 1) < 1e-5


def test_fourier_shift_is_exact_for_band_limited_patterns_and_methods_are_checked():
    x = np.arange(32)
    smooth = (2 + np.cos(2 * np.pi * 3 * x / 32))[:, None] * (2 + np.sin(2 * np.pi * 2 * x / 32))[None, :]
    out = np.asarray(cal.shift_patterns(smooth, np.array([0.5, -1.25]), "fourier"))
    want = (2 + np.cos(2 * np.pi * 3 * (x - 0.5) / 32))[:, None] * (2 + np.sin(2 * np.pi * 2 * (x + 1.25) / 32))[None, :]
    np.testing.assert_allclose(out, want, atol=1e-4)
    with pytest.raises(PtyroValueError, match="unknown method 'cubic'"):
        cal.shift_patterns(smooth, np.zeros(2), "cubic")
