"""The reconstructions' window far fields on the native kernel (``cpp/window.cc``,
:class:`~ptyro_core.protocols.WindowFarFields`) against JAX:

- the far fields and their vector-Jacobian product equal the plain gather-multiply-FFT model
  differentiated by JAX (an implementation that shares no code with either path), for starts
  inside, at and beyond the object's edges (negative ones included), repeated and unused probe
  groups, one and three modes, even and odd windows; and the XLA path's (``forward.far_fields``);
- the gradient passes a directional finite-difference check;
- ``window_far_fields_add`` adds into the sums it is given, and with a probe per position returns
  that gradient as made (the XLA path's ``far_fields_add``);
- ``jit`` and ``vmap`` round trips;
- a reconstruction on ``native`` follows the same reconstruction on XLA (grouped shifts and a
  shift per position, one and two modes, amplitude and Poisson losses, a mask), and says which
  back end ran; ``auto`` picks it on one CPU device; impossible requests are refused by name.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_core import PtyroValueError, replace
from ptyro_core.pipeline import device_mesh
from ptyro_core.protocols import WindowFarFields

kernel = pytest.importorskip("ptyro_native.kernel", reason="ptyro-native is not installed (uv sync --group native)")
pytest.importorskip("ptyro_invert")
from ptyro_invert import reconstruct  # noqa: E402
from ptyro_invert.forward import far_fields, far_fields_add  # noqa: E402
from ptyro_invert.recon import add_probe_modes  # noqa: E402
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object  # noqa: E402

native = kernel.native
if native.unavailable(jnp.complex64, True) is not None:
    pytest.skip(f"the native kernel is not loadable here: {native.unavailable(jnp.complex64, True)}", allow_module_level=True)


def _plain(obj, probes, group, start, window):
    """JAX's own gather, product and FFT, centred by ``fftshift``; starts as dynamic_slice takes them."""
    win = jax.vmap(lambda r: jax.lax.dynamic_slice(obj, (0, r[0], r[1]), (1,) + window)[0])(start)
    return jnp.fft.fftshift(jnp.fft.fft2(jnp.take(probes, group, axis=0, mode="clip") * win[:, None], norm="ortho"), axes=(-2, -1))


def _arrays(seed, shape, window, groups, modes, b):
    rng = np.random.default_rng(seed)
    cx = lambda *s: jnp.asarray(rng.normal(size=s) + 1j * rng.normal(size=s), jnp.complex64)  # noqa: E731
    return cx(1, *shape), cx(groups, modes, *window), cx(b, modes, *window)


@functools.cache
def _vjps(window):
    def of(fn):
        def run(obj, probes, group, start, ct):
            f, back = jax.vjp(lambda o, p: fn(o, p, group, start), obj, probes)
            return f, back(ct)

        return jax.jit(run)

    return (of(native.window_far_fields), of(lambda o, p, g, s: _plain(o, p, g, s, window)),
            of(lambda o, p, g, s: far_fields(o, p, g, s, window)))  # fmt: skip


def _close(a, b, rel=2e-6):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= rel * np.max(np.abs(b)), np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_native_offers_the_window_far_fields():
    assert isinstance(native, WindowFarFields)


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-6, 12), st.integers(-6, 12), st.integers(-1, 3)), min_size=1, max_size=6),
    st.sampled_from([1, 3]),
    st.sampled_from([(8, 8), (7, 6)]),
)
def test_far_fields_and_their_gradient_equal_jax(items, modes, window):
    b = len(items)
    obj, probes, ct = _arrays(b * 7 + modes, (15, 13), window, 3, modes, b)
    start = jnp.asarray([(x, y) for x, y, _ in items], jnp.int32)
    group = jnp.asarray([g for *_, g in items], jnp.int32)
    ours, plain, xla = _vjps(window)
    f, (go, gp) = ours(obj, probes, group, start, ct)
    for ref in (plain, xla):
        f_r, (go_r, gp_r) = ref(obj, probes, group, start, ct)
        _close(f, f_r)
        _close(go, go_r)
        _close(gp, gp_r)


def test_the_gradient_against_finite_differences():
    """A real loss of the far fields: its derivative along a random direction of the object and
    of the probes, by the kernel's VJP, against central differences (float32: 1 % agreement)."""
    window = (8, 8)
    obj, probes, _ = _arrays(1, (14, 13), window, 2, 2, 1)
    group, start = jnp.asarray([0, 1, 1, 0], jnp.int32), jnp.asarray([[0, 0], [3, 2], [6, 5], [2, 4]], jnp.int32)
    target = jnp.asarray(np.random.default_rng(2).random((4, 2) + window), jnp.float32)

    def loss(o, p):
        f = native.window_far_fields(o, p, group, start)
        return jnp.sum((jnp.abs(f) - target) ** 2)

    g_o, g_p = jax.grad(loss, argnums=(0, 1))(obj, probes)
    rng = np.random.default_rng(3)
    for arg, g in ((0, g_o), (1, g_p)):
        x = (obj, probes)[arg]
        d = jnp.asarray(rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape), jnp.complex64)
        eps = 1e-3
        shifted = lambda s: loss(*((x + s * d, probes) if arg == 0 else (obj, x + s * d)))  # noqa: E731
        numeric = (float(shifted(eps)) - float(shifted(-eps))) / (2 * eps)
        # JAX's gradient of a real function of complex input is dL/dRe - i dL/dIm
        analytic = float(jnp.sum(jnp.real(g * d)))
        assert abs(numeric - analytic) <= 1e-2 * abs(analytic), (arg, numeric, analytic)


def test_add_adds_to_the_sums_and_a_probe_per_position_gets_its_gradient():
    window = (8, 8)
    obj, probes, ct = _arrays(4, (14, 13), window, 3, 2, 4)
    group, start = jnp.asarray([2, 0, 2, 1], jnp.int32), jnp.asarray([[0, 0], [3, 2], [6, 5], [-1, 9]], jnp.int32)
    go0, gp0 = _arrays(5, (14, 13), window, 3, 2, 1)[:2]
    add = jax.jit(native.window_far_fields_add)
    go, gp = add(obj, probes, group, start, ct, go0, gp0)
    go_r, gp_r = far_fields_add(obj, probes, group, start, ct, go0, gp0, window)
    _close(go, go_r)
    _close(gp, gp_r)
    # a probe per position: group is the identity, the probes' gradient is made, not added
    per = jnp.take(probes, group, axis=0)
    ident = jnp.arange(4, dtype=jnp.int32)
    go, gp = jax.jit(lambda *a: native.window_far_fields_add(*a, None))(obj, per, ident, start, ct, go0)
    _, back = jax.vjp(lambda o, p: _plain(o, p, ident, start, window), obj, per)
    go_r, gp_r = back(ct)
    _close(go, go0 + go_r)
    _close(gp, gp_r)


def test_jit_and_vmap_round_trips():
    window = (8, 8)
    obj, probes, _ = _arrays(6, (14, 13), window, 2, 1, 1)
    group, start = jnp.asarray([0, 1, 1], jnp.int32), jnp.asarray([[0, 0], [3, 2], [6, 5]], jnp.int32)
    eager = native.window_far_fields(obj, probes, group, start)
    np.testing.assert_array_equal(np.asarray(jax.jit(native.window_far_fields)(obj, probes, group, start)), np.asarray(eager))
    objs = jnp.stack([obj, 2 * obj, obj * 1j])
    batched = jax.vmap(native.window_far_fields, in_axes=(0, None, None, None))(objs, probes, group, start)
    for k, scale in enumerate((1, 2, 1j)):
        _close(batched[k], scale * eager)


def test_the_kernel_refuses_wrong_shapes_by_name():
    obj, probes, ct = _arrays(7, (6, 6), (8, 8), 1, 1, 1)  # a window larger than the object
    with pytest.raises(Exception, match="ptyro_window_far_fields: expected object"):
        jax.block_until_ready(native.window_far_fields(obj, probes, jnp.zeros(1, jnp.int32), jnp.zeros((1, 2), jnp.int32)))


# ----------------------------------------------------------------------------- reconstructions


@functools.cache
def _case(modes, sub_pixel, counted):
    """(start, data): a small synthetic dataset; 0.5 Å steps at 0.2 Å pixels give 2 x 2 sub-pixel
    groups (grouped shifts), 0.4123 Å steps more than a batch's half (a shift per position)."""
    grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(6, 6), step=0.4123 if sub_pixel else 0.5, aberrations={"C10": 40.0}, padding_px=6)
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.3, 0.4))))
    if modes > 1:
        st0 = replace(st0, probe=add_probe_modes(st0.probe, modes))
    return st0, simulate(truth, grid, scan, dose=2000.0 if counted else None)


@pytest.mark.parametrize("modes, sub_pixel, loss, mask", [(1, False, "amplitude", False), (2, False, "poisson", True), (1, True, "amplitude", False)])
def test_a_reconstruction_on_native_follows_xla(modes, sub_pixel, loss, mask):
    st0, data = _case(modes, sub_pixel, loss == "poisson")
    extra = {}
    if mask:
        q = np.hypot(*np.meshgrid(np.arange(32) - 16, np.arange(32) - 16, indexing="ij"))
        extra["mask"] = (q < 14).astype(np.float32)
    out, reports = {}, {}
    for backend in ("native", "xla"):
        reports[backend] = []
        out[backend] = reconstruct(data, st0, "single_slice", iterations=3, batch_size=12, progress=False, loss=loss, optimizer="sgd",
                                   learning_rates={"object": 10.0, "probe": 1.0}, backend=backend, report=reports[backend],
                                   mesh=device_mesh(jax.devices()[:1]), **extra)  # fmt: skip
    assert {r["backend"] for r in reports["native"]} == {"native"} and {r["backend"] for r in reports["xla"]} == {"xla"}
    change = float(jnp.max(jnp.abs(out["xla"].object - st0.object)))
    assert change > 0.05  # the object did change
    # float32 round-off (another FFT, other summation orders) carried through 9 steps
    assert float(jnp.max(jnp.abs(out["native"].object - out["xla"].object))) <= 1e-3 * change
    assert float(jnp.max(jnp.abs(out["native"].probe - out["xla"].probe))) <= 5e-3 * float(jnp.max(jnp.abs(out["xla"].probe - st0.probe)))
    np.testing.assert_allclose(np.asarray(out["native"].loss), np.asarray(out["xla"].loss), rtol=1e-4)


def test_auto_picks_native_on_one_cpu_device_and_bad_requests_are_refused(monkeypatch):
    import ptyro_core.backends as be

    st0, data = _case(1, False, False)
    one = dict(iterations=1, batch_size=12, progress=False)
    opts = dict(one, mesh=device_mesh(jax.devices()[:1]))
    monkeypatch.setattr(be, "_single_cpu_device", lambda: True)  # the tests' session has two CPU devices
    report: list = []
    reconstruct(data, st0, "single_slice", report=report, **opts)
    assert report[-1]["backend"] == "native"
    with pytest.raises(PtyroValueError, match="backend: 'native' runs the far fields of single-slice reconstructions.*fitting .*positions"):
        reconstruct(data, st0, "position_corrected", backend="native", **opts)
    two = replace(with_object(st0, jnp.concatenate([st0.object, st0.object])), slice_thickness=jnp.full((2,), 5.0, jnp.float32))
    with pytest.raises(PtyroValueError, match="backend: 'native' runs the far fields.*a 2-slice object"):
        reconstruct(data, two, "multislice", backend="native", **opts)
    report = []
    reconstruct(data, two, "multislice", report=report, **opts)  # auto: XLA, and nothing to say
    assert report[-1]["backend"] == "xla"
    report = []
    reconstruct(data, st0, "single_slice", report=report, **one)  # a mesh of two devices: XLA shards
    assert report[-1]["backend"] == "xla"
    with pytest.raises(PtyroValueError, match="backend: 'native' runs on one device, and this run has several"):
        reconstruct(data, st0, "single_slice", backend="native", **one)
