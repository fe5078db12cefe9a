"""PRISM per position through the two routes: its own (``prism(...)`` once, then the simulator on
each batch, as ``bench_prism.py`` times it) and the pipeline's (``iter_4dstem(simulator="prism")``,
the route of ``ptyro simulate``), each timed after a warm-up run that compiles everything.

    .venv/bin/python plugins/ptyro-prism/bench_routes.py [--gpts 128] [--cells 4] [--thickness 5] [--scan 16] [--batch 64] [-f 2]

SrTiO3 [001], 200 keV, 20 mrad, Kirkland potential, two slices per unit cell, a scan × scan raster
over one unit cell; one pixelated detector on the pipeline route (the patterns themselves).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import ptyro_core
from ptyro_core import Grid
from ptyro_simul.detectors import PixelatedDetector
from ptyro_simul.stem import iter_4dstem
from ptyro_simul.structures import build_crystal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpts", type=int, default=128)
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--thickness", type=int, default=5)
    p.add_argument("--scan", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("-f", "--interpolation", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    atoms = build_crystal("SrTiO3", repeat=(args.cells, args.cells, args.thickness))
    a = atoms.cell[0] / args.cells
    grid = Grid((args.gpts, args.gpts), (atoms.cell[0] / args.gpts, atoms.cell[1] / args.gpts))
    potential = ptyro_core.get("potential", "kirkland")(atoms, grid, slice_thickness=a / 2)
    probe = ptyro_core.get("probe", "aberrated")(grid, 200e3, semiangle_cutoff=20.0)
    s = (np.arange(args.scan) + 0.5) * a / args.scan + a * (args.cells // 2)
    positions = jnp.asarray(np.stack(np.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2), jnp.float32)
    n = int(positions.shape[0])
    prism = ptyro_core.get("simulator", "prism")
    f = args.interpolation

    def own() -> np.ndarray:
        sim = prism(potential, probe, interpolation=f)
        return np.concatenate([np.asarray(sim(positions[i : i + args.batch])) for i in range(0, n, args.batch)])

    def pipeline() -> np.ndarray:
        out = np.empty((n, args.gpts, args.gpts), np.float32)
        for start, stop, sig in iter_4dstem(potential, probe, positions, detectors={"p": PixelatedDetector()}, batch_size=args.batch,
                                            simulator="prism", progress=False, interpolation=f):  # fmt: skip
            out[start:stop] = np.asarray(sig["p"])
        return out

    print(f"SrTiO3 {args.cells}x{args.cells}x{args.thickness}, {args.gpts}^2, {n} positions, batch {args.batch}, f={f}, "
          f"{jax.devices()[0].platform} x{jax.device_count()}")  # fmt: skip
    results = {}
    for name, fn in (("own route (bench_prism)", own), ("pipeline (iter_4dstem)", pipeline)):
        results[name] = fn()  # warm-up: compiles
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        best = min(times)
        print(f"{name:26s} best of {args.repeats}: {best:7.3f} s  {1e3 * best / n:7.2f} ms/position")
    a_, b_ = results.values()
    print(f"max |difference| / max: {float(np.abs(a_ - b_).max() / np.abs(a_).max()):.2e}")


if __name__ == "__main__":
    main()
