"""Issue 18, warm starts: the demo's simulation step in a second process (about 1 minute on 2 cores):

    python3 -m uv run python benchmarks/warm_simulation.py [--rounds 5] [--baseline PYTHON]

Each round: with an empty cache directory of its own (JAX's compilation cache and our executable
cache, as ``ptyro`` switches them on), one process runs the simulation of ``ptyro demo``
(``ptyro_workflows.simulate.simulate`` with ``DEMO_SIMULATION``: SrTiO3, 256² potential, 16²
scan, 96² windows) to fill the caches, and a second process runs it again: what a warm start
pays. Printed per warm run: the wall and CPU seconds of the ``simulate`` call (after the
imports), the seconds JAX spent tracing, and the programs it traced (each one the executable
cache could not find without tracing: our functions with a closure, eager one-operation
programs). With ``--baseline`` (another checkout's ``.venv/bin/python``, e.g. one of the
sources before a change) its rounds are interleaved with ours, so both see the same load; the
ratio ours / baseline of the medians is printed. On a shared machine the absolute times are
pessimistic (the load average, ``uptime``, is printed before and after).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_RUN = """
import collections, json, resource, sys, time
import jax.monitoring as mon
traced = collections.Counter()
seconds = [0.0]
def listen(name, secs, **kw):
    if name.endswith("jaxpr_trace_duration"):
        traced[kw.get("fun_name", "?")] += 1
        seconds[0] += secs
mon.register_event_duration_secs_listener(listen)
from pathlib import Path
from ptyro_workflows.cache import enable_compilation_cache
enable_compilation_cache(Path(sys.argv[1]))
from ptyro_workflows.demo import DEMO_SIMULATION
from ptyro_workflows.simulate import simulate
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t, c = time.perf_counter(), cpu()
simulate(DEMO_SIMULATION, Path(sys.argv[2]), overwrite=True, progress=False, keep=True, command=["bench"])
print(json.dumps({"wall": time.perf_counter() - t, "cpu": cpu() - c, "trace": seconds[0], "traced": dict(traced)}))
"""


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def warm_run(python: str, work: Path) -> dict:
    """Fill a fresh cache with one process, time the second; the second's record."""
    cache = work / "cache"
    out = {}
    for i in (1, 2):
        r = subprocess.run([python, "-c", _RUN, str(cache), str(work / f"dataset{i}.h5")], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{python}: the simulation failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", default=None, help="another checkout's .venv/bin/python, interleaved with ours")
    args = ap.parse_args()
    which = {"this": sys.executable, **({"baseline": args.baseline} if args.baseline else {})}
    print(uptime())
    res: dict[str, list[dict]] = {k: [] for k in which}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, python in which.items():
                work = Path(tmp) / f"{name}-{r}"
                work.mkdir()
                rec = warm_run(python, work)
                res[name].append(rec)
                names = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(rec["traced"].items())) or "none"
                print(f"  {name}, round {r + 1}: warm simulate {rec['wall']:.3f} s wall, {rec['cpu']:.3f} s CPU, tracing {rec['trace']:.3f} s; traced: {names}")
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("wall", "cpu", "trace")} for k, v in res.items()}
    for k, m in med.items():
        n = statistics.median(sum(x["traced"].values()) for x in res[k])
        print(f"  {k}: medians of {args.rounds}: {m['wall']:.3f} s wall, {m['cpu']:.3f} s CPU, tracing {m['trace']:.3f} s, {n:g} programs traced")
    if args.baseline:
        a, b = med["this"], med["baseline"]
        print(f"  this / baseline (medians, same load): wall {a['wall'] / b['wall']:.2f}, CPU {a['cpu'] / b['cpu']:.2f}")
    print(uptime())


if __name__ == "__main__":
    main()
