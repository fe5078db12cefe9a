"""Warm ``ptyro demo`` runs of this checkout against a baseline checkout's, interleaved (a few
minutes on 2 cores):

    python3 -m uv run python benchmarks/warm_ab.py --baseline ../main/.venv/bin/ptyro [--rounds 12]

Each ``ptyro`` fills a compilation cache of its own with two runs first; then ``--rounds`` pairs
of warm runs, the order within a pair alternating: wall and CPU seconds (the process and its
drawing process) of each, and the per-pair difference (this - baseline). On a shared machine
the pairs see the same load; a change of a few hundredths of a second in a ~2-3 s run needs
about a dozen pairs to show above the spread (``first_hour.py`` measures the ratio to a first
run, which the load moves by more than that).
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(exe: str, out: str, cache: str) -> tuple[float, float]:
    env = {**os.environ, "PTYRO_JAX_CACHE": cache}
    before, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    r = subprocess.run([exe, "demo", "--out", out, "--no-progress", "--overwrite", "-q"], env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{exe} demo failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, metavar="PTYRO", help="another checkout's ptyro (e.g. ../main/.venv/bin/ptyro)")
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    exes = {"this": str(Path(sys.executable).with_name("ptyro")), "baseline": args.baseline}
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        for name, exe in exes.items():
            for _ in range(2):  # the cache filled, then warm
                _run(exe, f"{tmp}/{name}", f"{tmp}/cache-{name}")
        res: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in exes}
        for i in range(args.rounds):
            for name in list(exes) if i % 2 == 0 else list(exes)[::-1]:
                wall, cpu = _run(exes[name], f"{tmp}/{name}", f"{tmp}/cache-{name}")
                res[name][0].append(wall)
                res[name][1].append(cpu)
    for name, (walls, cpus) in res.items():
        print(
            f"{name}: warm wall median {statistics.median(walls):.3f} s, CPU median {statistics.median(cpus):.3f} s; walls {' '.join(f'{w:.2f}' for w in walls)}"
        )
    for i, what in enumerate(("wall", "CPU")):
        d = [a - b for a, b in zip(res["this"][i], res["baseline"][i])]
        print(f"this - baseline, {what} per pair: median {statistics.median(d):+.3f} s, mean {statistics.mean(d):+.3f} s")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
