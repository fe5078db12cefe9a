"""The reconstruction step's faster arithmetic gives the result of the plain one:

- fixed positions that are not grouped by sub-pixel shift get their Fourier ramps made once per
  batch, outside the chunks' loop (``forward.window_ramps``); compared with the per-position
  model, which makes each ramp inside the differentiated model (the position-fitting path, with
  its learning rate at zero);
- the multislice slice loop is unrolled; compared with a plain Python loop over the slices;
- the default chunk of positions follows the window, modes and slices.

Plain gradient descent, as in test_invert_speedups.py (Adam turns round-off at the unlit rim into
learning-rate-sized steps)."""

import sys

if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_invert import reconstruct
from ptyro_invert.forward import exit_waves, shifted_probes, window_offsets, window_ramps
from ptyro_invert.recon import _chunk_positions
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object


@pytest.fixture(scope="module")
def case():
    # 0.53 Å steps at 0.2 Å pixels: 2.65 px, a different sub-pixel shift at almost every position
    grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(5, 5), step=0.53, aberrations={"C10": 40.0}, padding_px=6)
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.3, 0.4)))[None])
    return st0, simulate(truth, grid, scan)


def _run(st0, data, **kw):
    opts = dict(iterations=2, batch_size=10, progress=False, optimizer="sgd", seed=5, group_shifts=False)
    opts.update(kw)
    return reconstruct(data, st0, "single_slice", **opts)


def test_batch_ramps_match_the_per_position_model(case):
    st0, data = case
    rates = {"object": 10.0, "probe": 1.0}
    a = _run(st0, data, learning_rates=rates)  # fixed positions: the batch's ramps
    b = _run(st0, data, learning_rates={**rates, "positions": 0.0}, fit_positions=True)  # ramps inside the model
    change = float(jnp.max(jnp.abs(b.object - 1.0)))
    assert change > 0.05
    assert float(jnp.max(jnp.abs(a.object - b.object))) <= 2e-3 * change
    assert float(jnp.max(jnp.abs(a.probe - b.probe))) <= 2e-2 * float(jnp.max(jnp.abs(b.probe - st0.probe)))
    np.testing.assert_allclose(np.asarray(a.loss), np.asarray(b.loss), rtol=1e-4)


@settings(max_examples=10, deadline=None)
@given(st.floats(-40.0, 40.0), st.floats(-40.0, 40.0))
def test_window_ramps_shift_like_the_model(x, y):
    """window_ramps + shifted_probes(ramps=) = window_offsets + shifted_probes(shifts), per position
    (at a half-pixel tie the two may round to neighbouring starts: the same place)."""
    rng = np.random.default_rng(0)
    probe = jnp.asarray(rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16)), jnp.complex64)
    pos = jnp.asarray([[x + 50.0, y + 50.0], [50.3, 49.1]], jnp.float32)
    start, ramps = window_ramps(pos, (0.2, 0.3), (16, 16))
    got = shifted_probes(probe, None, ramps=ramps)
    for i in range(2):
        r0, frac = window_offsets(pos[i], (0.2, 0.3), (16, 16))
        tie = np.abs(np.abs(np.asarray(frac)) - 0.5) < 1e-3
        if not np.array_equal(np.asarray(start[i]), np.asarray(r0)):
            # a position half a pixel between two starts (x = 1.1: 247.5 px) rounds either way in
            # float32, batched or not: the same place, a pixel's start and a half-pixel shift apart
            assert np.all((np.asarray(start[i]) == np.asarray(r0)) | tie), (start[i], r0, frac)
            assert np.max(np.abs(np.asarray(start[i]) - np.asarray(r0))) == 1
            continue
        want = np.asarray(shifted_probes(probe, frac[None])[0])
        # float32: the fractional shift of a position ~500 px out is known to ~3e-5 px either way
        np.testing.assert_allclose(np.asarray(got[i]), want, atol=3e-4 * np.abs(want).max())


def test_ramps_gradient_reaches_the_probe(x64):
    """The probe's gradient through ramps made beforehand (they are constants there)."""
    from jax.test_util import check_grads

    probe = jnp.asarray(np.random.default_rng(1).normal(size=(1, 8, 8)) * (1 + 0.5j), jnp.complex128)
    _, ramps = window_ramps(jnp.asarray([[1.03, 0.77], [0.41, 1.6]], jnp.float64), (0.1, 0.1), (8, 8), jnp.complex128)
    check_grads(lambda p: shifted_probes(p, None, ramps=ramps), (probe,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("slices", [2, 3, 5])
def test_unrolled_slices_equal_a_python_loop(slices):
    rng = np.random.default_rng(slices)
    probe = jnp.asarray(rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16)), jnp.complex64)
    patch = jnp.asarray(np.exp(1j * rng.normal(size=(slices, 16, 16))), jnp.complex64)
    dz = jnp.asarray(rng.uniform(1, 3, slices), jnp.float32)
    kx = jnp.fft.fftfreq(16)[None, :, None]

    def propagate(w, h):  # any linear step will do: a shear in Fourier space
        return jnp.fft.ifft2(jnp.fft.fft2(w) * jnp.exp(-1j * h * kx))

    ref = probe * patch[0][None]
    for s in range(1, slices):
        ref = propagate(ref, dz[s - 1]) * patch[s][None]
    np.testing.assert_allclose(np.asarray(exit_waves(probe, patch, dz, propagate)), np.asarray(ref), atol=1e-5)
    g = jax.grad(lambda t: jnp.sum(jnp.abs(exit_waves(probe, t, dz, propagate)) ** 2))(patch)
    assert float(jnp.max(jnp.abs(g))) > 0


def test_default_chunk_follows_window_modes_and_slices():
    assert _chunk_positions(None, (128, 128), 1, 1) == 8  # RECON-A
    assert _chunk_positions(None, (128, 128), 4, 1) == 4  # RECON-B mixed state: not below 4 for the modes
    assert _chunk_positions(None, (128, 128), 12, 1) == 4
    assert _chunk_positions(None, (128, 128), 12, 7) == 2  # the slices' waves do take it below
    assert _chunk_positions(None, (128, 128), 1, 3) == 4  # RECON-B multislice
    assert _chunk_positions(None, (64, 64), 1, 1) == 32
    assert _chunk_positions(None, (256, 256), 12, 6) == 1
    assert _chunk_positions(7, (128, 128), 4, 3) == 7
