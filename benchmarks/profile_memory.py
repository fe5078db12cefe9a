"""Where our RECON-A peak memory goes: the resident memory of one process at each stage of the
benchmark's reconstruction, against the target (half of py4DSTEM's peak in results.json).

    .venv/bin/python benchmarks/profile_memory.py [case_dir] [--passes 20]

Run ``benchmarks/run.sh --only recon-a`` first (it writes the case and py4DSTEM's peak). Prints,
in MiB, VmRSS after each stage (Python alone, NumPy, JAX, XLA's CPU client started by the first
operation, the Ptyrodactyl libraries, the patterns, the initial state, every pass) and VmHWM, the
peak the benchmark reports. The stages before the first pass are what any JAX program pays before
it computes anything; the per-pass rows show whether the peak still grows once compiled.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "adapters"))

from _proto import _status_mb  # noqa: E402  (standard library only: imports nothing to measure)


def status_mb(field: str) -> float:
    value = _status_mb(field)
    return float("nan") if value is None else value


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("case_dir", nargs="?", default=os.path.join(HERE, ".work", "cases", "recon-a"))
    p.add_argument("--passes", type=int, default=20)
    a = p.parse_args()
    rows = [("Python", status_mb("VmRSS"))]
    import numpy as np

    rows.append(("+ import numpy", status_mb("VmRSS")))
    import jax
    import jax.numpy as jnp

    rows.append(("+ import jax", status_mb("VmRSS")))
    jax.block_until_ready(jnp.ones(4) + 1)
    rows.append(("+ XLA's CPU client (first operation)", status_mb("VmRSS")))
    import ptyro_invert
    from ptyro_core import Dataset4D, Grid, replace

    rows.append(("+ import ptyro_core, ptyro_invert", status_mb("VmRSS")))
    m = json.load(open(os.path.join(a.case_dir, "meta.json")))
    pats = np.load(os.path.join(a.case_dir, "patterns.npy"))
    rows.append((f"+ the patterns ({pats.nbytes / 2**20:.0f} MiB)", status_mb("VmRSS")))
    pos = np.load(os.path.join(a.case_dir, "positions.npy")).astype(np.float32)
    probe = np.load(os.path.join(a.case_dir, "probe.npy"))
    ds = Dataset4D(pats, pos, grid=Grid(tuple(m["pattern_gpts"]), (m["sampling"],) * 2), energy=m["energy"])
    state = ptyro_invert.initial_state(ds, semiangle_cutoff=m["semiangle_cutoff"], aberrations={"C10": m["C10"]})
    state = replace(state, probe=jnp.asarray(probe[None]))
    rows.append(("+ Dataset4D and the initial state", status_mb("VmRSS")))
    per_pass = []

    def after_pass(st):  # one call of `passes` passes, as the benchmark's worker runs it
        jax.block_until_ready(st.object)
        per_pass.append(status_mb("VmRSS"))
        return True

    ptyro_invert.reconstruct(ds, state, algorithm="single_slice", iterations=a.passes, batch_size=m["batch_size"],
                             progress=False, callback=after_pass)  # fmt: skip
    for i, v in enumerate(per_pass):
        if i < 2 or i == len(per_pass) - 1:
            rows.append((f"after pass {i + 1}" + (" (compilation included)" if i == 0 else ""), v))
    peak = status_mb("VmHWM")
    ref = None
    try:
        res = json.load(open(os.path.join(HERE, "results", "results.json")))
        ref = res["cases"]["recon-a"]["py4dstem"]["peak_rss_mb"]
    except (OSError, KeyError, TypeError, ValueError):
        pass
    print(f"{'stage':<48} {'VmRSS MiB':>10}")
    for name, v in rows:
        print(f"{name:<48} {v:>10.0f}")
    print(f"{'peak (VmHWM)':<48} {peak:>10.0f}")
    if ref:
        print(f"target: 0.5 x py4DSTEM's peak {ref:.0f} MiB = {0.5 * ref:.0f} MiB; "
              f"reached before any computation (XLA client + libraries + patterns): {rows[5][1]:.0f} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
