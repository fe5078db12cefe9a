"""The two step-level speed-ups of the reconstruction engine change the arithmetic, not the result:
grouping fixed positions by sub-pixel shift (``group_shifts``) and accumulating a step's gradient
over chunks of positions (``chunk_size``). Each is compared with the plain step it replaces.

The comparisons use plain gradient descent: Adam divides every pixel's step by its own gradient
size, so at the barely lit rim of the object it turns float32 round-off (which any change in the
order of operations alters) into steps the size of the learning rate, and two equivalent runs
differ there by up to the learning rate."""

import sys

if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_core import PtyroValueError
from ptyro_invert import reconstruct
from ptyro_invert.forward import shift_groups, shifted_probes, window_offsets
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object

import jax
import jax.numpy as jnp


@pytest.fixture(scope="module")
def case():
    # 0.6 Å steps at 0.2 Å pixels: every position on the pixel lattice up to a common offset;
    # 0.5 Å steps: a shift that repeats every 2 positions (2 x 2 groups)
    out = {}
    for step in (0.5, 0.6):
        grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(6, 6), step=step, aberrations={"C10": 40.0}, padding_px=6)
        truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.3, 0.4)))[None])
        out[step] = (st0, simulate(truth, grid, scan))
    return out


def _run(st0, data, **kw):
    opts = dict(iterations=2, batch_size=12, progress=False, optimizer="sgd", learning_rates={"object": 10.0, "probe": 1.0}, seed=3)
    opts.update(kw)
    return reconstruct(data, st0, "single_slice", **opts)


@pytest.mark.parametrize("step", [0.5, 0.6])
def test_group_shifts_matches_per_position_shifts(case, step):
    st0, data = case[step]
    a = _run(st0, data, group_shifts=True)
    b = _run(st0, data, group_shifts=False)
    change = float(jnp.max(jnp.abs(b.object - 1.0)))
    assert change > 0.05  # the object did change
    # float32 round-off, compounded over 6 steps: about 1e-3 of the change (a wrong shift: ~1)
    assert float(jnp.max(jnp.abs(a.object - b.object))) <= 5e-3 * change
    # the probe moves much less than the object, so the same round-off is a larger share of it (and
    # a group shifts by the mean of its members' shifts, which differ by up to 1e-4 px)
    assert float(jnp.max(jnp.abs(a.probe - b.probe))) <= 2e-2 * float(jnp.max(jnp.abs(b.probe - st0.probe)))
    np.testing.assert_allclose(np.asarray(a.loss), np.asarray(b.loss), rtol=1e-3)


@pytest.mark.parametrize(
    "batch, chunk",
    [
        # two fake devices: 6 positions each; chunks of 5 become 2 chunks of 3, of 4 become 2 of 3
        (12, 1), (12, 4), (12, 5),
        # 36 positions in batches of 16: the last batch has 4 real positions and 12 of zero
        # weight, whole chunks of which carry no weight at all
        (16, 4),
        # 7 per device, a prime: chunks of 2 -> 4 chunks of 2 with one zero-weight pad per device
        (14, 2),
    ],
)  # fmt: skip
def test_chunked_gradient_matches_whole_batch(case, batch, chunk):
    st0, data = case[0.5]
    a = _run(st0, data, batch_size=batch, chunk_size=chunk)
    b = _run(st0, data, batch_size=batch, chunk_size=batch)
    change = float(jnp.max(jnp.abs(b.object - 1.0)))
    assert float(jnp.max(jnp.abs(a.object - b.object))) <= 5e-3 * change
    np.testing.assert_allclose(np.asarray(a.loss), np.asarray(b.loss), rtol=1e-3)


def test_chunk_size_must_be_positive(case):
    st0, data = case[0.5]
    with pytest.raises(PtyroValueError, match="chunk_size"):
        _run(st0, data, chunk_size=0)


def test_shift_groups_of_a_raster():
    d, win = (0.15, 0.15), (16, 16)
    ii, jj = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    pos = np.stack([ii.ravel(), jj.ravel()], -1) * 0.5 + 3.0  # 0.5 Å = 3 1/3 px
    start, group, shifts = shift_groups(pos, d, win)
    assert shifts.shape == (9, 2)  # 3 distinct fractions per axis
    # each position's own fractional shift and integer start are reproduced
    s0, frac = jax.vmap(lambda p: window_offsets(p, d, win))(jnp.asarray(pos, jnp.float32))
    np.testing.assert_array_equal(start, np.asarray(s0))
    np.testing.assert_allclose(shifts[group], np.asarray(frac), atol=1e-4)
    # random positions: too many distinct shifts for the limit, so no grouping
    rng = np.random.default_rng(0)
    assert shift_groups(rng.uniform(0, 10, (40, 2)), d, win, max_groups=8) is None


@settings(deadline=None)
@given(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5))
def test_shifted_probes_is_the_fourier_shift(fx, fy):
    rng = np.random.default_rng(1)
    probe = jnp.asarray(rng.normal(size=(2, 8, 8)) + 1j * rng.normal(size=(2, 8, 8)), jnp.complex64)
    shifts = jnp.asarray([[fx, fy], [0.0, 0.0]], jnp.float32)
    out = shifted_probes(probe, shifts)
    k = np.fft.fftfreq(8)  # the Fourier shift theorem, written out here independently
    ramp = np.exp(-2j * np.pi * (k[:, None] * fx + k[None, :] * fy))
    ref = np.fft.ifft2(np.fft.fft2(np.asarray(probe)) * ramp)
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(ref), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(probe), atol=1e-5)  # zero shift: unchanged
    # norm conserved (a shift is unitary)
    np.testing.assert_allclose(float(jnp.sum(jnp.abs(out[0]) ** 2)), float(jnp.sum(jnp.abs(probe) ** 2)), rtol=1e-5)


def test_shifted_probes_gradient(x64):
    from jax.test_util import check_grads

    probe = jnp.asarray(np.random.default_rng(2).normal(size=(1, 6, 6)) * (1 + 0.5j), jnp.complex128)
    shifts = jnp.asarray([[0.3, -0.2], [0.1, 0.4]], jnp.float64)
    check_grads(shifted_probes, (probe, shifts), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
