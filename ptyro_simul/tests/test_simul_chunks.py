"""Multislice propagates a batch in cache-sized chunks of positions (``CHUNK_BYTES``): the chunking,
including a padded last chunk, changes nothing but the speed, on the full grid and in windows,
and gradients flow through it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ptyro_simul.multislice as ms
from ptyro_core import Grid, PtyroValueError
from ptyro_core.protocols import KernelPropagator
from ptyro_simul.multislice import multislice
from ptyro_simul.potentials import kirkland
from ptyro_simul.probe import aberrated_probe
from ptyro_simul.structures import build_crystal


@pytest.fixture(scope="module")
def case():
    atoms = build_crystal("SrTiO3", repeat=(2, 2, 2))
    grid = Grid.from_extent(atoms.cell[:2], gpts=(40, 40))
    pot = kirkland(atoms, grid, slice_thickness=3.905 / 2)
    rng = np.random.default_rng(5)
    positions = jnp.asarray(rng.uniform(1.0, 6.0, (7, 2)), jnp.float32)  # 7 positions: chunks of 3 pad 2
    return grid, pot, positions


def _with_chunk_bytes(monkeypatch, n_positions_per_chunk, wave_bytes, fn):
    monkeypatch.setattr(ms, "CHUNK_BYTES", n_positions_per_chunk * wave_bytes)
    jax.clear_caches()  # CHUNK_BYTES is read when a batch function is traced
    try:
        return np.asarray(fn())
    finally:
        jax.clear_caches()


@pytest.mark.parametrize("window", [None, (24, 24)])
@pytest.mark.parametrize("per_chunk", [1, 3, 4])
def test_chunks_change_nothing(case, monkeypatch, window, per_chunk):
    grid, pot, positions = case
    pgrid = grid if window is None else Grid(window, grid.sampling)
    probe = aberrated_probe(pgrid, 200e3, semiangle_cutoff=20.0)
    wave_bytes = int(np.prod(pgrid.gpts)) * 8
    sim = multislice(pot, probe, window=window)
    whole = _with_chunk_bytes(monkeypatch, 1000, wave_bytes, lambda: sim(positions))
    chunked = _with_chunk_bytes(monkeypatch, per_chunk, wave_bytes, lambda: sim(positions))
    assert whole.shape == (7,) + tuple(pgrid.gpts)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=2e-6 * float(whole.max()))
    # and the patterns are real diffraction patterns (each sums to about the probe's 1)
    np.testing.assert_allclose(chunked.sum(axis=(-2, -1)), 1.0, atol=3e-3)


def test_gradient_through_chunks(case, monkeypatch):
    grid, pot, positions = case
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0)
    wave_bytes = int(np.prod(grid.gpts)) * 8

    def grads():
        f = lambda p: jnp.sum(multislice(pot, probe)(p) * jnp.arange(40.0)[None, :, None])  # noqa: E731
        return jax.grad(f)(positions)

    g1 = _with_chunk_bytes(monkeypatch, 1000, wave_bytes, grads)
    g2 = _with_chunk_bytes(monkeypatch, 2, wave_bytes, grads)
    assert np.all(np.isfinite(g1)) and float(np.abs(g1).max()) > 0
    np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-4 * float(np.abs(g1).max()))


def _generic_fresnel(wave, dz, grid, energy, *, tilt=(0.0, 0.0)):
    """The built-in propagator behind a new identity: the simulator takes its generic path."""
    from ptyro_simul.propagator import fresnel

    return fresnel(wave, dz, grid, energy, tilt=tilt)


class _ThirdParty(KernelPropagator):
    """A propagator from elsewhere that declares a kernel (here the Fresnel one)."""

    def kernel(self, dz, grid, energy, *, tilt=(0.0, 0.0), dtype=None):
        from ptyro_simul.propagator import fresnel_kernel

        return fresnel_kernel(dz, grid, energy, tilt=tilt, dtype=dtype or jnp.complex64)


@pytest.mark.parametrize("window", [None, (24, 24)])
def test_far_field_shortcut_matches_the_exit_waves(case, window):
    """The built-in Fresnel path skips the last slice's inverse FFT and the detector's FFT (and
    uses unnormalised FFTs in the loop): its patterns equal |FFT(exit wave)|² summed over modes,
    computed from the exit waves, and those of the generic propagator path, with a tilt and two
    probe modes."""
    from ptyro_simul.fft import fft2c
    from ptyro_simul.probe import partially_coherent_probe

    grid, pot, positions = case
    pgrid = grid if window is None else Grid(window, grid.sampling)
    probe = partially_coherent_probe(pgrid, 200e3, semiangle_cutoff=20.0, focal_spread=30.0, num_focal=2)
    assert probe.num_modes == 2
    sim = multislice(pot, probe, tilt=(3.0, -2.0), window=window)
    fast = np.asarray(sim(positions))
    from_waves = np.asarray(jnp.sum(jnp.abs(fft2c(sim.exit_waves(positions))) ** 2, axis=1))
    generic = np.asarray(multislice(pot, probe, tilt=(3.0, -2.0), window=window, propagator=_generic_fresnel)(positions))
    scale = float(from_waves.max())
    np.testing.assert_allclose(fast, from_waves, rtol=0, atol=3e-6 * scale)
    np.testing.assert_allclose(generic, from_waves, rtol=0, atol=3e-6 * scale)
    # a third-party propagator that declares its kernel gets the same far-field lane as fresnel
    third = ms.multislice.plan(pot, probe, tilt=(3.0, -2.0), window=window, propagator=_ThirdParty(), backend="xla")
    assert isinstance(third.operators[0], tuple)  # (head, last): the far-field split of the kernels
    np.testing.assert_allclose(np.asarray(ms.multislice.apply(third, positions)), from_waves, rtol=0, atol=3e-6 * scale)
    # nothing outside the 2/3-Nyquist band limit, and the probe's intensity is kept inside it
    from ptyro_simul.multislice import bandlimit_mask

    assert float(np.abs(fast * (1 - np.asarray(bandlimit_mask(pgrid)))).max()) <= 1e-6 * scale
    np.testing.assert_allclose(fast.sum(axis=(-2, -1)), 1.0, atol=3e-3)


def test_concurrent_batches_change_nothing(case, monkeypatch):
    """On one CPU device batches run in concurrent streams (one per core, PTYRO_STREAMS): the
    4D-STEM result is the same as one batch at a time."""
    from ptyro_core import ScanPositions
    from ptyro_core.pipeline import device_mesh
    from ptyro_simul.detectors import AnnularDetector, PixelatedDetector
    from ptyro_simul.stem import simulate_4dstem

    grid, pot, _ = case
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0)
    scan = ScanPositions.raster((0.0, 0.0), (3.9, 3.9), (5, 4))
    dets = [PixelatedDetector(), AnnularDetector(30.0, 60.0)]
    mesh = device_mesh(jax.devices()[:1])
    runs = {}
    for streams in ("1", "3"):
        monkeypatch.setenv("PTYRO_STREAMS", streams)
        runs[streams] = simulate_4dstem(pot, probe, scan, detectors=dets, batch_size=3, mesh=mesh, progress=False)
    monkeypatch.delenv("PTYRO_STREAMS")
    runs["arg"] = simulate_4dstem(pot, probe, scan, detectors=dets, batch_size=3, mesh=mesh, progress=False, streams=2)
    for name in runs["1"]:
        assert runs["3"][name].shape == runs["1"][name].shape
        np.testing.assert_array_equal(runs["3"][name], runs["1"][name])
        np.testing.assert_array_equal(runs["arg"][name], runs["1"][name])
    with pytest.raises(PtyroValueError, match="streams: expected a whole number >= 1, got 0"):
        simulate_4dstem(pot, probe, scan, detectors=dets, batch_size=3, mesh=mesh, progress=False, streams=0)


def test_planned_once_per_simulation(case, monkeypatch):
    """4D-STEM with a planned simulator (``multislice``) computes the transmission functions and
    kernels once (``plan``) and every batch applies them: the result equals calling the simulator
    on every batch, ``plan`` runs once however many batches there are, and the run records the
    back end, streams and memory budget it used; a plain simulator component (no ``plan``) is
    built inside the batch function."""
    from ptyro_core import ScanPositions
    from ptyro_simul.detectors import PixelatedDetector
    from ptyro_simul.multislice import Multislice
    from ptyro_simul.stem import simulate_4dstem

    grid, pot, _ = case
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0)
    scan = ScanPositions.raster((0.0, 0.0), (3.9, 3.9), (4, 5))
    calls = []
    real = Multislice.plan
    monkeypatch.setattr(Multislice, "plan", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    record = {}
    got = simulate_4dstem(pot, probe, scan, detectors=[PixelatedDetector()], batch_size=4, progress=False, streams=2, backend="xla",
                          record=record)["pixelated"]  # fmt: skip
    assert len(calls) == 1  # 5 batches, one plan
    assert record["backend"] == "xla" and record["streams"] == 2 and record["memory_budget"] > 0
    sim = multislice(pot, probe)
    expected = np.concatenate([np.asarray(sim(np.asarray(scan.positions)[i : i + 4])) for i in range(0, 20, 4)])
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=0, atol=1e-6 * float(expected.max()))

    built = []

    def plain(potential, probe_, **options):  # no plan(): built only inside the batch function
        built.append(isinstance(potential.array, jax.core.Tracer))
        return multislice(potential, probe_, **options)

    again = simulate_4dstem(pot, probe, scan, detectors=[PixelatedDetector()], batch_size=4, progress=False, simulator=plain)
    assert built and all(built)
    np.testing.assert_allclose(again["pixelated"], got, rtol=0, atol=1e-6 * float(expected.max()))
