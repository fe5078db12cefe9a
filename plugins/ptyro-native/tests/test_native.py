"""The native far-field back end (ptyro-native): registered through its entry point, it computes
what the XLA path computes (odd and even grids, grids that are no multiple of the SIMD width,
one slice, several modes, the band-limit column skipping, windows that wrap), passes the physics
checks on its own (an empty specimen conserves the norm; a weak phase grating gives J1² in its
first orders), differentiates like the XLA path, batches under vmap and jit, says why it cannot
run when it cannot (and the library then runs XLA), and gives the same results when built for a
machine without AVX2 or without SIMD vectors."""

import ctypes
import os
import platform
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import ptyro_simul.multislice as ms
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ptyro_core._pytree import replace
from ptyro_simul.constants import energy2sigma
from ptyro_simul.multislice import bandlimit_mask, multislice
from ptyro_simul.probe import aberrated_probe
from scipy import special

import ptyro_core
from ptyro_core import Grid, PotentialSlices, PtyroValueError

kernel = pytest.importorskip("ptyro_native.kernel", reason="ptyro-native is not installed (uv sync --group native)")
CPP = Path(__file__).resolve().parents[1] / "cpp"


def _patterns(pot, probe, positions, backend):
    return multislice(pot, probe, backend=backend)(positions)


def test_registered_through_its_entry_point():
    comp = ptyro_core.get_registry().component("backend", "native")
    assert comp.obj is kernel.native and comp.distribution == "ptyro-native"
    assert kernel.native.unavailable(jnp.complex64, False) is None  # built at install time, loads
    assert "complex64" in kernel.native.unavailable(jnp.complex128, False)


def _case(nx, ny, nslices, seed=0, modes=1):
    grid = Grid((nx, ny), (0.15, 0.17))
    rng = np.random.default_rng(seed)
    v = jnp.asarray(rng.uniform(0.0, 30.0, (nslices, nx, ny)), jnp.float32)
    pot = PotentialSlices(v, jnp.full((nslices,), 1.3, jnp.float32), grid=grid)
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=25.0, aberrations={"C10": 20.0})
    if modes > 1:
        arr = jnp.stack([probe.array[0] * (0.8**m) for m in range(modes)]) / np.sqrt(modes)
        probe = replace(probe, array=arr)
    positions = jnp.asarray(rng.uniform(0.0, 3.0, (5, 2)), jnp.float32)
    return pot, probe, positions


def test_native_path_is_taken_and_matches_xla():
    pot, probe, positions = _case(48, 40, 4)
    plan = multislice.plan(pot, probe, backend="native")
    assert plan.backend == "native"
    assert kernel.TARGET in ms._intensities.lower(plan, positions).as_text()  # the kernel is in the program
    assert kernel.TARGET not in ms._intensities.lower(multislice.plan(pot, probe, backend="xla"), positions).as_text()
    fast = _patterns(pot, probe, positions, "native")
    slow = _patterns(pot, probe, positions, "xla")
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=0, atol=2e-5 * float(np.max(slow)))
    assert float(jnp.sum(fast)) == pytest.approx(float(jnp.sum(slow)), rel=1e-5)


@settings(max_examples=6)  # each example compiles the kernel's program for a new shape
@given(
    nx=st.integers(6, 41),
    ny=st.integers(6, 41),
    nslices=st.integers(1, 4),
    modes=st.integers(1, 2),
    seed=st.integers(0, 100),
)
def test_matches_xla_for_any_grid(nx, ny, nslices, modes, seed):
    # odd sizes, sizes below and above the SIMD width, one slice (no loop), two modes
    pot, probe, positions = _case(nx, ny, nslices, seed, modes)
    fast = _patterns(pot, probe, positions, "native")
    slow = _patterns(pot, probe, positions, "xla")
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=0, atol=3e-5 * float(np.max(slow)))


def test_empty_specimen_conserves_the_norm():
    grid = Grid((64, 64), (0.2, 0.2))
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0, aberrations={"C10": -30.0})
    pot = PotentialSlices(jnp.zeros((3, 64, 64)), jnp.array([2.0, 2.0, 2.0]), grid=grid)
    out = _patterns(pot, probe, jnp.array([[1.3, 2.7]]), "native")[0]
    own = jnp.abs(jnp.fft.fftshift(jnp.fft.fft2(probe.array[0], norm="ortho"))) ** 2
    np.testing.assert_allclose(np.asarray(out), np.asarray(own), atol=1e-6)
    assert float(jnp.sum(out * bandlimit_mask(grid))) == pytest.approx(1.0, abs=1e-5)


def test_weak_phase_grating_first_orders():
    # a phase grating V0 cos(2π g x) puts J1(σV0)² of the probe's pattern into each ±g disc
    grid = Grid((64, 64), (0.1, 0.1))
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=10.0)
    sigma = energy2sigma(200e3)
    v0 = 0.05 / sigma
    x, _ = grid.coordinates()
    v = jnp.broadcast_to(v0 * jnp.cos(2 * jnp.pi * (8 / grid.extent[0]) * x), grid.gpts)
    pot = PotentialSlices(v[None].astype(jnp.float32), jnp.array([0.5]), grid=grid)
    pattern = np.asarray(_patterns(pot, probe, jnp.array([[3.2, 3.2]]), "native")[0])
    own = np.asarray(jnp.abs(jnp.fft.fftshift(jnp.fft.fft2(probe.array[0], norm="ortho"))) ** 2)
    for shift in (8, -8):
        disc = np.roll(own, shift, axis=0)
        mask = disc > 1e-3 * disc.max()
        assert pattern[mask].sum() / disc[mask].sum() == pytest.approx(special.j1(sigma * v0) ** 2, rel=1e-3)


def test_gradients_are_the_xla_paths():
    pot, probe, positions = _case(24, 20, 3)
    w = jnp.asarray(np.random.default_rng(3).uniform(size=(5, 24, 20)), jnp.float32)

    grads = {}
    for backend in ("native", "xla"):

        def loss(v, pos, backend=backend):
            return jnp.sum(w * multislice(replace(pot, array=v), probe, backend=backend)(pos))

        g = jax.jit(jax.grad(loss, argnums=(0, 1)))(pot.array, positions)
        _, t = jax.jvp(lambda v, loss=loss: loss(v, positions), (pot.array,), (jnp.ones_like(pot.array),))
        grads[backend] = (g, t)
    for a, b in zip(jax.tree_util.tree_leaves(grads["native"]), jax.tree_util.tree_leaves(grads["xla"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))


def test_vmap_and_jit():
    pot, probe, positions = _case(32, 32, 2)
    sim = multislice(pot, probe, backend="native")
    batched = jax.jit(jax.vmap(lambda p: sim(p[None])[0]))(positions)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(sim(positions)), rtol=0, atol=1e-6 * float(np.max(batched)))


def test_sharded_batches_with_several_devices():
    # backend="native" with the tests' fake devices: XLA runs the kernel on unsharded batches
    from ptyro_simul.detectors import PixelatedDetector
    from ptyro_simul.stem import simulate_4dstem

    from ptyro_core import ScanPositions

    pot, probe, _ = _case(32, 32, 2)
    scan = ScanPositions.raster((0.5, 0.5), (2.5, 2.5), (3, 4))
    out = {}
    for backend in ("native", "xla"):
        record = {}
        out[backend] = simulate_4dstem(pot, probe, scan, detectors=[PixelatedDetector()], batch_size=4, progress=False, backend=backend,
                                       record=record)["pixelated"]  # fmt: skip
        assert record["backend"] == backend
    np.testing.assert_allclose(out["native"], out["xla"], rtol=0, atol=2e-5 * float(out["xla"].max()))


def test_an_unloadable_kernel_is_named_and_auto_runs_xla(monkeypatch, tmp_path):
    import ptyro_core.backends as be

    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setattr(kernel, "LIBRARY", tmp_path / "missing.so")
    pot, probe, positions = _case(16, 16, 2)
    why = kernel.native.unavailable(jnp.complex64, False)
    assert "could not be loaded" in why and "missing.so" in why
    with pytest.raises(PtyroValueError, match="backend: 'native' cannot run here: the kernel .*missing.so"):
        multislice.plan(pot, probe, backend="native")
    monkeypatch.setattr(be, "_single_cpu_device", lambda: True)
    monkeypatch.setattr(be, "_noted", type(be._noted)())
    with pytest.warns(RuntimeWarning, match="native: the kernel .*; running XLA"):
        assert multislice.plan(pot, probe).backend == "xla"
    assert np.isfinite(np.asarray(multislice(pot, probe, backend="xla")(positions))).all()


def _compile(out, flags):
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler for the portable-build check")
    cmd = [cxx, "-O3", *flags, "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}", f"-I{CPP}", str(CPP / "fresnel.cc"), "-o", out]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the x86-64 baseline build is for x86 machines")
@pytest.mark.parametrize("flags", [("-march=x86-64",), ("-march=native", "-DPOCKETFFT_NO_VECTORS")], ids=["sse2", "scalar"])
def test_portable_builds_match_xla(flags, tmp_path):
    # the kernel as a machine without AVX2 (4 SSE lanes, the generic gathers) or without SIMD
    # vectors builds it: the same far field as the XLA path
    out = str(tmp_path / "fresnel.so")
    _compile(out, flags)
    target = f"ptyro_test_far_field_{flags[-1].strip('-').replace('=', '_')}"
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(ctypes.cdll.LoadLibrary(out).PtyroFresnelFarField), platform="cpu")
    for nx, ny, nslices in ((48, 40, 4), (37, 29, 3), (30, 33, 1)):
        pot, probe, positions = _case(nx, ny, nslices)
        plan = multislice.plan(pot, probe, backend="xla")
        (head, last), pk = plan.operators, plan.probe_fourier
        waves = ms.shifted_probes(pk, positions, pot.grid)
        ref = np.asarray(ms.fresnel_far_field(waves, head, last))
        got = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(waves.shape, jnp.float32))(waves, head[0], last[0], head[1], last[1])
        np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=3e-5 * float(ref.max()))


@settings(max_examples=6)
@given(
    n=st.integers(24, 40),
    w=st.integers(8, 24),
    modes=st.integers(1, 2),
    seed=st.integers(0, 100),
)
def test_windowed_matches_xla(n, w, modes, seed):
    # windows that wrap around the periodic potential's edges in x, in y and in both
    pot, _, _ = _case(n, n + 3, 3, seed)
    probe = aberrated_probe(Grid((w, w + 1), pot.grid.sampling), 200e3, semiangle_cutoff=25.0, aberrations={"C10": 20.0})
    if modes > 1:
        probe = replace(probe, array=jnp.stack([probe.array[0], 0.5 * probe.array[0]]) / np.sqrt(1.25))
    ext = np.asarray(pot.grid.extent)
    positions = jnp.asarray([[0.1, 0.2], [ext[0] - 0.1, 1.0], [1.0, ext[1] - 0.2], [ext[0] - 0.3, ext[1] - 0.1], [ext[0] / 2, ext[1] / 2]], jnp.float32)
    out = {b: np.asarray(multislice(pot, probe, window=(w, w + 1), backend=b)(positions)) for b in ("native", "xla")}
    np.testing.assert_allclose(out["native"], out["xla"], rtol=0, atol=3e-5 * float(out["xla"].max()))


def test_windowed_kernel_is_taken_and_differentiates_like_xla():
    pot, _, positions = _case(40, 36, 3)
    probe = aberrated_probe(Grid((24, 20), pot.grid.sampling), 200e3, semiangle_cutoff=25.0, aberrations={"C10": 20.0})
    plan = multislice.plan(pot, probe, window=(24, 20), backend="native")
    assert kernel.WINDOWED in ms._intensities.lower(plan, positions).as_text()
    w = jnp.asarray(np.random.default_rng(4).uniform(size=(5, 24, 20)), jnp.float32)
    grads = {}
    for backend in ("native", "xla"):

        def loss(v, backend=backend):
            return jnp.sum(w * multislice(replace(pot, array=v), probe, window=(24, 20), backend=backend)(positions))

        grads[backend] = np.asarray(jax.jit(jax.grad(loss))(pot.array))
    np.testing.assert_allclose(grads["native"], grads["xla"], rtol=1e-4, atol=1e-4 * float(np.abs(grads["xla"]).max()))
