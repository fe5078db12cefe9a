"""The single-slice far fields with their gradient written out (``forward.far_fields``) and the
reconstruction step's chunk loop that adds that gradient into its sums in place give what JAX's
own differentiation of the plain model gives:

- the far fields are the per-position model's (``model.at_start`` under ``vmap``), and their
  vector-Jacobian product is that of the plain gather-and-multiply, for any starts (overlapping
  windows, windows clamped at the object's edge) and any probe groups (repeated or unused);
- the gradient passes a float64 finite-difference check;
- ``far_fields_add`` adds to the sums it is given; with a probe per position (no sums for the
  probes) it returns their gradient as made;
- the multislice far fields (``forward.exit_far_fields``) likewise, against the per-position exit
  waves, with the thicknesses' gradient;
- a reconstruction whose step takes that path (grouped shifts, or a shift per position) follows the one whose step
  differentiates the per-position model (positions fitted at learning rate 0), with one and
  two slices, one and two probe modes, with a detector blur and a mask. Plain gradient descent, as in
  test_invert_speedups.py (Adam turns round-off at the unlit rim into steps of its rate)."""

import sys

if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_core import replace
from ptyro_invert import reconstruct
from ptyro_invert.forward import exit_far_fields, exit_waves, far_fields, far_fields_add, make_model
from ptyro_invert.recon import add_probe_modes
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object

W = (8, 8)
OBJ = (1, 14, 13)


def _plain(obj, probes, group, start):
    """The far fields by JAX's own differentiation: per position, the window and the probe's group;
    centred by ``fftshift`` (the model centres them by a phase ramp on the exit wave instead)."""
    win = jax.vmap(lambda r: jax.lax.dynamic_slice(obj, (0, r[0], r[1]), (1,) + W)[0])(start)
    return jnp.fft.fftshift(jnp.fft.fft2(jnp.take(probes, group, axis=0, mode="clip") * win[:, None], norm="ortho"), axes=(-2, -1))


def _arrays(seed, modes, groups):
    rng = np.random.default_rng(seed)
    obj = jnp.asarray(rng.normal(size=OBJ) + 1j * rng.normal(size=OBJ), jnp.complex64)
    probes = jnp.asarray(rng.normal(size=(groups, modes) + W) + 1j * rng.normal(size=(groups, modes) + W), jnp.complex64)
    return obj, probes


@functools.cache
def _vjps(b):
    """(ours, plain) jitted: (far fields, vjp of a cotangent) for batches of b positions."""

    def of(fn):
        def run(obj, probes, group, start, ct):
            f, back = jax.vjp(lambda o, p: fn(o, p, group, start), obj, probes)
            return f, back(ct)

        return jax.jit(run)

    return of(lambda o, p, g, s: far_fields(o, p, g, s, W)), of(_plain)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-3, 9), st.integers(-3, 9), st.integers(-1, 3)), min_size=5, max_size=5),
    st.sampled_from([1, 3]),
)
def test_far_fields_and_their_gradient_equal_the_plain_model(items, modes):
    """Starts beyond the edges are clamped into the object by both; groups repeat or go unused, and
    those out of range are clamped, in the forward and in its gradient alike."""
    obj, probes = _arrays(len(items) + modes, modes, 3)
    start = jnp.asarray([(x, y) for x, y, _ in items], jnp.int32)
    group = jnp.asarray([g for *_, g in items], jnp.int32)
    ct = jnp.asarray(np.random.default_rng(modes).normal(size=(5, modes) + W) * (1 - 0.5j), jnp.complex64)
    ours, plain = _vjps(5)
    (f, (go, gp)), (f0, (go0, gp0)) = ours(obj, probes, group, start, ct), plain(obj, probes, group, start, ct)
    np.testing.assert_allclose(np.asarray(f), np.asarray(f0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(go), np.asarray(go0), atol=2e-5 * float(jnp.max(jnp.abs(go0))))
    np.testing.assert_allclose(np.asarray(gp), np.asarray(gp0), atol=2e-5 * float(jnp.max(jnp.abs(gp0))))
    assert float(jnp.max(jnp.abs(go0))) > 0 and float(jnp.max(jnp.abs(gp0))) > 0


def test_far_fields_are_the_per_position_model():
    obj, probes = _arrays(0, 2, 3)
    start = jnp.asarray([[0, 0], [3, 2], [6, 5], [2, 4]], jnp.int32)
    group = jnp.asarray([2, 0, 2, 1], jnp.int32)
    model = make_model(W, (0.2, 0.2), 300e3)
    want = jax.vmap(model.at_start, in_axes=(None, 0, None, 0))(obj, probes[group], jnp.ones(1), start)
    got = model.at_starts(obj, probes, group, jnp.ones(1), start)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6 * float(jnp.max(want)))
    # and the patterns are |far field|² summed over the modes
    np.testing.assert_allclose(np.asarray(model.far_intensities(far_fields(obj, probes, group, start, W))), np.asarray(want), rtol=1e-5)


def test_far_fields_gradient_float64(x64):
    from jax.test_util import check_grads

    rng = np.random.default_rng(3)
    obj = jnp.asarray(rng.normal(size=OBJ) + 1j * rng.normal(size=OBJ), jnp.complex128)
    probes = jnp.asarray(rng.normal(size=(2, 2) + W) + 1j * rng.normal(size=(2, 2) + W), jnp.complex128)
    start = jnp.asarray([[1, 2], [4, 4], [9, -1]], jnp.int32)
    group = jnp.asarray([1, 1, 0], jnp.int32)
    check_grads(lambda o, p: far_fields(o, p, group, start, W), (obj, probes), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_far_fields_add_adds_to_the_sums_it_is_given():
    obj, probes = _arrays(5, 1, 2)
    start = jnp.asarray([[1, 1], [2, 5]], jnp.int32)
    group = jnp.asarray([0, 1], jnp.int32)
    ct = jnp.asarray(np.random.default_rng(4).normal(size=(2, 1) + W), jnp.complex64)
    _, back = jax.vjp(lambda o, p: far_fields(o, p, group, start, W), obj, probes)
    go, gp = back(ct)
    so, sp = obj * 0.5, probes * 2.0  # any sums
    ao, ap = far_fields_add(obj, probes, group, start, ct, so, sp, W)
    np.testing.assert_allclose(np.asarray(ao), np.asarray(so + go), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ap), np.asarray(sp + gp), atol=1e-5)


@pytest.mark.parametrize("slices, modes", [(1, 1), (1, 3), (2, 2)])
def test_a_probe_per_position_gets_its_gradient_made_not_summed(slices, modes):
    """``gp`` None (each position its own probe, the group the identity): the probes' gradient is
    returned as JAX's own differentiation of the per-position model gives it, and the object's is
    added to the sums given, as with summed probe gradients."""
    from ptyro_invert.forward import exit_far_fields_add

    rng = np.random.default_rng(10 + slices)
    obj = jnp.asarray(np.exp(1j * rng.normal(size=(slices,) + OBJ[1:])), jnp.complex64)
    b = 5
    _, probes = _arrays(slices + modes, modes, b)
    dz = jnp.asarray(rng.uniform(1, 3, slices), jnp.float32)
    start = jnp.asarray([[0, 0], [3, 2], [9, -2], [3, 2], [6, 5]], jnp.int32)
    group = jnp.arange(b, dtype=jnp.int32)
    ct = jnp.asarray(rng.normal(size=(b, modes) + W) * (1 + 0.3j), jnp.complex64)
    prop = None if slices == 1 else jax.vmap(jax.vmap(_shear, in_axes=(0, None)), in_axes=(0, None))
    h = None if slices == 1 else dz
    f, back = jax.vjp(lambda o, p: exit_far_fields(o, p, group, start, h, prop, W), obj, probes)
    go, gp = back(ct)
    from ptyro_invert.forward import _exit_far_fields

    _, waves = _exit_far_fields(obj, probes, group, start, h, prop, W)
    sums = obj * 0.5
    ao, ap, _ = exit_far_fields_add(obj, probes, group, start, h, prop, W, waves, ct, sums, None)
    assert float(jnp.max(jnp.abs(gp))) > 0
    np.testing.assert_allclose(np.asarray(ap), np.asarray(gp), atol=1e-5 * float(jnp.max(jnp.abs(gp))))
    np.testing.assert_allclose(np.asarray(ao), np.asarray(sums + go), atol=1e-5 * float(jnp.max(jnp.abs(go))))


@pytest.fixture(scope="module")
def cases():
    # 0.5 Å steps at 0.2 Å pixels: 2.5 px, 2 x 2 sub-pixel groups (the step's far-field path)
    out = {}
    for slices in (1, 2):
        grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(6, 6), step=0.5, aberrations={"C10": 40.0}, padding_px=6,
                                num_slices=slices, slice_thickness=None if slices == 1 else 8.0)  # fmt: skip
        phase = hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.3, 0.4)) / slices
        truth = with_object(st0, np.exp(1j * np.stack([phase] * slices)))
        out[slices] = (st0, simulate(truth, grid, scan))
    return out


@pytest.mark.parametrize(
    "slices, modes, extra",
    [(1, 1, {}), (1, 2, {}), (1, 1, {"detector_blur": 0.7}), (1, 1, {"mask": "ring"}), (2, 1, {}), (2, 2, {}),
     # a shift per position (the batch's ramp factors), each probe shifted in the chunk
     (1, 1, {"group_shifts": False}), (1, 2, {"group_shifts": False, "detector_blur": 0.7}), (2, 2, {"group_shifts": False})],
)  # fmt: skip
def test_step_far_field_path_follows_the_per_position_model(cases, slices, modes, extra):
    st0, data = cases[slices]
    if modes > 1:
        st0 = replace(st0, probe=add_probe_modes(st0.probe, modes))
    if extra.get("mask") == "ring":
        q = np.hypot(*np.meshgrid(np.arange(32) - 16, np.arange(32) - 16, indexing="ij"))
        extra = {"mask": (q < 14).astype(np.float32)}
    rates = {"object": 10.0, "probe": 1.0}
    opts = dict(iterations=2, batch_size=12, progress=False, optimizer="sgd", seed=3, **extra)
    algorithm = "single_slice" if slices == 1 else "multislice"
    a = reconstruct(data, st0, algorithm, learning_rates=rates, **opts)  # grouped: the far-field path
    b = reconstruct(data, st0, algorithm, learning_rates={**rates, "positions": 0.0}, fit_positions=True, **opts)
    change = float(jnp.max(jnp.abs(b.object - 1.0)))
    assert change > 0.05  # the object did change
    # float32 round-off over 6 steps, and a group's shift is the mean of its members' (to 1e-4 px)
    assert float(jnp.max(jnp.abs(a.object - b.object))) <= 5e-3 * change
    assert float(jnp.max(jnp.abs(a.probe - b.probe))) <= 2e-2 * float(jnp.max(jnp.abs(b.probe - st0.probe)))
    np.testing.assert_allclose(np.asarray(a.loss), np.asarray(b.loss), rtol=1e-3)


def _shear(w, h):
    """A linear step standing in for a propagator, with a gradient in the thickness too."""
    k = jnp.fft.fftfreq(W[0])[:, None] + 0.5 * jnp.fft.fftfreq(W[1])[None, :]
    return jnp.fft.ifft2(jnp.fft.fft2(w) * jnp.exp(-1j * h * k).astype(w.dtype))


@pytest.mark.parametrize("slices, modes", [(2, 1), (3, 2)])
def test_exit_far_fields_and_their_gradient_equal_the_per_position_model(slices, modes):
    """Multislice: far fields, and the gradient in the object's slices, the probes and the
    thicknesses, against JAX's differentiation of forward.exit_waves per position."""
    rng = np.random.default_rng(slices)
    obj = jnp.asarray(np.exp(1j * rng.normal(size=(slices,) + OBJ[1:])) * rng.uniform(0.5, 1, (slices,) + OBJ[1:]), jnp.complex64)
    _, probes = _arrays(slices, modes, 3)
    dz = jnp.asarray(rng.uniform(1, 3, slices), jnp.float32)
    start = jnp.asarray([[0, 0], [3, 2], [9, -2], [3, 2], [6, 5]], jnp.int32)  # a repeat, a clamped one
    group = jnp.asarray([2, 0, 2, 1, 0], jnp.int32)
    ct = jnp.asarray(rng.normal(size=(5, modes) + W) * (1 + 0.3j), jnp.complex64)
    prop = jax.vmap(jax.vmap(_shear, in_axes=(0, None)), in_axes=(0, None))  # positions, then modes

    def plain(o, p, h):
        def one(pp, r0):
            patch = jax.lax.dynamic_slice(o, (0, r0[0], r0[1]), (slices,) + W)
            return jnp.fft.fftshift(jnp.fft.fft2(exit_waves(pp, patch, h, jax.vmap(_shear, in_axes=(0, None))), norm="ortho"), axes=(-2, -1))

        return jax.vmap(one)(p[group], start)

    f0, back0 = jax.vjp(plain, obj, probes, dz)
    f, back = jax.vjp(lambda o, p, h: exit_far_fields(o, p, group, start, h, prop, W), obj, probes, dz)
    np.testing.assert_allclose(np.asarray(f), np.asarray(f0), atol=1e-5 * float(jnp.max(jnp.abs(f0))))
    for got, want in zip(back(ct), back0(ct)):
        assert float(jnp.max(jnp.abs(want))) > 0
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=3e-5 * float(jnp.max(jnp.abs(want))))
