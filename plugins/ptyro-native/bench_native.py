"""SIM-A-sized far field, native back end against XLA (indicative on a shared machine).

    .venv/bin/python plugins/ptyro-native/bench_native.py [--positions 64] [--repeats 3]

SrTiO3 [001], 8×8×10 cells (31.24 Å, 20 slices of 1.9525 Å), Kirkland potential, 256² grid,
200 keV, 20 mrad; ``positions`` of SIM-A's 16×16 scan over the central unit cell, one batch of
64, full 256² patterns, through ``simulate_4dstem`` (one stream, so the two back ends are
compared on the same work), best of ``repeats`` after a warm-up that compiles.
"""

import argparse
import time

import numpy as np

import ptyro_core
from ptyro_core import Grid
from ptyro_simul.detectors import PixelatedDetector
from ptyro_simul.stem import simulate_4dstem
from ptyro_simul.structures import build_crystal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--positions", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backends", nargs="+", default=["xla", "native"])
    args = p.parse_args()
    atoms = build_crystal("SrTiO3", repeat=(8, 8, 10))
    a = 3.905
    grid = Grid((256, 256), (atoms.cell[0] / 256, atoms.cell[1] / 256))
    pot = ptyro_core.get("potential", "kirkland")(atoms, grid, slice_thickness=a / 2)
    probe = ptyro_core.get("probe", "aberrated")(grid, 200e3, semiangle_cutoff=20.0)
    s = 3.5 * a + np.arange(16) * a / 16
    pos = np.stack(np.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2)[: args.positions].astype(np.float32)
    out = {}
    for backend in args.backends:
        record: dict = {}

        def run(backend=backend, record=record):
            return simulate_4dstem(pot, probe, pos, detectors=[PixelatedDetector()], batch_size=64, progress=False, streams=1,
                                   backend=backend, record=record)["pixelated"]  # fmt: skip

        out[backend] = run()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        print(f"{backend:7s} ({record['backend']}): best of {args.repeats} {min(times):7.3f} s, {1e3 * min(times) / len(pos):6.2f} ms/position")
    if len(out) == 2:
        x, n = out.values()
        print(f"max |difference| / max: {float(np.abs(x - n).max() / x.max()):.2e}")


if __name__ == "__main__":
    main()
