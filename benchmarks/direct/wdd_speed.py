"""WDD before/after (issue 16's speed target), interleaved in one run, and how its time grows.

    .venv/bin/python benchmarks/direct/wdd_speed.py [--before REV] [--rounds N] [--skip scaling]

- ``before``: ``ptyro_invert/direct/wdd.py`` as of git revision REV (default 0270cf7, session
  7's final main), loaded as its own module beside the current one; both run on compare.py's
  SrTiO3 (32² scan × 128² patterns) and amorphous (48² × 48²) cases, alternating call by call
  (``--rounds`` rounds of one call each after one untimed call), so a change of load moves
  both. Reported: the median wall and CPU (process) seconds of each, after/before, and the
  largest difference of the two objects (phase, rad; amplitude).
- ``scaling``: the current WDD at three scan sizes (24², 48², 96² positions, 48² patterns) and
  three pattern sizes (32², 48², 64² pixels, 48² scan) on the amorphous case, median of
  ``--rounds`` warm calls, with the exponent p of t ∝ n^p between the smallest and the largest.

Prints Markdown tables with ``uptime``'s line and writes benchmarks/direct/wdd_speed.json. The
time against quantem is compare.py's (``--only wdd``). About 2 minutes on an idle 2-core CPU.
"""

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, amorphous_case, crystal_case, uptime  # noqa: E402

HERE = Path(__file__).resolve().parent
MODULE = "ptyro_invert/src/ptyro_invert/direct/wdd.py"


def load_before(rev):
    """The WDD module as of ``rev`` (its own module object; it imports the current _common)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{MODULE}"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "wdd_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("wdd_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def interleaved(fns, rounds):
    """{name: (median wall s, median CPU s, wall times)} of ``fns`` called in turn ``rounds``
    times each after one untimed call each."""
    import jax

    for f in fns.values():
        jax.block_until_ready(f())
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(f())
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k]), wall[k]) for k in fns}


def before_after(before, rounds):
    from ptyro_invert.direct import wdd as after

    out = {}
    print(f"\n## WDD before/after, interleaved, median of {rounds} calls each ({uptime()})")
    print("| case | before s (CPU s) | after s (CPU s) | after / before (CPU) | largest phase difference rad | amplitude difference |")
    print("|---|---|---|---|---|---|")
    for label, (ds, state, *_) in (("SrTiO3 32² × 128²", crystal_case()), ("amorphous 48² × 48²", amorphous_case())):
        a = np.asarray(before.wdd_object(ds, state)[0])
        b = np.asarray(after.wdd_object(ds, state)[0])
        dphi = float(np.max(np.abs(np.angle(b / a))))
        damp = float(np.max(np.abs(np.abs(b) - np.abs(a))))
        r = interleaved({"before": lambda ds=ds, st=state: before.wdd(ds, st), "after": lambda ds=ds, st=state: after.wdd(ds, st)}, rounds)
        (wb, cb, _), (wa, ca, _) = r["before"], r["after"]
        out[label] = {"before_s": wb, "after_s": wa, "before_cpu_s": cb, "after_cpu_s": ca, "ratio": wa / wb, "ratio_cpu": ca / cb,
                      "max_phase_difference_rad": dphi, "max_amplitude_difference": damp,
                      "before_times_s": r["before"][2], "after_times_s": r["after"][2]}  # fmt: skip
        print(f"| {label} | {wb:.4f} ({cb:.4f}) | {wa:.4f} ({ca:.4f}) | {wa / wb:.3f} ({ca / cb:.3f}) | {dphi:.2e} | {damp:.2e} |", flush=True)
    return out


def scaling(rounds):
    from ptyro_invert.direct import wdd
    from ptyro_invert.direct._common import probe_fourier, scan_lattice

    sizes = {"scan": [(s, 48) for s in (24, 48, 96)], "patterns": [(48, g) for g in (32, 48, 64)]}
    out = {}
    print(f"\n## WDD scaling (amorphous case, median of {rounds} warm calls; {uptime()})")
    print("| axis | scan | patterns | s (CPU s) | kept Q | exponent p (t ∝ n^p, smallest to this; CPU) |")
    print("|---|---|---|---|---|---|")
    for axis, cases in sizes.items():
        first = None
        for scan, gpts in cases:
            ds, state, *_ = amorphous_case(scan=scan, gpts=gpts)
            t, c, _ = interleaved({"wdd": lambda ds=ds, st=state: wdd.wdd(ds, st)}, rounds)["wdd"]
            n = scan * scan if axis == "scan" else gpts * gpts
            p, pc = (math.log(t / first[1]) / math.log(n / first[0]), math.log(c / first[2]) / math.log(n / first[0])) if first else (math.nan, math.nan)
            first = first or (n, t, c)
            kept = len(
                wdd._overlapping(scan_lattice(ds.positions, ds.scan_shape).frequencies().reshape(-1, 2), probe_fourier(state), ds.grid.reciprocal_sampling)
            )
            out[f"{axis}:{scan}x{scan}:{gpts}x{gpts}"] = {"time_s": t, "cpu_s": c, "kept_q": kept, "exponent": p, "exponent_cpu": pc}
            print(f"| {axis} | {scan}² | {gpts}² | {t:.4f} ({c:.4f}) | {kept} | {p:.2f} ({pc:.2f}) |", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="0270cf7", help="git revision of the former wdd.py (default 0270cf7)")
    ap.add_argument("--rounds", type=int, default=9, help="calls timed per side (median; default 9)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: before, scaling")
    ap.add_argument("--out", default=str(HERE / "wdd_speed.json"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    res = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "uptime_start": uptime()}
    print(res["uptime_start"])
    if "before" not in skip:
        res["before_after"] = before_after(load_before(args.before), args.rounds)
    if "scaling" not in skip:
        res["scaling"] = scaling(args.rounds)
    res["uptime_end"] = uptime()
    print(res["uptime_end"])
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
