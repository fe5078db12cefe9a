"""WDD's fast paths against a plain float64 WDD that deconvolves every spatial frequency on its
own (the published per-Q formula, no mirror pairs, no rolled probes, no real FFT): the mirror
pairs (H(ρ, −Q) = H*(−ρ, Q)), the whole-pixel symmetry of χ_P, the bank of sub-pixel shifts
and the per-Q fallback each give the same object, on even and odd, square and rotated rasters.
"""

import functools

import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from ptyro_core import PtyroValueError
from ptyro_invert import synthetic as syn
from ptyro_invert.direct import wdd as wdd_mod
from ptyro_invert.direct._common import scan_lattice
from ptyro_invert.direct.parallax import _rot

SAMPLING = 0.2  # Å; 16 pixels: a 3.2 Å probe window


@functools.cache
def case(scan: tuple[int, int], step: float, rotation: float = 0.0, gpts: int = 16):
    """A small noise-free dataset over a honeycomb phase, defocus 30 Å."""
    grid, sp, state = syn.setup(gpts=gpts, sampling=SAMPLING, scan=scan, step=step, energy=300e3, semiangle_cutoff=25.0, aberrations={"C10": -30.0})
    ph = syn.hexagonal_phase(tuple(state.object.shape[-2:]), state.sampling, peaks=(0.8, 0.5))
    truth = syn.with_object(state, np.exp(1j * ph))
    pos = None
    if rotation:
        p = np.asarray(state.positions, np.float64)
        pos = (p - p.mean(0)) @ _rot(rotation).T + p.mean(0)
    return syn.simulate(truth, grid, sp, positions=pos), state


def reference_wdd(ds, state, epsilon=0.01):
    """WDD in float64, one spatial frequency at a time, every Q of the scan lattice."""
    a = np.asarray(ds.array, np.float64)
    n = a.shape[2] * a.shape[3]
    h = np.fft.ifft2(np.fft.fft2(a, axes=(0, 1)), axes=(2, 3))  # H(ρ, Q), centred patterns
    p = np.fft.ifftshift(np.asarray(state.probe[0], np.complex128))
    p /= np.sqrt(np.sum(np.abs(p) ** 2))
    p0 = np.fft.fft2(p, norm="ortho")
    nx, ny = p.shape
    rx = (np.fft.fftfreq(nx) * nx * state.sampling[0])[:, None]
    ry = (np.fft.fftfreq(ny) * ny * state.sampling[1])[None, :]
    ramp = np.exp(2j * np.pi * (nx // 2) * np.arange(nx) / nx)[:, None] * np.exp(2j * np.pi * (ny // 2) * np.arange(ny) / ny)[None, :]
    floor = epsilon * np.max(np.abs(np.fft.ifft2(np.abs(p0) ** 2))) ** 2
    lat = scan_lattice(ds.positions, ds.scan_shape)
    q = lat.frequencies()
    d = np.zeros(lat.shape, complex)
    for i, j in np.ndindex(*lat.shape):
        shifted = np.fft.fft2(p * np.exp(2j * np.pi * (q[i, j, 0] * rx + q[i, j, 1] * ry)), norm="ortho")  # P̃(k − Q)
        chi = np.fft.ifft2(np.conj(p0) * shifted)
        d[i, j] = np.sum(h[i, j] * np.conj(ramp * chi) / (n * (np.abs(chi) ** 2 + floor)))
    d /= np.mean(np.sum(a, axis=(2, 3)))
    obj = np.fft.ifft2(d / np.sqrt(np.real(d[0, 0])))
    return obj / np.mean(np.abs(obj))


def spy(monkeypatch, name):
    """Record whether ``wdd_mod.name`` (a deconvolution kernel) was called."""
    calls = []
    real = getattr(wdd_mod, name)
    monkeypatch.setattr(wdd_mod, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


# (scan, step Å, rotation °, detector pixels, the kernel expected): a 3.2 Å window over 9 x 9
# steps of 3.2/18 Å (whole-pixel shifts, Q' = −Q everywhere: the mirrored kernel), 8 x 8 of
# 0.2 Å (whole pixels, but the Nyquist rows' mirrors are not −Q: the bank), 8 x 8 of 0.25 Å
# (shifts in fifths of a pixel: a bank of 25), the same on an odd detector (15 pixels, halves
# of a pixel; the centring ramp complex) and a 7 x 6 raster rotated by 10° (every shift its
# own sub-pixel part: more parts than pairs, one FFT per Q)
PATHS = [
    ((9, 9), 3.2 / 18, 0.0, 16, "_deconvolve_mirrored"),
    ((8, 8), 0.2, 0.0, 16, "_deconvolve_pairs"),
    ((8, 8), 0.25, 0.0, 16, "_deconvolve_pairs"),
    ((8, 8), 0.25, 0.0, 15, "_deconvolve_pairs"),
    ((6, 7), 0.25, 10.0, 16, "_deconvolve_each"),
]


@pytest.mark.parametrize("scan, step, rotation, gpts, kernel", PATHS)
def test_wdd_equals_a_float64_wdd_of_every_frequency(monkeypatch, scan, step, rotation, gpts, kernel):
    ds, state = case(scan, step, rotation, gpts)
    calls = spy(monkeypatch, kernel)
    obj, _ = wdd_mod.wdd_object(ds, state)
    assert calls, kernel
    ref = reference_wdd(ds, state)
    np.testing.assert_allclose(np.asarray(obj), ref, atol=2e-5)
    assert np.std(np.angle(ref)) > 0.03  # an object, not a blank one


def test_the_bank_and_the_per_q_transforms_agree(monkeypatch):
    """The sub-pixel bank (forced) and the per-Q transforms give the same object on a rotated
    raster (every shift its own sub-pixel part)."""
    ds, state = case((6, 7), 0.25, 10.0)
    each, _ = wdd_mod.wdd_object(ds, state)
    monkeypatch.setattr(wdd_mod, "_use_bank", lambda parts, pairs: True)
    calls = spy(monkeypatch, "_deconvolve_pairs")
    bank, _ = wdd_mod.wdd_object(ds, state)
    assert calls
    np.testing.assert_allclose(np.asarray(bank), np.asarray(each), atol=2e-6)


@settings(max_examples=60, deadline=None)
@given(rx=st.integers(2, 9), ry=st.integers(2, 9), data=st.data())
def test_mirror_pairs_cover_every_row_once(rx, ry, data):
    """Every requested row (and its mirror) is in exactly one pair; Q is in the real FFT's half
    and Q' is its mirror (−i mod Rx, −j mod Ry); Q = 0 comes first."""
    rows = np.unique(data.draw(st.lists(st.integers(0, rx * ry - 1), min_size=1, max_size=rx * ry)) + [0])
    first, mirror = wdd_mod.mirror_pairs(rows, (rx, ry))
    i, j = np.divmod(first, ry)
    assert first[0] == 0 and np.all(np.diff(first) > 0) and np.all(j <= ry // 2)
    np.testing.assert_array_equal(mirror, ((-i) % rx) * ry + (-j) % ry)
    both = np.concatenate([first, mirror[mirror != first]])
    assert len(np.unique(both)) == len(both)  # no row twice
    mi, mj = np.divmod(rows, ry)
    closure = np.union1d(rows, ((-mi) % rx) * ry + (-mj) % ry)
    np.testing.assert_array_equal(np.sort(both), closure)


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (4, 8, 2, 2), (5, 7, 3, 4)])
def test_wigner_data_is_the_full_transform_at_the_rows(shape):
    """H(ρ, Q) from the real FFT's half equals the full complex FFT over the scan and inverse
    FFT over the detector (float64) at the requested rows (odd and even scans); the dose is
    the mean total per pattern."""
    from ptyro_core import Dataset4D, Grid

    a = np.random.default_rng(1).random(shape).astype(np.float32) + 0.5
    rx, ry = shape[:2]
    pos = np.stack(np.meshgrid(np.arange(rx) * 0.3, np.arange(ry) * 0.3, indexing="ij"), -1).reshape(-1, 2)
    ds = Dataset4D(a, pos, grid=Grid(gpts=shape[2:], sampling=(0.2, 0.2)), energy=200e3)
    full = np.fft.ifft2(np.fft.fft2(a.astype(np.float64), axes=(0, 1)), axes=(2, 3)).reshape((-1,) + shape[2:])
    first, _ = wdd_mod.mirror_pairs(np.arange(rx * ry), (rx, ry))
    h, dose = wdd_mod.wigner_data(ds, None, first)
    np.testing.assert_allclose(np.asarray(h), full[first], rtol=1e-5, atol=1e-5)
    assert dose == pytest.approx(float(np.mean(np.sum(a, axis=(2, 3)))), rel=1e-6)
    with pytest.raises(PtyroValueError, match=r"rows \[\d+\] lie outside the real FFT's half; expected j <= \d"):
        wdd_mod.wigner_data(ds, None, np.array([ry - 1]))
    every, _ = wdd_mod.wigner_data(ds)  # the half's rows by default
    np.testing.assert_allclose(np.asarray(every), np.asarray(h), rtol=1e-6, atol=1e-6)


def test_whole_pixel_shifts_within_the_tolerance():
    """Shifts off whole pixels by float32 rounding of the positions are whole; one a tenth of a
    pixel off is its own sub-pixel part."""
    ds, state = case((8, 8), 0.2)
    q = np.array([[[1 / 1.6, 0.0], [-1 / 1.6 * (1 + 3e-8), 0.0]], [[1 / 1.6 + 0.1 / 3.2, 0.0], [0.0, 0.0]]])  # Å⁻¹; 3.2 Å window
    whole, cls, parts = wdd_mod._probe_shifts(q, state)
    np.testing.assert_array_equal(whole[..., 0], [[2, -2], [2, 0]])
    assert len(parts) == 2 and cls[0, 0] == cls[0, 1] == cls[1, 1] != cls[1, 0]
    np.testing.assert_allclose(parts[cls[1, 0]], [0.1, 0.0], atol=wdd_mod.SHIFT_TOLERANCE)


def test_bad_q_batch_fails_with_one_clear_line():
    ds, state = case((8, 8), 0.2)
    with pytest.raises(PtyroValueError, match=r"wdd: expected q_batch >= 1 pairs of spatial frequencies, got 0"):
        wdd_mod.wdd(ds, state, q_batch=0)


@pytest.mark.parametrize("kernel", ["_deconvolve_mirrored", "_deconvolve_pairs"])
def test_deconvolution_gradient_in_the_probe(kernel):
    """The deconvolution (JAX) is differentiable in the probe P̃: reverse-mode gradient against
    finite differences, on a few pairs of a small case."""
    from jax.test_util import check_grads

    ds, state = case((9, 9), 3.2 / 18)
    lat = scan_lattice(ds.positions, ds.scan_shape)
    p0 = wdd_mod.probe_fourier(state)
    qf = lat.frequencies().reshape(-1, 2)
    first, mirror = wdd_mod.mirror_pairs(np.arange(1, 6), lat.shape)
    h, _ = wdd_mod.wigner_data(ds, None, first)
    h = h / jnp.max(jnp.abs(h))
    whole, cls, parts = wdd_mod._probe_shifts(np.stack([qf[first], qf[mirror]], 1), state)
    floor = jnp.float32(1e-2)
    n = int(p0.size)
    if kernel == "_deconvolve_mirrored":
        fn = lambda p: wdd_mod._deconvolve_mirrored(h, jnp.asarray(whole[:, 0]), p, floor, n=n, q_batch=1)  # noqa: E731
    else:
        bank = wdd_mod._shift_bank(state, parts)
        fn = lambda p: wdd_mod._deconvolve_pairs(h, jnp.asarray(whole), jnp.asarray(cls), p, bank, floor, n=n, q_batch=2)  # noqa: E731
    check_grads(lambda p: jnp.sum(jnp.abs(fn(p)) ** 2), (p0,), order=1, modes=["rev"], atol=5e-2, rtol=5e-2)
