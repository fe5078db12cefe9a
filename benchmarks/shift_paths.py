"""What the step pays where the scan positions do not fall on few sub-pixel shifts (the paths of
``run_reconstruction(group_shifts=...)``), on one case's own data, in one process:

    .venv/bin/python benchmarks/shift_paths.py [--case recon-a] [--passes 3] [--rounds 2]

- grouped (the default where a raster's step is a rational number of pixels, RECON-A/B: 3 x 3
  shifts): the probe is shifted once per distinct shift and the far fields' gradient is written
  out (``forward.exit_far_fields``);
- every position shifted by its own FFT pair (``group_shifts=False``: what RECON-L, refined or
  distorted positions take), in one stream and in two.

Prints each run's seconds per pass (the first pass compiles). Session 9, idle, RECON-A: grouped
0.211-0.216 s, every position on its own 0.401-0.426 s (1.93x), two streams no faster.
"""

import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="recon-a", help="a RECON case under benchmarks/.work/cases (made by run.sh)")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    import ptyro_invert
    from ptyro_core import Dataset4D, Grid, replace

    d = os.path.join(HERE, ".work", "cases", a.case)
    if not os.path.exists(os.path.join(d, "meta.json")):
        raise SystemExit(f"shift_paths: no case {a.case!r} in {os.path.dirname(d)}; make it first (benchmarks/run.sh --only {a.case} --skip-install)")
    m = json.load(open(os.path.join(d, "meta.json")))
    pos = np.load(os.path.join(d, "positions.npy")).astype(np.float32)
    grid = Grid(tuple(m["pattern_gpts"]), (m["sampling"],) * 2)
    ds = Dataset4D(np.load(os.path.join(d, "patterns.npy")), pos, grid=grid, energy=m["energy"])
    st = ptyro_invert.initial_state(ds, semiangle_cutoff=m["semiangle_cutoff"], aberrations={"C10": m["C10"]})
    st = replace(st, probe=np.load(os.path.join(d, "probe.npy"))[None])

    def run(group: bool, streams: int) -> list[float]:
        rep: list[dict] = []
        ptyro_invert.reconstruct(ds, st, algorithm="single_slice", iterations=a.passes, batch_size=m["batch_size"], progress=False, report=rep,
                                 group_shifts=group, streams=streams)  # fmt: skip
        return [round(r["time_s"], 3) for r in rep]

    print(f"{a.case}: seconds per pass ({a.passes} passes; the first compiles), {os.popen('uptime').read().strip()}")
    for i in range(a.rounds):
        print(f"round {i + 1}: grouped {run(True, 1)}, per position {run(False, 1)}, per position in two streams {run(False, 2)}", flush=True)


if __name__ == "__main__":
    main()
