"""Issue 14, our side: the projected potential's accuracy and the sampling convergence.

    .venv/bin/python benchmarks/potential_accuracy.py highk                # V(k)/exact per ring, before/after
    .venv/bin/python benchmarks/potential_accuracy.py ours OUT.npz         # the case of potential_case.py, every variant
    .venv/bin/python benchmarks/potential_accuracy.py compare OURS.npz ABTEM.npz   # the acceptance tables
    .venv/bin/python benchmarks/potential_accuracy.py timing               # build time of a 1,440-atom cell
    .venv/bin/python benchmarks/potential_accuracy.py taper OURS.npz ABTEM.npz     # the band-limit ring, abTEM's taper on/off
    .venv/bin/python benchmarks/potential_accuracy.py converge OURS.npz ABTEM.npz  # finite / phonons ADF on 128², 256², 384²

``ours`` runs: Kirkland and Lobato (infinite projection, Fourier path), Kirkland with the former
real-space sampling (``method="real"``), Kirkland finite projection, Kirkland frozen phonons, and
Kirkland (infinite) on 96 … 512 grids for the convergence table (512 = 4 × finer than 128).
"""

import sys
import time

import jax
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import potential_case as case  # noqa: E402

import ptyro_core  # noqa: E402
from ptyro_core import Atoms, Grid, ScanPositions  # noqa: E402
from ptyro_simul.detectors import PixelatedDetector  # noqa: E402
from ptyro_simul.phonons import frozen_phonon_configurations  # noqa: E402
from ptyro_simul.stem import simulate_4dstem  # noqa: E402

CONVERGENCE_GPTS = (96, 128, 160, 192, 256, 512)


def atoms() -> Atoms:
    numbers, pos, cell = case.structure()
    return Atoms(pos.astype(np.float32), numbers, cell=tuple(float(c) for c in cell))


def run(gpts: int, *, name: str = "kirkland", projection: str = "infinite", method: str | None = None, configs: int = 1, seed: int = 1):
    """{"bf", "adf" (Rx, Ry), "mean" (n, n)} of the case on a gpts × gpts grid."""
    at = atoms()
    grid = Grid.from_extent(at.cell[:2], gpts=(gpts, gpts))
    pot = ptyro_core.get("potential", name)
    opts = {} if method is None else {"method": method}
    if configs > 1:
        structures = frozen_phonon_configurations(at, configs, seed=seed, sigmas=case.SIGMA)
    else:
        structures = [at]
    pots = [pot(a, grid, slice_thickness=case.SLICE, projection=projection, **opts) for a in structures]
    probe = ptyro_core.get("probe", "aberrated")(grid, case.ENERGY, semiangle_cutoff=case.SEMIANGLE, aberrations={})
    scan = ScanPositions.raster((0.0, 0.0), case.SCAN_END, case.SCAN_GPTS)
    out = simulate_4dstem(pots if configs > 1 else pots[0], probe, scan, detectors=[PixelatedDetector()], batch_size=16, progress=False)
    data = np.asarray(out["pixelated"], np.float64)
    ext = float(at.cell[0])
    return {
        "bf": case.annular(data, ext, *case.BF),
        "adf": case.annular(data, ext, *case.ADF),
        "mean": data.mean(axis=(0, 1)),
    }


VARIANTS = {f"kirkland_{g}": dict(gpts=g) for g in CONVERGENCE_GPTS}
VARIANTS.update(
    {
        "lobato": dict(name="lobato"),
        "kirkland_real": dict(method="real"),
        "kirkland_phonons": dict(configs=case.CONFIGS),
        "kirkland_phonons_256": dict(configs=case.CONFIGS, gpts=256),
        "kirkland_finite": dict(projection="finite"),
        "kirkland_finite_256": dict(projection="finite", gpts=256),
        "kirkland_finite_384": dict(projection="finite", gpts=384),
        "kirkland_phonons_384": dict(configs=case.CONFIGS, gpts=384),
        **{f"kirkland_phonons_256_seed{s}": dict(configs=case.CONFIGS, gpts=256, seed=s) for s in (2, 3)},
    }
)


def cmd_ours(path: str, names: list[str]) -> None:
    """Every variant (or those named), saved to ``path`` after each one."""
    res = {}
    for key in names or list(VARIANTS):
        kw = dict(VARIANTS[key])
        gpts = kw.pop("gpts", case.GPTS)
        t = time.perf_counter()
        r = run(gpts, **kw)
        print(f"{key}: {gpts}², {time.perf_counter() - t:.1f} s, BF {r['bf'].mean():.5f}, ADF {r['adf'].mean():.6f}", flush=True)
        res.update({f"{key}/{k}": v for k, v in r.items()})
        np.savez(path, **res)


class _Files(dict):
    @property
    def files(self):
        return list(self)


def _rel(a, b):
    return float(np.mean(a) / np.mean(b) - 1), float(np.max(np.abs(a / b - 1)))


def cmd_compare(ours_path: str, abtem_path: str) -> None:
    o, t = dict(np.load(ours_path)), np.load(abtem_path)
    o.setdefault("kirkland/bf", o["kirkland_128/bf"])
    o.setdefault("kirkland/adf", o["kirkland_128/adf"])
    o.setdefault("kirkland/mean", o["kirkland_128/mean"])
    o = _Files(o)
    ext = case.REPEAT[0] * case.A
    limit = case.wavelength() / (3 * ext / case.GPTS) * 1e3
    print(f"band limit {limit:.1f} mrad; ours / abTEM − 1 (mean over the scan; max over scan positions)")
    print("| ours | abTEM | BF mean | BF max | ADF mean | ADF max | worst 2-mrad ring (mrad) |")
    print("|---|---|---|---|---|---|---|")
    pairs = [
        ("kirkland", "kirkland"),
        ("lobato", "lobato"),
        ("kirkland_real", "kirkland"),
        ("kirkland_finite", "kirkland_finite"),
        ("kirkland_phonons", "kirkland_phonons"),
    ]
    pairs = [(ko, ka) for ko, ka in pairs if f"{ko}/bf" in o.files]
    pairs += [
        (k, k)
        for k in ("kirkland_finite_256", "kirkland_phonons_256", "kirkland_finite_384", "kirkland_phonons_384")
        if f"{k}/bf" in t.files and f"{k}/bf" in o.files
    ]
    for ko, ka in pairs:
        bf, adf = _rel(o[f"{ko}/bf"], t[f"{ka}/bf"]), _rel(o[f"{ko}/adf"], t[f"{ka}/adf"])
        n = o[f"{ko}/mean"].shape[0]
        lim = case.wavelength() / (3 * ext / n) * 1e3
        s, ro = case.rings(o[f"{ko}/mean"], ext, lim)
        _, ra = case.rings(t[f"{ka}/mean"], ext, lim)
        dev = ro / ra - 1
        i = int(np.argmax(np.abs(dev)))
        print(f"| {ko} | {ka} | {bf[0]:+.2%} | {bf[1]:.2%} | {adf[0]:+.2%} | {adf[1]:.2%} | {dev[i]:+.2%} at {s[i]:.0f}–{s[i] + 2:.0f} |")
    print()
    print("rings of the mean pattern, ours / abTEM − 1 (Kirkland, Lobato, former real-space Kirkland):")
    s, _ = case.rings(o["kirkland/mean"], ext, limit)
    cols = [(ko, ka) for ko, ka in pairs[:3]]
    ratios = []
    for ko, ka in cols:
        ratios.append(case.rings(o[f"{ko}/mean"], ext, limit)[1] / case.rings(t[f"{ka}/mean"], ext, limit)[1] - 1)
    for i, a in enumerate(s):
        print(f"{a:4.0f}–{a + 2:.0f} mrad: " + "  ".join(f"{r[i]:+.2%}" for r in ratios))
    print()
    print("convergence (ours, Kirkland, infinite): ADF and BF against the 512² grid (4 × finer than 128²)")
    print("| gpts | pixel (Å) | band limit (mrad) | 65 mrad / limit | ADF mean error | ADF max error | BF mean error |")
    print("|---|---|---|---|---|---|---|")
    ref_adf, ref_bf = o["kirkland_512/adf"], o["kirkland_512/bf"]
    for g in CONVERGENCE_GPTS[:-1]:
        dx = ext / g
        lim = case.wavelength() / (3 * dx) * 1e3
        a, b = _rel(o[f"kirkland_{g}/adf"], ref_adf), _rel(o[f"kirkland_{g}/bf"], ref_bf)
        print(f"| {g} | {dx:.4f} | {lim:.0f} | {case.ADF[1] / lim:.2f} | {a[0]:+.1%} | {a[1]:.1%} | {b[0]:+.2%} |")
    print()
    print("mean ADF (fraction of the beam) on 128² and 256²: ours, abTEM (frozen phonons, finite projection)")
    for key in ("kirkland", "kirkland_phonons", "kirkland_finite"):
        row = []
        for suffix in ("", "_256"):
            k = key + suffix if key != "kirkland" else f"kirkland_{128 if not suffix else 256}"
            ka = key + suffix
            ours = f"{np.mean(o[k + '/adf']):.6f}" if f"{k}/adf" in o.files else "-"
            theirs = f"{np.mean(t[ka + '/adf']):.6f}" if f"{ka}/adf" in t.files else "-"
            row.append(f"{ours} / {theirs}")
        print(f"| {key} | " + " | ".join(row) + " |")


def cmd_taper(ours_path: str, abtem_path: str) -> None:
    """The 2-mrad rings of the mean pattern near the band limit, ours (hard cut at 2/3 Nyquist)
    against abTEM with its default antialias taper (a raised cosine over the last 0.01/dx Å⁻¹
    below the cut, 2.1 mrad here) and with the taper off (``kirkland_taper0`` of
    ``potential_vs_abtem.py --taper``)."""
    o, t = np.load(ours_path), np.load(abtem_path)
    mean = o["kirkland_128/mean"] if "kirkland_128/mean" in o.files else o["kirkland/mean"]
    ext = case.REPEAT[0] * case.A
    limit = case.wavelength() / (3 * ext / case.GPTS) * 1e3
    dx = ext / case.GPTS
    print(
        f"band limit {limit:.2f} mrad; abTEM's taper: {0.01 / dx * case.wavelength() * 1e3:.2f} mrad wide, from {limit - 0.01 / dx * case.wavelength() * 1e3:.2f} mrad"
    )
    s, ro = case.rings(mean, ext, limit + RING_EXTRA)
    cols = [("abTEM default (taper 0.01)", "kirkland"), ("abTEM taper off", "kirkland_taper0")]
    print("| ring (mrad) | " + " | ".join(f"ours / {c} − 1" for c, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    ra = [case.rings(t[f"{k}/mean"], ext, limit + RING_EXTRA)[1] for _, k in cols]
    for i, a in enumerate(s):
        if a >= 50:
            cells = [f"{ro[i] / r[i] - 1:+.2%}" if r[i] > 0 else ("both 0" if ro[i] == 0 else "abTEM 0") for r in ra]
            print(f"| {a:.0f}–{a + 2:.0f} | " + " | ".join(cells) + " |")
    for c, k in cols:
        bf, adf = _rel(o["kirkland_128/bf"], t[f"{k}/bf"]), _rel(o["kirkland_128/adf"], t[f"{k}/adf"])
        print(f"ours / {c} − 1: BF mean {bf[0]:+.3%} (max {bf[1]:.3%}), ADF mean {adf[0]:+.3%} (max {adf[1]:.3%})")


def cmd_converge(ours_path: str, abtem_path: str) -> None:
    """Mean ADF 40–65 mrad (fraction of the beam) of the finite projection and of the frozen
    phonons on 128², 256² and 384², ours and abTEM: which high-angle signal is the converged one."""
    o, t = np.load(ours_path), np.load(abtem_path)
    print("| variant | grid | ours | abTEM | abTEM / ours − 1 | ours / ours on 384² − 1 | abTEM / abTEM on 384² − 1 |")
    print("|---|---|---|---|---|---|---|")
    for key in ("kirkland_finite", "kirkland_phonons"):
        fine = f"{key}_384/adf"
        for suffix, g in (("", "128²"), ("_256", "256²"), ("_384", "384²"), ("_256_seed2", "256², seed 2"), ("_256_seed3", "256², seed 3")):
            k = f"{key}{suffix}/adf"
            if k not in o.files or k not in t.files:
                continue
            a, b = float(np.mean(o[k])), float(np.mean(t[k]))
            ro = f"{a / float(np.mean(o[fine])) - 1:+.2%}" if fine in o.files else "-"
            rt = f"{b / float(np.mean(t[fine])) - 1:+.2%}" if fine in t.files else "-"
            print(f"| {key} | {g} | {a:.6f} | {b:.6f} | {b / a - 1:+.2%} | {ro} | {rt} |")


RING_EXTRA = 2.0  # one ring beyond the band limit (both codes cut there: empty)


def cmd_highk() -> None:
    """|V(k)| / |2π a₀e f(k)| per ring for one atom on a pixel, ½ px off in x, ½ off in x and y."""
    from ptyro_simul.potentials import A0E

    n, L = 128, 15.62  # 0.122 Å pixels, the case's
    dx = L / n
    grid = Grid.from_extent((L, L), gpts=(n, n))
    k1 = np.fft.fftfreq(n, dx)
    k = np.hypot(k1[:, None], k1[None, :])
    lam = case.wavelength()
    mrad = k * lam * 1e3
    edges = [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 68)]
    print("|V(k)| / 2π a₀e f(k), ring means (0.122 Å pixels, 200 keV)")
    print("| Z | parametrization | offset (px) | method | " + " | ".join(f"{a}–{b} mrad" for a, b in edges) + " |")
    print("|---|---|---|---|" + "---|" * len(edges))
    for name in ("kirkland", "lobato"):
        pot = ptyro_core.get("potential", name)
        for z in (8, 22, 38, 79):
            f = pot.scattering_factor(k, z)
            for off in ((0, 0), (0.5, 0), (0.5, 0.5)):
                xy = (L / 2 + off[0] * dx, L / 2 + off[1] * dx)
                at = Atoms(np.array([[*xy, 2.0]], np.float32), np.array([z]), cell=(L, L, 4.0))
                for method in ("real", "fourier"):
                    v = np.asarray(pot(at, grid, slice_thickness=4.0, method=method).array[0], np.float64)
                    vk = np.abs(np.fft.fft2(v)) * dx * dx
                    r = vk / (2 * np.pi * A0E * f)
                    cells = [f"{r[(mrad >= a) & (mrad < b)].mean():.3f}" for a, b in edges]
                    print(f"| {z} | {name} | {off[0]}, {off[1]} | {method} | " + " | ".join(cells) + " |", flush=True)


def cmd_timing() -> None:
    """Build time (after compilation) of a 1,440-atom SrTiO3 cell (6 × 6 × 8 cells = 23.4 × 23.4 × 31.2 Å),
    0.1 Å sampling (235² grid), 2 Å slices (16)."""
    from ptyro_simul.structures import build_crystal

    at = build_crystal("SrTiO3", repeat=(6, 6, 8))
    assert at.positions.shape[0] == 1440
    grid = Grid.from_extent(at.cell[:2], sampling=0.1)
    for name in ("kirkland", "lobato"):
        pot = ptyro_core.get("potential", name)
        for projection, method in (("infinite", "fourier"), ("infinite", "real")):  # finite: minutes (real-space remainder)
            t0 = time.perf_counter()
            jax.block_until_ready(pot(at, grid, slice_thickness=2.0, projection=projection, method=method).array)
            first = time.perf_counter() - t0
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                jax.block_until_ready(pot(at, grid, slice_thickness=2.0, projection=projection, method=method).array)
                ts.append(time.perf_counter() - t0)
            print(
                f"{name} {projection} {method}: grid {grid.gpts}, first call {first:.2f} s, then median {np.median(ts):.3f} s (min {min(ts):.3f})", flush=True
            )


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "ours":
        cmd_ours(sys.argv[2], sys.argv[3:])
    elif cmd == "compare":
        cmd_compare(sys.argv[2], sys.argv[3])
    elif cmd == "highk":
        cmd_highk()
    elif cmd == "timing":
        cmd_timing()
    elif cmd == "taper":
        cmd_taper(sys.argv[2], sys.argv[3])
    elif cmd == "converge":
        cmd_converge(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
