"""The conventions every part of Ptyrodactyl shares, in one place below simulation and
reconstruction: physical constants, the relativistic electron wavelength, mass and interaction
constant, the unitary FFT helpers, the Fourier shift ramp and the aberration symbols.

Units: Å, eV, mrad (radians inside formulas). Arrays: axis 0 is x; diffraction patterns are
centred (zero frequency at index n // 2); FFTs are unitary (``norm="ortho"``, numpy's sign).

λ = h / sqrt(2 m₀ e E (1 + e E / (2 m₀ c²)))           (200 keV: 0.025079 Å; 300 keV: 0.019687 Å)
σ = 2π m e λ / h², m = m₀ (1 + e E / (m₀ c²))           (200 keV: 7.2884e-4 rad/(V·Å))

Aberrations: polar symbols C_nm (magnitudes, Å) with azimuths phi_nm (radians) for m > 0, up to
5th order; C10 = −defocus (abTEM's convention), C30 = Cs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # JAX is imported where an array helper runs: the scalar conventions (λ, σ) need none
    from jax import Array

from ptyro_core.errors import PtyroValueError

__all__ = [
    "PLANCK",
    "ELECTRON_MASS",
    "ELEMENTARY_CHARGE",
    "SPEED_OF_LIGHT",
    "energy2wavelength",
    "energy2sigma",
    "relativistic_mass",
    "fft2",
    "ifft2",
    "fft2c",
    "ifft2c",
    "centring",
    "shift_ramp",
    "shift_ramp_factors",
    "POLAR_SYMBOLS",
    "AZIMUTHS",
    "ALIASES",
    "normalize_aberrations",
]

# CODATA 2018, SI
PLANCK = 6.62607015e-34  # J s
ELECTRON_MASS = 9.1093837015e-31  # kg
ELEMENTARY_CHARGE = 1.602176634e-19  # C
SPEED_OF_LIGHT = 299792458.0  # m / s


def _check_energy(energy: float) -> float:
    e = float(energy)
    if not math.isfinite(e) or e <= 0:
        raise PtyroValueError(f"energy: expected a positive acceleration voltage in eV, got {energy!r}")
    return e


def energy2wavelength(energy: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration energy in eV."""
    e = _check_energy(energy) * ELEMENTARY_CHARGE
    m0c2 = ELECTRON_MASS * SPEED_OF_LIGHT**2
    return PLANCK / math.sqrt(2 * ELECTRON_MASS * e * (1 + e / (2 * m0c2))) * 1e10


def relativistic_mass(energy: float) -> float:
    """Relativistic electron mass in kg at an acceleration energy in eV."""
    e = _check_energy(energy) * ELEMENTARY_CHARGE
    return ELECTRON_MASS * (1 + e / (ELECTRON_MASS * SPEED_OF_LIGHT**2))


def energy2sigma(energy: float) -> float:
    """Interaction constant σ in rad / (V·Å): transmission t = exp(i σ V_projected[V·Å])."""
    lam = energy2wavelength(energy) * 1e-10  # m
    sigma_si = 2 * math.pi * relativistic_mass(energy) * ELEMENTARY_CHARGE * lam / PLANCK**2  # rad / (V m)
    return sigma_si * 1e-10


# ----------------------------------------------------------------------------- unitary FFTs


def fft2(x: Array) -> Array:
    """Unitary forward FFT over the last two axes (zero frequency at index 0)."""
    import jax.numpy as jnp

    return jnp.fft.fft2(x, norm="ortho")


def ifft2(x: Array) -> Array:
    """Unitary inverse FFT over the last two axes."""
    import jax.numpy as jnp

    return jnp.fft.ifft2(x, norm="ortho")


def fft2c(x: Array) -> Array:
    """Unitary forward FFT with the zero frequency moved to the centre (index n // 2)."""
    import jax.numpy as jnp

    return jnp.fft.fftshift(fft2(x), axes=(-2, -1))


def ifft2c(x: Array) -> Array:
    """Inverse of :func:`fft2c`."""
    import jax.numpy as jnp

    return ifft2(jnp.fft.ifftshift(x, axes=(-2, -1)))


def centring(shape: tuple[int, int], dtype: Any = "float32") -> Any:
    """The ramp c (nx, ny) that centres a far field (the library's far fields and patterns are
    centred: :class:`~ptyro_core.Dataset4D`): ``FFT(ψ · c) = fftshift(FFT(ψ))`` (zero
    frequency at index n // 2), c(x, y) = exp(2πi (nx//2 · x / nx + ny//2 · y / ny)). For even sizes
    it is the real ±1 checkerboard (``dtype``, real); else complex (``dtype``'s complex kind).
    A NumPy array, made on the host (a constant of the programs that use it)."""
    import jax.numpy as jnp
    import numpy as np

    nx, ny = int(shape[0]), int(shape[1])
    if nx % 2 == 0 and ny % 2 == 0:
        sx, sy = 1 - 2 * (np.arange(nx) % 2), 1 - 2 * (np.arange(ny) % 2)
        return np.outer(sx, sy).astype(np.dtype(jnp.finfo(dtype).dtype))
    ramp = lambda n: np.exp(2j * np.pi * (n // 2) * np.arange(n) / n)  # noqa: E731
    return np.outer(ramp(nx), ramp(ny)).astype(np.result_type(np.dtype(jnp.finfo(dtype).dtype), np.complex64))


def shift_ramp(shifts: Any, gpts: tuple[int, int], sampling: tuple[float, float] = (1.0, 1.0), dtype: Any = None, *, host: bool = False) -> Array:
    """The Fourier shift ramp exp(−2πi k·s) (b, nx, ny) in FFT order for shifts (b, 2) (in the
    units of ``sampling``: Å, or pixels with the default): multiplying a wave's FFT by it moves
    the wave by +s (periodically). Separable: the outer product of :func:`shift_ramp_factors`,
    built in the real dtype that matches ``dtype`` (differentiable with respect to the shifts).
    ``host``: built with NumPy in float64 and returned as a NumPy array of ``dtype``, for
    constants made once (an eager JAX evaluation compiles a program per operation, and the
    process keeps them)."""
    import jax.numpy as jnp

    dtype = jnp.complex64 if dtype is None else dtype
    ex, ey = shift_ramp_factors(shifts, gpts, sampling, dtype, host=host)
    ramp = ex[:, :, None] * ey[:, None, :]
    return ramp.astype(dtype) if host else ramp


def shift_ramp_factors(shifts: Any, gpts: tuple[int, int], sampling: tuple[float, float] = (1.0, 1.0), dtype: Any = None, *,
                       host: bool = False) -> tuple[Array, Array]:  # fmt: skip
    """The two 1D factors (b, nx) and (b, ny) of :func:`shift_ramp`, exp(−2πi kx·sx) and
    exp(−2πi ky·sy): ``ex[:, :, None] * ey[:, None, :]`` is the ramp. Where many shifts are used
    once each (a batch's positions), the factors are what is kept: b·(nx + ny) sines and cosines
    instead of b·nx·ny values, and the product is formed where the ramp is used (by XLA inside
    the multiplication it feeds, without a sine or a cosine). ``host``: as for ``shift_ramp``
    (complex128 factors)."""
    import jax.numpy as jnp
    import numpy as np

    xp: Any = np if host else jnp
    dtype = jnp.complex64 if dtype is None else dtype
    real = np.float64 if host else jnp.real(jnp.zeros((), dtype)).dtype
    work = np.complex128 if host else dtype
    kx = xp.fft.fftfreq(int(gpts[0]), float(sampling[0])).astype(real)
    ky = xp.fft.fftfreq(int(gpts[1]), float(sampling[1])).astype(real)
    s = xp.asarray(shifts).astype(real)
    ex = xp.exp(-2j * math.pi * kx[None, :] * s[:, 0:1]).astype(work)  # (b, nx)
    ey = xp.exp(-2j * math.pi * ky[None, :] * s[:, 1:2]).astype(work)  # (b, ny)
    return ex, ey


# ----------------------------------------------------------------------------- aberrations

#: (n, m) of every magnitude symbol C_nm up to 5th order; each with m > 0 has an azimuth phi_nm.
POLAR_SYMBOLS: dict[str, tuple[int, int]] = {
    "C10": (1, 0), "C12": (1, 2),
    "C21": (2, 1), "C23": (2, 3),
    "C30": (3, 0), "C32": (3, 2), "C34": (3, 4),
    "C41": (4, 1), "C43": (4, 3), "C45": (4, 5),
    "C50": (5, 0), "C52": (5, 2), "C54": (5, 4), "C56": (5, 6),
}  # fmt: skip
AZIMUTHS: tuple[str, ...] = tuple("phi" + s[1:] for s, (_, m) in POLAR_SYMBOLS.items() if m > 0)
#: common names accepted as aliases (abTEM's): defocus = -C10, Cs = C30, C5 = C50, astigmatism = C12
ALIASES: dict[str, str] = {"Cs": "C30", "C5": "C50", "astigmatism": "C12", "astigmatism_angle": "phi12", "coma": "C21", "coma_angle": "phi21"}


def normalize_aberrations(aberrations: Mapping[str, Any] | None) -> dict[str, Any]:
    """Map aliases and ``defocus`` to polar symbols; reject unknown names with the known ones."""
    out: dict[str, Any] = {}
    for key, value in (aberrations or {}).items():
        if key == "defocus":
            out["C10"] = out.get("C10", 0.0) - value
            continue
        sym = ALIASES.get(key, key)
        if sym not in POLAR_SYMBOLS and sym not in AZIMUTHS:
            known = ", ".join([*POLAR_SYMBOLS, *AZIMUTHS, "defocus", *ALIASES])
            raise PtyroValueError(f"aberrations: unknown aberration {key!r}; expected one of {known}")
        out[sym] = out.get(sym, 0.0) + value
    return out
