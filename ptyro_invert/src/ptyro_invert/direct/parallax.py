"""Tilt-corrected bright field (parallax): the bright-field pixels' images aligned by their
cross-correlation shifts, the shifts fitted to the aberration function, and the aligned images
summed on the object grid (upsampled) with the contrast transfer corrected.

Physics (weak phase object, thin specimen; ``_common`` for G): for a detector pixel k inside
the bright-field disc and Q small against the aperture,

    G(k, Q) ≈ 2 |P̃(k)|² sin χ(Q) Φ(Q) e^{i Q·∇χ(k)},

so the pixel's image is the object's phase-contrast image 2 sin χ ⊛ φ shifted by
s(k) = −∇ₖχ(k) / 2π (Å; for defocus alone s = λ·Δf·k). The shifts are linear in the
aberration coefficients: fitting them gives C10 (= −defocus), C12/φ12, C21/φ21, C23/φ23 and
C30 in the project's polar notation (azimuths in radians), and the scan's rotation relative to
the detector (degrees, the ``[scan] rotation`` convention of :mod:`ptyro_invert.calibrate`:
the raster lies rotated by θ in the detector's frame; θ and θ + 180° with all coefficients
negated fit equally, θ is reported in (−90°, 90°]).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Dataset4D, PtyroValueError, ReconState, get, replace
from ptyro_core.conventions import POLAR_SYMBOLS
from ptyro_core.conventions import energy2wavelength as wavelength
from ptyro_invert.direct._common import Lattice, check_inputs, pattern_pixels, scan_lattice

__all__ = [
    "AberrationFit",
    "ORDERS",
    "DEFAULT_ORDERS",
    "chi_basis",
    "bin_images",
    "measure_shifts",
    "measure_and_fit",
    "fit_shifts",
    "fit_aberrations",
    "fit_transfer",
    "refine_optics",
    "transfer_wanted",
    "tcbf_image",
    "given_optics",
    "parallax",
    "fitted_probe",
    "write_optics",
    "bf_semiangle",
]

#: (symbol, n, m) of the aberrations the shifts can be fitted to, in the polar notation.
ORDERS: dict[str, tuple[int, int]] = {s: POLAR_SYMBOLS[s] for s in ("C10", "C12", "C21", "C23", "C30")}
#: fitted by default: C30's shifts (∝ |k|²k) correlate with defocus's (∝ k) over a bright-field
#: disc, so C30 is fitted only when asked for (it then needs a wide field and a large aperture).
DEFAULT_ORDERS = ("C10", "C12", "C21", "C23")


class AberrationFit(NamedTuple):
    """What :func:`fit_aberrations` found.

    ``aberrations``: polar notation (Å; azimuths ``phiNM`` in radians), ready for a probe;
    ``rotation`` (degrees) and ``transpose``: the raster's frame in the detector's (as
    :func:`ptyro_invert.calibrate.scan_rotation` reports it; 0 / False when the positions were
    already right); ``frequencies`` (n, 2) Å⁻¹ of the bright-field bins, ``shifts`` (n, 2) Å
    measured (detector frame, mean removed) and ``model_shifts`` fitted; ``rms`` the rms
    residual in Å; ``evidence``: how much better these optics explain the bins' images than
    optics picked at random, the exact-transfer objective J of the fit over the median J of the
    search's defocus-only optics (:func:`refine_optics`; nan where it did not search): about 1.4
    on noise alone, 6.8-144 on the weak-phase, honeycomb and SrTiO3 cases of
    ``benchmarks/direct`` (measured). Where the search found the optics, the shifts are aliased
    and ``rms`` says nothing of the fit: ``evidence`` does."""

    aberrations: dict[str, float]
    rotation: float
    transpose: bool
    frequencies: np.ndarray
    shifts: np.ndarray
    model_shifts: np.ndarray
    rms: float
    evidence: float = float("nan")

    @property
    def defocus(self) -> float:
        """Δf = −C10 in Å."""
        return -float(self.aberrations.get("C10", 0.0))


def _terms(orders: tuple[str, ...]) -> list[tuple[str, int, int, str]]:
    out = []
    for sym in orders:
        if sym not in ORDERS:
            raise PtyroValueError(f"fit_aberrations: unknown aberration {sym!r}; expected some of {', '.join(ORDERS)}")
        n, m = ORDERS[sym]
        out += [(sym, n, m, "cos")] + ([(sym, n, m, "sin")] if m > 0 else [])
    return out


def chi_basis(k: Any, lam: float, orders: tuple[str, ...] = tuple(ORDERS)) -> jax.Array:
    """χ's basis functions at k (…, 2) Å⁻¹: (…, nb), with χ = basis · c for the cartesian
    coefficients c (C·cos mφ_nm, C·sin mφ_nm per aberration with m > 0, C for m = 0), each
    term (2π/λ)(λ|k|)^{n+1}/(n+1)·{cos, sin}(mφ) written as a polynomial in kx, ky (so that
    its gradient is smooth at k = 0)."""
    k = jnp.asarray(k)
    z = k[..., 0] + 1j * k[..., 1]
    r2 = k[..., 0] ** 2 + k[..., 1] ** 2
    cols = []
    for _, n, m, part in _terms(orders):
        zm = z**m
        poly = (jnp.real(zm) if part == "cos" else jnp.imag(zm)) * r2 ** ((n + 1 - m) // 2)
        cols.append(2 * math.pi / lam * lam ** (n + 1) / (n + 1) * poly)
    return jnp.stack(cols, axis=-1)


def _shift_basis(k: np.ndarray, lam: float, orders: tuple[str, ...]) -> np.ndarray:
    """(n, 2, nb): s(k) = −∇χ(k)/2π for each basis coefficient of :func:`chi_basis`, by the
    analytic gradient of Re/Im[zᵐ]·|k|^{2p} (z = kx + i ky, 2p = n + 1 − m)."""
    k = np.asarray(k, np.float64)
    z = k[:, 0] + 1j * k[:, 1]
    r2 = k[:, 0] ** 2 + k[:, 1] ** 2
    cols = []
    for _, n, m, part in _terms(orders):
        p = (n + 1 - m) // 2
        zm = z**m
        dzm = m * z ** (m - 1) if m > 0 else np.zeros_like(z)
        rp = r2**p
        drp = p * r2 ** (p - 1) if p > 0 else np.zeros_like(r2)
        take = np.real if part == "cos" else np.imag
        gx = take(dzm) * rp + take(zm) * drp * 2 * k[:, 0]
        gy = take(1j * dzm) * rp + take(zm) * drp * 2 * k[:, 1]
        scale = 2 * math.pi / lam * lam ** (n + 1) / (n + 1)
        cols.append(np.stack([gx, gy], -1) * scale)
    return -np.stack(cols, -1) / (2 * math.pi)


def _rot(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


_SWAP = np.array([[0.0, 1.0], [1.0, 0.0]])


def _design(basis: np.ndarray) -> np.ndarray:
    """(2n, nb + 2): the basis (n, 2, nb) and a constant shift, one row per shift component."""
    n, _, nb = basis.shape
    const = np.zeros((n, 2, 2))
    const[:, 0, 0] = const[:, 1, 1] = 1.0
    return np.concatenate([basis, const], axis=-1).reshape(2 * n, nb + 2)


def _lstsq(basis: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted fit s ≈ basis·c + t (t a constant shift): (c, weighted residual sum)."""
    a = _design(basis)
    sw = np.repeat(np.sqrt(w), 2)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], s.reshape(-1) * sw, rcond=None)
    res = float(np.sum((a @ coef - s.reshape(-1)) ** 2 * np.repeat(w, 2)))
    return coef, res


def _polar(coef: np.ndarray, orders: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    terms = _terms(orders)
    i = 0
    while i < len(terms):
        sym, n, m, _ = terms[i]
        if m == 0:
            out[sym] = float(coef[i])
            i += 1
        else:
            a, b = float(coef[i]), float(coef[i + 1])
            out[sym] = math.hypot(a, b)
            out["phi" + sym[1:]] = (math.atan2(b, a) / m) % (2 * math.pi / m)
            i += 2
    return out


def fit_shifts(frequencies: Any, shifts: Any, energy: float, *, weights: Any = None, orders: tuple[str, ...] = DEFAULT_ORDERS,
               fit_rotation: bool = True, transpose: bool | None = False) -> AberrationFit:  # fmt: skip
    """Fit measured image shifts (n, 2) Å (in the raster's frame as the positions give it) of
    bright-field pixels at detector frequencies (n, 2) Å⁻¹ to s = −∇χ/2π (plus a constant
    shift), with ``fit_rotation`` also over the raster's rotation (exact: the residual is a
    quadratic form in cos θ and sin θ, minimised in closed form). ``transpose`` is given (True / False) or fitted (None). A
    transposed raster's shifts s = S·M·k (S the swap, M symmetric: defocus and two-fold
    astigmatism) are, in a rotated frame, again a symmetric field with M's eigenvalues
    (λ₁, −λ₂): defocus and astigmatism exchange their sizes. So from the linear shifts alone
    the two frames fit equally; the fitted transpose takes the frame in which |C10| exceeds
    C12 (the usual case: a defocus chosen to make the parallax, a small residual astigmatism;
    the higher orders do not decide it reliably on noisy shifts, measured). Where astigmatism may
    exceed the defocus, give ``transpose`` (e.g. from
    :func:`ptyro_invert.calibrate.scan_rotation`). See :class:`AberrationFit`."""
    k = np.asarray(frequencies, np.float64)
    s = np.asarray(shifts, np.float64)
    if k.ndim != 2 or k.shape[1] != 2 or s.shape != k.shape:
        raise PtyroValueError(f"fit_shifts: expected frequencies and shifts of shape (n, 2), got {k.shape} and {s.shape}")
    nb = len(_terms(orders))
    if k.shape[0] * 2 < nb + 2 + 4:
        raise PtyroValueError(f"fit_shifts: {k.shape[0]} bright-field bins are too few to fit {', '.join(orders)}; use a smaller bin_size")
    w = np.ones(k.shape[0]) if weights is None else np.asarray(weights, np.float64)
    lam = wavelength(energy)
    basis = _shift_basis(k, lam, orders)

    def residual(deg: float, tr: bool) -> float:
        m = _rot(deg) @ (_SWAP if tr else np.eye(2))
        return _lstsq(basis, s @ m.T, w)[1]

    def best_angle(tr: bool) -> tuple[float, float, bool]:
        """The exact best rotation: R(θ)·u = cos θ·u + sin θ·u⊥ (u the shifts in the frame
        ``tr``), so the fit's residual is a cos² θ + 2b cos θ sin θ + c sin² θ with
        [[a, b], [b, c]] the Gram matrix of the residuals of u and u⊥ (one linear fit each)."""
        if not fit_rotation:
            return residual(0.0, tr), 0.0, tr
        u = s @ (_SWAP if tr else np.eye(2)).T
        sw = np.repeat(np.sqrt(w), 2)[:, None]
        design = _design(basis) * sw
        y = np.stack([u.reshape(-1), np.stack([-u[:, 1], u[:, 0]], -1).reshape(-1)], 1) * sw
        r = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        (a, b), (_, c) = r.T @ r
        ang = math.degrees(0.5 * (math.atan2(b, 0.5 * (a - c)) + math.pi))
        return residual(ang, tr), ang, tr

    if transpose is None:  # the frame in which the defocus outweighs the two-fold astigmatism
        best = max((best_angle(False), best_angle(True)), key=lambda fr: _defocus_dominance(basis, s, w, fr[1], fr[2], orders))
    else:
        best = best_angle(bool(transpose))
    _, ang, tr = best
    ang = (ang + 90.0) % 180.0 - 90.0
    if ang == -90.0:
        ang = 90.0
    m = _rot(ang) @ (_SWAP if tr else np.eye(2))
    s_det = s @ m.T
    coef, res = _lstsq(basis, s_det, w)
    model = np.einsum("nij,j->ni", basis, coef[:nb]) + coef[nb:]
    rms = math.sqrt(res / (2 * np.sum(w)))
    return AberrationFit(_polar(coef[:nb], orders), float(ang), bool(tr), k, s_det - coef[nb:], model - coef[nb:], rms)


def _defocus_dominance(basis: np.ndarray, s: np.ndarray, w: np.ndarray, deg: float, tr: bool, orders: tuple[str, ...]) -> float:
    """|C10| − C12 of the fit in the frame (``deg``, ``tr``)."""
    m = _rot(deg) @ (_SWAP if tr else np.eye(2))
    ab = _polar(_lstsq(basis, s @ m.T, w)[0][: basis.shape[-1]], orders)
    return abs(ab.get("C10", 0.0)) - ab.get("C12", 0.0)


def _bins(
    mean: np.ndarray, grid_gpts: tuple[int, int], recip: tuple[float, float], threshold: float, bin_size: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Bright-field pixels grouped into bin_size² bins: (flat pixel indices, bin of each,
    bin frequencies (nb, 2) Å⁻¹, pixels per bin, the bin size)."""
    nx, ny = grid_gpts
    bf = mean > threshold * mean.max()
    ix = np.fft.fftfreq(nx) * nx
    iy = np.fft.fftfreq(ny) * ny
    IX, IY = np.meshgrid(ix, iy, indexing="ij")
    if bin_size is None:
        radius = math.sqrt(bf.sum() / math.pi)
        bin_size = max(1, int(radius // 5))
    if int(bin_size) < 1:
        raise PtyroValueError(f"parallax: expected bin_size >= 1 detector pixels, got {bin_size}")
    b = int(bin_size)
    keys = np.stack([np.floor(IX / b + 0.5), np.floor(IY / b + 0.5)], -1)[bf]
    uniq, which = np.unique(keys, axis=0, return_inverse=True)
    which = which.reshape(-1)
    pix = np.flatnonzero(bf.reshape(-1))
    wts = mean.reshape(-1)[pix]
    kvec = np.stack([IX.reshape(-1)[pix] * recip[0], IY.reshape(-1)[pix] * recip[1]], -1)
    counts = np.bincount(which, minlength=len(uniq)).astype(np.float64)
    kb = np.stack([np.bincount(which, wts * kvec[:, c], len(uniq)) for c in range(2)], -1) / np.bincount(which, wts, len(uniq))[:, None]
    return pix, which, kb, counts, b


@jax.jit
def _align(F: jax.Array, f: jax.Array, s: jax.Array, weight: jax.Array) -> jax.Array:
    """New shifts (nb, 2) in steps of each image against the sum of all others aligned by
    ``s``, over the spatial frequencies ``weight`` (nb, rx, ry) admits for each bin (its
    double-overlap disc, see :func:`measure_shifts`): the cross-correlation's integer peak
    refined by Newton steps on the continuous correlation Re Σ X e^{2πi f·s} (batched over
    the bins, the 2 × 2 Newton systems solved in closed form)."""
    fi, fj = f[:, 0, 0], f[0, :, 1]  # the raster's frequencies along each axis: e^{2πi f·s} is separable

    def ramp(p: jax.Array) -> jax.Array:
        return jnp.exp(2j * jnp.pi * p[:, 0, None, None] * fi[None, :, None]) * jnp.exp(2j * jnp.pi * p[:, 1, None, None] * fj[None, None, :])

    aligned = F * ramp(s) * weight
    ref = jnp.sum(aligned, axis=0)
    X = F * jnp.conj(ref[None] - aligned) * weight  # each against the others: no pull towards its own last shift
    nb, nx, ny = X.shape
    cc = jnp.real(jnp.fft.ifft2(X)).reshape(nb, -1)
    i = jnp.argmax(cc, axis=1)
    size = jnp.asarray([[nx, ny]], f.dtype)
    p = jnp.stack([i // ny, i % ny], -1).astype(f.dtype)
    p = jnp.where(p > size / 2, p - size, p)
    fx, fy = f[None, ..., 0], f[None, ..., 1]
    for _ in range(4):
        e = X * ramp(p)
        # gradient 2π Re Σ i e f and Hessian −4π² Re Σ e f fᵀ of the correlation at p
        er, ei = jnp.real(e), jnp.imag(e)
        gx, gy = -2 * jnp.pi * jnp.sum(ei * fx, axis=(1, 2)), -2 * jnp.pi * jnp.sum(ei * fy, axis=(1, 2))
        hxx = -4 * jnp.pi**2 * jnp.sum(er * fx * fx, axis=(1, 2))
        hxy = -4 * jnp.pi**2 * jnp.sum(er * fx * fy, axis=(1, 2))
        hyy = -4 * jnp.pi**2 * jnp.sum(er * fy * fy, axis=(1, 2))
        det = hxx * hyy - hxy**2 - 1e-12
        step = jnp.stack([(hyy * gx - hxy * gy) / det, (hxx * gy - hxy * gx) / det], -1)
        p = p - jnp.clip(step, -0.5, 0.5)  # stay on the integer peak
    return p - jnp.mean(p, axis=0, keepdims=True)


def _monomials(kn: np.ndarray, degree: int) -> np.ndarray:
    """(n, nm): kx^a ky^b for 1 <= a + b <= ``degree``."""
    return np.stack([kn[:, 0] ** (d - j) * kn[:, 1] ** j for d in range(1, degree + 1) for j in range(d + 1)], -1)


@jax.jit
def _coherence(c: jax.Array, Fq: jax.Array, fq: jax.Array, mono: jax.Array) -> jax.Array:
    """−Σ_Q |Σ_b Fq_b(Q) e^{2πi Q·s_b}|² / Σ |Fq|² with s = mono @ c (nb, 2) in steps, over the
    frequencies ``fq`` (nq, 2) (cycles per step) of the bins' weighted scan FFTs ``Fq`` (nb, nq)."""
    s = mono @ c.reshape(mono.shape[1], 2)
    a = jnp.sum(Fq * jnp.exp(2j * jnp.pi * (s @ fq.T)), axis=0)
    return -jnp.sum(jnp.abs(a) ** 2) / jnp.sum(jnp.abs(Fq) ** 2)


@jax.jit
def _coherence_newton(c: jax.Array, Fq: jax.Array, fq: jax.Array, mono: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(value, gradient, Hessian) of :func:`_coherence` in ``c``, analytic: with
    a_b = Fq_b e^{2πi Q·s_b} and A = Σ_b a_b, ∂a_b/∂s_b = 2πi Q a_b, so
    ∂v/∂s_bi = −(2/N) Re Σ_Q A* 2πi Q_i a_b and
    ∂²v/∂s_bi∂s_b'j = −(8π²/N) Re Σ_Q Q_i Q_j a_b a_b'* + δ_bb' (8π²/N) Re Σ_Q Q_i Q_j A* a_b,
    taken to c through s = mono @ c (one pass over the data, no automatic differentiation)."""
    nm = mono.shape[1]
    norm = jnp.sum(jnp.abs(Fq) ** 2)
    s = mono @ c.reshape(nm, 2)
    a = Fq * jnp.exp(2j * jnp.pi * (s @ fq.T))  # (nb, nq)
    A = jnp.sum(a, axis=0)
    val = -jnp.sum(jnp.abs(A) ** 2) / norm
    ca = jnp.conj(A)[None] * a
    gs = -2.0 / norm * jnp.real(2j * jnp.pi * (ca @ fq))  # (nb, 2)
    g = (mono.T @ gs).reshape(-1)
    V = jnp.einsum("bm,bq,qi->miq", mono.astype(a.dtype), a, fq.astype(a.dtype)).reshape(2 * nm, -1)
    h1 = -8 * jnp.pi**2 / norm * jnp.real(V @ jnp.conj(V).T)
    D = jnp.real(jnp.einsum("bq,qi,qj->bij", ca, fq.astype(a.dtype), fq.astype(a.dtype)))  # (nb, 2, 2)
    h2 = 8 * jnp.pi**2 / norm * jnp.einsum("bm,bn,bij->minj", mono, mono, D).reshape(2 * nm, 2 * nm)
    return val, g, h1 + h2


def _damped_newton(vgh: Any, value: Any, c: np.ndarray, steps: int, tol: float, rtol: float = 0.0, first: Any = None) -> np.ndarray:
    """Minimise from ``c`` by Levenberg–Marquardt-damped Newton steps: ``vgh(c)`` gives (value,
    gradient, Hessian), ``value(c)`` the value alone (for trial steps). A step is taken only if
    it does not raise the value (the damping grows tenfold until it does, up to 1e6 × the
    Hessian's largest diagonal; a refused or non-finite step ends the search with the last
    accepted point); stops after ``steps`` steps, one whose largest component is below ``tol`` or
    one that lowered the value by at most ``rtol`` × its size. ``first``: ``vgh(c)`` if known."""
    c = np.asarray(c, np.float64)
    val, g, h = vgh(c) if first is None else first
    mu = 1e-3
    eye = np.eye(len(c))
    for _ in range(int(steps)):
        scale = np.abs(np.diag(h)).max()
        while True:
            step = np.linalg.solve(h + mu * scale * eye + 1e-12 * eye, -g)
            trial = c + step
            tval = value(trial)
            if tval <= val or mu > 1e6:
                break
            mu *= 10
        if not tval <= val:  # refused (or not finite): the last accepted point stands
            break
        c, mu, gain = trial, max(mu / 10, 1e-6), val - tval
        if float(np.max(np.abs(step))) < tol or (rtol > 0 and gain <= rtol * abs(val)):  # converged
            break
        val, g, h = vgh(c)
    return c


def _refine(Fq: jax.Array, fq: jax.Array, kn: np.ndarray, s: np.ndarray, w: np.ndarray, degree: int, steps: int = 30) -> np.ndarray:
    """The shifts (nb, 2) in steps of the polynomial field of ``degree`` in the normalised bin
    frequencies ``kn`` that maximises the bins' coherent sum (:func:`_coherence` over the
    weighted scan FFTs ``Fq`` (nb, nq) at the frequencies ``fq`` (nq, 2)), started from the
    weighted least-squares field through ``s`` (Levenberg–Marquardt-damped Newton steps with
    the analytic Hessian, :func:`_coherence_newton`)."""
    mono = np.concatenate([_monomials(kn, degree), np.ones((len(kn), 1))], 1)
    sw = np.sqrt(w)[:, None]
    c0 = np.linalg.lstsq(mono * sw, s * sw, rcond=None)[0][:-1]
    mono_j = jnp.asarray(mono[:, :-1], jnp.float32)

    def vgh(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        v, g, h = _coherence_newton(jnp.asarray(x, jnp.float32), Fq, fq, mono_j)
        return float(v), np.asarray(g, np.float64), np.asarray(h, np.float64)

    c = _damped_newton(vgh, lambda x: float(_coherence(jnp.asarray(x, jnp.float32), Fq, fq, mono_j)), c0.reshape(-1), steps, 1e-4)
    out = mono[:, :-1] @ np.asarray(c, np.float64).reshape(-1, 2)
    return out - out.mean(0)


def _window(shape: tuple[int, int], alpha: float, shifts: Any = None, shrink: float = 1.0) -> jax.Array:
    """A round Tukey window on the raster (the inscribed ellipse scaled by ``shrink``, its
    outer ``alpha`` of the radius a cosine taper; ``alpha`` 0: ones): (nx, ny), or with
    ``shifts`` (nb, 2) in steps one window per shift, moved by it (nb, nx, ny). Round so that
    its bias of the shifts is the same in every direction (a square one's differs along the
    axes and the diagonals: a spurious two-fold astigmatism)."""
    nx, ny = shape
    s = jnp.zeros((1, 2), jnp.float32) if shifts is None else jnp.asarray(shifts, jnp.float32)
    x = ((jnp.arange(nx) + 0.5)[None, :, None] - s[:, 0, None, None]) / nx * 2 - 1
    y = ((jnp.arange(ny) + 0.5)[None, None, :] - s[:, 1, None, None]) / ny * 2 - 1
    r = jnp.sqrt(x**2 + y**2) / shrink
    a = jnp.maximum(alpha, 1e-6)
    t = jnp.clip((r - (1 - a)) / a, 0.0, 1.0)
    w = jnp.where(alpha > 0, 0.5 * (1 + jnp.cos(jnp.pi * t)), 1.0)
    return w[0] if shifts is None else w


REFINE_PASSES = 2
#: scans with fewer steps across than this get no guard band (:func:`measure_shifts`)
SMALL_SCAN = 32
#: nor do fields whose bright-field disc is fewer frequency steps (1/field) in radius than this:
#: there the guard would empty most discs (SrTiO3, 2 x 2 cells, 7.8 Å field, 20 mrad at 200 kV:
#: 6 steps; the guard's 2 steps left C12 at 28 Å for 0.5 Å without it, measured)
GUARD_MIN_DISC_STEPS = 13.0


def bin_images(dataset: Dataset4D, *, threshold: float = 0.5, bin_size: int | None = None, mesh: Any = None,
               ) -> tuple[np.ndarray, np.ndarray, Lattice, jax.Array, np.ndarray, int]:  # fmt: skip
    """The bright-field bins' contrast images: (bin frequencies (nb, 2) Å⁻¹, pixels per bin
    (nb,), the scan lattice, contrast (nb, Rx, Ry) (each bin's image over its mean, minus 1),
    the mean pattern (FFT order), the bin size in pixels). Pixels with mean intensity above
    ``threshold`` × the maximum are the bright field, summed in ``bin_size``² bins (default:
    about 10 bins across the disc); only those pixels are gathered from the patterns."""
    lat = scan_lattice(dataset.positions, dataset.scan_shape, who="parallax")
    mean = np.fft.ifftshift(_mean_pattern(dataset))
    pix, which, kb, counts, b = _bins(mean, dataset.grid.gpts, dataset.grid.reciprocal_sampling, threshold, bin_size)
    nb = len(counts)
    if nb < 7:
        raise PtyroValueError(f"parallax: {nb} bright-field bins are too few to fit the shifts' model (at least 7); use a smaller bin_size")
    vals, _ = pattern_pixels(dataset, pix, mesh)  # (Rx, Ry, n)
    rx, ry = dataset.scan_shape
    imgs = _bin_sum(vals.reshape(rx * ry, -1), jnp.asarray(which), nb).reshape(nb, rx, ry)
    return kb, counts, lat, imgs / jnp.mean(imgs, axis=(1, 2), keepdims=True) - 1.0, mean, b


@functools.partial(jax.jit, static_argnums=2)
def _bin_sum(vals: jax.Array, which: jax.Array, nb: int) -> jax.Array:
    return jax.ops.segment_sum(vals.T, which, nb)


def _windowed(contrast: jax.Array, s: Any, alpha: float, genuine: np.ndarray) -> jax.Array:
    """The scan FFTs (nb, rx, ry) of the bins' contrast images, each windowed by the round
    Tukey window (:func:`_window`) MOVED with its image by its shift ``s`` (nb, 2) in steps and
    shrunk by the largest shift of the ``genuine`` bins, so that their windows stay inside the
    scan: aligned, all images carry the same window, which then biases no relative shift (a
    window fixed on the raster does, see :func:`measure_shifts`) and keeps the scan's edges
    out. Each image's windowed mean is removed. ``alpha`` 0: no window."""
    s = np.asarray(s, np.float64)
    s = s - s[genuine].mean(0) if genuine.any() else s - s.mean(0)
    big = np.abs(s[genuine]).max(0) if genuine.any() else np.zeros(2)
    shrink = max(1.0 - 2.0 * max(big[0] / contrast.shape[1], big[1] / contrast.shape[2]), 0.25)
    return _windowed_fft(contrast, jnp.asarray(s, jnp.float32), float(alpha), shrink)


@jax.jit
def _windowed_fft(contrast: jax.Array, s: jax.Array, alpha: float, shrink: float) -> jax.Array:
    w = _window((contrast.shape[1], contrast.shape[2]), alpha, s, shrink)
    cw = contrast * w
    area = jnp.maximum(jnp.sum(w, axis=(1, 2), keepdims=True), 1e-6)  # a window between the raster's points: no contrast, no NaN
    return jnp.fft.fft2(cw - jnp.sum(cw, axis=(1, 2), keepdims=True) / area * w)


def measure_shifts(dataset: Dataset4D, *, threshold: float = 0.5, bin_size: int | None = None, iterations: int = 3,
                   lowpass: float = 0.35, fit_model: bool | str | tuple[str, ...] | None = "linear", window: float = 0.25, degree: int | None = 2, mesh: Any = None,
                   guard: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, Lattice, Any]:  # fmt: skip
    """Shifts of the bright-field bins' images: (bin frequencies (n, 2) Å⁻¹, shifts (n, 2) in
    Å in the raster's frame, pixels per bin (n,), the lattice, the bins' contrast images
    (n, Rx, Ry), see :func:`bin_images`).

    Pixels with mean intensity above ``threshold`` × the maximum are the bright field, summed in
    ``bin_size``² bins (default: about 10 bins across the disc). Each pass aligns every bin
    against the sum of all others aligned by the previous pass; between passes the shifts are
    replaced by the fit of ``fit_model`` ("linear": s = N·k + t with any 2 × 2 N, which holds
    defocus, two-fold astigmatism and the raster's rotation and transpose; a tuple of
    aberration symbols: those, unrotated; None: no model), robust when far from converged, so
    that large defocus converges from zero shifts. What makes the shifts unbiased:

    - each bin's images are compared only at the spatial frequencies Q where both of its
      sidebands are in the bright field (|Q| < k_α − |k| − the bin's half width): there the
      weak-phase transfer is 2 sin χ(Q) e^{iQ·∇χ(k)} for a quadratic χ, the same real
      transfer for every bin times a pure shift; where one sideband is missing the transfer
      gains a Hilbert-like phase (±π/2 − χ(Q), odd in Q) that pulls the peak outwards;
    - the images are windowed (a round Tukey window, :func:`_window`, tapering the outer
      ``window`` of its radius) before their FFT over the scan: the scan's non-periodic edges
      do not move with the image and would pull every correlation peak towards zero shift (an
      underestimated defocus). Each bin's window moves with its image (by its current shift,
      :func:`_windowed`), so that aligned, all images carry the same window: a window fixed on
      the raster differs between the aligned images by their relative shifts, which biased
      |C10| outwards by 5.5 % on a 10 Å field at 100 Å defocus (3.3 % at 12 Å, 0.8 % at 20 Å,
      noise-free; +0.5 / −0.4 / −0.3 % with the moving window and the guard band, measured);
    - each double-overlap disc is shrunk by ``guard`` frequency steps (1/field): the window
      spreads each frequency over a few steps, so a disc's rim takes in the one-sideband
      frequencies outside it, whose transfer (magnitude 1) outweighs 2 sin χ(Q) where χ is
      small and pulls outwards (noise-free, −20 Å, 19 Å field: +3.13 / 2.26 / 1.39 / 0.98 % of
      C10 for 0 / 1 / 2 / 3 steps; with noise 3 lost more than it gained). Not on a scan of
      fewer than :data:`SMALL_SCAN` steps across, or on a field where the bright-field disc's
      radius is fewer than :data:`GUARD_MIN_DISC_STEPS` frequency steps: their discs hold few
      frequencies (the preprocessing test's 16² scan: defocus 0.7 % off without, 15 % with 1
      step, 29× with 2; a crystal's few cells: its Bragg frequencies are all the signal);
    - the correlation is weighted by a Gaussian of σ = ``lowpass`` (cycles per step);
    - with ``degree``, the shifts are finally those of the smooth field s(k) (a polynomial of
      that degree in kx, ky per component, any rotation or transpose of −∇χ/2π for χ up to
      order ``degree`` + 1) that aligns all bins jointly: the maximum of the coherent sum
      Σ_Q |Σ_b W_b(Q) F_b(Q) e^{2πi Q·s(k_b)}|² (:func:`_refine`). Each bin alone is noisy (a
      weak contrast at small defocus moves its correlation peak by steps); the field pools
      every bin, so the fit downstream sees the shifts without their noise.

    With a ``mesh``, the patterns are split over its devices along the scan (their sums into the bins
    run there)."""
    if not 0 <= float(window) <= 1:
        raise PtyroValueError(f"parallax: expected 0 <= window <= 1 (the tapered fraction of the scan), got {window}")
    if not 0 <= float(guard) < 100:
        raise PtyroValueError(f"parallax: expected 0 <= guard < 100 (frequency steps 1/field cut from each double-overlap disc), got {guard}")
    kb, counts, lat, contrast, mean, b = bin_images(dataset, threshold=threshold, bin_size=bin_size, mesh=mesh)
    nb = len(counts)
    rx, ry = dataset.scan_shape
    a_win = float(window)
    fi = np.fft.fftfreq(rx)
    fj = np.fft.fftfreq(ry)
    f = jnp.asarray(np.stack(np.meshgrid(fi, fj, indexing="ij"), -1), jnp.float32)
    lp = np.exp(-(np.asarray(f[..., 0]) ** 2 + np.asarray(f[..., 1]) ** 2) / (2 * lowpass**2))
    # the double-overlap disc of each bin (rotation-invariant: |Q| only)
    recip = np.asarray(dataset.grid.reciprocal_sampling, np.float64)
    k_alpha = _bf_radius(mean, recip, threshold)
    half = 0.5 * math.sqrt(2) * b * float(recip.max())
    qabs = np.linalg.norm(lat.frequencies(), axis=-1)
    dq = 1.0 / min(rx * lat.step[0], ry * lat.step[1])
    radius = np.maximum(k_alpha - np.linalg.norm(kb, axis=1) - half, 0.0)
    if min(rx, ry) < SMALL_SCAN or k_alpha / dq < GUARD_MIN_DISC_STEPS:  # too few frequencies to spare (see measure_shifts)
        guard = 0.0
    radius = np.maximum(radius - guard * dq, 0.0)
    genuine = radius >= 2 * dq  # bins with a double-overlap disc of a few frequencies at least
    radius = np.maximum(radius, 2 * dq)  # rim bins keep the lowest frequencies for their own alignment
    weight = jnp.asarray((qabs[None] < radius[:, None, None]) * lp[None], jnp.float32)
    s = jnp.zeros((nb, 2), jnp.float32)
    inv = np.linalg.inv(lat.vectors)
    mw = counts * genuine if genuine.sum() >= 7 else counts  # the model between passes: the bins with a double-overlap disc
    for it in range(int(iterations)):
        Fw = _windowed(contrast, s, a_win, genuine)
        s = _align(Fw, f, s, weight)
        if fit_model and it < int(iterations) - 1:
            sa = lat.to_angstrom(np.asarray(s))
            if fit_model is True or fit_model == "linear":  # s = N k + t, any 2 x 2 N: defocus, astigmatism, rotation, transpose
                a = np.concatenate([kb, np.ones((len(kb), 1))], 1) * np.sqrt(mw)[:, None]
                model = np.concatenate([kb, np.ones((len(kb), 1))], 1) @ np.linalg.lstsq(a, sa * np.sqrt(mw)[:, None], rcond=None)[0]
            elif isinstance(fit_model, tuple):
                model = fit_shifts(kb, sa, dataset.energy, weights=mw, orders=fit_model, fit_rotation=False).model_shifts
            else:
                raise PtyroValueError(f"parallax: fit_model must be 'linear', a tuple of aberration symbols or None, got {fit_model!r}")
            s = jnp.asarray((model - model.mean(0)) @ inv.T, jnp.float32)
    # each shift's weight: the bin's counts × the signal power its correlation used
    power = np.asarray(jnp.sum(jnp.abs(Fw) ** 2 * weight, axis=(1, 2)), np.float64)
    wts = counts * power / power.max()
    shifts = np.asarray(s, np.float64)
    if degree:
        used = np.flatnonzero(np.asarray(jnp.max(weight, axis=0)).reshape(-1) > 0)  # the frequencies any bin compares
        wq = (weight * jnp.asarray(genuine, jnp.float32)[:, None, None]).reshape(nb, -1)[:, used]
        fq = f.reshape(-1, 2)[used]
        for _ in range(int(REFINE_PASSES)):
            Fw = _windowed(contrast, shifts, a_win, genuine)
            shifts = _refine(Fw.reshape(nb, -1)[:, used] * wq, fq, kb / k_alpha, shifts, wts * genuine, int(degree))
    return kb, lat.to_angstrom(shifts), counts, lat, contrast


def fit_aberrations(dataset: Dataset4D, *, threshold: float = 0.5, bin_size: int | None = None, iterations: int = 3,
                    lowpass: float = 0.35, orders: tuple[str, ...] = DEFAULT_ORDERS, fit_rotation: bool = True,
                    fit_radius: float = 0.8, transpose: bool | None = None, window: float = 0.25, mesh: Any = None,
                    guard: float = 2.0, transfer: bool | None = True) -> AberrationFit:  # fmt: skip
    """Defocus (C10 = −defocus), two-fold astigmatism C12/φ12, coma C21/φ21, three-fold
    astigmatism C23/φ23, spherical aberration C30 and the scan rotation from the parallax
    shifts of the bright-field pixels (:func:`measure_shifts`, then :func:`fit_shifts`).

    Only bins within ``fit_radius`` × the bright-field disc's radius enter the fit: near the
    rim most of a pixel's image comes through one sideband only, whose extra phase
    (−χ(Q) there) biases the correlation peak outwards (by 10–20 % at the rim, measured).
    ``transpose``: None fits it (:func:`fit_shifts`), True / False imposes it. ``guard``:
    frequency steps cut from each double-overlap disc (:func:`measure_shifts`; 0 on a crystal,
    whose few Bragg frequencies the band would remove). ``transfer``: then refine the optics
    by the exact transfer (:func:`fit_transfer`): True (default) always, False never (the shift
    fit alone, about half the time: the live tilt-corrected bright field), None where the
    fitted shifts are small enough for the shift fit to be biased (:func:`transfer_wanted`).
    With the refinement, a search of defocus and raster turns under the same objective guards
    against a crystal's aliased shifts (:func:`_searched_start`; SrTiO3 at −200 Å: C10 28.6 %
    → 2.8 % off, C12 125 Å → 1.7 Å, the rotation 89° → 0.65°, worst of five seeds, measured).
    Refined, every amorphous case of ``benchmarks/direct/parallax_accuracy.py`` meets 2 % in
    C10 and 5 % in C12 on five noise seeds (worst 1.18 % / 3.48 %); the shift fit alone misses
    where the shifts are small (−20 Å: 5.8 % / 17.6 %) and where the field is small against the
    noise (compare.py's 12 Å field at −100 Å: C12 up to 9.2 %), measured.

    >>> fit = fit_aberrations(dataset)                     # doctest: +SKIP
    >>> fit.defocus, fit.aberrations["C12"], fit.rotation  # doctest: +SKIP
    """
    measured, fit = measure_and_fit(
        dataset, threshold=threshold, bin_size=bin_size, iterations=iterations, lowpass=lowpass, orders=orders,
        fit_rotation=fit_rotation, fit_radius=fit_radius, transpose=transpose, window=window, mesh=mesh, guard=guard,
    )  # fmt: skip
    return refine_optics(dataset, fit, measured, transfer, transpose, threshold=threshold, bin_size=bin_size, window=window, orders=orders,
                         fit_rotation=fit_rotation)  # fmt: skip


#: fit_transfer stops after a step that gains less than this fraction of J (1e-3 took one more
#: Gauss–Newton pass for the same C10 / C12 over five seeds of four amorphous cases, measured)
TRANSFER_RTOL = 1e-2
#: ``transfer=None`` refines by the exact transfer where the fitted shifts move the bins by fewer
#: scan steps than this (:func:`transfer_wanted`; the default, True, always refines)
TRANSFER_MAX_STEPS = 4.0


def transfer_wanted(fit: AberrationFit, lattice: Lattice) -> bool:
    """The rule of ``transfer=None``: True where the largest fitted parallax shift of the bins
    (``fit.model_shifts``, within the fit radius) is below :data:`TRANSFER_MAX_STEPS` scan
    steps. There the shift fit is biased: each bin's image moves by a step or two, the
    double-overlap discs' transfer 2 sin χ(Q) is small at low Q (a small defocus) and the
    one-sideband frequencies leaking into the discs pull the shifts, so the defocus and the
    astigmatism come out several per cent off (amorphous, −20 Å and −50 Å with 5 Å of C12, five
    noise seeds: C10 / C12 up to 5.8 % / 17.6 % and 1.0 % / 5.6 %, measured) where the exact
    transfer (:func:`fit_transfer`) is within 1.2 % / 3 %. Larger shifts are measured well by the
    correlations and need not pay for the refinement."""
    if not len(fit.model_shifts):
        return False
    step = max(float(v) for v in lattice.step)
    return float(np.max(np.linalg.norm(fit.model_shifts, axis=1))) < TRANSFER_MAX_STEPS * step


def refine_optics(dataset: Dataset4D, fit: AberrationFit, measured: tuple, transfer: bool | None = True, transpose: bool | None = None,
                  **options: Any) -> AberrationFit:  # fmt: skip
    """``fit`` (of :func:`measure_and_fit`, whose ``measured`` bins are reused) refined by
    :func:`fit_transfer` if ``transfer`` is True, or None and :func:`transfer_wanted` says so
    (what :func:`fit_aberrations` and :func:`parallax` do after measuring); and from the best start of a search of
    defocus and raster turns (:func:`_searched_start`, over both transposes where ``transpose``
    is None) where that start's objective is :data:`SEARCH_GAIN` times the refined fit's or
    more: the better of the two refinements (a crystal's aliased shifts, see there)."""
    if transfer is None:
        transfer = transfer_wanted(fit, measured[3])
    if not transfer:
        return fit
    mean = np.fft.ifftshift(_mean_pattern(dataset))  # one pass over the patterns for the search and both refinements
    refined = _fit_transfer(dataset, fit, measured, mean, **options)
    orders = tuple(options.get("orders", DEFAULT_ORDERS))
    transposes = (False, True) if transpose is None else (bool(transpose),)
    if fit.transpose not in transposes:
        return refined
    start, value, judge, typical = _searched_start(dataset, fit, measured, mean, options.get("threshold", 0.5), options.get("bin_size"),
                                                   options.get("window", 0.25), orders, transposes, bool(options.get("fit_rotation", True)))  # fmt: skip
    best = refined
    if start is not fit and value < SEARCH_GAIN * judge(refined):  # (−J: more negative is better)
        other = _fit_transfer(dataset, start, measured, mean, **options)
        best = other if judge(other) < judge(refined) else refined
    return best._replace(evidence=judge(best) / typical if typical < 0 else float("nan"))


def measure_and_fit(dataset: Dataset4D, *, threshold: float = 0.5, bin_size: int | None = None, iterations: int = 3,
                    lowpass: float = 0.35, orders: tuple[str, ...] = DEFAULT_ORDERS, fit_rotation: bool = True,
                    fit_radius: float = 0.8, transpose: bool | None = None, window: float = 0.25,
                    mesh: Any = None, guard: float = 2.0) -> tuple[tuple, AberrationFit]:  # fmt: skip
    """(the :func:`measure_shifts` result, the fit of its bins within ``fit_radius``): what
    :func:`fit_aberrations`, :func:`parallax` and the live tilt-corrected bright field share."""
    measured = measure_shifts(
        dataset, threshold=threshold, bin_size=bin_size, iterations=iterations, lowpass=lowpass, degree=_degree(orders), window=window,
        mesh=mesh, guard=guard,
    )  # fmt: skip
    return measured, _fit_inner(dataset, *measured[:3], threshold, fit_radius, tuple(orders), fit_rotation, transpose)


def _transfer_setup(dataset: Dataset4D, fit: AberrationFit, measured: tuple, threshold: float, bin_size: int | None, window: float,
                    orders: tuple[str, ...], mean: np.ndarray, moved: bool = True, strongest: int | None = None,
                    stride: int = 1) -> tuple[tuple, tuple, float]:  # fmt: skip
    """(the arrays of :func:`_transfer_objective`, its static arguments, the aperture's radius
    k_α Å⁻¹) for the bins of ``measured`` (``mean``: the mean pattern, :func:`_mean_pattern`
    with its zero frequency first) in the frame of ``fit`` (its rotation and transpose:
    the objective's turn is counted from its rotation): each bin's window moved by the shift
    ``fit`` gives it (``moved``), or not; with ``strongest``, only that many scan frequencies,
    those of the most power in the bins' images, and with ``stride`` every so many bright-field
    pixels (a cheap objective for a search)."""
    lam = wavelength(dataset.energy)
    kb, _, counts, lat, contrast = measured
    pix, which, _, _, _ = _bins(mean, dataset.grid.gpts, dataset.grid.reciprocal_sampling, threshold, bin_size)
    recip = np.asarray(dataset.grid.reciprocal_sampling, np.float64)
    k_alpha = _bf_radius(mean, recip, threshold)
    nx, ny = dataset.grid.gpts
    ix, iy = np.divmod(pix, ny)
    kp = np.stack([np.where(ix > nx // 2, ix - nx, ix) * recip[0], np.where(iy > ny // 2, iy - ny, iy) * recip[1]], -1)
    m = _rot(fit.rotation) @ (_SWAP if fit.transpose else np.eye(2))
    shifts = np.einsum("nij,j->ni", _shift_basis(kb, lam, tuple(ORDERS)), _cartesian(fit)) @ np.linalg.inv(m).T @ np.linalg.inv(lat.vectors).T
    Fw = np.asarray(_windowed(contrast, shifts if moved else np.zeros_like(shifts), float(window), np.ones(len(kb), bool)))
    per_bin = np.bincount(which, mean.reshape(-1)[pix] / mean.max(), len(kb))
    q = lat.frequencies().reshape(-1, 2) @ m.T
    if stride > 1:
        kp, which = kp[::stride], which[::stride]
    keep = None
    if strongest is not None:
        power = np.sum(np.abs(Fw) ** 2, 0).reshape(-1)
        power[0] = 0.0  # Q = 0: no parallax
        keep = power >= np.sort(power)[-min(2 * int(strongest), power.size)]  # ±Q alike: the half plane keeps one of each
    args, degree = _transfer_problem(Fw, kp, which, 1.0 / per_bin[which], counts / counts.max(), q, k_alpha, tuple(orders), keep)
    return args, (lam, tuple(orders), degree), k_alpha


#: the search of :func:`_searched_start`: defocus magnitudes from the largest whose parallax the
#: field shows (a shift of half the field at the disc's rim) down by this ratio, this many, of
#: both signs, at raster turns of this many degrees apart over 180° (a 180° turn is the opposite
#: sign), judged on the scan frequencies of the most power (this many) and every so many
#: bright-field pixels (stride); the refinement from a C10 within a factor 2 of the truth found it
#: on a crystal, with the turn within 30° (measured). A ladder of ratio 2 lost the honeycomb at
#: −200 Å (−223 Å, 2 µm of coma); 96 frequencies and every pixel found the same optics as these
#: in every case of benchmarks/direct at 2.5x the time (0.2 s against 0.08 s a search, 48² scan)
SEARCH_RATIO, SEARCH_STEPS, SEARCH_TURN, SEARCH_FREQUENCIES, SEARCH_STRIDE = 1.5, 10, 30.0, 48, 2
#: a search's start replaces the refinement from the shifts only where its objective J is this
#: many times the refined fit's: aliased shifts leave the refinement a fraction of the truth's J
#: (a honeycomb at −30 to −200 Å and an amorphous phase at −200 Å on a 10 Å field: 0.07-0.3x,
#: measured), while in the same basin the two differ by a per cent or so, where the objective's
#: own optimum need not be closer to the truth (SrTiO3 at −20 Å, multislice: −17.2 Å against
#: −19.0 Å from the shifts, J 0.6 % higher, measured)
SEARCH_GAIN = 1.25
#: memory the search's evaluations take at once (rows evaluated together, :func:`_objectives`)
SEARCH_BATCH_BYTES = 64 * 2**20


@functools.partial(jax.jit, static_argnums=(9, 10, 11, 12))
def _objectives(xs: jax.Array, Fq: jax.Array, kp: jax.Array, wpix: jax.Array, q: jax.Array, k_alpha: jax.Array, wq: jax.Array,
                gidx: jax.Array, gmask: jax.Array, lam: float, orders: tuple[str, ...], degree: int, batch: int) -> jax.Array:  # fmt: skip
    """:func:`_transfer_objective` at each row of ``xs``, ``batch`` rows at a time (one compiled program)."""
    return jax.lax.map(lambda x: _transfer_objective(x, Fq, kp, wpix, q, k_alpha, wq, gidx, gmask, lam, orders, degree), xs, batch_size=batch)


def _reframed(fit: AberrationFit, rotation: float, transpose: bool, aberrations: dict[str, float], lam: float) -> AberrationFit:
    """``fit`` with other optics: its measured shifts taken into the frame (``rotation``,
    ``transpose``) (they are measured in the raster's), the model those optics give."""
    m_old = _rot(fit.rotation) @ (_SWAP if fit.transpose else np.eye(2))
    m_new = _rot(rotation) @ (_SWAP if transpose else np.eye(2))
    shifts = fit.shifts @ np.linalg.inv(m_old).T @ m_new.T
    new = fit._replace(aberrations=dict(aberrations), rotation=float(rotation), transpose=bool(transpose), shifts=shifts)
    return new._replace(
        model_shifts=np.einsum("nij,j->ni", _shift_basis(fit.frequencies, lam, tuple(ORDERS)), _cartesian(new)) if len(fit.frequencies) else fit.model_shifts
    )


def _searched_start(dataset: Dataset4D, fit: AberrationFit, measured: tuple, mean: np.ndarray, threshold: float, bin_size: int | None,
                    window: float, orders: tuple[str, ...], transposes: tuple[bool, ...],
                    fit_rotation: bool) -> tuple[AberrationFit, float, Any, float]:  # fmt: skip
    """The start of the best exact-transfer objective (−J, on the strongest scan frequencies,
    windows unmoved) among defocus-only optics over a ladder of defocus, both signs, turns of
    the raster and ``transposes``: (that start, its −J, a judge: −J of any fit on the same
    terms, the median −J of the searched optics: what optics picked at random explain). The shift fit cannot see a crystal's parallax once the shifts pass half a lattice
    period (every image of a periodic object matches its neighbours' at several shifts): the
    shifts it fits are aliased and the refinement from them stays in a wrong basin (a 3.16 Å
    honeycomb at −100 Å on a 10 Å field: C10 −214 Å with 2 µm of coma and the raster turned by
    64°, phase correlation −0.08 against 0.87 with the true optics, measured), while the
    objective, which holds every bin's transfer at once, is largest near the truth."""
    lam = wavelength(dataset.energy)
    args, static, k_alpha = _transfer_setup(dataset, _reframed(fit, 0.0, False, {}, lam), measured, threshold, bin_size, window, orders, mean,
                                            moved=False, strongest=SEARCH_FREQUENCIES, stride=SEARCH_STRIDE)  # fmt: skip
    # the windows are unmoved, so the transposed raster's problem differs only in its frequencies' axes
    problems = {tr: (*args[:3], args[3][:, ::-1], *args[4:]) if tr else args for tr in transposes}
    lat = measured[3]
    field = min(s * n for s, n in zip(lat.step, lat.shape, strict=True))
    c_max = 0.5 * field / max(k_alpha * lam, 1e-6)
    mags = c_max / SEARCH_RATIO ** np.arange(SEARCH_STEPS)
    turns = np.arange(-90.0 + SEARCH_TURN, 90.0 + 1e-9, SEARCH_TURN) if fit_rotation else np.zeros(1)
    c10 = tuple(orders).index("C10") if "C10" in orders else None

    def judge(f: AberrationFit) -> float:
        x = np.append(_cartesian(f, orders), math.radians(f.rotation))
        return float(_transfer_objective(jnp.asarray(x, jnp.float32), *problems[f.transpose], *static))

    best: tuple[float, AberrationFit] = (judge(fit), fit)
    if c10 is None:
        return best[1], best[0], judge, float("nan")
    grid = [(c, t) for c in np.concatenate([mags, -mags]) for t in turns]
    xs = np.zeros((len(grid), len(_cartesian(fit, orders)) + 1), np.float32)
    xs[:, c10] = [c for c, _ in grid]
    xs[:, -1] = [math.radians(t) for _, t in grid]
    # rows at a time: 8 (one at a time, the loop's overhead; all at once, the cache: 27 ms for
    # 120 rows against 38 and 43 ms, measured), fewer where a row's per-pixel, per-frequency
    # fields (about ten float32 arrays) would pass SEARCH_BATCH_BYTES together
    batch = int(np.clip(SEARCH_BATCH_BYTES // (40 * args[1].shape[0] * args[0].shape[1]), 1, 8))
    searched = []
    for tr, problem in problems.items():
        values = np.asarray(_objectives(jnp.asarray(xs), *problem, *static, batch))
        searched.append(values)
        i = int(np.argmin(values))
        if values[i] < best[0]:
            best = (float(values[i]), _reframed(fit, grid[i][1], tr, {"C10": float(grid[i][0])}, lam))
    return best[1], best[0], judge, float(np.median(np.concatenate(searched)))


def fit_transfer(dataset: Dataset4D, fit: AberrationFit, *, threshold: float = 0.5, bin_size: int | None = None, window: float = 0.25,
                 orders: tuple[str, ...] = DEFAULT_ORDERS, max_iterations: int = 8, measured: Any = None,
                 fit_rotation: bool = True) -> AberrationFit:  # fmt: skip
    """The optics ``fit`` (from the shifts: :func:`fit_aberrations`) refined by the profile
    likelihood of the bins' scan FFTs F_b(Q) under the exact weak-phase transfer of every
    bright-field pixel p, one-sideband frequencies included (``_common``'s γ):

        T_b(Q) = Σ_p [A(k_p − Q) e^{i(χ(k_p) − χ(k_p − Q))} − A(k_p + Q) e^{−i(χ(k_p) − χ(k_p + Q))}] / Σ_p |P̃(k_p)|²,
        J = Σ_Q |Σ_b w_b F_b T_b*|² / Σ_b w_b |T_b|²   (Φ(Q) profiled out, w_b the bin's pixels),

    maximised over the coefficients of ``orders`` and (``fit_rotation``) the raster's rotation
    from ``fit``, its transpose held: damped Gauss–Newton steps with the analytic gradient and Fisher matrix
    (:func:`_transfer_gauss_newton`), until a step gains less than :data:`TRANSFER_RTOL` of J or after
    ``max_iterations``. Fast because χ is a polynomial: χ(k ∓ Q) − χ(k) is exactly its Taylor
    series at the pixels (two small matrix products per evaluation, :func:`_transfer_fields`),
    each bin's transfer is a sum over its pixels laid out in rows (no one-hot matrix), and only
    one of each ±Q is evaluated (the images are real: the term at −Q equals that at Q). Where
    the double-overlap discs hold little signal (small defocus, a crystal's few Bragg
    frequencies) the one-sideband frequencies carry it: measured on SrTiO3 at −20 Å, C10 43 % →
    3.9 % off (mean of 5 noise seeds); not for a strong phase (the crystal at −50 Å: C10 3.4 % →
    8.9 %, C12 7.5 % → 4.0 %). ``measured``: the
    :func:`measure_shifts` result for the same ``threshold`` and ``bin_size`` (its bins are
    then not gathered again). :func:`parallax` and :func:`fit_aberrations` call this by
    default where :func:`transfer_wanted` says so."""
    if measured is None:
        kb, counts, lat, contrast, *_ = bin_images(dataset, threshold=threshold, bin_size=bin_size)
        measured = (kb, None, counts, lat, contrast)
    return _fit_transfer(dataset, fit, measured, np.fft.ifftshift(_mean_pattern(dataset)), threshold=threshold, bin_size=bin_size,
                         window=window, orders=orders, max_iterations=max_iterations, fit_rotation=fit_rotation)  # fmt: skip


def _fit_transfer(dataset: Dataset4D, fit: AberrationFit, measured: tuple, mean: np.ndarray, *, threshold: float = 0.5, bin_size: int | None = None,
                  window: float = 0.25, orders: tuple[str, ...] = DEFAULT_ORDERS, max_iterations: int = 8,
                  fit_rotation: bool = True) -> AberrationFit:  # fmt: skip
    """:func:`fit_transfer` on ``measured``'s bins with the mean pattern ``mean`` (zero frequency
    first) made by the caller (:func:`refine_optics` makes it once for its refinements)."""
    lam = wavelength(dataset.energy)
    args, static, _ = _transfer_setup(dataset, fit, measured, threshold, bin_size, window, tuple(orders), mean)
    x0 = np.append(_cartesian(fit, tuple(orders)), 0.0)  # the coefficients, then the raster's turn (rad)
    held = np.zeros(len(x0), bool)
    held[-1] = not fit_rotation

    def vgh(y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        v, g, h = (np.asarray(a, np.float64) for a in _transfer_gauss_newton(jnp.asarray(y * unit, jnp.float32), *args, *static))
        g, h = g * unit, h * np.outer(unit, unit)  # in the units of y
        g[held], h[held], h[:, held] = 0.0, 0.0, 0.0
        h[held, held] = 1.0
        return float(v), g, h

    # each parameter in units that change J alike (1 / √ of the Fisher matrix's diagonal at the start)
    unit = np.ones(len(x0))
    v0, g0, h0 = vgh(x0)
    diag = np.diag(h0)
    unit = np.where(diag > 1e-12 * diag.max(), 1.0 / np.sqrt(np.maximum(diag, 1e-300)), 1.0)
    value = lambda y: float(_transfer_objective(jnp.asarray(y * unit, jnp.float32), *args, *static))  # noqa: E731
    first = (v0, g0 * unit, h0 * np.outer(unit, unit))
    x = _damped_newton(vgh, value, x0 / unit, int(max_iterations), 1e-3, TRANSFER_RTOL, first) * unit
    coef, turn = x[:-1], math.degrees(float(x[-1]))
    terms = len(_terms(tuple(orders)))
    shifts = fit.shifts @ _rot(turn).T  # the measured shifts in the turned detector frame
    model = np.einsum("nij,j->ni", _shift_basis(fit.frequencies, lam, tuple(orders)), coef[:terms]) if len(fit.frequencies) else fit.model_shifts
    r = shifts - model
    rms = float(np.sqrt(np.mean(np.sum((r - r.mean(0)) ** 2, -1) / 2))) if len(r) else float("nan")
    return fit._replace(aberrations=_polar(coef, tuple(orders)), rotation=fit.rotation + turn, shifts=shifts, model_shifts=model, rms=rms)


def _taylor_rows(c: jax.Array, kp: jax.Array, lam: float, orders: tuple[str, ...], degree: int) -> tuple[jax.Array, jax.Array]:
    """χ's Taylor coefficients at the pixels ``kp`` (n, 2) Å⁻¹ as rows against the monomials of
    :func:`_q_monomials`: (odd (n, no), even (n, ne)) with Σ_n Dⁿχ(k)[Qⁿ]/n! split into its odd
    and even orders in Q (exact: χ is a polynomial of ``degree``)."""

    def chi(k: jax.Array) -> jax.Array:
        return chi_basis(k, lam, orders) @ c

    rows: dict[int, list[jax.Array]] = {0: [], 1: []}
    d = chi
    for n in range(1, degree + 1):
        d = jax.jacfwd(d)
        t = jax.vmap(d)(kp)  # (n_pix, 2, ..., 2): the n-th derivative tensor
        # Dⁿχ[Qⁿ] = Σ_j C(n, j) ∂ⁿχ/∂x^{n−j}∂y^j Qx^{n−j} Qy^j
        cols = [math.comb(n, j) / math.factorial(n) * t[(slice(None),) + (0,) * (n - j) + (1,) * j] for j in range(n + 1)]
        rows[n % 2] += cols
    return jnp.stack(rows[1], -1), jnp.stack(rows[0], -1)


def _q_monomials(q: jax.Array, degree: int) -> tuple[jax.Array, jax.Array]:
    """(odd (no, nQ), even (ne, nQ)): Qx^{n−j} Qy^j for the odd and the even n ≤ ``degree``
    (≥ 2), in :func:`_taylor_rows`' order."""
    mono: dict[int, list[jax.Array]] = {0: [], 1: []}
    for n in range(1, degree + 1):
        mono[n % 2] += [q[:, 0] ** (n - j) * q[:, 1] ** j for j in range(n + 1)]
    return jnp.stack(mono[1]), jnp.stack(mono[0])


def _transfer_problem(F: np.ndarray, kp: np.ndarray, which: np.ndarray, wp: np.ndarray, wb: np.ndarray, q: np.ndarray, k_alpha: float,
                      orders: tuple[str, ...], keep: np.ndarray | None = None) -> tuple[tuple[jax.Array, ...], int]:  # fmt: skip
    """The arrays of :func:`_transfer_objective` (and the Taylor degree) for the bins' scan FFTs
    ``F`` (nb, rx, ry) of real images, the bright-field pixels ``kp`` (n, 2) Å⁻¹ in the bins
    ``which`` (n,) with weights ``wp`` (n,) (1 / the bin's mean-pattern sum), the bins' weights
    ``wb`` (nb,), the scan frequencies ``q`` (rx · ry, 2) Å⁻¹ in the detector's frame and the
    aperture radius ``k_alpha`` Å⁻¹: J = Σ_Q |Σ_b w_b F_b T_b*|² / Σ_b w_b |T_b|² over Σ_Q Σ_b |F_b|²
    (the sum over the flat frequencies where ``keep`` (rx · ry,) is True, if given)."""
    nb = F.shape[0]
    idx, valid, gidx, gmask = _pixel_rows(which, nb)
    wpix = valid * wp[idx] * np.sqrt(wb)[which[idx]]  # √w_b in T and in F: w_b in both sums
    flat, mult = _half_plane(F.shape[1:])
    if keep is not None:
        flat, mult = flat[keep[flat]], mult[keep[flat]]
    Fq = F.reshape(nb, -1)[:, flat]
    norm = float(np.sum(np.abs(F) ** 2))
    args = (jnp.asarray(Fq * np.sqrt(wb)[:, None], jnp.complex64), jnp.asarray(kp[idx], jnp.float32), jnp.asarray(wpix, jnp.float32),
            jnp.asarray(q[flat], jnp.float32), jnp.asarray(k_alpha, jnp.float32), jnp.asarray(mult / norm, jnp.float32), jnp.asarray(gidx),
            jnp.asarray(gmask))  # fmt: skip
    return args, max(_degree(orders) + 1, 2)


def _turned(q: jax.Array, turn: jax.Array) -> jax.Array:
    """The frequencies ``q`` (nQ, 2) turned by ``turn`` radians (the raster's rotation changed by it)."""
    cos, sin = jnp.cos(turn), jnp.sin(turn)
    return jnp.stack([cos * q[:, 0] - sin * q[:, 1], sin * q[:, 0] + cos * q[:, 1]], -1)


def _transfer_fields(x: jax.Array, kp: jax.Array, wpix: jax.Array, q: jax.Array, k_alpha: jax.Array, lam: float, orders: tuple[str, ...],
                     degree: int) -> tuple[jax.Array, ...]:  # fmt: skip
    """Each pixel's weighted transfer g(p, Q) and its companion h (real and imaginary parts,
    (n, nQ) each: gr, gi, hr, hi) for :func:`_transfer_objective` at the parameters ``x`` (χ's
    cartesian coefficients, then the turn of the raster in radians, which turns ``q``): with
    χ(k ∓ Q) − χ(k) = ∓O − E (O, E the odd and even Taylor terms in Q, :func:`_taylor_rows`),

        g = A(k − Q) e^{i(O − E)} − A(k + Q) e^{i(O + E)} = e^{iO} (A(k − Q) e^{−iE} − A(k + Q) e^{iE}),
        h = e^{iO} (A(k − Q) e^{−iE} + A(k + Q) e^{iE})   (∂g/∂O = i g, ∂g/∂E = −i h),

    two matrix products and two sines and cosines per pixel and frequency (A the aperture:
    |k ∓ Q| < ``k_alpha``; not differentiated)."""
    qt = _turned(q, x[-1])
    ro, re = _taylor_rows(x[:-1], kp, lam, orders, degree)
    qo, qe = _q_monomials(qt, degree)
    O, E = ro @ qo, re @ qe
    k2 = jnp.sum(kp**2, -1)[:, None] + jnp.sum(qt**2, -1)[None]
    kq = 2 * kp @ qt.T
    am = jax.lax.stop_gradient((k2 - kq < k_alpha**2).astype(O.dtype))
    ap = jax.lax.stop_gradient((k2 + kq < k_alpha**2).astype(O.dtype))
    co, so, ce, se = jnp.cos(O), jnp.sin(O), jnp.cos(E), jnp.sin(E)
    dm, sm = (am - ap) * wpix[:, None], (am + ap) * wpix[:, None]
    xr, xi, yr, yi = dm * ce, -sm * se, sm * ce, -dm * se
    return co * xr - so * xi, so * xr + co * xi, co * yr - so * yi, so * yr + co * yi


def _bin_rows(x: jax.Array, gidx: jax.Array, gmask: jax.Array) -> jax.Array:
    """Per-bin sums (nb, nQ) of per-pixel values ``x`` (n_rows · width, nQ) laid out in rows of
    equal width (:func:`_pixel_rows`): the rows summed by a reshape, each bin's rows gathered by
    ``gidx`` (nb, r) where ``gmask`` (nb, r) is 1 (a gather: no scatter)."""
    rows = jnp.sum(x.reshape(-1, _ROW_WIDTH, x.shape[-1]), axis=1)
    return jnp.einsum("br,brq->bq", gmask, rows[gidx])


@functools.partial(jax.jit, static_argnums=(9, 10, 11))
def _transfer_objective(x: jax.Array, Fq: jax.Array, kp: jax.Array, wpix: jax.Array, q: jax.Array, k_alpha: jax.Array, wq: jax.Array,
                        gidx: jax.Array, gmask: jax.Array, lam: float, orders: tuple[str, ...], degree: int) -> jax.Array:  # fmt: skip
    """−J of :func:`fit_transfer` (over the data's power) at the parameters ``x`` (χ's cartesian
    coefficients and the raster's turn, :func:`_transfer_fields`): ``Fq`` (nb, nQ) the bins'
    weighted scan FFTs at the frequencies ``q`` (nQ, 2) Å⁻¹ (detector frame), ``kp`` (n, 2) the
    bright-field pixels in rows of :data:`_ROW_WIDTH` per bin (padding of weight 0), ``wpix``
    (n,) their weights, ``k_alpha`` the aperture's radius, ``wq`` (nQ,) each frequency's
    multiplicity (:func:`_half_plane`) over the data's power, ``gidx``/``gmask`` each bin's
    rows (:func:`_bin_rows`). Each bin's transfer T_b is the sum of its pixels' g: no one-hot
    matrix."""
    gr, gi, _, _ = _transfer_fields(x, kp, wpix, q, k_alpha, lam, orders, degree)
    T = jax.lax.complex(_bin_rows(gr, gidx, gmask), _bin_rows(gi, gidx, gmask))
    num = jnp.abs(jnp.sum(Fq * jnp.conj(T), 0)) ** 2
    den = jnp.sum(jnp.abs(T) ** 2, 0) + 1e-6
    return -jnp.sum(wq * num / den)


@functools.partial(jax.jit, static_argnums=(9, 10, 11))
def _transfer_gauss_newton(x: jax.Array, Fq: jax.Array, kp: jax.Array, wpix: jax.Array, q: jax.Array, k_alpha: jax.Array, wq: jax.Array,
                           gidx: jax.Array, gmask: jax.Array, lam: float, orders: tuple[str, ...], degree: int,
                           ) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """(value, gradient, Gauss–Newton matrix) of :func:`_transfer_objective` in ``x``, by
    variable projection: −J + Σ|F|² = S = Σ_Q Σ_b |F_b − Φ̂ T_b|² with Φ̂ = Σ_b F_b T_b* /
    Σ_b |T_b|² (the profiled object), so with D_j = ∂T/∂x_j (∂g/∂x_j = i(Ȯ_j g − Ė_j h),
    :func:`_transfer_fields`, with Ȯ_j, Ė_j the derivatives of the Taylor terms, forward mode)
    the gradient is exactly −2 Re Σ r* Φ̂ D_j (r = F − Φ̂ T ⊥ T) and the matrix is Kaufman's
    2 Re Σ_Q |Φ̂|² [D_j^H D_k − (D_j^H T)(T^H D_k)/Σ|T|²] (the Fisher information of the
    parameters with Φ profiled out): no second derivatives."""
    gr, gi, hr, hi = _transfer_fields(x, kp, wpix, q, k_alpha, lam, orders, degree)
    T = jax.lax.complex(_bin_rows(gr, gidx, gmask), _bin_rows(gi, gidx, gmask))

    def terms(y: jax.Array) -> tuple[jax.Array, jax.Array]:
        qo, qe = _q_monomials(_turned(q, y[-1]), degree)
        ro, re = _taylor_rows(y[:-1], kp, lam, orders, degree)
        return ro @ qo, re @ qe

    D = []
    for j in range(x.shape[0]):
        Oj, Ej = jax.jvp(terms, (x,), (jnp.zeros_like(x).at[j].set(1.0),))[1]
        D.append(jax.lax.complex(_bin_rows(Ej * hi - Oj * gi, gidx, gmask), _bin_rows(Oj * gr - Ej * hr, gidx, gmask)))  # i(Ȯ_j g − Ė_j h)
    Dj = jnp.stack(D)  # (nx, nb, nQ)
    u = jnp.sum(Fq * jnp.conj(T), 0)
    v = jnp.sum(jnp.abs(T) ** 2, 0) + 1e-6
    phi = u / v
    r = Fq - phi[None] * T
    grad = -2 * jnp.real(jnp.sum((wq * phi)[None] * jnp.sum(jnp.conj(r)[None] * Dj, 1), -1))
    dt = jnp.sum(jnp.conj(T)[None] * Dj, 1)  # T^H D_j (nx, nQ)
    col = (phi * jnp.sqrt(wq))[None, None] * (Dj - T[None] * (dt / v[None])[:, None, :])  # Kaufman's columns P⊥(Φ̂ D_j)
    flat = jnp.concatenate([jnp.real(col), jnp.imag(col)], 1).reshape(col.shape[0], -1)
    return -jnp.sum(wq * jnp.abs(u) ** 2 / v), grad, 2 * flat @ flat.T


#: pixels per row in fit_transfer's layout (a bin of 2 x 2 pixels is one row)
_ROW_WIDTH = 4


def _pixel_rows(which: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pixels grouped by bin in rows of :data:`_ROW_WIDTH`: (indices (n_rows · width,) into
    the pixels, valid (n_rows · width,) bool: False for the padding, which repeats a pixel of its
    bin; each bin's rows (nb, r) and a mask (nb, r) of those that are its, r the most rows of a bin)
    for :func:`_bin_rows`."""
    width = _ROW_WIDTH
    order = np.argsort(which, kind="stable")
    sizes = np.bincount(which, minlength=nb)
    nrow = -(-sizes // width)
    rows = np.repeat(np.arange(nb), nrow)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rstart = np.concatenate([[0], np.cumsum(nrow)[:-1]])
    slot = np.arange(len(which)) - start[which[order]]  # place in its bin
    idx = np.repeat(order[np.minimum(start, len(order) - 1)][rows], width)
    valid = np.zeros(len(rows) * width, bool)
    at = rstart[which[order]] * width + slot
    idx[at] = order
    valid[at] = True
    r = max(int(nrow.max()), 1)
    gidx = np.minimum(rstart[:, None] + np.arange(r), len(rows) - 1)
    return idx, valid, gidx, (np.arange(r) < nrow[:, None]).astype(np.float32)


def _half_plane(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The FFT indices on a (rx, ry) grid at which to evaluate a sum over Q whose term at −Q
    equals that at Q: (flat indices, multiplicity): one of each pair ±Q with 2, Q = 0 left out,
    and every point of a Nyquist row or column (of an even axis) with 1: its partner index
    stands for another frequency (fftfreq gives −1/2 on both), so it is no pair."""
    rx, ry = shape
    ix, iy = np.divmod(np.arange(rx * ry), ry)
    nyq = ((rx % 2 == 0) & (ix == rx // 2)) | ((ry % 2 == 0) & (iy == ry // 2))
    conj = ((-ix) % rx) * ry + (-iy) % ry
    i = np.arange(rx * ry)
    keep = ((i < conj) & ~nyq) | nyq
    flat = np.flatnonzero(keep)
    return flat, np.where(nyq[flat], 1.0, 2.0)


def _degree(orders: Any) -> int:
    """The shift field's polynomial degree that holds the aberrations ``orders``: n for Cnm."""
    return max(ORDERS[o][0] if o in ORDERS else 1 for o in orders)


def _fit_inner(dataset: Dataset4D, kb: np.ndarray, s: np.ndarray, counts: np.ndarray, threshold: float, fit_radius: float,
               orders: tuple[str, ...], fit_rotation: bool, transpose: bool | None = None) -> AberrationFit:  # fmt: skip
    if not 0 < float(fit_radius) <= 1.5:
        raise PtyroValueError(f"fit_aberrations: expected 0 < fit_radius <= 1.5 (fraction of the bright-field radius), got {fit_radius}")
    kmax = _bf_radius(_mean_pattern(dataset), dataset.grid.reciprocal_sampling, threshold)
    inner = np.linalg.norm(kb, axis=1) <= float(fit_radius) * kmax
    return fit_shifts(kb[inner], s[inner], dataset.energy, weights=counts[inner], orders=orders, fit_rotation=fit_rotation, transpose=transpose)


def _cartesian(fit: AberrationFit, orders: tuple[str, ...] = tuple(ORDERS)) -> np.ndarray:
    """The fit's cartesian coefficients for every term of ``orders`` (:func:`chi_basis`'s
    order; 0 for those not fitted)."""
    coef: list[float] = []
    for sym in orders:
        m = ORDERS[sym][1]
        c = fit.aberrations.get(sym, 0.0)
        t = m * fit.aberrations.get("phi" + sym[1:], 0.0)
        coef += [c] if m == 0 else [c * math.cos(t), c * math.sin(t)]
    return np.asarray(coef)


def _chi_of(fit: AberrationFit, q: Any, energy: float) -> jax.Array:
    """χ(Q) of the fitted aberrations at object-frame frequencies q (…, 2) Å⁻¹."""
    m = _rot(fit.rotation) @ (_SWAP if fit.transpose else np.eye(2))
    qd = jnp.asarray(np.asarray(q, np.float64) @ m.T, jnp.float32)
    return chi_basis(qd, wavelength(energy)) @ jnp.asarray(_cartesian(fit), jnp.float32)


def tcbf_image(dataset: Dataset4D, state: ReconState, fit: AberrationFit, measured: Any = None, *, correction: str = "flip",
               epsilon: float = 0.1, smoothing: float = 0.5, threshold: float = 0.5, bin_size: int | None = None,
               mesh: Any = None) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """The tilt-corrected bright-field image on the state's object grid: (phase (ox, oy) rad,
    coverage (ox, oy) bool), from the optics ``fit`` (fitted, or given: :func:`given_optics`)
    and the bins of ``measured`` (what :func:`measure_shifts` returned; when None the bins are
    made here, :func:`bin_images` with ``threshold``, ``bin_size`` and ``mesh``, and nothing
    is measured). Every bin's contrast image is placed at the scan positions minus the shift
    that ``fit`` gives it (bilinear splatting onto the object pixels, Gaussian kernel of
    σ = ``smoothing`` × the step), and the sum's transfer 2 sin χ(Q) is corrected:
    ``correction`` = "none" (contrast / 2), "flip" (phase flipping: sign of sin χ) or "wiener"
    (2 sin χ / (4 sin²χ + ``epsilon``))."""
    if correction not in ("none", "flip", "wiener"):
        raise PtyroValueError(f"parallax: correction must be 'none', 'flip' or 'wiener', got {correction!r}")
    if measured is None:
        kb, counts, lat, contrast, *_ = bin_images(dataset, threshold=threshold, bin_size=bin_size, mesh=mesh)
    else:
        kb, _, counts, lat, contrast = measured
    m = _rot(fit.rotation) @ (_SWAP if fit.transpose else np.eye(2))
    model = np.einsum("nij,j->ni", _shift_basis(kb, wavelength(dataset.energy), tuple(ORDERS)), _cartesian(fit))
    shifts = model @ np.linalg.inv(m).T  # every bin's fitted shift, back in the raster's frame
    pos = np.asarray(state.positions, np.float64).reshape(lat.shape + (2,))
    d = np.asarray(state.sampling, np.float64)
    ox, oy = state.object.shape[-2:]
    num, den = _splat(np.asarray(contrast, np.float64), (pos[None] - shifts[:, None, None, :]) / d, np.asarray(counts, np.float64), (ox, oy))
    sig = smoothing * np.asarray(lat.step) / d
    q = np.stack(np.meshgrid(np.fft.fftfreq(ox, d[0]), np.fft.fftfreq(oy, d[1]), indexing="ij"), -1)
    sin = np.asarray(jnp.sin(_chi_of(fit, q, dataset.energy)), np.float64)
    if correction == "none":
        h = np.full(sin.shape, 0.5)
    elif correction == "flip":
        h = 0.5 * np.sign(sin)
    else:
        h = 2 * sin / (4 * sin**2 + epsilon)
    h[0, 0] = 0.0
    phase, cover = _ctf_correct(jnp.asarray(num, jnp.float32), jnp.asarray(den, jnp.float32), jnp.asarray(sig, jnp.float32), jnp.asarray(h, jnp.float32))
    return phase, cover


def _splat(values: np.ndarray, x: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear splatting of ``values`` (nb, rx, ry) at fractional object pixels ``x``
    (nb, rx, ry, 2), each bin weighted by ``weights`` (nb,): (Σ w·v, Σ w) on the grid
    ``shape``; points outside it are dropped (one weighted histogram, no Python loop over bins)."""
    ox, oy = shape
    x0 = np.floor(x)
    fr = x - x0
    i0, j0 = x0[..., 0].astype(np.int64), x0[..., 1].astype(np.int64)
    idx = np.empty((4,) + values.shape, np.int64)
    w = np.empty((4,) + values.shape)
    for c, (dx, dy) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        ii, jj = i0 + dx, j0 + dy
        idx[c] = np.where((ii >= 0) & (ii < ox) & (jj >= 0) & (jj < oy), ii * oy + jj, ox * oy)  # outside: one spare bin
        w[c] = (fr[..., 0] if dx else 1 - fr[..., 0]) * (fr[..., 1] if dy else 1 - fr[..., 1])
    w *= weights[None, :, None, None]
    flat = idx.reshape(-1)
    num = np.bincount(flat, (w * values[None]).reshape(-1), ox * oy + 1)[:-1].reshape(ox, oy)
    den = np.bincount(flat, w.reshape(-1), ox * oy + 1)[:-1].reshape(ox, oy)
    return num, den


@jax.jit
def _ctf_correct(num: jax.Array, den: jax.Array, sig: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The splatted sums smoothed by a Gaussian of σ = ``sig`` pixels, their ratio where
    covered, and that image filtered by the transfer correction ``h``: (phase, coverage)."""
    ox, oy = num.shape
    kx = jnp.fft.fftfreq(ox)[:, None]
    ky = jnp.fft.fftfreq(oy)[None, :]
    kern = jnp.exp(-2 * jnp.pi**2 * ((kx * sig[0]) ** 2 + (ky * sig[1]) ** 2))
    num = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(num) * kern))
    den = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(den) * kern))
    cover = den > 0.05 * jnp.max(den)
    img = jnp.where(cover, num / jnp.where(cover, den, 1.0), 0.0)
    phase = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(img) * h))
    return jnp.where(cover, phase, 0.0), cover


def fitted_probe(state: ReconState, fit: AberrationFit, semiangle_cutoff: float, probe: str = "aberrated") -> jax.Array:
    """The state's probe rebuilt from the fitted aberrations by the registered ``probe``."""
    grid = state.probe_grid
    modes = get("probe", probe)(grid, state.energy, semiangle_cutoff=float(semiangle_cutoff), aberrations=dict(fit.aberrations))
    return jnp.asarray(modes.array, jnp.complex64)


def bf_semiangle(dataset: Dataset4D, threshold: float = 0.5) -> float:
    """The bright-field disc's semiangle in mrad, from the area of the mean pattern above
    ``threshold`` × its maximum."""
    return _bf_radius(_mean_pattern(dataset), dataset.grid.reciprocal_sampling, threshold) * wavelength(dataset.energy) * 1e3


def _mean_pattern(dataset: Dataset4D) -> np.ndarray:
    """The mean pattern (Qx, Qy) in the patterns' (centred) order, summed in float64 without a
    float copy of the patterns."""
    return np.asarray(dataset.array).reshape((-1,) + tuple(dataset.grid.gpts)).mean(0, dtype=np.float64)


def _bf_radius(mean: np.ndarray, recip: Any, threshold: float) -> float:
    """The bright-field disc's radius in Å⁻¹: that of a disc with the area of the pixels of
    ``mean`` above ``threshold`` × its maximum (``recip`` Å⁻¹ per pixel)."""
    return math.sqrt(float(np.sum(mean > threshold * mean.max())) * float(recip[0]) * float(recip[1]) / math.pi)


def parallax(dataset: Dataset4D, state: ReconState, *, correction: str = "flip", epsilon: float = 0.1, smoothing: float = 0.5,
             threshold: float = 0.5, bin_size: int | None = None, iterations: int = 3, lowpass: float = 0.35,
             orders: tuple[str, ...] = DEFAULT_ORDERS, fit_rotation: bool = True, fit_radius: float = 0.8,
             transpose: bool | None = None, window: float = 0.25, mesh: Any = None, semiangle_cutoff: float | None = None,
             update_probe: bool = True, optics_out: str | None = None, aberrations: dict[str, float] | None = None,
             rotation: float | None = None, guard: float = 2.0, transfer: bool | None = True) -> ReconState:  # fmt: skip
    """Tilt-corrected bright field with the aberrations fitted from the parallax shifts
    (:func:`fit_aberrations`, :func:`tcbf_image`): the object is exp(iφ) on the state's
    object grid (φ = 0 outside the scanned area) and, with ``update_probe``, the probe is
    rebuilt from the fitted aberrations (aperture ``semiangle_cutoff`` mrad, default: the
    measured bright-field disc), so that the state seeds an iterative reconstruction; with
    ``optics_out`` the fitted optics are written there too (:func:`write_optics`). The fit is
    refined by the exact weak-phase transfer (:func:`fit_transfer`) where ``transfer`` is True
    (default), or None and :func:`transfer_wanted` says so (shifts of fewer than
    :data:`TRANSFER_MAX_STEPS` scan steps, where the shift fit alone is biased); False: the
    shift fit alone (see :func:`fit_aberrations`).

    With ``aberrations`` (polar notation, Å and radians, e.g. ``{"C10": -100.0, "C12": 10.0,
    "phi12": 0.5}``), ``rotation`` (degrees, default 0) and ``transpose`` (default False)
    given, nothing is measured or fitted: the bins' images are placed by the shifts those
    optics give (:func:`given_optics`; what quantem's ``prlx`` kernel does)."""
    check_inputs(dataset, state, "parallax")
    if aberrations is not None:
        fit = given_optics(aberrations, 0.0 if rotation is None else rotation, bool(transpose))
        measured = None
    elif rotation is not None:
        raise PtyroValueError(f"parallax: rotation={rotation!r} is given only with aberrations (else the rotation is fitted); expected rotation=None")
    else:
        measured, fit = measure_and_fit(
            dataset, threshold=threshold, bin_size=bin_size, iterations=iterations, lowpass=lowpass, orders=orders,
            fit_rotation=fit_rotation, fit_radius=fit_radius, transpose=transpose, window=window, mesh=mesh, guard=guard,
        )  # fmt: skip
        fit = refine_optics(dataset, fit, measured, transfer, transpose, threshold=threshold, bin_size=bin_size, window=window, orders=orders,
                            fit_rotation=fit_rotation)  # fmt: skip
    phase, _ = tcbf_image(dataset, state, fit, measured, correction=correction, epsilon=epsilon, smoothing=smoothing, threshold=threshold,
                          bin_size=bin_size, mesh=mesh)  # fmt: skip
    obj = jnp.exp(1j * phase).astype(jnp.complex64)[None]
    out = replace(state, object=obj, slice_thickness=state.slice_thickness[:1])
    alpha = bf_semiangle(dataset, threshold) if semiangle_cutoff is None else float(semiangle_cutoff)
    if update_probe:
        out = replace(out, probe=fitted_probe(state, fit, alpha))
    if optics_out is not None:
        write_optics(optics_out, fit, alpha)
    return out


def given_optics(aberrations: dict[str, float], rotation: float = 0.0, transpose: bool = False) -> AberrationFit:
    """Known optics as an :class:`AberrationFit` (no bins, rms NaN) for :func:`tcbf_image`:
    ``aberrations`` in the polar notation (``C10``, ``C12``/``phi12``, ``C21``/``phi21``,
    ``C23``/``phi23``, ``C30``; Å and radians), ``rotation`` (degrees) and ``transpose`` of
    the raster in the detector's frame."""
    known = set(ORDERS) | {"phi" + s[1:] for s, (_, m) in ORDERS.items() if m > 0}
    for key, value in aberrations.items():
        if key not in known:
            raise PtyroValueError(f"parallax: unknown aberration {key!r}; expected some of {', '.join(sorted(known))}")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PtyroValueError(f"parallax: aberration {key} = {value!r}; expected a finite number (Å, azimuths in radians)")
    if not math.isfinite(float(rotation)):
        raise PtyroValueError(f"parallax: rotation = {rotation!r}; expected a finite angle in degrees")
    empty = np.zeros((0, 2))
    return AberrationFit({k: float(v) for k, v in aberrations.items()}, float(rotation), bool(transpose), empty, empty, empty, float("nan"))


def write_optics(path: Any, fit: AberrationFit, semiangle_cutoff: float) -> None:
    """Write the fitted optics as a TOML configuration: a ``[probe]`` table (magnitudes in Å,
    azimuths in degrees, as configurations have them) that ``ptyro reconstruct --optics-from
    PATH`` (or ``--config PATH``) starts from; the fit's rotation, transpose and residual are
    comments (the rotation is relative to the positions used and is not applied). Written to a
    temporary file and renamed: nothing half-written on failure."""
    import os
    from pathlib import Path

    lines = ["# optics fitted by ptyro_invert.direct.parallax (tilt-corrected bright field)",
             f"# scan rotation relative to the positions used: {fit.rotation:.3f} degrees, transpose = {str(fit.transpose).lower()}",
             f"# rms residual of the shifts: {fit.rms:.4g} A over {len(fit.shifts)} bright-field bins", "", "[probe]"]  # fmt: skip
    lines.append(f"semiangle_cutoff = {float(semiangle_cutoff)!r}")
    for key, value in fit.aberrations.items():
        v = math.degrees(value) if key.startswith("phi") else value
        lines.append(f"{key} = {float(v)!r}")
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, p)
