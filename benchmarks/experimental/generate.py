"""An experiment-like 4D-STEM dataset, made by code independent of ptyrodactyl's simulator.

Only numpy: nothing of ptyro_* is imported, so the conventions the readers and the
preprocessing must undo are written here a second time, from the textbook, not shared.

What it models (the properties of issue 21):

- a thin specimen in the projection approximation: one complex transmission
  t = exp(iφ − 0.05·φ) with φ a sum of Gaussian columns on an SrTiO3-[001]-like square lattice
  (a = 3.905 Å; Sr 0.55 rad, Ti–O 0.45 rad, O 0.15 rad, σ = 0.32 Å) — not multislice, not the
  Kirkland potential;
- a probe A(k)·exp(−iχ(k)), χ = πλC10|k|² + πλC12|k|²cos 2(φ − φ12), with a soft aperture edge,
  the true defocus 25 % larger than the nominal one (and a little astigmatism);
- partial spatial coherence: each pattern is the incoherent sum over a 3×3 Gauss–Hermite
  sampling of a Gaussian source (σ = 0.2 Å at the specimen);
- the scan rotated by ``rotation`` degrees (17°) against the detector (optionally transposed),
  with 0.05 Å rms position errors;
- a descan: the bright-field disc a few pixels off centre, drifting linearly across the scan
  (an exit-wave phase ramp, so the shift is sub-pixel and exact);
- ~2·10⁴ e⁻ per pattern, Poisson counts stored as uint16, a few hot pixels and one dead pixel.

It writes the raw counts as a ``.npy`` file (what a user has: no calibrations in it) and
``truth.npz`` (the phase, its sampling, the true positions, descan, rotation, optics, bad pixels).

    python benchmarks/experimental/generate.py OUT_DIR [--tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

#: the two sizes: ``full`` for the acceptance run, ``tiny`` for tests (seconds).
SIZES = {
    "full": dict(scan=(32, 32), gpts=128, pixel_mrad=0.8, step=0.42),
    "tiny": dict(scan=(16, 16), gpts=48, pixel_mrad=1.6, step=0.5),
}

DEFAULTS = dict(
    energy=300e3,  # eV
    semiangle=21.4,  # mrad
    nominal_defocus=80.0,  # Å (C10 = -defocus)
    defocus_error=0.25,  # the true defocus is 25 % larger
    astigmatism=8.0,  # Å, C12
    astigmatism_angle=30.0,  # degrees
    rotation=17.0,  # degrees, counter-clockwise from the detector x towards y
    absorption=0.05,  # amplitude exp(-absorption·φ)
    amorphous=0.1,  # rad rms of an amorphous support layer (random phase, 0.6 Å correlation length)
    vacancies=0.1,  # fraction of the crystal's columns missing
    transpose=False,
    position_error=0.05,  # Å rms (per axis)
    source_sigma=0.2,  # Å, partial spatial coherence
    dose=2.0e4,  # e- per pattern
    disc_offset=(2.6, -1.9),  # px, the disc centre minus the detector centre at the first position
    descan_drift=((0.045, -0.02), (0.015, 0.035)),  # px per scan step: d(offset)/di, d(offset)/dj
    hot=((5, 9, 4000), (40, 30, 1500), (27, 12, 900), (10, 44, 2500)),  # (qx, qy, extra counts per frame) on a 64 px detector
    dead=((33, 36),),
)


# independent on purpose: this generator shares no code with ptyro_* (see the module docstring)
def wavelength(energy: float) -> float:
    """Relativistic electron wavelength, Å (CODATA constants)."""
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    return h / math.sqrt(2 * m0 * e * energy * (1 + e * energy / (2 * m0 * c * c))) * 1e10


def specimen_phase(shape: tuple[int, int], d: float, a: float = 3.905, *, vacancies: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """φ on a (nx, ny) grid of pixel d Å: Gaussian columns on the SrTiO3 [001] projection,
    a fraction ``vacancies`` of the columns missing."""
    rng = rng or np.random.default_rng(0)
    cols = [((0.0, 0.0), 0.55), ((0.5, 0.5), 0.45), ((0.5, 0.0), 0.15), ((0.0, 0.5), 0.15)]
    x = np.arange(shape[0]) * d
    y = np.arange(shape[1]) * d
    phi = np.zeros(shape)
    s2 = 2 * 0.32**2
    nx, ny = int(shape[0] * d / a) + 2, int(shape[1] * d / a) + 2
    for (fx, fy), amp in cols:
        for ux in range(-1, nx):
            cx = (ux + fx) * a
            gx = np.exp(-((x - cx) ** 2) / s2)
            if gx.max() < 1e-8:
                continue
            for uy in range(-1, ny):
                if rng.random() < vacancies:
                    continue
                cy = (uy + fy) * a
                phi += amp * gx[:, None] * np.exp(-((y - cy) ** 2) / s2)[None, :]
    return phi


def probe_k(n: int, dk: float, lam: float, semiangle: float, c10: float, c12: float, phi12: float) -> np.ndarray:
    """The probe in reciprocal space, FFT order, Σ|ψ|² = 1 (unitary transform)."""
    k = np.fft.fftfreq(n) * n * dk
    kx, ky = np.meshgrid(k, k, indexing="ij")
    k2 = kx**2 + ky**2
    ang = np.arctan2(ky, kx)
    kc = semiangle * 1e-3 / lam
    edge = dk * 0.5
    amp = np.clip((kc - np.sqrt(k2)) / edge + 0.5, 0.0, 1.0)
    chi = math.pi * lam * k2 * (c10 + c12 * np.cos(2 * (ang - phi12)))
    psi = amp * np.exp(-1j * chi)
    return psi / np.sqrt(np.sum(np.abs(psi) ** 2))


def generate(out: str | Path, *, size: str = "full", seed: int = 0, **overrides) -> dict:
    """Write ``raw.npy`` (uint16 counts, (Rx, Ry, Qx, Qy)) and ``truth.npz`` into ``out``;
    returns what a user would know (``known``) and the truth (``truth``) as plain values."""
    p = {**DEFAULTS, "pixel_mrad": 1.6, **SIZES[size], **overrides}
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = int(p["gpts"])
    lam = wavelength(p["energy"])
    dk = p["pixel_mrad"] * 1e-3 / lam  # Å^-1 per detector pixel
    d = 1.0 / (n * dk)  # real-space pixel of the probe window, Å
    rx, ry = p["scan"]
    step = float(p["step"])
    true_defocus = p["nominal_defocus"] * (1 + p["defocus_error"])
    phi12 = math.radians(p["astigmatism_angle"])
    psi_k = probe_k(n, dk, lam, p["semiangle"], -true_defocus, p["astigmatism"], phi12)

    # --- scan: raster (i, j) -> rotated (and maybe transposed) positions in the specimen frame, Å
    ii, jj = np.meshgrid(np.arange(rx, dtype=float), np.arange(ry, dtype=float), indexing="ij")
    a, b = (jj, ii) if p["transpose"] else (ii, jj)
    raster = np.stack([a.ravel() * step, b.ravel() * step], -1)
    t = math.radians(p["rotation"])
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    centre = raster.mean(0)
    nominal = (raster - centre) @ rot.T
    errors = rng.normal(0.0, p["position_error"], nominal.shape)
    # specimen big enough for every probe window
    margin = n * d / 2 + 4 * p["source_sigma"] + 1.0
    half = np.abs(nominal).max() + margin
    obj_n = int(math.ceil(2 * half / d)) + 2
    phi = specimen_phase((obj_n, obj_n), d, vacancies=p["vacancies"], rng=rng)
    if p["amorphous"] > 0:
        white = np.fft.fft2(rng.standard_normal((obj_n, obj_n)))
        fk = np.fft.fftfreq(obj_n, d=d)
        layer = np.real(np.fft.ifft2(white * np.exp(-2 * (np.pi * 0.6) ** 2 * (fk[:, None] ** 2 + fk[None, :] ** 2))))
        phi = phi + p["amorphous"] * (layer - layer.min()) / layer.std()
    trans = np.exp(1j * phi - p["absorption"] * phi)
    origin = obj_n * d / 2
    nominal = nominal + origin
    true_pos = nominal + errors

    # --- partial coherence: 3x3 Gauss-Hermite points of a Gaussian source
    gh_x, gh_w = np.polynomial.hermite_e.hermegauss(3)
    src = [(gh_x[u] * p["source_sigma"], gh_x[v] * p["source_sigma"], gh_w[u] * gh_w[v]) for u in range(3) for v in range(3)]
    wsum = sum(w for *_, w in src)

    # --- descan per position: a linear drift of the disc centre, px
    di, dj = np.asarray(p["descan_drift"], float)
    offset = np.asarray(p["disc_offset"], float)[None, :] + ii.ravel()[:, None] * di[None, :] + jj.ravel()[:, None] * dj[None, :]
    xi = np.arange(n)
    kf = np.fft.fftfreq(n) * n * dk
    patterns = np.empty((rx * ry, n, n), np.float64)
    for m in range(rx * ry):
        acc = np.zeros((n, n))
        # exit-wave phase ramp: the pattern moves by `offset` pixels on the detector
        ramp = np.exp(2j * np.pi * (offset[m, 0] * xi[:, None] + offset[m, 1] * xi[None, :]) / n)
        for sx, sy, w in src:
            cx, cy = true_pos[m, 0] + sx, true_pos[m, 1] + sy
            # window of n pixels whose pixel n//2 holds the probe centre (integer part), sub-pixel rest by a phase ramp
            px, py = cx / d, cy / d
            ix, iy = int(math.floor(px)), int(math.floor(py))
            fx, fy = (px - ix) * d, (py - iy) * d
            pk = psi_k * np.exp(-2j * np.pi * (kf[:, None] * fx + kf[None, :] * fy))
            probe = np.fft.fftshift(np.fft.ifft2(pk, norm="ortho"))  # centred at pixel n//2
            win = trans[ix - n // 2 : ix - n // 2 + n, iy - n // 2 : iy - n // 2 + n]
            exit_wave = probe * win * ramp
            acc += w * np.abs(np.fft.fftshift(np.fft.fft2(exit_wave, norm="ortho"))) ** 2
        patterns[m] = acc / wsum
    counts = rng.poisson(patterns * p["dose"]).astype(np.int64)
    # --- detector faults (positions given for a 64 px detector; scaled to this one)
    hot = []
    for qx, qy, extra in p["hot"]:
        qx, qy = qx * n // 64, qy * n // 64
        counts[:, qx, qy] += rng.poisson(extra, rx * ry)
        hot.append((qx, qy))
    dead = []
    for qx, qy in p["dead"]:
        qx, qy = qx * n // 64, qy * n // 64
        counts[:, qx, qy] = 0
        dead.append((qx, qy))
    raw = np.clip(counts, 0, 65535).astype(np.uint16).reshape(rx, ry, n, n)
    np.save(out / "raw.npy", raw)
    disc_center = offset + n // 2  # px, per position (Rx*Ry, 2)
    np.savez(
        out / "truth.npz",
        phase=phi.astype(np.float32),
        sampling=np.array([d, d]),
        positions=true_pos,
        nominal_positions=nominal,
        disc_center=disc_center.reshape(rx, ry, 2),
        hot=np.array(hot),
        dead=np.array(dead),
    )
    known = {
        "energy": p["energy"],
        "semiangle_cutoff": p["semiangle"],
        "defocus": p["nominal_defocus"],
        "scan_step": step,
        "detector_pixel_mrad": p["pixel_mrad"],
        "reciprocal_sampling": dk,
    }
    truth = {
        "rotation": p["rotation"],
        "transpose": bool(p["transpose"]),
        "defocus": true_defocus,
        "astigmatism": p["astigmatism"],
        "astigmatism_angle": p["astigmatism_angle"],
        "mean_disc_center": disc_center.mean(0).tolist(),
        "sampling": d,
        "dose": p["dose"],
        "mean_counts": float(raw.reshape(rx * ry, -1).sum(1).mean()),
    }
    (out / "known.json").write_text(json.dumps(known, indent=2) + "\n")
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return {"known": known, "truth": truth}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output directory")
    ap.add_argument("--tiny", action="store_true", help="the small version used by the tests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--transpose", action="store_true", help="a transposed scan as well as the rotation")
    args = ap.parse_args()
    res = generate(args.out, size="tiny" if args.tiny else "full", seed=args.seed, transpose=args.transpose)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
