"""Issue 20's start-up and issue 18's warm-start timings, one command (about 1-3 minutes on 2 idle cores):

    python3 -m uv run python benchmarks/first_hour.py [--rounds 3] [--out DIR] [--skip-demo] [--skip-startup] [--baseline PTYRO] [--jax-cache-only] [--no-compile]

0. First the workspace's own sources are compiled to bytecode (``compileall``, what installing
   a wheel does): this environment sets ``PYTHONDONTWRITEBYTECODE``, and the editable packages
   would otherwise be compiled again by every process (about 0.15 s of CPU); with ``--baseline``
   the baseline checkout's too (``--no-compile``: neither).
1. Start-up: ``ptyro --help``, every ``ptyro CMD --help``, ``ptyro plugins`` and ``ptyro info
   FILE``, each as its own process (median wall time of ``--rounds``), and whether JAX was
   imported (checked in a separate process that runs them all; goal: none, under 1.5 s).
2. ``ptyro demo`` twice with an empty JAX compilation cache of its own (the first run compiles,
   the second loads every program from the cache), ``--rounds`` such pairs one after the other:
   wall and CPU seconds of both processes (the figure process's included), their ratio (goal
   <= 0.40; the median of the pairs) and the demo's own split (simulation, reconstruction, figures);
   with ``--baseline PTYRO`` (another checkout's ``ptyro``) its pairs interleaved with ours, and
   with ``--jax-cache-only`` pairs of this checkout with our executable cache off
   (``PTYRO_EXEC_CACHE=0``: JAX's persistent cache alone, which traces and lowers every program
   again) interleaved with ours: the executable cache's gain under the same load.
   Then one more pair, each run with JAX's compilation events counted (``jax.monitoring``): where
   the time of a run goes (imports, simulation, reconstruction, figures after it), with the
   tracing, lowering and XLA compilation (first run) or loading from a cache (second run: from
   our executable cache, neither lowered nor compiled, or from JAX's) in each step, the number
   of programs and cache hits, and the compile share of the reconstruction.

3. The demo's eight figures drawn again from its two files in a fresh process: CPU seconds
   (user + sys) of the drawing alone, after the imports (median of ``--rounds``; goal ~1 s idle),
   and, interleaved, drawn into figures made ahead of the data (``figures.prepare``, what the
   demo's drawing process does while it waits): the CPU seconds once the data are there and
   those spent ahead.

4. The imports of a demo run with the installed bytecode (``compile-bytecode`` in the root
   ``pyproject.toml``) against the same imports compiling every source (an empty
   ``PYTHONPYCACHEPREFIX``, what a run without .pyc files does), interleaved, CPU seconds.

Prints the load average (``uptime``) before and after: on a shared machine absolute times are
pessimistic; the ratio is measured within one run.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PTYRO = str(Path(sys.executable).with_name("ptyro"))


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def wall(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return dt, r.stdout


def startup(rounds: int, file: Path) -> None:
    from ptyro_workflows.cli import COMMANDS

    runs = [["--help"], *([c, "--help"] for c in COMMANDS), ["plugins"], ["info", str(file)]]
    print(f"start-up (median of {rounds} processes each):")
    for argv in runs:
        times = [wall([PTYRO, *argv])[0] for _ in range(rounds)]
        print(f"  {statistics.median(times):6.2f} s  ptyro {' '.join(argv)}")
    code = (
        "import sys\nfrom ptyro_workflows.cli import main\n"
        f"for argv in {runs!r}:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('JAX imported:', 'jax' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    print("  " + out.strip().splitlines()[-1] + " (all of the above in one process)")


def demo(out: Path, rounds: int, baseline: str | None = None, jax_only: bool = False) -> None:
    """``rounds`` pairs (a first run with an empty cache of its own, then a second), for this
    checkout's ``ptyro`` and, interleaved pair by pair, for a ``baseline`` one (another
    checkout's ``.venv/bin/ptyro``: before against after under the same load) and with
    ``jax_only`` for this one with our executable cache off."""
    import resource

    which = {"this": PTYRO, **({"baseline": baseline} if baseline else {}), **({"jax-cache-only": PTYRO} if jax_only else {})}
    res: dict[str, dict[str, list[float]]] = {k: {"first": [], "second": [], "wall": [], "cpu": []} for k in which}
    for r in range(rounds):
        for name, exe in which.items():
            env = {**os.environ, "PTYRO_JAX_CACHE": str(out / f"jax-cache-{name}-{r}"), "PTYRO_EXEC_CACHE": "0" if name == "jax-cache-only" else "1"}
            row = []
            for i in (1, 2):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t, text = wall([exe, "demo", "--out", str(out / (f"demo{i}" if name == "this" else f"{name}{i}")), "--no-progress", "--overwrite"], env)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                split = re.search(r"simulated .*", text)
                quality = re.search(r"phase correlation with the ground truth .*?: ([0-9.]+).*?; ([0-9.]+) against", text)
                row.append((t, cpu))
                label = f"{name}, " if len(which) > 1 else ""
                print(
                    f"  {label}pair {r + 1}, run {i}: {t:.2f} s wall, {cpu:.2f} s CPU ({split.group(0) if split else '?'}); r = {quality.groups() if quality else '?'}"
                )
            res[name]["first"].append(row[0][0])
            res[name]["second"].append(row[1][0])
            res[name]["wall"].append(row[1][0] / row[0][0])
            res[name]["cpu"].append(row[1][1] / row[0][1])
    # on a busy machine the wall times follow the load; the CPU seconds of the two runs do not
    for name, v in res.items():
        print(
            f"  {name + ': ' if len(which) > 1 else ''}first {statistics.median(v['first']):.2f} s, second {statistics.median(v['second']):.2f} s (medians); "
            f"second / first: {statistics.median(v['wall']):.2f} wall (median of {rounds}: {', '.join(f'{x:.2f}' for x in v['wall'])}; goal <= 0.40), "
            f"{statistics.median(v['cpu']):.2f} CPU ({', '.join(f'{x:.2f}' for x in v['cpu'])})"
        )


# one demo run with JAX's compilation events counted per step (the same code path as `ptyro demo`)
_COUNTED = """
import json, os, resource, sys, time
t_start, c_start = time.perf_counter(), time.process_time()
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `ptyro demo` sets it before NumPy is imported (here by JAX, for its listeners)
import jax.monitoring as mon
events, spans, cpus = [], {}, {}
mon.register_event_duration_secs_listener(lambda name, secs, **kw: events.append((name, secs, time.perf_counter())))
mon.register_event_listener(lambda name, **kw: events.append((name, 0.0, time.perf_counter())))
from importlib import import_module
demo, rec, sim = (import_module(f"ptyro_workflows.{m}") for m in ("demo", "reconstruct", "simulate"))
def timed(mod, name):
    fn = getattr(mod, name)
    def wrapped(*a, **k):
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            spans[name], cpus[name] = (t, time.perf_counter()), (c, time.process_time())
    setattr(mod, name, wrapped)
for mod, name in ((demo, "run_demo"), (sim, "simulate"), (rec, "reconstruct")):
    timed(mod, name)
from ptyro_workflows import cli
sys.argv[1:] = ["demo", "--out", sys.argv[1], "--no-progress", "--overwrite", "-q"]
cli._end = lambda status: status  # the ptyro process itself (JAX imported without the garbage collector), not its exit
code = cli.main()
end, c_end = time.perf_counter(), time.process_time()
steps = {"imports": (t_start, spans["run_demo"][0]), "simulation": spans["simulate"], "reconstruction": spans["reconstruct"],
         "figures after it": (spans["reconstruct"][1], spans["run_demo"][1]), "exit": (spans["run_demo"][1], end)}
cpu_at = {"imports": (c_start, cpus["run_demo"][0]), "simulation": cpus["simulate"], "reconstruction": cpus["reconstruct"],
          "figures after it": (cpus["reconstruct"][1], cpus["run_demo"][1]), "exit": (cpus["run_demo"][1], c_end)}
keys = {"trace": "jaxpr_trace_duration", "lower": "jaxpr_to_mlir_module_duration", "compile": "backend_compile_duration",
        "hits": "cache_hits", "misses": "cache_misses", "ours": "exec_cache/load_duration"}
out = {"code": code, "wall": end - t_start, "steps": {}}
for step, (a, b) in steps.items():
    got = {k: [s for n, s, t in events if n.endswith(v) and a <= t <= b] for k, v in keys.items()}
    out["steps"][step] = {"wall": b - a, "cpu": cpu_at[step][1] - cpu_at[step][0], **{k: sum(v) for k, v in got.items() if k in ("trace", "lower", "compile", "ours")},
                          "programs": len(got["compile"]), "hits": len(got["hits"]), "misses": len(got["misses"]), "loaded": len(got["ours"])}
r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
out["cpu"], out["cpu_figures_process"] = r.ru_utime + r.ru_stime, c.ru_utime + c.ru_stime
print(json.dumps(out))
"""


def demo_counted(out: Path) -> None:
    import json

    env = {**os.environ, "PTYRO_JAX_CACHE": str(out / "jax-cache-counted")}
    runs = []
    for i in (1, 2):
        t, text = wall([sys.executable, "-c", _COUNTED, str(out / f"counted{i}")], env)
        runs.append((t, json.loads(text.strip().splitlines()[-1])))
    print("where a run's time goes (one more pair; JAX's compilation events counted; seconds: wall (this process's CPU)):")
    print(f"  {'':18s} {'first (compiles)':>44s}   {'second (loads from the cache)':>44s}")
    print(
        f"  {'process':18s} {runs[0][0]:8.2f} wall, CPU {runs[0][1]['cpu']:.2f} + {runs[0][1]['cpu_figures_process']:.2f} figure process"
        f"{'':6s}{runs[1][0]:8.2f} wall, CPU {runs[1][1]['cpu']:.2f} + {runs[1][1]['cpu_figures_process']:.2f} figure process"
    )
    for step in runs[0][1]["steps"]:
        cells = []
        for _, r in runs:
            s = r["steps"][step]
            parts = [f"trace {s['trace']:.2f}"] if s["programs"] or s["loaded"] else []
            if s["programs"]:
                parts.append(f"lower {s['lower']:.2f}, {'compile' if s['misses'] else 'load'} {s['compile']:.2f} ({s['programs']} programs)")
            if s["loaded"]:
                parts.append(f"ours {s['ours']:.2f} ({s['loaded']})")
            cells.append(f"{s['wall']:6.2f} ({s['cpu']:4.2f}) {', '.join(parts):>37s}")
        print(f"  {step:18s} {cells[0]}   {cells[1]}")
    first, second = (r["steps"]["reconstruction"] for _, r in runs)
    steps2 = runs[1][1]["steps"].values()
    ours, jax_hits, compiled = (sum(s[k] for s in steps2) for k in ("loaded", "hits", "misses"))
    print(
        f"  second run: {ours + jax_hits} of {ours + jax_hits + compiled} programs loaded from a cache ({ours} from ours, neither lowered nor compiled; {jax_hits} from JAX's), {compiled} compiled"
    )
    print(
        f"  compile share of the reconstruction: {first['compile'] / first['wall']:.0%} of its {first['wall']:.2f} s in the first run "
        f"(tracing + lowering {(first['trace'] + first['lower']) / first['wall']:.0%}); "
        f"second run {second['wall']:.2f} s, of which loading {second['compile'] + second['ours']:.2f} s and tracing + lowering {second['trace'] + second['lower']:.2f} s"
    )


def compile_sources(baseline: str | None) -> None:
    """Bytecode for the workspace's packages, and the baseline checkout's (an installed wheel has
    it; see the docstring)."""
    roots = [Path(__file__).resolve().parents[1]] + ([Path(baseline).resolve().parents[2]] if baseline else [])
    dirs = [str(p) for root in roots for p in (*root.glob("ptyro_*/src"), *root.glob("plugins/*/src"))]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True, capture_output=True)


_FIGURES = """
import resource, statistics, sys, tempfile
from ptyro_workflows import figures
from ptyro_workflows.show import dataset_figures, figure_layouts, reconstruction_figures
import matplotlib.figure, matplotlib.backends.backend_agg
d = sys.argv[1]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
times, ahead, after = [], [], []
for i in range(2 * int(sys.argv[2])):  # interleaved: made at once, then made ahead of the data (as the demo's drawing process does)
    with tempfile.TemporaryDirectory() as out:
        t = cpu()
        if i % 2:
            for layouts in figure_layouts(4).values():
                for figure, counts in layouts:
                    figures.prepare(figure, **counts)
            ahead.append(cpu() - t)
            t = cpu()
        dataset_figures(d + "/dataset.h5", out, overwrite=True)
        reconstruction_figures(d + "/reconstruction.h5", out, truth=d + "/dataset.h5", overwrite=True)
        (after if i % 2 else times).append(cpu() - t)
        assert not any(figures._SPARE.values())
med = statistics.median
print(f"{times[0]:.2f} {med(times[1:] or times):.2f} {med(ahead):.2f} {med(after):.2f}")
"""


def figures_cpu(demo_dir: Path, rounds: int) -> None:
    out = subprocess.run([sys.executable, "-c", _FIGURES, str(demo_dir), str(rounds + 1)], capture_output=True, text=True, check=True).stdout.split()
    first, rest, ahead, after = out
    print(f"the demo's 8 figures (dataset + reconstruction), CPU s after the imports: {first} first in a process, {rest} median of {rounds} more")
    print(
        f"  the same drawn into figures made ahead of the data (the demo's drawing process, while it waits): {after} s once the data are there, {ahead} s ahead"
    )


_DEMO_IMPORTS = (
    "import ptyro_workflows.simulate, ptyro_workflows.reconstruct, ptyro_workflows.show, ptyro_simul.multislice, "
    "ptyro_invert.recon, matplotlib.figure, matplotlib.backends.backend_agg"
)


def bytecode(rounds: int, out: Path) -> None:
    import resource

    print(f"the demo's imports, CPU seconds (user + sys), {rounds} interleaved rounds:")
    (out / "no-pyc").mkdir(exist_ok=True)
    cpu: dict[str, list[float]] = {"with .pyc": [], "compiling the sources": []}
    for _ in range(rounds):
        for label, extra in (("with .pyc", {}), ("compiling the sources", {"PYTHONPYCACHEPREFIX": str(out / "no-pyc")})):
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **extra}
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-c", _DEMO_IMPORTS], check=True, env=env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[label].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    for label, values in cpu.items():
        print(f"  {statistics.median(values):5.2f} s  {label}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="leave the sources without bytecode (every process compiles them, as before)")
    ap.add_argument(
        "--baseline", default=None, metavar="PTYRO", help="another checkout's ptyro (e.g. ../main/.venv/bin/ptyro): its demo pairs interleaved with ours"
    )
    ap.add_argument("--skip-startup", action="store_true", help="only the demo and its figures")
    ap.add_argument("--jax-cache-only", action="store_true", help="also pairs with our executable cache off (PTYRO_EXEC_CACHE=0), interleaved with ours")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(uptime(), f"; {os.cpu_count()} CPUs")
        if not args.no_compile:
            compile_sources(args.baseline)
        if not args.skip_demo:
            print(f"ptyro demo, twice with an empty compilation cache, {args.rounds} pairs:")
            demo(out, args.rounds, args.baseline, args.jax_cache_only)
            demo_counted(out)
            figures_cpu(out / "demo2", args.rounds)
        if not args.skip_startup:
            startup(args.rounds, out / "demo1" / "dataset.h5" if not args.skip_demo else _tiny(out))
            bytecode(args.rounds, out)
        print(uptime())


def _tiny(out: Path) -> Path:
    import numpy as np

    p = out / "tiny.npy"
    np.save(p, np.zeros((2, 2, 8, 8), np.float32))
    return p


if __name__ == "__main__":
    main()
