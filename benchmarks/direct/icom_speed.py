"""Where iCoM's time goes, before and after the one-pass centre of mass, interleaved in one run.

    .venv/bin/python benchmarks/direct/icom_speed.py [--repeats 15] [--skip crystal]

On compare.py's two cases (amorphous: 48² scan × 48² patterns; SrTiO3: 32² scan × 128²
patterns), each warm call timed alternately:

- ``before``: the former route, rebuilt from the same pieces: the patterns copied to the
  device as float32 (``jnp.asarray``), the centre of mass by
  :func:`ptyro_invert.calibrate.center_of_mass` (three reductions over the 4D array), the
  descan, the integration and the placement on the object grid run op by op (not jitted);
- ``after``: the registered ``icom`` (one pass over the patterns read in place for the three
  moments, no device or float copy of the 4D array; jitted integration and placement), and
  the same on the counts stored as uint16 (converted a block at a time);
- the stages of ``after``: the pass (``project_patterns``), the DPC field (pass + descan),
  the integration and the placement (``finish``).

Prints medians (and minima) in ms with ``uptime``, and the largest phase difference between the
two routes (they compute the same thing: equal to float32 round-off). Then how the new route's
time grows: three scan sizes (32², 64², 128² at 32² patterns) and three pattern sizes (32²,
64², 128² at a 32² scan), Poisson counts (the time does not depend on what the patterns show),
the 4D array at most 67 MB.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _warm import warm_runs  # noqa: E402
from compare import amorphous_case, crystal_case  # noqa: E402


def before(ds, state):
    """The route iCoM took before this change (the same pieces, eager, a device copy)."""
    import jax.numpy as jnp

    from ptyro_core import replace
    from ptyro_invert.calibrate import center_of_mass, fit_descan
    from ptyro_invert.direct import _common, icom

    lat = _common.scan_lattice(ds.positions, ds.scan_shape)
    com = center_of_mass(jnp.asarray(np.asarray(ds.array, np.float32)))
    field = (com - jnp.asarray(fit_descan(np.asarray(com), "constant"), com.dtype)) * jnp.asarray(ds.grid.reciprocal_sampling, com.dtype)
    q = jnp.asarray(lat.frequencies(), field.dtype)
    phase = icom._integrate.__wrapped__(field, q, 0.0)
    # the placement, op by op (what finish did before it was jitted)
    slat = _common.scan_lattice(state.positions, lat.shape)
    d = np.asarray(state.sampling, np.float64)
    factor = max(1, int(np.ceil(max(slat.step) / min(d) - 1e-6)))
    ox, oy = state.object.shape[-2:]
    c = np.stack(np.meshgrid(np.arange(ox) * d[0] - slat.origin[0], np.arange(oy) * d[1] - slat.origin[1], indexing="ij"), -1)
    c = c @ np.linalg.inv(slat.vectors).T
    inside = (c[..., 0] >= -0.5) & (c[..., 0] <= lat.shape[0] - 0.5) & (c[..., 1] >= -0.5) & (c[..., 1] <= lat.shape[1] - 0.5)
    coords = np.stack([np.mod(c[..., 0], lat.shape[0]) * factor, np.mod(c[..., 1], lat.shape[1]) * factor]).astype(np.float32)
    obj = _common._place.__wrapped__(phase, jnp.asarray(coords), jnp.asarray(inside), factor)
    return replace(state, object=obj, slice_thickness=state.slice_thickness[:1])


def run_case(label, ds, state, repeats):
    import jax

    from ptyro_core import Dataset4D, get
    from ptyro_invert.direct import _common, icom

    lat = _common.scan_lattice(ds.positions, ds.scan_shape)
    w = icom.com_weights(ds.grid.gpts)
    field = icom.com_field(ds)
    phase = icom.integrate_gradient(field, lat.vectors)
    fn = get("reconstruction", "icom")
    counts = Dataset4D(np.asarray(ds.array).astype(np.uint16), ds.positions, grid=ds.grid, energy=ds.energy)  # the counts as a detector writes them
    parts = {
        "before": lambda: before(ds, state).object,
        "after": lambda: fn(ds, state).object,
        "after, uint16": lambda: fn(counts, state).object,
        "pass": lambda: _common.project_patterns(ds, w),
        "field": lambda: icom.com_field(ds),
        "integrate": lambda: icom.integrate_gradient(field, lat.vectors),
        "place": lambda: _common.finish(state, phase, lat).object,
    }
    for p in parts.values():
        jax.block_until_ready(p())
    times = {k: [] for k in parts}
    for _ in range(repeats):
        for k, p in parts.items():
            t = time.perf_counter()
            jax.block_until_ready(p())
            times[k].append(time.perf_counter() - t)
    diff = float(np.max(np.abs(np.angle(np.asarray(parts["before"]())) - np.angle(np.asarray(parts["after"]())))))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"\n{label}: scan {ds.scan_shape}, patterns {tuple(ds.grid.gpts)}, {np.asarray(ds.array).dtype}; median of {repeats} warm calls, interleaved")
    print("| " + " | ".join(parts) + " | before / after |")
    print("|" + "---|" * (len(parts) + 1))
    print("| " + " | ".join(f"{med[k]:.2f} ms (min {min(times[k]) * 1e3:.2f})" for k in parts) + f" | {med['before'] / med['after']:.2f} |")
    print(f"largest phase difference before/after: {diff:.2e} rad")


def scaling(repeats):
    """The new route's median time at three scan and three pattern sizes."""
    import jax

    from ptyro_core import Dataset4D, get
    from ptyro_invert import synthetic as syn

    fn = get("reconstruction", "icom")
    print(
        f"\nscaling (median of {repeats} warm calls, ms)\n| axis | scan | patterns | 4D array | before | after | before / after |\n|---|---|---|---|---|---|---|"
    )
    for axis, scan, gpts in [("scan", 32, 32), ("scan", 64, 32), ("scan", 128, 32), ("patterns", 32, 64), ("patterns", 32, 128)]:
        grid, positions, state = syn.setup(gpts=gpts, sampling=0.2, scan=(scan, scan), step=0.25, energy=300e3, semiangle_cutoff=25.0)
        counts = np.random.default_rng(0).poisson(2.0, (scan, scan, gpts, gpts)).astype(np.float32)
        ds = Dataset4D(counts, positions, grid=grid, energy=300e3)
        med = {
            name: warm_runs(lambda f=f, ds=ds, state=state: jax.block_until_ready(f(ds, state).object), repeats)[1] * 1e3
            for name, f in (("before", before), ("after", fn))
        }
        print(
            f"| {axis} | {scan}² | {gpts}² | {counts.nbytes / 2**20:.0f} MiB | {med['before']:.2f} | {med['after']:.2f} | {med['before'] / med['after']:.1f} |",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--skip", default="", help="comma-separated: amorphous, crystal, scaling")
    args = ap.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if "amorphous" not in args.skip:
        ds, state, *_ = amorphous_case()
        run_case("amorphous", ds, state, args.repeats)
    if "crystal" not in args.skip:
        ds, state, *_ = crystal_case()
        run_case("SrTiO3", ds, state, args.repeats)
    if "scaling" not in args.skip:
        scaling(args.repeats)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
