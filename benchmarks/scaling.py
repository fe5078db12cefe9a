"""Is our time per pattern the same at the sizes users run? RECON-L single slice (one mode) at
1,024, 4,096 and 16,384 patterns: the top-left 32 x 32, 64 x 64 and full 128 x 128 rasters of the
same dataset, ours only, a few passes each after a warm-up call (compilation), the sizes
interleaved round by round, the fastest round kept.

    .venv/bin/python benchmarks/scaling.py [--passes 2] [--rounds 2] [--out benchmarks/results/scaling.json]

Writes the RECON-L dataset under benchmarks/.work/cases/recon-l first if it is not there (the
suite's own NumPy forward model, ~1 GiB memory map). Target (issue 18): time per pattern per pass
at 16,384 within 10 % of that at 1,024.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cases  # noqa: E402

SIZES = (32, 64, 128)  # raster side: 1,024, 4,096, 16,384 patterns


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=os.path.join(HERE, "results", "scaling.json"))
    a = p.parse_args(argv)
    case_dir = os.path.join(HERE, ".work", "cases", "recon-l")
    if not os.path.exists(os.path.join(case_dir, "meta.json")):
        print("writing the RECON-L dataset ...", flush=True)
        cases.make_recon_l_case(case_dir, "recon-l")
    import jax
    import jax.numpy as jnp

    import ptyro_invert
    from ptyro_core import Dataset4D, Grid, replace

    m = json.load(open(os.path.join(case_dir, "meta.json")))
    pats = np.load(os.path.join(case_dir, "patterns.npy"), mmap_mode="r")
    pos = np.load(os.path.join(case_dir, "positions.npy")).reshape(tuple(m["scan_gpts"]) + (2,)).astype(np.float32)
    probe = np.load(os.path.join(case_dir, "probe.npy"))
    grid = Grid(tuple(m["pattern_gpts"]), (m["sampling"],) * 2)
    runs = {}
    for side in SIZES:
        ds = Dataset4D(np.ascontiguousarray(pats[:side, :side]), pos[:side, :side].reshape(-1, 2), grid=grid, energy=m["energy"])
        st = ptyro_invert.initial_state(ds, semiangle_cutoff=m["semiangle_cutoff"], aberrations={"C10": m["C10"]})
        runs[side] = (ds, replace(st, probe=jnp.asarray(probe[None], st.probe.dtype)))

    def call(side, passes):
        ds, st = runs[side]
        fresh = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, st)
        t, c = time.perf_counter(), time.process_time()
        out = ptyro_invert.reconstruct(ds, fresh, algorithm="single_slice", iterations=passes, batch_size=m["batch_size"], progress=False)
        jax.block_until_ready(out.object)
        return time.perf_counter() - t, time.process_time() - c

    first = {side: call(side, a.passes)[0] for side in SIZES}  # compilation (each size has its own shapes)
    rounds: dict = {side: [] for side in SIZES}
    cpu: dict = {side: [] for side in SIZES}
    for r in range(a.rounds):
        order = SIZES[r % len(SIZES):] + SIZES[: r % len(SIZES)]
        for side in order:
            wall, c = call(side, a.passes)
            rounds[side].append(wall)
            cpu[side].append(c)
        print(f"round {r + 1}: " + ", ".join(f"{s * s}: {rounds[s][-1]:.2f} s" for s in SIZES), os.getloadavg(), flush=True)
    table = []
    base = base_cpu = None
    for side in SIZES:
        n = side * side
        per_pattern = min(rounds[side]) / a.passes / n
        per_pattern_cpu = min(cpu[side]) / a.passes / n
        base = per_pattern if base is None else base
        base_cpu = per_pattern_cpu if base_cpu is None else base_cpu
        table.append({"patterns": n, "first call s": round(first[side], 3), "rounds s": [round(x, 3) for x in rounds[side]],
                      "per pass s (fastest round)": round(min(rounds[side]) / a.passes, 4), "per pattern per pass us": round(per_pattern * 1e6, 2),
                      "per pattern, relative to 1,024": round(per_pattern / base, 3),
                      # CPU seconds of the process (all threads): less moved by other users' load than the wall time
                      "cpu per pattern per pass us": round(per_pattern_cpu * 1e6, 2), "cpu per pattern, relative to 1,024": round(per_pattern_cpu / base_cpu, 3)})  # fmt: skip
    res = {"command": "benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]), "taken": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
           "loadavg_at_end": os.getloadavg(), "case": "recon-l (single slice, one mode), top-left sub-rasters", "passes": a.passes, "rounds": a.rounds,
           "jax": jax.__version__, "table": table, "linear within 10 % (16,384 vs 1,024)": bool(table[-1]["per pattern, relative to 1,024"] <= 1.10),
           "linear within 10 % in CPU time": bool(table[-1]["cpu per pattern, relative to 1,024"] <= 1.10)}  # fmt: skip
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
