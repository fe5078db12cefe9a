"""The reconstructions' far-field back ends (``backend = "auto" | "xla" | NAME``): a back end
registered through the ``ptyro_register_backends`` hook that offers
:class:`~ptyro_core.protocols.WindowFarFields` runs a single-slice step's far fields and their
gradient when named, and under ``auto`` on a single CPU device; one that does not offer them is
passed over by ``auto`` and refused by name; every other run is XLA's; each pass's report names
the back end that ran. (The compiled ``native`` back end is tested against XLA in
plugins/ptyro-native/tests/test_native_recon.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptyro_core
import ptyro_core.backends as be
from ptyro_core import PtyroValueError, UnknownComponentError, hookimpl
from ptyro_core.pipeline import device_mesh
from ptyro_core.protocols import FarFieldBackend, WindowFarFields
from ptyro_invert import reconstruct
from ptyro_invert.forward import far_fields, far_fields_add
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object


class Twin(FarFieldBackend):
    """The XLA window far fields behind a back end that counts its traces."""

    def __init__(self) -> None:
        self.traced = {"forward": 0, "add": 0}

    def unavailable(self, dtype, windowed):
        return None if jnp.dtype(dtype) == jnp.complex64 else "complex64 only"

    def __call__(self, waves, head, last, offsets=None):
        raise AssertionError("a reconstruction never calls the multislice far field")

    def window_far_fields(self, obj, probes, group, start):
        self.traced["forward"] += 1
        return far_fields(obj, probes, group, start, tuple(probes.shape[-2:]))

    def window_far_fields_add(self, obj, probes, group, start, ct, go, gp):
        self.traced["add"] += 1
        window = tuple(probes.shape[-2:])
        if gp is None:  # a probe per position: its gradient made, not added
            _, back = jax.vjp(lambda o, p: far_fields(o, p, group, start, window), obj, probes)
            do, dp = back(ct)
            return go + do, dp
        return far_fields_add(obj, probes, group, start, ct, go, gp, window)


class SimulationOnly(FarFieldBackend):
    def unavailable(self, dtype, windowed):
        return None

    def __call__(self, waves, head, last, offsets=None):
        raise AssertionError("not called")


@pytest.fixture
def twin():
    rec = Twin()

    class Plugin:
        @hookimpl
        def ptyro_register_backends(self, register):
            register("twin", rec, description="test back end")
            register("simulation-only", SimulationOnly(), description="test back end without the window far fields")

    ptyro_core.register_plugin(Plugin(), "ptyro-test-recon-backend")
    yield rec
    ptyro_core.get_registry().unregister_plugin("ptyro-test-recon-backend")


@pytest.fixture(scope="module")
def case():
    grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(6, 6), step=0.5, aberrations={"C10": 40.0}, padding_px=6)
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.3, 0.4))))
    return st0, simulate(truth, grid, scan)


ONE = dict(iterations=2, batch_size=12, progress=False, optimizer="sgd", learning_rates={"object": 10.0, "probe": 1.0})


@pytest.mark.parametrize("group_shifts", [True, False])
def test_a_named_backend_runs_the_step_far_fields(twin, case, group_shifts):
    st0, data = case
    mesh = device_mesh(jax.devices()[:1])
    runs, reports = {}, {}
    for backend in ("twin", "xla"):
        reports[backend] = []
        runs[backend] = reconstruct(data, st0, "single_slice", backend=backend, mesh=mesh, report=reports[backend], group_shifts=group_shifts, **ONE)
    assert twin.traced["forward"] >= 1 and twin.traced["add"] >= 1  # a shift per position: its probes' gradient made, not summed
    assert [r["backend"] for r in reports["twin"]] == ["twin", "twin"] and reports["xla"][-1]["backend"] == "xla"
    change = float(jnp.max(jnp.abs(runs["xla"].object - st0.object)))
    assert change > 0.05
    assert float(jnp.max(jnp.abs(runs["twin"].object - runs["xla"].object))) <= 1e-4 * change


def test_auto_picks_a_backend_with_the_window_far_fields_on_one_cpu_device(twin, case, monkeypatch):
    st0, data = case
    mesh = device_mesh(jax.devices()[:1])
    monkeypatch.setattr(be, "_single_cpu_device", lambda: True)  # the tests' session has two CPU devices
    monkeypatch.setattr(be, "_registered", lambda: ["simulation-only", "twin"])  # whatever else is installed
    report: list = []
    reconstruct(data, st0, "single_slice", mesh=mesh, report=report, **ONE)
    assert report[-1]["backend"] == "twin"  # simulation-only was passed over
    report = []
    reconstruct(data, st0, "single_slice", report=report, **ONE)  # a mesh of two devices
    assert report[-1]["backend"] == "xla"
    report = []
    reconstruct(data, st0, "position_corrected", mesh=mesh, report=report, **ONE)  # fitted positions: XLA's path
    assert report[-1]["backend"] == "xla"
    report = []
    reconstruct(data, st0, "single_slice", mesh=mesh, report=report, group_shifts=False, **ONE)  # a shift per position: XLA's
    assert report[-1]["backend"] == "xla"


def test_auto_without_a_backend_runs_xla_and_says_so_once(case, monkeypatch):
    st0, data = case
    monkeypatch.setattr(be, "_single_cpu_device", lambda: True)
    monkeypatch.setattr(be, "_registered", lambda: [])
    monkeypatch.setattr(be, "_noted", type(be._noted)())
    report: list = []
    with pytest.warns(RuntimeWarning, match="ptyro_invert: no window far-field back end.*running XLA"):
        reconstruct(data, st0, "single_slice", mesh=device_mesh(jax.devices()[:1]), report=report, **ONE)
    assert report[-1]["backend"] == "xla"


def test_bad_requests_are_refused(twin, case):
    st0, data = case
    mesh = device_mesh(jax.devices()[:1])
    with pytest.raises(PtyroValueError, match="backend: expected 'auto', 'xla'.*got 3"):
        reconstruct(data, st0, "single_slice", backend=3, mesh=mesh, **ONE)
    with pytest.raises(UnknownComponentError, match="unknown backend 'nope'; known backends: .*twin.*; or 'auto' \\(the default\\) or 'xla'"):
        reconstruct(data, st0, "single_slice", backend="nope", mesh=mesh, **ONE)
    with pytest.raises(PtyroValueError, match="'simulation-only' does not run the window far-field.*WindowFarFields"):
        reconstruct(data, st0, "single_slice", backend="simulation-only", mesh=mesh, **ONE)
    with pytest.raises(PtyroValueError, match="'twin' runs on one device, and this run has several"):
        reconstruct(data, st0, "single_slice", backend="twin", **ONE)
    with pytest.raises(PtyroValueError, match="'twin' runs the far fields of single-slice reconstructions.*fitting .*positions"):
        reconstruct(data, st0, "position_corrected", backend="twin", mesh=mesh, **ONE)
    with jax.enable_x64(True):
        st64 = ptyro_core.replace(st0, object=st0.object.astype(jnp.complex128), probe=st0.probe.astype(jnp.complex128))
        with pytest.raises(PtyroValueError, match="'twin' cannot run here: complex64 only"):
            reconstruct(data, st64, "single_slice", backend="twin", mesh=mesh, **ONE)
    assert isinstance(twin, WindowFarFields) and not isinstance(SimulationOnly(), WindowFarFields)
