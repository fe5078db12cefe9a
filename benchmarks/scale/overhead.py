"""Overhead of the sharded pipeline path over the plain path on one device (target: < 10%).

The plain path: `jax.jit(batch_fn)` called on each batch as it is. The sharded path:
`ptyro_core.pipeline.map_batches` (a one-axis mesh, batches placed with a NamedSharding, the
last batch padded, outputs streamed). Both compute the same SIM-A-like multislice batches;
rounds are interleaved A B A B and the median ratio is reported.

    python benchmarks/scale/overhead.py [--rounds 5] [--thickness 2]
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ptyro_core import Grid, ScanPositions, get  # noqa: E402
from ptyro_core.pipeline import batch_bounds, device_mesh, map_batches  # noqa: E402
from ptyro_simul.structures import build_crystal  # noqa: E402

A = 3.905


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--thickness", type=int, default=2, help="unit cells along the beam (SIM-A: 10)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "scale_overhead.json"))
    args = ap.parse_args()

    atoms = build_crystal("SrTiO3", repeat=(8, 8, args.thickness))
    grid = Grid.from_extent(atoms.cell[:2], gpts=256)
    potential = get("potential", "kirkland")(atoms, grid, slice_thickness=1.9525, projection="infinite")
    probe = get("probe", "aberrated")(grid, 200e3, semiangle_cutoff=20.0)
    positions = ScanPositions.raster((3.5 * A, 3.5 * A), (4.5 * A, 4.5 * A), (16, 16)).positions
    sim = get("simulator", "multislice")(potential, probe)

    def batch_fn(pos):
        return jnp.sum(sim(pos), axis=0)  # reduce so that transfers do not dominate either path

    plain_fn = jax.jit(batch_fn)
    n = positions.shape[0]

    def plain():
        outs = [plain_fn(positions[s:e]) for s, e in batch_bounds(n, args.batch)]
        return jax.block_until_ready(outs)

    mesh = device_mesh(jax.devices()[:1])

    def sharded():
        outs = [o for _, _, o in map_batches(batch_fn, positions, batch_size=args.batch, mesh=mesh)]
        return jax.block_until_ready(outs)

    a, b = plain(), sharded()  # compile both
    np.testing.assert_allclose(np.sum(np.asarray(a), 0), np.sum(np.asarray(b), 0), rtol=1e-5)
    t_plain, t_shard = [], []
    for _ in range(args.rounds):
        for f, acc in ((plain, t_plain), (sharded, t_shard)):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    ratios = [s / p for s, p in zip(t_shard, t_plain)]
    result = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {jax.devices()[0].platform}",
        "case": f"SrTiO3 8x8x{args.thickness}, 256x256, 16x16 positions, batch {args.batch}, 200 keV, 20 mrad",
        "plain_s": t_plain,
        "sharded_s": t_shard,
        "median_plain_s": statistics.median(t_plain),
        "median_sharded_s": statistics.median(t_shard),
        "per_round_ratio": ratios,
        "median_ratio": statistics.median(ratios),
        "overhead_percent": 100 * (statistics.median(ratios) - 1),
        "target": "overhead < 10%",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
