"""Where a reconstruction's memory goes, stage by stage, against issue 18's targets; one process
per measurement (so each peak is its own), and one JSON for RESULTS.md.

    python3 -m uv run python benchmarks/profile_memory.py            # the acceptance set (8 min on 2 loaded cores)
    python3 -m uv run python benchmarks/profile_memory.py --big      # + the 4 GiB RECON-L-256 out of core (12 min)
    python3 -m uv run python benchmarks/profile_memory.py --only recon-a --passes 20   # one case, printed
    python3 -m uv run python benchmarks/profile_memory.py --cases recon-a,recon-a-counts --repeat 5 --before DIR
        # RECON-A's three runs, five fresh ones each of this checkout and of DIR's sources
        # (git archive <commit> | tar -x -C DIR), interleaved (7 min on 2 loaded cores)

Each run prints, in MiB, VmRSS after each stage: Python alone, NumPy, JAX, XLA's CPU client
(started by the first operation), the Ptyrodactyl libraries (together: "the imports", the
baseline), the patterns (in memory: the caller's array, ``np.load`` of the case; out of core: an
open :class:`~ptyro_core.sources.MemmapSource`), the Dataset4D and initial state, and every
pass; then VmHWM, the peak. "Above the imports" is the peak minus the baseline: what the data
and the reconstruction cost, the quantity the targets bound:

- in memory: peak above the imports <= 1.5 x the dataset's bytes + 100 MiB (RECON-A, RECON-L, each
  also as uint16 counts: RECON-A's 32 MiB of counts sit under XLA's data-independent compile heap,
  RECON-L's 512 MiB are a user's size);
- out of core: peak above the imports <= 1 GiB on the 4 GiB RECON-L-256 (``--big``), at <= 1.3 x
  the in-memory time per pass. Without ``--big`` the out-of-core run is RECON-L (1 GiB on disk)
  read as RECON-L-256 would be: its peak does not grow with the number of patterns (a batch is
  all that is read at once). The time ratio is measured on RECON-L, in one process, passes in
  memory and out of core interleaved (so that both see the same load; of 2 passes each, the
  upper median, i.e. the slower).

The peak of one run varies from run to run by about ±15 MiB on a loaded machine (which of XLA's
threads, each with its own malloc arena, runs which step); ``--repeat N`` runs each case N times
and reports the run with the median peak, with every peak. Each run also counts the programs XLA
compiled after the imports: the process keeps every one (about 1.4 MiB of heap each).

Passes after the first (which compiles) give the time per pass (median) and the heap growth per
pass (VmRSS after the last pass minus after the second, over the passes between). Missing cases
are generated first with ``benchmarks/cases.py`` (timed; RECON-L ~1 min, RECON-L-256 ~4 min on
2 loaded cores). Writes ``benchmarks/results/memory-profile.json`` (``--json`` to change).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "adapters"))

from _proto import _status_mb  # noqa: E402  (standard library only: imports nothing to measure)

CASES = os.path.join(HERE, ".work", "cases")
MIB = 2**20
PACKAGES = ("ptyro_core", "ptyro_simul", "ptyro_invert", "ptyro_workflows")
#: (label, case, out of core, passes, compile cache): the acceptance set (every run compiles,
#: as a first run does, except the "warm" one: a second run of RECON-A with JAX's persistent
#: compilation cache, as ``ptyro reconstruct`` runs by default); RECON-L-256 joins with --big
RUNS = [
    ("recon-a in memory", "recon-a", False, 6, False),
    ("recon-a in memory, warm compile cache", "recon-a", False, 6, True),
    ("recon-a as uint16 counts in memory", "recon-a-counts", False, 6, False),
    ("recon-l in memory", "recon-l", False, 3, False),
    ("recon-l as uint16 counts in memory", "recon-l-counts", False, 2, False),
    ("recon-l out of core", "recon-l", True, 3, False),
]
BIG = [("recon-l-256 out of core", "recon-l-256", True, 2, False)]
#: ``--variants CASE``: the process-wide settings tried against the data-independent part of the
#: peak (glibc's heap, XLA's compiler), each set before the worker starts, as an entry point would
_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # fixed: glibc's dynamic threshold off
_NO_FUSION = {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"}
VARIANTS = [
    ("default", {}),
    ("MALLOC_ARENA_MAX=1", {"MALLOC_ARENA_MAX": "1"}),
    ("MALLOC_MMAP_THRESHOLD_=131072", _MMAP),
    ("XLA: --xla_cpu_use_fusion_emitters=false", _NO_FUSION),
    ("XLA: --xla_cpu_parallel_codegen_split_count=1", {"XLA_FLAGS": "--xla_cpu_parallel_codegen_split_count=1"}),
    ("MALLOC_MMAP_THRESHOLD_=131072 + fusion emitters off", {**_MMAP, **_NO_FUSION}),
    # the step's 15.7 MiB of temporaries (RECON-A) mmapped, not kept in each XLA thread's arena
    ("MALLOC_MMAP_THRESHOLD_=8388608", {"MALLOC_MMAP_THRESHOLD_": "8388608"}),
]


def status_mb(field: str) -> float:
    value = _status_mb(field)
    return float("nan") if value is None else value


# --------------------------------------------------------------------------- one measurement (a worker process)


def _heap_in_use() -> Any:
    """A function giving the bytes glibc's malloc has handed out and not had back (all arenas:
    ``mallinfo2().uordblks``), or None where the C library is not glibc 2.33+."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    return lambda: fn().uordblks


class PeakWatch:
    """Samples VmRSS every ``every`` s in a thread and remembers the stage during which the
    highest sample fell (VmHWM gives the peak, not when it happened); with ``heap``, also the heap
    in use (:func:`_heap_in_use`), so that each XLA compilation's heap can be read off
    (:meth:`compile_heap`)."""

    def __init__(self, every: float = 0.002, heap: bool = True) -> None:
        import collections
        import threading

        self.stage, self.peak, self.at = "start", 0.0, "start"
        self._stop = threading.Event()
        self._every = every
        self._heap = _heap_in_use() if heap else None
        self.samples: collections.deque = collections.deque(maxlen=200_000)  # (time, heap in use)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            v = status_mb("VmRSS")
            if v > self.peak:
                self.peak, self.at = v, self.stage
            if self._heap is not None:
                self.samples.append((time.perf_counter(), self._heap()))
            self._stop.wait(self._every)

    def compile_heap(self, start: float, end: float) -> float | None:
        """The heap a compilation between ``start`` and ``end`` took at most (MiB): the highest
        heap in use sampled meanwhile, less the last sample before it began."""
        before = [h for t, h in list(self.samples) if t <= start]
        during = [h for t, h in list(self.samples) if start < t <= end]
        if not before or not during:
            return None
        return round((max(during) - before[-1]) / MIB, 1)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"sampled_peak_mib": round(self.peak, 1), "peak_during": self.at}


def measure(case: str, out_of_core: bool, passes: int, cache: str | None = None) -> dict:
    """One reconstruction of ``case`` with VmRSS at every stage (this process only); ``cache``:
    a directory for JAX's persistent compilation cache (None: compile everything)."""
    stages = [("Python", status_mb("VmRSS"))]
    watch = PeakWatch()
    import numpy as np

    stages.append(("+ import numpy", status_mb("VmRSS")))
    import jax
    import jax.numpy as jnp

    # XLA compilations after the baseline (each program is kept by the process): name, seconds, and
    # the heap each took while it compiled (read off the watch's samples once the run is over)
    compiled: list[tuple[str, float, float]] = []

    def on_event(event: str, seconds: float, **kw: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration" and watch.stage != "start":
            compiled.append((str(kw.get("fun_name", "?")), seconds, time.perf_counter()))

    jax.monitoring.register_event_duration_secs_listener(on_event)
    if cache:
        from ptyro_workflows.cache import enable_compilation_cache

        enable_compilation_cache(cache)

    stages.append(("+ import jax", status_mb("VmRSS")))
    jax.block_until_ready(jnp.ones(4) + 1)
    stages.append(("+ XLA's CPU client (first operation)", status_mb("VmRSS")))
    import ptyro_invert
    from ptyro_core import Dataset4D, Grid, replace

    try:
        from ptyro_core.sources import MemmapSource
    except ImportError:  # a checkout from before the pattern sources (for a before/after table)

        def MemmapSource(path: str) -> Any:  # noqa: N802
            return np.load(path, mmap_mode="r")

    baseline = status_mb("VmRSS")
    stages.append(("+ import ptyro_core, ptyro_invert (the imports)", baseline))
    watch.stage = "the patterns"
    counts = case.endswith("-counts")
    case_dir = os.path.join(CASES, case.removesuffix("-counts"))
    m = json.load(open(os.path.join(case_dir, "meta.json")))
    path = os.path.join(case_dir, "patterns_counts.npy" if counts else "patterns.npy")
    if out_of_core:
        pats = MemmapSource(path)
        what = f"+ the patterns: a MemmapSource over {os.path.getsize(path) / MIB:.0f} MiB on disk"
    else:
        pats = np.load(path)
        what = f"+ the patterns in memory ({pats.nbytes / MIB:.0f} MiB {pats.dtype.name})"
    data_bytes = int(np.prod(pats.shape)) * np.dtype(pats.dtype).itemsize
    stages.append((what, status_mb("VmRSS")))
    watch.stage = "Dataset4D and the initial state"
    pos = np.load(os.path.join(case_dir, "positions.npy")).astype(np.float32)
    probe = np.load(os.path.join(case_dir, "probe.npy"))
    grid = Grid(tuple(m["pattern_gpts"]), (m["sampling"],) * 2)
    ds = Dataset4D.lazy(pats, pos, grid=grid, energy=m["energy"]) if out_of_core else Dataset4D(pats, pos, grid=grid, energy=m["energy"])
    state = ptyro_invert.initial_state(ds, semiangle_cutoff=m["semiangle_cutoff"], aberrations={"C10": m["C10"]})
    state = replace(state, probe=probe[None])  # a host array: ReconState transfers it (jnp.asarray would compile a program)
    stages.append(("+ Dataset4D and the initial state", status_mb("VmRSS")))
    per_pass: list[float] = []
    cpu: list[tuple[float, int]] = []  # (process CPU seconds, minor page faults) after each pass
    watch.stage = "pass 1 (compilation included)"

    def after_pass(st: object) -> bool:
        jax.block_until_ready(st.object)  # type: ignore[attr-defined]
        per_pass.append(status_mb("VmRSS"))
        cpu.append((time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
        watch.stage = f"pass {len(per_pass) + 1}"
        return True

    report: list[dict] = []
    t0 = time.perf_counter()
    ptyro_invert.reconstruct(ds, state, algorithm="single_slice", iterations=passes, batch_size=m["batch_size"],
                             progress=False, callback=after_pass, report=report)  # fmt: skip
    wall = time.perf_counter() - t0
    for i, v in enumerate(per_pass):
        stages.append((f"after pass {i + 1}" + (" (compilation included)" if i == 0 else ""), v))
    peak = status_mb("VmHWM")
    where = watch.stop()
    programs = [{"program": name, "compile_s": round(sec, 3), "compile_heap_mib": watch.compile_heap(end - sec, end)} for name, sec, end in compiled]
    times = [r["time_s"] for r in report]
    steady = sorted(times[1:]) or times
    growth = (per_pass[-1] - per_pass[1]) / (len(per_pass) - 2) if len(per_pass) > 2 else None
    above = peak - baseline
    limit = 1024.0 if out_of_core else 1.5 * data_bytes / MIB + 100.0
    return {
        "case": case, "out_of_core": out_of_core, "compile_cache": "warm" if cache else "none (compiles)", "patterns": int(np.prod(pats.shape[:-2])), "pattern_shape": list(pats.shape[-2:]),
        "data_dtype": np.dtype(pats.dtype).name, "data_mib": round(data_bytes / MIB, 1), "passes": passes, "batch_size": m["batch_size"],
        "stages_mib": [[n, round(v, 1)] for n, v in stages], "baseline_mib": round(baseline, 1), "peak_mib": round(peak, 1),
        "peak_above_imports_mib": round(above, 1), "limit_above_imports_mib": round(limit, 1), "met": bool(above <= limit),
        "limit_rule": "1 GiB" if out_of_core else "1.5 x data + 100 MiB",
        "pass_times_s": [round(t, 3) for t in times], "time_per_pass_s": round(steady[len(steady) // 2], 3), "wall_s": round(wall, 2),
        "heap_growth_per_pass_mib": None if growth is None else round(growth, 2), **where,
        "programs_compiled": len(compiled), "compile_s": round(sum(p["compile_s"] for p in programs), 2), "programs": programs,
        # passes after the first: CPU seconds (all threads) and minor page faults per pass
        "cpu_per_pass_s": round((cpu[-1][0] - cpu[0][0]) / (len(cpu) - 1), 3) if len(cpu) > 1 else None,
        "minor_faults_per_pass": round((cpu[-1][1] - cpu[0][1]) / (len(cpu) - 1)) if len(cpu) > 1 else None,
    }  # fmt: skip


def time_ratio(case: str, rounds: int) -> dict:
    """Seconds per pass out of core over in memory, measured in one process on the same data:
    one compiling pass, then ``rounds`` x (a pass in memory, a pass out of core), interleaved so
    that both see the same machine load; medians."""
    import numpy as np

    import ptyro_invert
    from ptyro_core import Dataset4D, Grid, replace
    from ptyro_core.sources import MemmapSource

    d = os.path.join(CASES, case)
    m = json.load(open(os.path.join(d, "meta.json")))
    pos = np.load(os.path.join(d, "positions.npy")).astype(np.float32)
    grid = Grid(tuple(m["pattern_gpts"]), (m["sampling"],) * 2)
    path = os.path.join(d, "patterns.npy")
    sets = {
        "in memory": Dataset4D(np.load(path), pos, grid=grid, energy=m["energy"]),
        "out of core": Dataset4D.lazy(MemmapSource(path), pos, grid=grid, energy=m["energy"]),
    }
    state = ptyro_invert.initial_state(sets["in memory"], semiangle_cutoff=m["semiangle_cutoff"], aberrations={"C10": m["C10"]})
    state = replace(state, probe=np.load(os.path.join(d, "probe.npy"))[None])
    times: dict[str, list[float]] = {k: [] for k in sets}

    def one_pass(key: str) -> float:
        report: list[dict] = []
        ptyro_invert.reconstruct(sets[key], state, algorithm="single_slice", iterations=1, batch_size=m["batch_size"], progress=False, report=report)
        return float(report[0]["time_s"])

    one_pass("in memory")  # compiles (the same step serves both: same shapes and settings)
    for _ in range(rounds):
        for key in sets:
            times[key].append(one_pass(key))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    ratio = med["out of core"] / med["in memory"]
    return {"case": case, "rounds": rounds, "pass_times_s": times, "median_s": med, "ratio": round(ratio, 3), "limit": 1.3, "met": bool(ratio <= 1.3)}


def print_run(r: dict) -> None:
    print(f"\n{r['label']}: {r['patterns']} patterns {r['pattern_shape']} {r['data_dtype']} = {r['data_mib']:.0f} MiB, batch {r['batch_size']}")
    print(f"  {'stage':<62} {'VmRSS MiB':>10}")
    for name, v in r["stages_mib"]:
        print(f"  {name:<62} {v:>10.0f}")
    print(f"  {'peak (VmHWM)':<62} {r['peak_mib']:>10.0f}")
    if "peak_during" in r:
        print(f"  {'highest 2-ms sample, during ' + r['peak_during']:<62} {r['sampled_peak_mib']:>10.0f}")
    big = max(r.get("programs") or [{}], key=lambda x: x.get("compile_heap_mib") or 0)
    print(f"  programs compiled after the imports: {r.get('programs_compiled', '?')} ({r.get('compile_s', '?')} s)"
          + (f"; the largest compile heap: {big['program']} {big['compile_heap_mib']} MiB" if big.get("compile_heap_mib") else ""))  # fmt: skip
    if "peaks_above_imports_mib" in r:
        print(f"  peaks above the imports over {len(r['peaks_above_imports_mib'])} runs: {r['peaks_above_imports_mib']} MiB (met in {r['runs_met']})")
    print(f"  peak above the imports {r['peak_above_imports_mib']:.0f} MiB; limit ({r['limit_rule']}) {r['limit_above_imports_mib']:.0f} MiB: "
          f"{'met' if r['met'] else 'MISSED'}; {r['time_per_pass_s']:.2f} s/pass; heap growth {r['heap_growth_per_pass_mib']} MiB/pass")  # fmt: skip


# --------------------------------------------------------------------------- the driver


def variants(case: str, passes: int, rounds: int, path: str | None) -> int:
    """``case`` in a fresh process under each of VARIANTS, ``rounds`` rounds interleaved (so that
    each setting sees the same load); medians per setting, printed and written to ``path``."""
    ensure_case(case)
    got: dict[str, list[dict]] = {name: [] for name, _ in VARIANTS}
    for _ in range(rounds):
        for name, env in VARIANTS:
            res = subprocess.run([sys.executable, __file__, "--worker", case, "0", str(passes), "-"], capture_output=True, text=True,
                                 env={**os.environ, **env})  # fmt: skip
            line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
            if res.returncode or not line:
                print(f"{name}: failed\n{res.stderr[-3000:]}", file=sys.stderr)
                return 1
            got[name].append(json.loads(line[-1][7:]))

    def med(rs: list[dict], key: str) -> float:
        v = sorted(r[key] for r in rs)
        return v[len(v) // 2]

    table = []
    for name, env in VARIANTS:
        rs = got[name]
        table.append({"setting": name, "env": env, "peak_above_imports_mib": med(rs, "peak_above_imports_mib"),
                      "limit_mib": rs[0]["limit_above_imports_mib"], "peak_during": [r["peak_during"] for r in rs],
                      "time_per_pass_s": med(rs, "time_per_pass_s"), "cpu_per_pass_s": med(rs, "cpu_per_pass_s"),
                      "minor_faults_per_pass": med(rs, "minor_faults_per_pass"), "runs": rs})  # fmt: skip
    print(f"\n{case}, {passes} passes, {rounds} interleaved round(s), medians ({os.popen('uptime').read().strip()})")
    print(f"  {'setting':<52} {'peak above imports MiB':>22} {'s/pass':>7} {'CPU s/pass':>10} {'faults/pass':>11}  peak during")
    for r in table:
        print(f"  {r['setting']:<52} {r['peak_above_imports_mib']:>22.1f} {r['time_per_pass_s']:>7.3f} {r['cpu_per_pass_s']:>10.3f} "
              f"{r['minor_faults_per_pass']:>11.0f}  {', '.join(r['peak_during'])}")  # fmt: skip
    print(f"  limit: {table[0]['limit_mib']} MiB above the imports")
    if path:
        with open(path, "w") as f:
            json.dump({"command": " ".join(["benchmarks/profile_memory.py", *sys.argv[1:]]), "case": case, "passes": passes, "rounds": rounds,
                       "uptime": os.popen("uptime").read().strip(), "variants": table}, f, indent=1)  # fmt: skip
        print(f"\nwrote {path}")
    return 0


def ensure_case(case: str) -> float | None:
    """Generate a missing case (seconds taken, None if it was there)."""
    name = case.removesuffix("-counts")
    d = os.path.join(CASES, name)
    t = time.perf_counter()
    made = False
    if not os.path.exists(os.path.join(d, "meta.json")):
        sys.path.insert(0, HERE)
        import cases

        cases.make_any_recon_case(d, name)
        made = True
    if case.endswith("-counts") and not os.path.exists(os.path.join(d, "patterns_counts.npy")):
        import numpy as np

        # the same patterns as whole electron counts at RECON-A's dose (1e5 per pattern), uint16
        dose = json.load(open(os.path.join(d, "meta.json"))).get("dose") or 1e5
        pats = np.load(os.path.join(d, "patterns.npy"))
        np.save(os.path.join(d, "patterns_counts.npy"), np.clip(np.rint(pats * dose), 0, 65535).astype(np.uint16))
        made = True
    return round(time.perf_counter() - t, 1) if made else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="one case (recon-a, recon-a-counts, recon-l, recon-l-counts, recon-l-256), printed, not written")
    p.add_argument("--out-of-core", action="store_true", help="with --only: read the patterns through a MemmapSource")
    p.add_argument("--passes", type=int, default=None)
    p.add_argument("--big", action="store_true", help="add the 4 GiB RECON-L-256 out of core (generated if missing)")
    p.add_argument("--variants", metavar="CASE", help="run CASE (e.g. recon-a-counts) under each of VARIANTS, --rounds times interleaved, and print a table")
    p.add_argument("--rounds", type=int, default=2, help="with --variants: rounds (default 2)")
    p.add_argument("--cases", help="only these cases of the acceptance set (comma-separated: recon-a, recon-a-counts, recon-l, ...); written only with --json")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case (a fresh process each; the run with the median peak is reported, every peak kept)")
    p.add_argument("--before", default=None, metavar="DIR", help="also run each case on the sources of DIR (a checkout of an earlier commit), interleaved")
    p.add_argument(
        "--json",
        default=None,
        help="where to write the JSON (default: results/memory-profile.json for the acceptance set; --only writes only where this is given)",
    )
    p.add_argument("--worker", nargs=4, metavar=("CASE", "OUT_OF_CORE", "PASSES", "CACHE"), help=argparse.SUPPRESS)
    p.add_argument("--worker-ratio", nargs=2, metavar=("CASE", "ROUNDS"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker_ratio:
        print("RESULT " + json.dumps(time_ratio(a.worker_ratio[0], int(a.worker_ratio[1]))))
        return 0
    if a.worker:
        cache = None if a.worker[3] == "-" else a.worker[3]
        print("RESULT " + json.dumps(measure(a.worker[0], a.worker[1] == "1", int(a.worker[2]), cache)))
        return 0
    if a.variants:
        return variants(a.variants, a.passes or 6, a.rounds, a.json)
    runs = (
        [(f"{a.only}{' out of core' if a.out_of_core else ' in memory'}", a.only, a.out_of_core, a.passes or 3, False)]
        if a.only
        else RUNS + (BIG if a.big else [])
    )
    if a.cases:  # a part of the acceptance set, e.g. "recon-a,recon-a-counts"
        runs = [r for r in runs if r[1] in a.cases.split(",")]
    out: dict = {"command": " ".join(["benchmarks/profile_memory.py", *sys.argv[1:]]), "generated_s": {}, "runs": []}
    codes = {"ours": {}}
    if a.before:  # the same worker on an earlier checkout's sources, first on PYTHONPATH
        codes = {"before": {"PYTHONPATH": os.pathsep.join(os.path.join(os.path.abspath(a.before), q, "src") for q in PACKAGES)}, **codes}

    def worker(case: str, ooc: bool, passes: int, cache: str, env: dict) -> subprocess.CompletedProcess:
        cmd = [sys.executable, __file__, "--worker", case, "1" if ooc else "0", str(passes), cache]
        return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})

    for label, case, ooc, passes, warm in runs:
        gen = ensure_case(case)
        if gen is not None:
            out["generated_s"][case.removesuffix("-counts")] = gen
            print(f"generated {case} in {gen} s", flush=True)
        got: dict[str, list[dict]] = {code: [] for code in codes}
        for _ in range(a.repeat):  # the codes interleaved, so that each sees the same load
            for code, env in codes.items():
                cache_dir = os.path.join(HERE, ".work", f"profile-memory-jax-cache-{code}")
                shutil.rmtree(cache_dir, ignore_errors=True)
                if warm:  # a first run fills the cache (not recorded)
                    worker(case, ooc, a.passes or passes, cache_dir, env)
                res = worker(case, ooc, a.passes or passes, cache_dir if warm else "-", env)
                line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
                if res.returncode or not line:
                    print(f"{label} ({code}): failed\n{res.stderr[-3000:]}", file=sys.stderr)
                    return 1
                got[code].append({**json.loads(line[-1][7:]), "uptime": os.popen("uptime").read().strip()})
        for code, rs in got.items():
            # the run with the (upper) median peak stands for the case; every run's peak is kept
            peaks = sorted(x["peak_above_imports_mib"] for x in rs)
            r = {**sorted(rs, key=lambda x: x["peak_above_imports_mib"])[len(rs) // 2], "label": label + ("" if code == "ours" else f" ({code})")}
            if len(rs) > 1:
                r["peaks_above_imports_mib"] = peaks
                r["runs_met"] = sum(x["met"] for x in rs)
            out["runs"].append(r)
            print_run(r)
    if not a.only and not a.cases:  # the time target: out of core against in memory, interleaved in one process
        res = subprocess.run([sys.executable, __file__, "--worker-ratio", "recon-l", "2"], capture_output=True, text=True)
        line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
        if res.returncode or not line:
            print(f"time ratio: failed\n{res.stderr[-3000:]}", file=sys.stderr)
            return 1
        tr = {**json.loads(line[-1][7:]), "uptime": os.popen("uptime").read().strip()}
        out["time_ratio"] = tr
        print(f"\ntime per pass, RECON-L out of core / in memory (interleaved, one process, medians of {tr['rounds']}): "
              f"{tr['median_s']['out of core']:.2f} / {tr['median_s']['in memory']:.2f} s = {tr['ratio']:.2f} (limit 1.3): {'met' if tr['met'] else 'MISSED'}")  # fmt: skip
    path = a.json or (None if a.only or a.cases else os.path.join(HERE, "results", "memory-profile.json"))
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
