"""Far-field back ends (``backend = "auto" | "xla" | NAME``): a back end registered through the
``ptyro_register_backends`` hook runs the far field of any kernel propagator when named, and
under ``auto`` on a single CPU device; without one, ``auto`` runs XLA and says so once; bad
names and impossible requests are refused with one clear line. The back end used is in the plan
(static: part of JAX's cache key)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptyro_core
import ptyro_core.backends as be
from ptyro_core import Grid, PotentialSlices, PtyroValueError, UnknownComponentError, hookimpl
from ptyro_core.protocols import FarFieldBackend
from ptyro_simul.multislice import crop_windows, fresnel_far_field, multislice
from ptyro_simul.probe import aberrated_probe
from ptyro_simul.propagator import fresnel


class Recording(FarFieldBackend):
    """The XLA far field behind a back end that counts its traces and refuses complex128."""

    def __init__(self) -> None:
        self.traced = 0

    def unavailable(self, dtype, windowed):
        return None if jnp.dtype(dtype) == jnp.complex64 else "complex64 only"

    def __call__(self, waves, head, last, offsets=None):
        self.traced += 1
        crop = None if offsets is None else crop_windows(offsets, last[0].shape, waves.shape[-2:])
        return fresnel_far_field(waves, head, last, crop)


@pytest.fixture
def recording():
    rec = Recording()

    class Plugin:
        @hookimpl
        def ptyro_register_backends(self, register):
            register("recording", rec, description="test back end")

    ptyro_core.register_plugin(Plugin(), "ptyro-test-backend")
    yield rec
    ptyro_core.get_registry().unregister_plugin("ptyro-test-backend")


def _case(window=None):
    grid = Grid((24, 20), (0.2, 0.2))
    v = jnp.asarray(np.random.default_rng(0).uniform(0.0, 20.0, (3, 24, 20)), jnp.float32)
    pot = PotentialSlices(v, jnp.full((3,), 1.5, jnp.float32), grid=grid)
    pgrid = grid if window is None else Grid(window, grid.sampling)
    probe = aberrated_probe(pgrid, 200e3, semiangle_cutoff=25.0)
    return pot, probe, jnp.asarray([[1.0, 2.0], [3.3, 0.4]], jnp.float32)


@pytest.mark.parametrize("window", [None, (16, 12)])
def test_a_named_backend_runs_the_far_field(recording, window):
    pot, probe, positions = _case(window)
    plan = multislice.plan(pot, probe, window=window, backend="recording")
    assert (plan.backend, plan.far_field) == ("recording", recording)
    got = np.asarray(multislice.apply(plan, positions))
    assert recording.traced == 1
    ref = np.asarray(multislice(pot, probe, window=window, backend="xla")(positions))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * float(ref.max()))
    assert recording.traced == 1  # the XLA run never touched it


def test_auto_picks_a_usable_backend_on_one_cpu_device(recording, monkeypatch):
    pot, probe, positions = _case()
    monkeypatch.setattr(be, "_single_cpu_device", lambda: True)
    monkeypatch.setattr(be, "_registered", lambda: ["recording"])  # whatever else is installed
    assert multislice.plan(pot, probe).backend == "recording"
    assert multislice.plan(pot, probe, propagator=lambda w, dz, g, e, *, tilt=(0.0, 0.0): fresnel(w, dz, g, e, tilt=tilt)).backend == "xla"
    monkeypatch.setattr(be, "_single_cpu_device", lambda: False)  # several devices: XLA shards
    assert multislice.plan(pot, probe).backend == "xla"


def test_auto_without_a_usable_backend_runs_xla_and_says_so_once(monkeypatch):
    monkeypatch.setattr(be, "_single_cpu_device", lambda: True)
    monkeypatch.setattr(be, "_registered", lambda: [])
    monkeypatch.setattr(be, "_noted", type(be._noted)())
    pot, probe, positions = _case()
    with pytest.warns(RuntimeWarning, match="no far-field back end.*running XLA"):
        plan = multislice.plan(pot, probe)
    assert plan.backend == "xla" and plan.far_field is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert multislice.plan(pot, probe).backend == "xla"
    assert np.isfinite(np.asarray(multislice.apply(plan, positions))).all()


def test_bad_requests_are_refused(recording):
    pot, probe, _ = _case()
    with pytest.raises(PtyroValueError, match="backend: expected 'auto', 'xla'.*got 3"):
        multislice.plan(pot, probe, backend=3)
    with pytest.raises(UnknownComponentError, match="nope"):
        multislice.plan(pot, probe, backend="nope")
    plain = lambda w, dz, g, e, *, tilt=(0.0, 0.0): fresnel(w, dz, g, e, tilt=tilt)  # noqa: E731
    with pytest.raises(PtyroValueError, match="'recording' runs the far field of kernel propagators only"):
        multislice.plan(pot, probe, propagator=plain, backend="recording")
    with jax.enable_x64(True):
        pot64 = PotentialSlices(pot.array.astype(jnp.float64), pot.slice_thickness.astype(jnp.float64), grid=pot.grid)
        with pytest.raises(PtyroValueError, match="'recording' cannot run here: complex64 only"):
            multislice.plan(pot64, probe, backend="recording")


def test_the_backend_is_static_in_the_plan(recording):
    pot, probe, _ = _case()
    a, b = multislice.plan(pot, probe, backend="xla"), multislice.plan(pot, probe, backend="recording")
    assert jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b)
    # a jit/vmap round trip of the plan keeps it
    out = jax.jit(lambda p: p)(b)
    assert out.backend == "recording" and jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(b)
    # and a vmap over plans stacked along a leading axis (frozen-phonon configurations)
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), a, a)
    back = jax.vmap(lambda p: p)(stacked)
    assert back.backend == "xla" and back.probe_fourier.shape == (2,) + a.probe_fourier.shape
