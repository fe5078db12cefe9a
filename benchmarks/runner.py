"""Side-by-side benchmark runner: Ptyrodactyl against abTEM, py4DSTEM, PtyRAD, Pty-chi, phaserEM and quantem.

    benchmarks/run.sh [--quick] [--only sim-a,recon-a] [--rounds N] [--skip-install]

1. Installs each reference code in its own venv under ``benchmarks/.envs/`` (a failure is recorded
   as "failed: <reason>" and the runner carries on).
2. Writes the shared inputs of each case under ``benchmarks/.work/cases/<case>/``.
3. Starts one worker process per code (``adapters/<code>_*.py`` in that code's venv), times the
   first call (JIT compilation included) separately, then runs the codes interleaved A B A B for
   several rounds; each worker reports its peak RSS at the end.
4. Checks accuracy (virtual BF/ADF against abTEM; phase error against the ground truth) and
   writes ``benchmarks/results/results.json`` and ``benchmarks/results/RESULTS.md``.
"""

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import cases  # noqa: E402

ENVS = os.path.join(HERE, ".envs")
WORK = os.path.join(HERE, ".work")
RESULTS = os.path.join(HERE, "results")
ADAPTERS = os.path.join(HERE, "adapters")
OUR_PY = os.path.join(ROOT, ".venv", "bin", "python")
BASE_PY = shutil.which("python3.11") or sys.executable

# name -> pip requirements (torch pinned to the CPU build that lies on this machine's disk)
REFERENCES = {
    "abtem": ["abtem==1.0.11"],
    "py4dstem": ["py4DSTEM==0.14.18"],
    "ptyrad": ["torch==2.13.0", "ptyrad==1.0.0"],
    "ptychi": ["torch==2.13.0", "ptychi==2.2.0"],
    # phaserEM's JAX back end is an optional dependency of its distribution: JAX named beside it
    "phaserem": ["jax", "phaserem==0.3.1"],
    "quantem": ["torch==2.13.0", "quantem==0.1.10"],
}
IMPORT_NAME = {"abtem": "abtem", "py4dstem": "py4DSTEM", "ptyrad": "ptyrad", "ptychi": "ptychi", "phaserem": "phaser", "quantem": "quantem"}

#: rounds per case in a full run (0: the first call is the only measurement); --rounds N sets the
#: rounds of SIM-A and RECON-A, --quick caps every case at 1
DEFAULT_ROUNDS = {"recon-l": 0, "recon-l-ms": 0, "recon-l-256": 0, "sim-a": 3, "sim-b-scan": 0, "sim-b-phonons": 0, "recon-a": 1, "recon-a-poisson": 1, "recon-b-multislice": 1, "recon-b-mixed": 1}
#: the window of the ``ptyro-window`` SIM-A run (pixels): 160 x 160 = 19.5 Å around each probe, the
#: smallest we found whose virtual BF and ADF images stay within 1 % of abTEM's full grid (128: BF
#: 1.02 %, ADF 0.97 %; 144: ADF 4.6 %, where the coarser detector pixels fall on the annulus edges)
SIM_WINDOW = 160

ALL_CASES = ["sim-a", "sim-b-scan", "sim-b-phonons", "recon-a", "recon-a-poisson", "recon-b-multislice", "recon-b-mixed"]
#: the sizes users run (cases.RECON_L_CASES): only with --only (16,384 patterns and more: hours
#: for the CPU references on 2 cores); 3 passes each
LARGE_CASES = ["recon-l", "recon-l-ms", "recon-l-256"]


def log(*a):
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}]", *a, flush=True)


# --------------------------------------------------------------------------- environments


def env_python(name: str) -> str:
    return os.path.join(ENVS, name, "bin", "python")


def install(name: str, skip: bool) -> dict:
    """Create ``.envs/<name>`` and pip-install the reference code; return {"ok", "version"|"error"}."""
    py = env_python(name)
    logf = os.path.join(WORK, "logs", f"install_{name}.log")
    os.makedirs(os.path.dirname(logf), exist_ok=True)
    try:
        if not os.path.exists(py):
            subprocess.run([BASE_PY, "-m", "venv", os.path.join(ENVS, name)], check=True, capture_output=True)
        if not skip:
            with open(logf, "w") as f:
                r = subprocess.run([py, "-m", "pip", "install", "-q", *REFERENCES[name]], stdout=f, stderr=subprocess.STDOUT, timeout=3600)
            if r.returncode:
                tail = open(logf).read().strip().splitlines()[-3:]
                return {"ok": False, "error": f"pip install failed: {' | '.join(tail)}"[:400]}
        r = subprocess.run(
            [py, "-c", f"import importlib.metadata as m; print(m.version({REFERENCES[name][-1].split('==')[0]!r}))"],
            capture_output=True, text=True, timeout=600,
        )
        if r.returncode:
            return {"ok": False, "error": f"not importable: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"}
        return {"ok": True, "version": r.stdout.strip()}
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}


# --------------------------------------------------------------------------- workers


class Worker:
    """One adapter process speaking the JSON-lines protocol of adapters/_proto.py."""

    def __init__(self, label, python, script, case_dir, extra_args=(), env=None, timeout=3600, warmup=True):
        self.label = label
        self.warmup = warmup  # time a first call before the rounds (JIT compilation)
        self.out_dir = os.path.join(WORK, "out", os.path.basename(case_dir), label)
        shutil.rmtree(self.out_dir, ignore_errors=True)
        os.makedirs(self.out_dir, exist_ok=True)
        self.errlog = open(os.path.join(WORK, "logs", f"{os.path.basename(case_dir)}_{label}.stderr"), "w")
        e = dict(os.environ)
        e.update(env or {})
        e.setdefault("PYTHONUNBUFFERED", "1")
        self.timeout = timeout
        threads = os.environ.get("PTYRO_BENCH_THREADS")
        if threads:  # --threads N (an environment variable: recon.py imports this file again as ``runner``)
            e["OMP_NUM_THREADS"] = threads
        self.proc = subprocess.Popen(
            [python, os.path.join(ADAPTERS, script), case_dir, self.out_dir, *extra_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errlog, text=True, env=e, cwd=ADAPTERS,
        )
        self.ready = self._read()
        self.failed = None if self.ready.get("ok") else self.ready.get("error", "did not start")

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = ""
            try:
                self.errlog.flush()
                with open(self.errlog.name) as f:
                    lines = [x for x in f.read().strip().splitlines() if x.strip()]
                tail = lines[-1] if lines else ""
            except OSError:
                pass
            return {"ok": False, "error": f"worker exited (rc={self.proc.returncode}) {tail}"[:500]}
        return json.loads(line)

    def ask(self, **msg):
        if self.failed:
            return {"ok": False, "error": self.failed}
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            self.failed = f"worker gone: {e}"
            return {"ok": False, "error": self.failed}
        r = self._read()
        if not r.get("ok"):
            self.failed = r.get("error", "failed")
        return r

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
        except Exception:
            self.proc.kill()
        self.errlog.close()


def time_codes(workers: list, rounds: int) -> dict:
    """First call (for workers with ``warmup``), then ``rounds`` interleaved rounds (A B C,
    A B C, ...; the order rotates each round so no code always runs right after another); returns
    per-code timings."""
    res = {w.label: {"first_call_s": None, "rounds_s": [], "error": w.failed} for w in workers}
    for w in workers:
        if w.failed:
            continue
        res[w.label]["import_s"] = w.ready.get("import_s")
        res[w.label]["import_rss_mb"] = w.ready.get("import_rss_mb")
        res[w.label]["setup_s"] = w.ready.get("setup_s")
        if not w.warmup and rounds > 0:  # with no rounds the first call is every code's measurement
            res[w.label]["first_call_s"] = "not warmed up (no JIT): its first call is round 1"
            continue
        log(f"  {w.label}: first call")
        r = w.ask(cmd="run")
        res[w.label]["first_call_s"] = r.get("seconds")
        res[w.label]["error"] = w.failed
    for i in range(rounds):
        order = workers[i % len(workers):] + workers[: i % len(workers)]
        for w in order:
            if w.failed:
                continue
            r = w.ask(cmd="run")
            if r.get("ok"):
                res[w.label]["rounds_s"].append(r["seconds"])
                res[w.label].setdefault("cpu_rounds_s", []).append(r.get("cpu_s"))
            res[w.label]["error"] = w.failed
        log(f"  round {i + 1}/{rounds}: " + ", ".join(f"{w.label}={res[w.label]['rounds_s'][-1]:.2f}s" for w in workers if res[w.label]["rounds_s"] and not w.failed))
    for w in workers:
        rs = res[w.label]["rounds_s"]
        res[w.label]["median_s"] = float(np.median(rs)) if rs else None
    return res


def finish_all(workers, res):
    for w in workers:
        if not w.failed:
            r = w.ask(cmd="finish")
            if r.get("ok"):
                res[w.label]["peak_rss_mb"] = r.get("peak_rss_mb")
                res[w.label]["info"] = {k: v for k, v in r.items() if k not in ("ok", "peak_rss_mb")}
            else:
                res[w.label]["error"] = r.get("error")
        w.close()
        if w.failed:
            res[w.label]["error"] = f"failed: {w.failed}"


def ratios(res: dict, ours: str, ref: str) -> dict | None:
    a, b = res.get(ours, {}).get("rounds_s", []), res.get(ref, {}).get("rounds_s", [])
    n = min(len(a), len(b))
    if not n:  # no rounds (single-run cases): the first calls
        fa, fb = res.get(ours, {}).get("first_call_s"), res.get(ref, {}).get("first_call_s")
        ok = all(isinstance(x, (int, float)) and x > 0 for x in (fa, fb))
        if ok and not res[ours].get("error") and not res[ref].get("error"):
            return {"per_round": [fa / fb], "median": fa / fb, "from": "first calls"}
        return None
    per = [a[i] / b[i] for i in range(n)]
    return {"per_round": per, "median": float(np.median(per))}


# --------------------------------------------------------------------------- SIM


def virtual_images(data4d: np.ndarray, meta: dict, extent=None) -> dict:
    """Virtual BF and ADF images (fraction of the incident intensity) from centred patterns on the
    full simulation grid (or on a window of ``extent`` Å, whose pixels are coarser)."""
    nx, ny = data4d.shape[-2:]
    lam = cases.wavelength(meta["energy"])
    extent = meta["extent"] if extent is None else extent
    kx = (np.arange(nx) - nx // 2) / extent[0]
    ky = (np.arange(ny) - ny // 2) / extent[1]
    alpha = np.sqrt(kx[:, None] ** 2 + ky[None, :] ** 2) * lam * 1e3
    out = {}
    for name, (lo, hi) in (("bf", meta["bf_mrad"]), ("adf", meta["adf_mrad"])):
        mask = (alpha >= lo) & (alpha < hi)
        out[name] = np.tensordot(data4d.astype(np.float64), mask.astype(np.float64), axes=([-2, -1], [0, 1]))
    out["total"] = data4d.astype(np.float64).sum(axis=(-2, -1))
    return out


def compare_images(ours: dict, ref: dict) -> dict:
    out = {}
    for k in ("bf", "adf"):
        a, b = ours[k], ref[k]
        out[k] = {
            "max_rel_diff": float(np.max(np.abs(a - b)) / np.max(np.abs(b))),
            "rms_rel_diff": float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2))),
            "mean_ours": float(a.mean()),
            "mean_ref": float(b.mean()),
        }
    out["total_intensity_ours"] = float(ours["total"].mean())
    out["total_intensity_ref"] = float(ref["total"].mean())
    return out


def prepare_sim(name: str, info: dict) -> str:
    case_dir = os.path.join(WORK, "cases", name)
    shutil.rmtree(case_dir, ignore_errors=True)
    n = cases.make_sim_atoms(case_dir, name)
    cases.save_meta(case_dir, cases.sim_meta(name, [], "none"))
    files, why = cases.ours_potential(case_dir, n)
    source = "ptyro kirkland"
    abtem_ok = info["envs"].get("abtem", {}).get("ok")
    if abtem_ok:  # abTEM's own potential too: cross-check (and fallback)
        r = subprocess.run([env_python("abtem"), os.path.join(ADAPTERS, "abtem_potential.py"), case_dir, str(n)], capture_output=True, text=True, cwd=ADAPTERS)
        if r.returncode:
            log("  abTEM potential failed:", r.stderr.strip().splitlines()[-1:])
            abtem_ok = False
    if files is None:
        if not abtem_ok:
            raise RuntimeError(f"no potential: ours unavailable ({why}) and abTEM failed")
        files = [f"abtem_potential_{k}.npy" for k in range(n)]
        source = f"abTEM kirkland (ours unavailable: {why})"
    meta = cases.sim_meta(name, files, source)
    if abtem_ok and source.startswith("ptyro"):
        a = np.load(os.path.join(case_dir, "ptyro_potential_0.npy")).sum(0)
        b = np.load(os.path.join(case_dir, "abtem_potential_0.npy")).sum(0)
        meta["potential_vs_abtem_rel_rms"] = float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))
    cases.save_meta(case_dir, meta)
    return case_dir


def run_sim(name: str, rounds: int, info: dict) -> dict:
    log(f"{name}: preparing inputs")
    case_dir = prepare_sim(name, info)
    meta = json.load(open(os.path.join(case_dir, "meta.json")))
    out = {"case": name, "potential_source": meta["potential_source"], "potential_vs_abtem_rel_rms": meta.get("potential_vs_abtem_rel_rms")}
    if rounds == 0:
        out["note"] = "one run per code (the first call, JIT compilation included): at this size compilation is a small share"
    workers = []

    def start(label, py, script, args):
        log(f"  starting {label}")
        w = Worker(label, py, script, case_dir, args)
        if w.failed:
            log(f"  {label} failed: {w.failed}")
        workers.append(w)
        return w

    ours = start("ptyro", OUR_PY, "ours_sim.py", ["ptyro"])
    if name == "sim-a":
        start("ptyro-window", OUR_PY, "ours_sim.py", ["ptyro-window", str(SIM_WINDOW)])
    if name == "sim-a" or ours.failed:
        start("jax-plain", OUR_PY, "ours_sim.py", ["jaxplain"])
    if info["envs"].get("abtem", {}).get("ok"):
        start("abtem", env_python("abtem"), "abtem_sim.py", [])
    else:
        out["abtem"] = {"error": f"failed: {info['envs'].get('abtem', {}).get('error')}"}
    if name == "sim-a":
        start("fft-floor", OUR_PY, "ours_sim.py", ["floor"])
        if info["envs"].get("abtem", {}).get("ok"):
            start("fftw-floor", env_python("abtem"), "fftw_floor.py", [])
    res = time_codes(workers, rounds)
    finish_all(workers, res)
    out.update(res)
    if name == "sim-a":  # accuracy only: the plain multislice with abTEM's band-limit taper
        log("  jax-plain-taper (accuracy only)")
        w = Worker("jax-plain-taper", OUR_PY, "ours_sim.py", case_dir, ["jaxplain-taper"])
        w.ask(cmd="run")
        w.ask(cmd="finish")
        w.close()
    # accuracy against abTEM
    ref_file = os.path.join(WORK, "out", name, "abtem", "data4d.npy")
    acc = {}
    if os.path.exists(ref_file):
        ref = virtual_images(np.load(ref_file), meta)
        for label in ("ptyro", "ptyro-window", "jax-plain", "jax-plain-taper"):
            f = os.path.join(WORK, "out", name, label, "data4d.npy")
            if os.path.exists(f):
                ext = res.get(label, {}).get("info", {}).get("pattern_extent")
                acc[label] = compare_images(virtual_images(np.load(f), meta, ext), ref)
                acc[label]["within_1pct"] = bool(acc[label]["bf"]["max_rel_diff"] <= 0.01 and acc[label]["adf"]["max_rel_diff"] <= 0.01)
    out["accuracy_vs_abtem"] = acc
    out["ratios"] = {f"{a}/{b}": ratios(res, a, b) for a in ("ptyro", "ptyro-window", "jax-plain") for b in ("abtem", "fft-floor")}
    out["ratios"]["abtem/fftw-floor"] = ratios(res, "abtem", "fftw-floor")
    out["ratios"]["fft-floor/fftw-floor"] = ratios(res, "fft-floor", "fftw-floor")
    return out


# --------------------------------------------------------------------------- main


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "loadavg_at_start": load}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round per case instead of --rounds")
    p.add_argument("--only", default=None, help=f"comma-separated cases among {','.join(ALL_CASES + LARGE_CASES)} (also: sim-b, recon-b)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds for sim-a, recon-a and the large cases (recon-l*; default 3, 1, 0: 0 = one first call per code)")
    p.add_argument("--skip-install", action="store_true", help="use the venvs already under .envs/")
    p.add_argument("--all-references", action="store_true", help="run PtyRAD and Pty-chi in every RECON case (default: RECON-A noise-free only)")
    p.add_argument("--references", default=None, help="comma-separated reference codes to run in the RECON cases, or 'none' (default: the case's usual set)")
    p.add_argument("--threads", type=int, default=None,
                   help="N threads for the OpenMP/PyTorch codes (on a loaded shared machine, 1 keeps PyTorch's thread pool from spinning against other users' jobs: 2 threads took 33 ms for a 248² abs that 1 thread does in 0.4 ms at load 8); default: every core. JAX's own pool is not changed")
    p.add_argument("--passes", type=int, default=None, help="RECON cases: passes per run for every code (default: the case's, 20); per-pass times stay comparable")
    p.add_argument("--out", default=RESULTS)
    a = p.parse_args(argv)
    if a.passes is not None and a.passes < 2:
        p.error(f"--passes: expected 2 or more (a per-pass time needs passes after the first), got {a.passes}")
    if a.threads is not None:
        if not 1 <= a.threads <= (os.cpu_count() or 1):
            p.error(f"--threads: expected 1..{os.cpu_count()} (this machine's cores), got {a.threads}")
        os.environ["PTYRO_BENCH_THREADS"] = str(a.threads)
    def rounds_for(case):
        r = DEFAULT_ROUNDS[case]
        if a.rounds is not None and case in ("sim-a", "recon-a", *LARGE_CASES):
            r = a.rounds
        return min(r, 1) if a.quick else r

    selected = ALL_CASES
    if a.only:
        want = [s.strip().lower() for s in a.only.split(",") if s.strip()]
        selected = [c for c in ALL_CASES if any(c == w or c.startswith(w + "-") for w in want)] + [c for c in LARGE_CASES if c in want]
        unknown = [w for w in want if not any(c == w or c.startswith(w + "-") for c in ALL_CASES) and w not in LARGE_CASES]
        if unknown:
            p.error(f"--only: unknown case(s) {unknown}; expected some of {ALL_CASES + LARGE_CASES}")
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    info_all_refs = a.all_references
    only_refs = None
    if a.references:
        only_refs = [r.strip().lower() for r in a.references.split(",") if r.strip() and r.strip().lower() != "none"]
        bad = [r for r in only_refs if r not in REFERENCES]
        if bad:
            p.error(f"--references: unknown code(s) {bad}; expected some of {sorted(REFERENCES)}")
    info = {"all_references": info_all_refs, "references": only_refs, "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
            "rounds": {c: rounds_for(c) for c in selected}, "threads": a.threads or "all cores", "passes": a.passes, "command": " ".join(["benchmarks/run.sh", *(argv if argv is not None else sys.argv[1:])]), "envs": {}}
    need = set()
    for c in selected:
        need |= {"abtem"} if c.startswith("sim") else set(("py4dstem", "ptyrad", "ptychi", "phaserem", "quantem") if only_refs is None else only_refs)
    for name in REFERENCES:
        if name in need:
            log(f"environment {name}")
            info["envs"][name] = install(name, a.skip_install)
            log(f"  {info['envs'][name]}")
    try:
        import jax

        info["envs"]["ptyrodactyl"] = {"ok": True, "version": __import__("ptyro_core").__version__, "jax": jax.__version__}
    except Exception as e:
        info["envs"]["ptyrodactyl"] = {"ok": False, "error": str(e)}
    results = {"info": info, "cases": {}}
    os.makedirs(a.out, exist_ok=True)
    prev = os.path.join(a.out, "results.json")
    if a.only and os.path.exists(prev):  # keep the other cases of an earlier run, with their run info
        try:
            old = json.load(open(prev))
            kept = {k: v for k, v in old.get("cases", {}).items() if k not in selected}
            for v in kept.values():
                v.setdefault("from_run", {"started": old["info"].get("started"), "command": old["info"].get("command"), "rounds": old["info"].get("rounds")})
            results["cases"].update(kept)
        except (OSError, ValueError, KeyError):
            pass
    for c in selected:
        t0 = time.time()
        try:
            if c.startswith("sim"):
                results["cases"][c] = run_sim(c, rounds_for(c), info)
            else:
                import recon

                results["cases"][c] = recon.run_recon(c, rounds_for(c), info)
        except Exception as e:
            import traceback

            traceback.print_exc()
            results["cases"][c] = {"error": f"failed: {type(e).__name__}: {e}"}
        results["cases"][c]["wall_s"] = time.time() - t0
        write_results(results, a.out)
    info["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_results(results, a.out)
    log(f"results in {a.out}")


def write_results(results: dict, out: str) -> None:
    import report

    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write(report.markdown(results, out))


if __name__ == "__main__":
    main()
