"""Re-measure the peak memory of some codes on an existing case, one run each, and update
``results/results.json`` and ``RESULTS.md``:

    .venv/bin/python benchmarks/memory.py recon-a ptyro,py4dstem

Each code runs once in its own worker (the same adapters as the timed runs); its peak RSS is the
worker's VmHWM (see adapters/_proto.py). Used when a case's memory figures must be taken again
without repeating its timed rounds.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import runner  # noqa: E402
from recon import REF_ADAPTERS  # noqa: E402


def main():
    case, codes = sys.argv[1], sys.argv[2].split(",")
    case_dir = os.path.join(runner.WORK, "cases", case)
    out = {}
    for code in codes:
        if code == "ptyro":
            py, script = runner.OUR_PY, "ours_recon.py" if case.startswith("recon") else "ours_sim.py"
        elif code == "abtem":
            py, script = runner.env_python("abtem"), "abtem_sim.py"
        else:
            py, script = runner.env_python(code), REF_ADAPTERS[code]
        runner.log(f"{case}: {code} (memory run)")
        w = runner.Worker(f"mem-{code}", py, script, case_dir, env={"OMP_NUM_THREADS": str(os.cpu_count() or 2)})
        r1 = w.ask(cmd="run")
        r2 = w.ask(cmd="finish")
        w.close()
        out[code] = r2.get("peak_rss_mb") if r1.get("ok") and r2.get("ok") else f"failed: {w.failed}"
        runner.log(f"  peak RSS {out[code]}")
    path = os.path.join(runner.RESULTS, "results.json")
    res = json.load(open(path))
    c = res["cases"][case]
    mem = {"peak RSS MiB (VmHWM, one run each)": out}
    if isinstance(out.get("ptyro"), float) and isinstance(out.get("py4dstem"), float):
        mem["ptyro/py4dstem"] = round(out["ptyro"] / out["py4dstem"], 3)
    mem["note"] = "re-measured with benchmarks/memory.py; the peak RSS column of the timed run used ru_maxrss, which Linux carries over from the runner process at fork+exec, so it is superseded"
    c["memory"] = mem
    for code, v in out.items():  # the per-code column too
        if isinstance(v, float) and isinstance(c.get(code), dict):
            c[code]["peak_rss_mb"] = v
            c[code]["peak_rss_note"] = "VmHWM, re-measured by memory.py"
    runner.write_results(res, runner.RESULTS)


if __name__ == "__main__":
    main()
