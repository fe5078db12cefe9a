"""Issue 20's start-up and demo timings, one command (about 1-3 minutes on 2 idle cores):

    python3 -m uv run python benchmarks/first_hour.py [--rounds 3] [--out DIR] [--skip-demo] [--skip-startup]

1. Start-up: ``ptyro --help``, every ``ptyro CMD --help``, ``ptyro plugins`` and ``ptyro info
   FILE``, each as its own process (median wall time of ``--rounds``), and whether JAX was
   imported (checked in a separate process that runs them all; goal: none, under 1.5 s).
2. The demo twice with an empty JAX compilation cache of its own (the first run compiles, the
   second loads every program from the cache): wall times of both processes, their ratio (goal
   <= 0.40) and the demo's own split (simulation, reconstruction, figures).

3. The demo's eight figures drawn again from its two files in a fresh process: CPU seconds
   (user + sys) of the drawing alone, after the imports (median of ``--rounds``; goal ~1 s idle).

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


def demo(out: Path) -> None:
    import resource

    env = {**os.environ, "PTYRO_JAX_CACHE": str(out / "jax-cache")}
    rows, cpus = [], []
    for i in (1, 2):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t, text = wall([PTYRO, "demo", "--out", str(out / f"demo{i}"), "--no-progress"], env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        split = re.search(r"simulated .*", text)
        rows.append(t)
        cpus.append(cpu)
        print(f"  demo run {i}: {t:.1f} s wall, {cpu:.1f} s CPU ({split.group(0) if split else '?'})")
    # on a busy machine the wall times follow the load; the CPU seconds of the two runs do not
    print(f"  second / first: {rows[1] / rows[0]:.2f} wall (goal <= 0.40), {cpus[1] / cpus[0]:.2f} CPU")


_FIGURES = """
import resource, statistics, sys, tempfile
from ptyro_workflows.show import dataset_figures, reconstruction_figures
import matplotlib.figure, matplotlib.backends.backend_agg
d = sys.argv[1]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
times = []
for _ in range(int(sys.argv[2])):
    with tempfile.TemporaryDirectory() as out:
        t = cpu()
        dataset_figures(d + "/dataset.h5", out, overwrite=True)
        reconstruction_figures(d + "/reconstruction.h5", out, truth=d + "/dataset.h5", overwrite=True)
        times.append(cpu() - t)
print(f"{times[0]:.2f} {statistics.median(times[1:] or times):.2f}")
"""


def figures_cpu(demo_dir: Path, rounds: int) -> None:
    first, rest = subprocess.run([sys.executable, "-c", _FIGURES, str(demo_dir), str(rounds + 1)], capture_output=True, text=True, check=True).stdout.split()
    print(f"the demo's 8 figures (dataset + reconstruction), CPU s after the imports: {first} first in a process, {rest} median of {rounds} more")


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
    ap.add_argument("--skip-startup", action="store_true", help="only the demo and its figures")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(uptime(), f"; {os.cpu_count()} CPUs")
        if not args.skip_demo:
            print("ptyro demo, twice, with an empty compilation cache:")
            demo(out)
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
