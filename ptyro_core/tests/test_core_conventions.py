"""The shared conventions (``ptyro_core.conventions``) against what they must be: the Fourier shift
ramp moves a wave by whole pixels exactly as ``numpy.roll`` does and by any amount as the shift
theorem says, composes, keeps the norm and differentiates, and its two 1D factors are the shift
theorem along each axis; the FFT helpers are unitary and
centred; the wavelength matches its non-relativistic limit and the published values; the
aberration names map to the polar symbols with C10 = −defocus; every ptyro_simul copy is this one."""

import jax.numpy as jnp
import numpy as np
import pytest

from ptyro_core import PtyroValueError
from ptyro_core import conventions as cv


@pytest.mark.parametrize(("nx", "ny", "sx", "sy", "seed"), [(7, 5, 3, -2, 0), (8, 9, -11, 4, 1), (16, 3, 0, 7, 2)])
def test_whole_pixel_shift_is_a_roll(nx, ny, sx, sy, seed, x64):
    wave = np.random.default_rng(seed).normal(size=(nx, ny)) + 1j * np.random.default_rng(seed + 1).normal(size=(nx, ny))
    ramp = cv.shift_ramp(jnp.asarray([[sx, sy]], jnp.float64), (nx, ny), dtype=jnp.complex128)[0]
    moved = np.asarray(cv.ifft2(cv.fft2(jnp.asarray(wave)) * ramp))
    np.testing.assert_allclose(moved, np.roll(wave, (sx, sy), axis=(0, 1)), atol=1e-9)


def test_shift_in_angstrom_composes_and_keeps_the_norm(x64):
    gpts, sampling = (24, 20), (0.3, 0.25)
    x = (np.arange(24)[:, None] - 12) * 0.3
    y = (np.arange(20)[None, :] - 10) * 0.25
    wave = jnp.asarray(np.exp(-(x**2 + y**2) / 0.5) + 0j)
    a, b = jnp.asarray([[0.37, -0.41]]), jnp.asarray([[0.9, 0.22]])
    ramp = lambda s: cv.shift_ramp(s, gpts, sampling, jnp.complex128)[0]  # noqa: E731
    np.testing.assert_allclose(np.asarray(ramp(a) * ramp(b)), np.asarray(ramp(a + b)), atol=1e-12)
    moved = cv.ifft2(cv.fft2(wave) * ramp(a))
    assert float(jnp.sum(jnp.abs(moved) ** 2)) == pytest.approx(float(jnp.sum(jnp.abs(wave) ** 2)), rel=1e-12)
    # the centre of mass moves by the shift (a band-limited Gaussian, far from the edges)
    w = np.abs(np.asarray(moved)) ** 2
    assert float((w * x).sum() / w.sum()) == pytest.approx(0.37, abs=1e-6)
    assert float((w * y).sum() / w.sum()) == pytest.approx(-0.41, abs=1e-6)


def test_shift_ramp_gradient(x64):
    from jax.test_util import check_grads

    f = lambda s: jnp.real(jnp.sum(cv.shift_ramp(s, (8, 6), (0.5, 0.4), jnp.complex128) * jnp.arange(48.0).reshape(1, 8, 6)))  # noqa: E731
    check_grads(f, (jnp.asarray([[0.3, -0.2], [1.1, 0.7]]),), order=1, modes=("rev", "fwd"))


def test_shift_ramp_factors_are_the_1d_shift_theorem(x64):
    """Each factor is exp(−2πi k s) along its axis (k from numpy's fftfreq, in the units of the
    sampling), on the host in complex128 and on the device, and differentiates in the shifts."""
    from jax.test_util import check_grads

    s = np.asarray([[0.3, -0.2], [1.1, 0.7], [-2.5, 0.05]])
    kx, ky = np.fft.fftfreq(7, 0.5), np.fft.fftfreq(6, 0.4)
    for host in (True, False):
        ex, ey = cv.shift_ramp_factors(s, (7, 6), (0.5, 0.4), jnp.complex128, host=host)
        np.testing.assert_allclose(np.asarray(ex), np.exp(-2j * np.pi * kx[None] * s[:, :1]), atol=1e-12)
        np.testing.assert_allclose(np.asarray(ey), np.exp(-2j * np.pi * ky[None] * s[:, 1:]), atol=1e-12)

    def f(sh):
        ex, ey = cv.shift_ramp_factors(sh, (7, 6), (0.5, 0.4), jnp.complex128)
        return jnp.real(jnp.sum(ex * jnp.arange(7.0)[None])) + jnp.imag(jnp.sum(ey * (jnp.arange(6.0) ** 2)[None]))

    check_grads(f, (jnp.asarray(s),), order=1, modes=("rev", "fwd"))


def test_fft_helpers_are_unitary_and_centred():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 8)), jnp.complex64)
    assert float(jnp.sum(jnp.abs(cv.fft2(x)) ** 2)) == pytest.approx(float(jnp.sum(jnp.abs(x) ** 2)), rel=1e-5)
    np.testing.assert_allclose(np.asarray(cv.ifft2c(cv.fft2c(x))), np.asarray(x), atol=1e-5)
    delta = jnp.zeros((9, 8), jnp.complex64).at[0, 0].set(1.0)
    flat = np.asarray(cv.fft2c(jnp.ones((9, 8), jnp.complex64)))
    assert np.argmax(np.abs(flat)) == np.ravel_multi_index((4, 4), (9, 8))  # zero frequency at n // 2
    np.testing.assert_allclose(np.abs(np.asarray(cv.fft2(delta))), 1 / np.sqrt(72), rtol=1e-6)


def test_wavelength_limits_and_errors():
    # non-relativistic limit λ = h / sqrt(2 m e E); relativistic correction at 300 keV (Kirkland 2010)
    e = 10.0
    classical = cv.PLANCK / np.sqrt(2 * cv.ELECTRON_MASS * cv.ELEMENTARY_CHARGE * e) * 1e10
    assert cv.energy2wavelength(e) == pytest.approx(classical, rel=1e-5)
    assert cv.energy2wavelength(300e3) == pytest.approx(0.019687, abs=2e-6)
    assert cv.relativistic_mass(511e3 * 0.99999771) == pytest.approx(2 * cv.ELECTRON_MASS, rel=1e-5)
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(PtyroValueError, match="energy: expected a positive acceleration voltage in eV"):
            cv.energy2wavelength(bad)


def test_aberration_names():
    assert cv.normalize_aberrations({"defocus": 50.0, "Cs": 1e4, "astigmatism_angle": 0.3}) == {"C10": -50.0, "C30": 1e4, "phi12": 0.3}
    assert len(cv.POLAR_SYMBOLS) == 14 and all("phi" + s[1:] in cv.AZIMUTHS for s, (_, m) in cv.POLAR_SYMBOLS.items() if m)
    with pytest.raises(PtyroValueError, match="unknown aberration 'C99'"):
        cv.normalize_aberrations({"C99": 1.0})


def test_one_home():
    """ptyro_simul's constants, FFT helpers, probe symbols and shift are these objects."""
    from ptyro_simul import constants, fft, probe

    assert constants.energy2wavelength is cv.energy2wavelength and constants.energy2sigma is cv.energy2sigma
    assert fft.fft2c is cv.fft2c and probe.POLAR_SYMBOLS is cv.POLAR_SYMBOLS and probe.normalize_aberrations is cv.normalize_aberrations
