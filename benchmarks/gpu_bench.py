"""The GPU benchmark: Ptyrodactyl and PtyRAD in one session on one accelerator, one JSON out.

    benchmarks/gpu.sh                 # on a GPU machine (see gpu.sh for how it gets its packages)
    benchmarks/gpu.sh --dry-run       # here, on the CPU: the same code path on tiny cases

Cases (``--cases``): SIM-A (ours only: PtyRAD does not simulate), RECON-A (20 passes, batch 64)
and RECON-L-MS (``cases.RECON_L_CASES["recon-l-ms"]``: 16,384 patterns of 128², 6 slices,
12 probe modes) at each batch size of ``--batches`` (default 16, 64, 256) for ``--passes``
passes. Each code runs in its own worker process (``adapters/``, the runner's JSON-lines
protocol); our first call (JIT compilation) is timed apart, then one timed run per code. The
phase error of every reconstruction is scored against the truth (``recon.phase_error``) so a fast
wrong answer shows. The dry run uses ``recon-l-tiny`` (8 x 8 scan, 32² patterns, 2 slices,
2 modes) and batches 4 and 16, and runs PtyRAD only when ``benchmarks/.envs/ptyrad`` exists.
"""

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cases  # noqa: E402
import runner  # noqa: E402
from recon import phase_error  # noqa: E402

#: PtyRAD's published figure for its tBL-WSe2 benchmark (6 slices, 12 modes) on an A100, s/pass
PTYRAD_PUBLISHED_A100_S = 5.85


def _device_info(dry: bool) -> dict:
    info = {"machine": runner.machine_info(), "dry_run": dry}
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        info["gpu"] = r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    return info


def _case_copy(src: str, dst: str, **meta_changes) -> str:
    """A case directory that shares ``src``'s arrays (links) with a changed ``meta.json``."""
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for f in os.listdir(src):
        if f.endswith(".npy"):
            os.symlink(os.path.join(src, f), os.path.join(dst, f))
    meta = json.load(open(os.path.join(src, "meta.json")))
    meta.update(meta_changes)
    cases.save_meta(dst, meta)
    return dst


def _region(case_dir: str, meta: dict) -> tuple:
    pos = np.load(os.path.join(case_dir, "positions.npy"))
    lo = np.ceil(pos.min(0) / meta["sampling"]).astype(int)
    hi = np.floor(pos.max(0) / meta["sampling"]).astype(int) + 1
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


def _time_pair(case_dir: str, meta: dict, pythons: dict, device: str) -> dict:
    """One warm-up call for ours, then one timed run of each code; per-pass times and phase errors."""
    workers = []
    for label, script in (("ptyro", "ours_recon.py"), ("ptyrad", "ptyrad_recon.py")):
        py = pythons.get(label)
        if py is None:
            continue
        env = {"PTYRO_BENCH_DEVICE": device, "OMP_NUM_THREADS": str(os.cpu_count() or 2)}
        workers.append(runner.Worker(label, py, script, case_dir, env=env, warmup=(label == "ptyro")))
    res = runner.time_codes(workers, 1)
    runner.finish_all(workers, res)
    truth = np.load(os.path.join(case_dir, "true_phase.npy")).sum(0)
    out = {}
    for label, r in res.items():
        per = r["median_s"] / meta["iterations"] if r.get("median_s") else None
        first = r.get("first_call_s")
        f = os.path.join(runner.WORK, "out", os.path.basename(case_dir), label, "phase.npy")
        acc = phase_error(np.load(f), truth, _region(case_dir, meta)) if os.path.exists(f) else None
        out[label] = {"per_pass_s": per, "first_call_s": first if isinstance(first, float) else None, "peak_rss_mb": r.get("peak_rss_mb"),
                      "phase_rmse": None if acc is None else acc.get("phase_rmse"), "error": r.get("error")}  # fmt: skip
    a, b = out.get("ptyro", {}).get("per_pass_s"), out.get("ptyrad", {}).get("per_pass_s")
    out["ratio_ptyro_over_ptyrad"] = a / b if a and b else None
    return out


def _sim_a(pythons: dict) -> dict:
    info = {"envs": {}}
    case_dir = runner.prepare_sim("sim-a", info)
    w = runner.Worker("ptyro", pythons["ptyro"], "ours_sim.py", case_dir, ["ptyro"])
    res = runner.time_codes([w], 2)
    runner.finish_all([w], res)
    r = res["ptyro"]
    return {"first_call_s": r.get("first_call_s"), "median_s": r.get("median_s"), "rounds_s": r.get("rounds_s"), "error": r.get("error")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny cases on the CPU (checks the script, measures nothing)")
    p.add_argument("--cases", default=None, help="comma-separated among sim-a, recon-a, recon-l-ms (default: all; dry run: recon-l-tiny)")
    p.add_argument("--batches", default=None, help="batch sizes for RECON-L (default 16,64,256; dry run 4,16)")
    p.add_argument("--passes", type=int, default=3, help="passes per RECON-L run (default 3)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "gpu.json"), help="the JSON written (default results/gpu.json; dry run: results/gpu-dry-run.json)")
    a = p.parse_args(argv)
    dry = a.dry_run
    if dry and a.out == p.get_default("out"):
        a.out = os.path.join(HERE, "results", "gpu-dry-run.json")
    selected = [c.strip() for c in (a.cases or ("recon-l-tiny" if dry else "sim-a,recon-a,recon-l-ms")).split(",") if c.strip()]
    known = {"sim-a", "recon-a", "recon-l-ms", "recon-l", "recon-l-tiny"}
    bad = [c for c in selected if c not in known]
    if bad:
        p.error(f"--cases: unknown {bad}; expected some of {sorted(known)}")
    try:
        batches = [int(b) for b in (a.batches or ("4,16" if dry else "16,64,256")).split(",")]
    except ValueError:
        p.error(f"--batches: expected comma-separated integers, got {a.batches!r}")
    device = "cpu" if dry else "cuda"
    ptyrad_py = sys.executable
    if dry:  # the CPU benchmark venv of PtyRAD, when the full suite has made it
        ptyrad_py = runner.env_python("ptyrad") if os.path.exists(runner.env_python("ptyrad")) else None
    pythons = {"ptyro": sys.executable, "ptyrad": ptyrad_py}
    os.makedirs(os.path.join(runner.WORK, "logs"), exist_ok=True)
    results = {"info": _device_info(dry), "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(["benchmarks/gpu.sh", *(argv if argv is not None else sys.argv[1:])]),
               "ptyrad": "skipped: no PtyRAD venv (benchmarks/.envs/ptyrad)" if ptyrad_py is None else "run", "cases": {}}  # fmt: skip
    try:
        import jax

        results["info"]["jax"] = jax.__version__
        results["info"]["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception as e:  # noqa: BLE001 - recorded, the workers fail on their own
        results["info"]["jax"] = f"not importable: {e}"
    for c in selected:
        t0 = time.time()
        runner.log(f"{c}")
        try:
            if c == "sim-a":
                results["cases"][c] = _sim_a(pythons)
            elif c == "recon-a":
                case_dir = os.path.join(runner.WORK, "cases", "gpu-recon-a")
                meta = cases.make_recon_case(case_dir, "recon-a")
                results["cases"][c] = {"batch 64": _time_pair(case_dir, meta, pythons, device)}
            else:
                base = os.path.join(runner.WORK, "cases", f"gpu-{c}")
                runner.log("  generating the dataset")
                meta = cases.make_recon_l_case(base, c)
                out = {"dataset": {k: meta[k] for k in ("scan_gpts", "pattern_gpts", "slices", "modes", "bytes_float32")}}
                for b in batches:
                    runner.log(f"  batch {b}")
                    d = _case_copy(base, f"{base}-b{b}", batch_size=b, iterations=a.passes)
                    out[f"batch {b}"] = _time_pair(d, meta | {"iterations": a.passes}, pythons, device)
                if c == "recon-l-ms" and not dry:
                    best = [v["ptyro"]["per_pass_s"] for k, v in out.items() if k.startswith("batch") and v.get("ptyro", {}).get("per_pass_s")]
                    out["targets"] = {"ptyro/ptyrad at batch 256 (goal <= 0.8)": out.get("batch 256", {}).get("ratio_ptyro_over_ptyrad"),
                                      "ptyro best s/pass (goal <= 2 s; PtyRAD published A100 5.85 s)": min(best) if best else None}  # fmt: skip
                results["cases"][c] = out
        except Exception as e:  # noqa: BLE001 - one failed case must not lose the others
            import traceback

            traceback.print_exc()
            results["cases"][c] = {"error": f"failed: {type(e).__name__}: {e}"}
        results["cases"][c]["wall_s"] = round(time.time() - t0, 1)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out + ".tmp", "w") as f:
            json.dump(results, f, indent=1, default=float)
        os.replace(a.out + ".tmp", a.out)
    runner.log(f"results in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
