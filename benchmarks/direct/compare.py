"""Direct methods side by side: ours (icom, parallax, ssb, obf, wdd), the iterative single_slice,
py4DSTEM 0.14.18 (DPC, Parallax, SSB) and quantem 0.1.10 (icom, prlx, ssb, obf, wdd) on the same
simulated data, with the ground truth; then how our time grows with scan and detector size.

    .venv/bin/python benchmarks/direct/compare.py [--py4dstem PY] [--quantem PY] [--quick] [--only wdd,ssb]

PY: the python of a venv with that reference installed (outside the worktree, e.g.
``python3 -m venv /work/venv-py4dstem && /work/venv-py4dstem/bin/pip install py4DSTEM==0.14.18
"numpy<2"``; ``python3 -m venv /work/venv-direct && /work/venv-direct/bin/pip install torch
quantem``); a reference left out is skipped. Writes benchmarks/direct/results.json and prints
the tables (Markdown) with ``uptime``'s line. Times are wall seconds, the median of ``--repeats``
(default 3) warm calls after one untimed call (compilation, imports and caches excluded), on
whatever CPU runs it; ours are timed before and after the references (the median of both sets),
so that a change of load in between moves both sides. What each side's timed call includes:
the README (``benchmarks/direct/README.md``).

Cases (dose 1e5 e/Å² unless noted, Poisson noise):
- ``amorphous``: a weak amorphous phase (0.2 rad rms, 0.5 Å correlation length), 300 kV,
  25 mrad, defocus 100 Å with 10 Å of two-fold astigmatism at 0.5 rad, 48 x 48 scan at 0.25 Å,
  48 x 48 patterns (0.2 Å pixels), single-slice forward model (``ptyro_invert.synthetic``).
- ``crystal``: SrTiO3 [001], 4 x 4 x 3 cells (11.7 Å thick), Kirkland potential, multislice
  (``ptyro_workflows.simulate``), 200 kV, 20 mrad, C10 = -20 Å, 32 x 32 scan over 2 x 2 cells
  (0.244 Å), 128 x 128 patterns; the truth is σ·ΣV.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _warm import warm_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def bilinear(img, x, y):
    """``img`` at fractional pixel coordinates, periodic (the workflows' sampler)."""
    from ptyro_workflows.reconstruct import _bilinear_wrap

    return _bilinear_wrap(np.asarray(img, np.float64), np.asarray(x), np.asarray(y))


def on_lattice(state, shape):
    """The state's object phase at its scan positions (Rx, Ry)."""
    ph = np.angle(np.asarray(state.object[0]))
    p = np.asarray(state.positions, np.float64) / np.asarray(state.sampling)
    return bilinear(ph, p[:, 0], p[:, 1]).reshape(shape)


def corr(a, b):
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


def inner(a, m=2):
    return a[m:-m, m:-m]


def align(img, shape):
    """A reference's image on the scan lattice: resampled to ``shape`` if it is not."""
    img = np.asarray(img, np.float64)
    if img.shape != tuple(shape):
        from scipy.ndimage import zoom

        img = zoom(img, (shape[0] / img.shape[0], shape[1] / img.shape[1]), order=1)
    return img


def best_orientation(img, ref):
    """(correlation, orientation) of the best of ±img and its transpose against ref (the
    references' sign and axis conventions are not ours)."""
    best = (-2.0, "")
    for tr in (False, True):
        a = img.T if tr and img.shape[0] == img.shape[1] else img
        for sgn in (1, -1):
            c = corr(inner(sgn * a), inner(ref))
            best = max(best, (c, ("-" if sgn < 0 else "+") + ("T" if tr else "")))
    return best


def amorphous_case(scan=48, gpts=48, dose_per_a2=1e5, seed=0, ab=None, step=0.25, rotation=0.0):
    """compare.py's amorphous case (``ab`` default C10 −100 Å, C12 10 Å at 0.5 rad), the raster
    rotated by ``rotation`` degrees while the dataset keeps the unrotated positions:
    (dataset, state, truth on the lattice, aberrations, semiangle)."""
    from ptyro_invert import synthetic as syn

    ab = {"C10": -100.0, "C12": 10.0, "phi12": 0.5} if ab is None else ab
    grid, sp, state = syn.setup(gpts=gpts, sampling=0.2, scan=(scan, scan), step=step, energy=300e3, semiangle_cutoff=25.0, aberrations=ab)
    shape = tuple(state.object.shape[-2:])
    w = np.random.default_rng(seed).standard_normal(shape)
    kx = np.fft.fftfreq(shape[0], 0.2)[:, None]
    ky = np.fft.fftfreq(shape[1], 0.2)[None, :]
    ph = np.real(np.fft.ifft2(np.fft.fft2(w) * np.exp(-2 * np.pi**2 * 0.25 * (kx**2 + ky**2))))
    ph *= 0.2 / ph.std()
    truth = syn.with_object(state, np.exp(1j * ph))
    pos = None
    if rotation:
        p = np.asarray(state.positions, np.float64)
        t = math.radians(rotation)
        pos = (p - p.mean(0)) @ np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]).T + p.mean(0)
    ds = syn.simulate(truth, grid, sp, positions=pos, dose=None if dose_per_a2 is None else dose_per_a2 * step * step, seed=seed)
    return ds, state, on_lattice(truth, (scan, scan)), ab, 25.0


def crystal_case(c10=-20.0, c12=0.0, phi12=0.0, cells=3, dose_per_a2=1e5):
    """compare.py's SrTiO3 case (optics: C10, C12 Å, φ12 rad; ``cells`` along the beam;
    ``dose_per_a2`` None: noise-free): (dataset, state, truth on the lattice, aberrations,
    semiangle)."""
    import copy

    from ptyro_core import Dataset4D
    from ptyro_invert import initial_state
    from ptyro_simul.constants import energy2sigma
    from ptyro_workflows.simulate import simulate

    a = 3.905
    cfg = {
        "specimen": {"structure": "SrTiO3", "repeat": [4, 4, cells], "zone_axis": [0, 0, 1]},
        "potential": {"parametrization": "kirkland", "gpts": [128, 128], "slice_thickness": a / 2, "projection": "infinite"},
        "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "C10": c10, "C12": c12, "phi12": math.degrees(phi12)},
        "scan": {"start": [a, a], "end": [3 * a, 3 * a], "gpts": [32, 32]},
        "detectors": {"pixelated": True},
        "simulation": {"simulator": "multislice", "propagator": "fresnel", "batch_size": 64},
    }
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate(copy.deepcopy(cfg), Path(tmp) / "c.h5", overwrite=True, progress=False, keep=True, command=["bench"])
    ds = sim.dataset
    step = 2 * a / 32
    if dose_per_a2 is not None:
        counts = np.random.default_rng(1).poisson(np.asarray(ds.array) * dose_per_a2 * step * step).astype(np.float32)
        ds = Dataset4D(counts, ds.positions, grid=ds.grid, energy=ds.energy)
    truth = energy2sigma(ds.energy) * np.asarray(sim.projected_potential)
    p = np.asarray(ds.positions, np.float64) / np.asarray(ds.grid.sampling)
    lat = bilinear(truth, p[:, 0], p[:, 1]).reshape(32, 32)
    ab = {"C10": c10, "C12": c12, "phi12": phi12}
    state = initial_state(ds, semiangle_cutoff=20.0, aberrations=ab)
    return ds, state, lat, ab, 20.0


def timed(fn, *a, repeats=3, **k):
    """(result, median wall time, every time) of ``repeats`` warm calls (one call before them
    compiles)."""
    import jax

    return warm_runs(lambda: jax.block_until_ready(fn(*a, **k)), repeats)


def ours(ds, state, truth_lat, methods, repeats=3, ab=None):
    from ptyro_core import get
    from ptyro_invert.direct import parallax as px

    res = {}
    shape = ds.scan_shape
    for name in methods:
        fn = get("reconstruction", name)
        out, dt, times = timed(fn, ds, state, repeats=repeats)
        img = on_lattice(out, shape)
        res[name] = {
            "time_s": dt,
            "times_s": times,
            "corr_truth": corr(inner(img), inner(truth_lat)),
            "rmse_rad": float(np.sqrt(np.mean((inner(img) - inner(img).mean() - (inner(truth_lat) - inner(truth_lat).mean())) ** 2))),
            "image": img,
        }
    if "parallax" not in res:
        return res
    if ab is not None:  # the same job as quantem's prlx: the optics given, nothing measured
        given = get("reconstruction", "parallax")
        _, dt, times = timed(given, ds, state, repeats=repeats, aberrations=ab, rotation=0.0, transpose=False)
        res["parallax"]["given_optics_time_s"], res["parallax"]["given_optics_times_s"] = dt, times
    t = time.perf_counter()
    fit = px.fit_aberrations(ds)
    res["parallax"]["fit_time_s"] = time.perf_counter() - t
    res["parallax"]["fit"] = {**{k: float(v) for k, v in fit.aberrations.items()}, "rotation_deg": fit.rotation, "rms_A": fit.rms}
    return res


def retime(ds, state, mine, methods, repeats=3, ab=None):
    """Our methods timed again (after the references ran): each one's time becomes the median
    of all its warm calls, before and after the references' (parallax with given optics too)."""
    from ptyro_core import get

    for name in methods:
        mine[name]["times_s"] += timed(get("reconstruction", name), ds, state, repeats=repeats)[2]
        mine[name]["time_s"] = statistics.median(mine[name]["times_s"])
    if "given_optics_times_s" in mine.get("parallax", {}):
        p = mine["parallax"]
        p["given_optics_times_s"] += timed(get("reconstruction", "parallax"), ds, state, repeats=repeats, aberrations=ab, rotation=0.0, transpose=False)[2]
        p["given_optics_time_s"] = statistics.median(p["given_optics_times_s"])


def iterative(ds, state, truth_lat, iterations=20):
    from ptyro_invert import reconstruct

    t = time.perf_counter()
    out = reconstruct(ds, state, "single_slice", iterations=iterations, batch_size=64, progress=False)
    dt = time.perf_counter() - t
    img = on_lattice(out, ds.scan_shape)
    return {"time_s": dt, "iterations": iterations, "corr_truth": corr(inner(img), inner(truth_lat)), "image": img}


def reference(python, worker, ds, state, ab, alpha, methods, repeats=3):
    from ptyro_core.conventions import energy2wavelength as wavelength

    if not python:
        return {}
    step = float(np.linalg.norm(np.asarray(ds.positions)[ds.scan_shape[1]] - np.asarray(ds.positions)[0]))
    dk = float(ds.grid.reciprocal_sampling[0])
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case.npz"
        outp = Path(tmp) / "out.npz"
        np.savez(case, array=np.asarray(ds.array), step=step, reciprocal_sampling=dk, angular_sampling_mrad=dk * wavelength(ds.energy) * 1e3,
                 energy=ds.energy, semiangle=alpha, aberrations=np.array(ab, dtype=object), methods=",".join(methods), repeats=repeats)  # fmt: skip
        r = subprocess.run([python, str(HERE / worker), str(case), str(outp)], capture_output=True, text=True, timeout=3000)
        if r.returncode != 0 or not outp.exists():
            return {"error": (r.stderr or r.stdout)[-2000:]}
        z = np.load(outp, allow_pickle=True)
        return {k: z[k] for k in z.files}


def compare_case(label, ds, state, truth_lat, ab, alpha, args):
    methods = [m for m in ("icom", "parallax", "ssb", "obf", "wdd") if not args.only or m in args.only]
    print(f"\n## {label}: scan {ds.scan_shape}, patterns {tuple(ds.grid.gpts)}", flush=True)
    mine = ours(ds, state, truth_lat, methods, args.repeats, ab)
    it = iterative(ds, state, truth_lat, iterations=args.iterations) if not args.only or "iterative" in args.only else {}
    refs = {"py4DSTEM": reference(args.py4dstem, "ref_py4dstem.py", ds, state, ab, alpha, methods, args.repeats),
            "quantem": reference(args.quantem, "ref_quantem.py", ds, state, ab, alpha, methods, args.repeats)}  # fmt: skip
    retime(ds, state, mine, methods, args.repeats, ab)
    rows = []
    out = {"ours": {}, "iterative": {k: v for k, v in it.items() if k != "image"}, "references": {},
           "uptime": uptime(), "quantem_setup_s": float(refs["quantem"].get("setup_time", float("nan")))}  # fmt: skip
    print("| method | ours corr (truth) | ours rmse rad | ours s | " + " | ".join(f"{n} corr (truth) / corr (ours) / s" for n in refs) + " | ours / fastest |")
    print("|---|---|---|---|" + "---|" * len(refs) + "---|")
    for m in methods:
        o = mine[m]
        out["ours"][m] = {k: v for k, v in o.items() if k != "image"}
        cells, times = [], []
        for rname, rr in refs.items():
            if f"{m}_phase" in rr:
                img = align(rr[f"{m}_phase"], ds.scan_shape)
                ct, orient = best_orientation(img, truth_lat)
                co, _ = best_orientation(img, o["image"])
                t = float(rr[f"{m}_time"])
                times.append(t)
                cells.append(f"{ct:.3f} ({orient}) / {co:.3f} / {t:.3f}")
                out["references"].setdefault(rname, {})[m] = {"corr_truth": ct, "orientation": orient, "corr_ours": co, "time_s": t,
                                                              **{k[len(m) + 4:]: float(v) for k, v in rr.items() if k.startswith(f"{m}_ab_")},
                                                              **{k[len(m) + 1:]: np.asarray(v).tolist() for k, v in rr.items()
                                                                 if k.startswith((f"{m}_time_", f"{m}_times", f"{m}_variant"))}}  # fmt: skip
            else:
                err = str(rr.get(f"{m}_error", rr.get("error", rr.get("setup_error", "not run"))))[:80]
                cells.append(f"— ({err})")
                out["references"].setdefault(rname, {})[m] = {"error": err}
        ratio = o["time_s"] / min(times) if times else float("nan")
        if m == "parallax" and "given_optics_time_s" in o and times:
            # like for like: py4DSTEM's Parallax aligns and fits as ours does by default; quantem's
            # prlx is given the optics (ours with them given: parallax(aberrations=...)); the
            # larger of the two same-job ratios is reported
            jobs = [o["time_s"] / float(refs["py4DSTEM"]["parallax_time"])] if "parallax_time" in refs["py4DSTEM"] else []
            jobs += [o["given_optics_time_s"] / float(refs["quantem"]["parallax_time"])] if "parallax_time" in refs["quantem"] else []
            ratio = max(jobs) if jobs else ratio
            out["ours"][m]["ratio_same_job"] = {"aligning / py4DSTEM": jobs[0] if "parallax_time" in refs["py4DSTEM"] else None,
                                                "given optics / quantem prlx": jobs[-1] if "parallax_time" in refs["quantem"] else None}  # fmt: skip
        out["ours"][m]["ratio_to_fastest"] = ratio
        rows.append(f"| {m} | {o['corr_truth']:.3f} | {o['rmse_rad']:.4f} | {o['time_s']:.3f} | " + " | ".join(cells) + f" | {ratio:.3f} |")
    print("\n".join(rows))
    if "ratio_same_job" in out["ours"].get("parallax", {}):
        jobs = out["ours"]["parallax"]["ratio_same_job"]
        print("parallax, ours / fastest is the larger of the same-job ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in jobs.items() if v is not None)
              + f" (ours given optics {mine['parallax']['given_optics_time_s']:.3f} s)")  # fmt: skip
    if it:
        print(f"| single_slice ({it['iterations']} passes) | {it['corr_truth']:.3f} | | {it['time_s']:.2f} | |")
    if "icom_time_loop" in refs["py4DSTEM"]:
        r = refs["py4DSTEM"]
        print(f"py4DSTEM DPC: per-position centre of mass {float(r['icom_time_loop']):.4f} s, vectorised {float(r['icom_time_vectorized']):.4f} s; "
              f"quantem set-up (not in its kernels' times) {out['quantem_setup_s']:.3f} s; {out['uptime']}")  # fmt: skip
    if "parallax" not in mine:
        return out
    f = mine["parallax"]["fit"]
    print(f"parallax fit: C10 {f['C10']:.2f} Å (truth {ab['C10']}), C12 {f.get('C12', 0):.2f} Å at {f.get('phi12', 0):.3f} rad "
          f"(truth {ab.get('C12', 0)} at {ab.get('phi12', 0)}), rotation {f['rotation_deg']:.2f}°, {mine['parallax']['fit_time_s']:.2f} s")  # fmt: skip
    for rname, rr in refs.items():
        extra = {k: float(v) for k, v in rr.items() if "_ab_" in k}
        if extra:
            print(f"{rname} parallax fit: {extra}")
    return out


def scaling(args):
    """Our time at three scan sizes (patterns 48 x 48) and three pattern sizes (scan 48 x 48);
    the load average is printed beside it (the machine may be shared)."""
    from ptyro_core import get

    sizes = {"scan": [(s, 48) for s in ((24, 48, 96) if not args.quick else (16, 24, 32))],
             "patterns": [(48, g) for g in ((32, 48, 64) if not args.quick else (24, 32, 48))]}  # fmt: skip
    out = {}
    print(f"\n## scaling (ours, median of {args.repeats} warm calls, seconds; {uptime()})")
    names = tuple(m for m in ("icom", "dpc", "parallax", "ssb", "obf", "wdd") if not args.only or m in args.only)
    print("| axis | scan | patterns | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for axis, cases in sizes.items():
        for scan, gpts in cases:
            ds, state, *_ = amorphous_case(scan=scan, gpts=gpts)
            row = {}
            for m in names:
                row[m] = timed(get("reconstruction", m), ds, state, repeats=args.repeats)[1]
            out[f"{axis}:{scan}x{scan}:{gpts}x{gpts}"] = row
            print(f"| {axis} | {scan}² | {gpts}² | " + " | ".join(f"{row[m]:.3f}" for m in row) + " |", flush=True)
    return out


def uptime():
    """``uptime``'s line (the load on the machine while the times were taken)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--py4dstem", help="python of a venv with py4DSTEM 0.14.18")
    ap.add_argument("--quantem", help="python of a venv with quantem")
    ap.add_argument("--iterations", type=int, default=20, help="passes of the iterative single_slice (default 20)")
    ap.add_argument("--quick", action="store_true", help="smaller scaling sizes")
    ap.add_argument("--repeats", type=int, default=3, help="warm calls timed per method and side (median; default 3)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: amorphous, crystal, scaling")
    ap.add_argument("--only", default="", help="comma-separated methods to run (icom, dpc, parallax, ssb, obf, wdd, iterative); default all")
    ap.add_argument("--out", help="default benchmarks/direct/results.json (with --only: results_<methods>.json)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    args.only = set(filter(None, args.only.split(",")))
    args.out = args.out or str(HERE / ("results_" + "_".join(sorted(args.only)) + ".json" if args.only else "results.json"))
    res = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": os.getloadavg(),
        "uptime_start": uptime(),
    }
    print(res["uptime_start"])
    if "amorphous" not in skip:
        res["amorphous"] = compare_case("amorphous (weak phase, defocus 100 Å, astigmatism 10 Å)", *amorphous_case(), args)
    if "crystal" not in skip:
        res["crystal"] = compare_case("crystal (SrTiO3 [001], 11.7 Å, multislice)", *crystal_case(), args)
    if "scaling" not in skip:
        res["scaling"] = scaling(args)
    res["load_average_end"] = os.getloadavg()
    res["uptime_end"] = uptime()
    print(res["uptime_end"])
    Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
