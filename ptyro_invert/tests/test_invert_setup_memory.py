"""A reconstruction's set-up keeps nothing it does not need (issue 18, memory near the data).

Every eager JAX operation compiles a program of its own, and the process keeps each one (about
1.4 MiB of heap apiece, measured with ``benchmarks/profile_memory.py``): RECON-A's set-up used to
compile 37 of them, 50 MiB of a 196 MiB budget. These tests hold the set-up to the programs a run
needs (the probe, the optimizer's state, the step, and for counted data the batch conversion), check
the host-side replacements against the device code and the shift theorem, and check that the
caller's state survives the step's donation on one and two devices."""

import sys

# pytest's importlib mode names this file "ptyro_invert.tests.<name>" and may register the folder
# ptyro_invert/ as a namespace package "ptyro_invert" first; drop that placeholder so the real
# (installed) package is imported.
if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import logging
import os
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptyro_core import Dataset4D, ReconState
from ptyro_core import conventions as cv
from ptyro_core.pipeline import device_mesh
from ptyro_invert import initial_state, reconstruct
from ptyro_invert.synthetic import setup, simulate

#: the programs a single-slice run compiles; anything else is an eager operation of the set-up
RUN_PROGRAMS = {"_coherent_probe", "_init_optimizer", "recon_step", "_batch_floats"}


def _compiled(caplog, fn):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="jax"), jax.log_compiles(True):
        out = fn()
    names = [re.match(r"Compiling jit\((\w+)\)", r.getMessage()) for r in caplog.records]
    return out, [m.group(1) for m in names if m]


@pytest.fixture(scope="module")
def small():
    # shapes no other test uses, so that no eager program is in JAX's caches already
    grid, scan, st0 = setup(gpts=36, sampling=0.21, scan=(5, 4), step=0.55, aberrations={"C10": 40.0}, padding_px=7)
    return grid, scan, st0, simulate(st0, grid, scan)


@pytest.mark.parametrize("counts", [False, True])
def test_set_up_compiles_only_the_run_programs(small, counts, caplog):
    grid, scan, _, ds = small
    if counts:
        ds = Dataset4D(np.rint(np.asarray(ds.array) * 1e4).astype(np.uint16), scan.positions, grid=grid, energy=ds.energy)

    def run():
        st0 = initial_state(ds, semiangle_cutoff=24.0 + counts, aberrations={"C10": 41.0}, padding_px=6)
        return reconstruct(ds, st0, "single_slice", iterations=2, batch_size=6, streams=1, progress=False)

    out, names = _compiled(caplog, run)
    assert "recon_step" in names  # the log is read (a run compiles its step)
    assert set(names) <= RUN_PROGRAMS, sorted(set(names) - RUN_PROGRAMS)
    assert names.count("recon_step") == 1
    assert out.loss.shape == (2,) and np.all(np.isfinite(np.asarray(out.loss)))


def test_recon_state_from_host_arrays_compiles_nothing(caplog):
    def make():
        return ReconState(np.ones((1, 13, 11), np.complex64), np.ones((1, 7, 5), np.complex64), np.zeros((3, 2), np.float32), sampling=(0.1, 0.1), energy=1e5)

    state, names = _compiled(caplog, make)
    assert names == []
    assert state.slice_thickness.dtype == jnp.float32 and np.all(np.asarray(state.slice_thickness) == 1.0)
    assert state.loss.shape == (0,) and state.iteration.dtype == jnp.int32 and int(state.iteration) == 0
    moved = jax.jit(lambda s: s)(state)  # still a PyTree that crosses jit
    assert moved.iteration.dtype == jnp.int32 and moved.object.shape == (1, 13, 11)


@pytest.mark.parametrize("devices", [1, 2])
def test_the_callers_state_survives_the_donated_step(small, devices):
    grid, scan, st0, ds = small
    before = {k: np.asarray(getattr(st0, k)).copy() for k in ("object", "probe", "positions")}
    reconstruct(ds, st0, "single_slice", iterations=1, batch_size=4, mesh=device_mesh(jax.devices()[:devices]), progress=False)
    for k, v in before.items():
        assert not getattr(st0, k).is_deleted(), k
        np.testing.assert_array_equal(np.asarray(getattr(st0, k)), v)


@given(
    n=st.tuples(st.integers(3, 12), st.integers(3, 12)),
    shift=st.tuples(st.integers(-15, 15), st.integers(-15, 15)),
    seed=st.integers(0, 2**16),
)
def test_host_shift_ramp_moves_by_whole_pixels_like_a_roll(n, shift, seed):
    rng = np.random.default_rng(seed)
    wave = rng.normal(size=n) + 1j * rng.normal(size=n)
    ramp = cv.shift_ramp(np.asarray([shift], np.float64), n, dtype=np.complex128, host=True)
    assert isinstance(ramp, np.ndarray) and ramp.shape == (1, *n) and ramp.dtype == np.complex128
    moved = np.fft.ifft2(np.fft.fft2(wave) * ramp[0])
    np.testing.assert_allclose(moved, np.roll(wave, shift, axis=(0, 1)), atol=1e-12)


@given(shifts=st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=1, max_size=4), n=st.sampled_from([(8, 8), (9, 6), (16, 12)]))
def test_host_shift_ramp_agrees_with_the_device_ramp(shifts, n):
    s = np.asarray(shifts, np.float32)
    host = cv.shift_ramp(s, n, (0.5, 0.25), np.complex64, host=True)
    device = np.asarray(cv.shift_ramp(jnp.asarray(s), n, (0.5, 0.25), jnp.complex64))
    assert host.dtype == np.complex64
    np.testing.assert_allclose(host, device, atol=2e-5)  # float32 phases of at most 2π·3·2 rad
    np.testing.assert_allclose(np.abs(host), 1.0, atol=1e-6)


def test_importing_the_engine_leaves_h5py_out():
    # h5py costs every run 11 MiB; it is imported where a checkpoint is read or written
    code = "import sys, ptyro_invert.recon; assert 'h5py' not in sys.modules, 'h5py imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu", **os.environ})
    assert res.returncode == 0, res.stderr[-2000:]
