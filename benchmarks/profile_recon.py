"""Our reconstruction's time per pass against the FFT floor of the same pass, and against an
earlier version of the code, interleaved in one run (issue 18's per-pass targets):

    .venv/bin/python benchmarks/profile_recon.py [--cases recon-a,recon-b-multislice,recon-b-mixed]
        [--passes 5] [--rounds 2] [--before DIR] [--no-one-stream] [--out benchmarks/results/profile_recon.json]

For each case the benchmark's own workers run round by round, in a rotating order, each in its
process: ``adapters/ours_recon.py`` (this checkout), the same adapter on the sources of ``--before``
(a checkout of an earlier commit, e.g. ``git archive <commit> | tar -x -C DIR``; its packages are
put first on ``PYTHONPATH``), the same adapter with ``PTYRO_STREAMS=1`` ("ours-1stream": each step
one XLA program, on one core; "ours" runs its default, one stream per core on one CPU device; leave
it out with ``--no-one-stream``), and ``adapters/recon_floor.py``: only the FFTs the pass must do,
(2s − 1) FFT + inverse FFT pairs per position and probe mode on the pattern window, complex64, the
case's batch, in as many streams as the library runs (see adapters/_floor.py). Every code runs
``--passes`` passes per round (the case's files with the pass count changed; a first call, which
compiles, is not timed). Reported per case: the fastest round's wall and CPU seconds per pass of
each code, ours / floor and after / before (fastest rounds, and CPU), and each reconstruction's
phase error against the truth (benchmarks/recon.py's score; with ``--passes 20`` the figure of
``benchmarks/run.sh``). Writes the RECON cases under benchmarks/.work/cases if they are not there.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
from recon import phase_error, scanned_region  # noqa: E402
from runner import OUR_PY, WORK, Worker, finish_all, time_codes  # noqa: E402

PACKAGES = ("ptyro_core", "ptyro_simul", "ptyro_invert", "ptyro_workflows")


def case_with_passes(name: str, passes: int) -> str:
    """The case's directory with ``iterations`` set to ``passes`` (its arrays linked, not copied)."""
    src = os.path.join(WORK, "cases", name)
    if not os.path.exists(os.path.join(src, "meta.json")):
        cases.make_any_recon_case(src, name)
    dst = os.path.join(WORK, "cases", f"{name}-p{passes}")
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for f in os.listdir(src):
        if f != "meta.json":
            os.symlink(os.path.join(src, f), os.path.join(dst, f))
    meta = json.load(open(os.path.join(src, "meta.json")))
    meta.update(iterations=passes, case=name)  # the case's name: its truth and scanned region
    with open(os.path.join(dst, "meta.json"), "w") as f:
        json.dump(meta, f)
    return dst


def fastest(res: dict, label: str, key: str = "rounds_s") -> float | None:
    xs = [x for x in (res.get(label) or {}).get(key) or [] if x]
    return min(xs) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


def profile_case(name: str, passes: int, rounds: int, before: str | None, one_stream: bool = True) -> dict:
    case_dir = case_with_passes(name, passes)
    env = {"OMP_NUM_THREADS": str(os.cpu_count() or 2)}
    specs = [("ours", "ours_recon.py", env), ("fft-floor", "recon_floor.py", env)]
    if one_stream:  # the same code with its step in one stream (one XLA program per step)
        specs.insert(1, ("ours-1stream", "ours_recon.py", {**env, "PTYRO_STREAMS": "1"}))
    if before:
        path = os.pathsep.join(os.path.join(os.path.abspath(before), p, "src") for p in PACKAGES)
        specs.insert(1, ("before", "ours_recon.py", {**env, "PYTHONPATH": path}))
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    workers = [Worker(label, OUR_PY, script, case_dir, env=e, warmup=True) for label, script, e in specs]
    res = time_codes(workers, rounds)
    finish_all(workers, res)
    meta = json.load(open(os.path.join(case_dir, "meta.json")))
    truth = np.load(os.path.join(case_dir, "true_phase.npy")).sum(0)
    region = scanned_region(meta)
    out: dict = {"passes per round": passes, "slices": meta["slices"], "modes": meta["modes"], "batch": meta["batch_size"]}
    for label, *_ in specs:
        r = res.get(label) or {}
        wall, cpu = fastest(res, label), fastest(res, label, "cpu_rounds_s")
        entry = {"wall s per pass (fastest round)": None if wall is None else round(wall / passes, 4),
                 "cpu s per pass (fastest round)": None if cpu is None else round(cpu / passes, 4),
                 "rounds wall s": r.get("rounds_s"), "rounds cpu s": r.get("cpu_rounds_s"), "error": r.get("error")}  # fmt: skip
        f = os.path.join(WORK, "out", os.path.basename(case_dir), label, "phase.npy")
        if label != "fft-floor" and os.path.exists(f):
            entry["phase error rad"] = round(phase_error(np.load(f), truth, region)["phase_rmse"], 5)
        if label == "fft-floor":
            entry["info"] = r.get("info")
        out[label] = entry
    for a, b in (
        ("ours", "fft-floor"),
        ("ours", "ours-1stream"),
        ("ours-1stream", "fft-floor"),
        ("ours", "before"),
        ("ours-1stream", "before"),
        ("before", "fft-floor"),
    ):
        if a in out and b in out:
            out[f"{a} / {b}"] = {"wall (fastest rounds)": ratio(fastest(res, a), fastest(res, b)),
                                 "cpu (fastest rounds)": ratio(fastest(res, a, "cpu_rounds_s"), fastest(res, b, "cpu_rounds_s"))}  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="recon-a,recon-b-multislice,recon-b-mixed")
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--before", default=None, help="a checkout of the code to compare with (its */src trees)")
    p.add_argument("--no-one-stream", action="store_true", help="leave out ours with PTYRO_STREAMS=1 (the step in one stream)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "profile_recon.json"))
    a = p.parse_args(argv)
    return run_cases("benchmarks/profile_recon.py", argv, a.cases, lambda name: profile_case(name, a.passes, a.rounds, a.before, not a.no_one_stream), a.out)


def run_cases(script: str, argv, names: str, profile, out: str) -> int:
    """``profile(name)`` for each of the comma-separated ``names``, printed as it comes and written
    to ``out`` as JSON with the command, the time and the load averages at the start and end."""
    res = {"command": script + " " + " ".join(argv if argv is not None else sys.argv[1:]),
           "taken": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "loadavg_at_start": os.getloadavg(), "cases": {}}  # fmt: skip
    for name in names.split(","):
        res["cases"][name] = profile(name)
        print(name, json.dumps(res["cases"][name], indent=1), flush=True)
    res["loadavg_at_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
