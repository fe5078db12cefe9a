"""Issue 14: the finite projection in Fourier space (face corrections from the tail factor t(k, d))
against the former finite projection (Fourier core + real-space remainder), build time and
simulated BF/ADF.

    .venv/bin/python benchmarks/potential_finite.py            # both parts (~3 min on an idle machine)
    .venv/bin/python benchmarks/potential_finite.py timing     # build times only
    .venv/bin/python benchmarks/potential_finite.py images     # BF/ADF before/after only
    .venv/bin/python benchmarks/potential_finite.py sim        # the SIM-A/SIM-B potential's build time

``timing``: after compilation, median of 3. The 1,440-atom cell (SrTiO3 6 × 6 × 8, 0.1 Å
sampling = 235², 16 slices of 1.95 Å), infinite and finite (new), Kirkland and Lobato; and a
180-atom cell (3 × 3 × 4, 118², 8 slices) finite new vs former (the former takes minutes on the
large cell). The former scheme is the same component without its tail factor (the framework's
fallback). ``images``: SrTiO3 2 × 2 × 3 cells moved up by a/4 (no atom on a slice face) and the
same cell with one frozen-phonon configuration (σ = 0.1 Å, atoms near faces), 0.1 Å sampling,
200 keV, 20 mrad, a 4 × 4 scan of one unit cell: relative change of the mean and the largest
change over positions of BF 0–20 and ADF 40–65 mrad. ``sim``: the potential of SIM-A/SIM-B
(benchmarks/cases.py: SrTiO3 8 × 8 × 10 cells, 3,200 atoms, 256², 20 slices), Kirkland, infinite
and finite, after compilation, and the 8 frozen-phonon configurations of SIM-B (σ = 0.1 Å).
"""

import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import potential_case as case  # noqa: E402

import ptyro_core  # noqa: E402
from ptyro_core import Atoms, Grid, ScanPositions  # noqa: E402
from ptyro_core._pytree import replace  # noqa: E402
from ptyro_simul.detectors import PixelatedDetector  # noqa: E402
from ptyro_simul.phonons import frozen_phonon_configurations  # noqa: E402
from ptyro_simul.potentials import ParametrizedPotential  # noqa: E402
from ptyro_simul.stem import simulate_4dstem  # noqa: E402
from ptyro_simul.structures import build_crystal  # noqa: E402


def former(pot: ParametrizedPotential) -> ParametrizedPotential:
    """The same parametrisation without a tail factor: the former finite projection."""
    return ParametrizedPotential(pot.name + "-former", pot.parameters, pot.projected, pot.potential_3d, scattering_factor=pot.scattering_factor_fn)


def _time(pot, at, grid, projection, repeats=3):
    t0 = time.perf_counter()
    jax.block_until_ready(pot(at, grid, slice_thickness=2.0, projection=projection).array)
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(pot(at, grid, slice_thickness=2.0, projection=projection).array)
        ts.append(time.perf_counter() - t0)
    return first, float(np.median(ts))


def cmd_timing() -> None:
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    big = build_crystal("SrTiO3", repeat=(6, 6, 8))
    for name in ("kirkland", "lobato"):
        pot = ptyro_core.get("potential", name)
        grid = Grid.from_extent(big.cell[:2], sampling=0.1)
        res = {p: _time(pot, big, grid, p) for p in ("infinite", "finite")}
        for p, (first, med) in res.items():
            print(f"{name} {p:8s} {big.positions.shape[0]} atoms {grid.gpts}: first {first:6.2f} s, then {med:.3f} s", flush=True)
        print(f"{name} 1440 atoms: finite / infinite = {res['finite'][1] / res['infinite'][1]:.1f}", flush=True)
    small = build_crystal("SrTiO3", repeat=(2, 2, 4))
    pot = ptyro_core.get("potential", "kirkland")
    grid = Grid.from_extent(small.cell[:2], sampling=0.1)
    new = _time(pot, small, grid, "finite")
    t0 = time.perf_counter()
    jax.block_until_ready(former(pot)(small, grid, slice_thickness=2.0, projection="finite").array)
    old = time.perf_counter() - t0
    n = small.positions.shape[0]
    print(f"kirkland finite {n} atoms {grid.gpts}: new first {new[0]:.2f} s then {new[1]:.3f} s; former one call {old:.1f} s", flush=True)
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)


def _images(pot, at, grid):
    p = pot(at, grid, slice_thickness=case.SLICE, projection="finite")
    probe = ptyro_core.get("probe", "aberrated")(grid, case.ENERGY, semiangle_cutoff=case.SEMIANGLE, aberrations={})
    scan = ScanPositions.raster((0.0, 0.0), case.SCAN_END, (4, 4))
    out = simulate_4dstem(p, probe, scan, detectors=[PixelatedDetector()], batch_size=16, progress=False)
    data = np.asarray(out["pixelated"], np.float64)
    ext = float(at.cell[0])
    return case.annular(data, ext, *case.BF), case.annular(data, ext, *case.ADF)


def cmd_images() -> None:
    numbers, pos, cell = case.structure()
    keep = (pos[:, 0] < 2 * case.A - 1e-6) & (pos[:, 1] < 2 * case.A - 1e-6) & (pos[:, 2] < 3 * case.A + 0.25 * case.A)
    cell = np.array([2 * case.A, 2 * case.A, 3 * case.A])
    at = Atoms(pos[keep].astype(np.float32), numbers[keep], cell=tuple(float(c) for c in cell))
    pos_in = np.asarray(at.positions).copy()
    pos_in[:, 2] = np.mod(pos_in[:, 2], cell[2])
    at = replace(at, positions=pos_in)
    shaken = frozen_phonon_configurations(at, 1, seed=1, sigmas=case.SIGMA)[0]
    grid = Grid.from_extent(at.cell[:2], sampling=0.1)
    pot = ptyro_core.get("potential", "kirkland")
    for label, a in (("no atom on a face", at), ("frozen phonon (sigma 0.1 A)", shaken)):
        bf_new, adf_new = _images(pot, a, grid)
        bf_old, adf_old = _images(former(pot), a, grid)
        for det, new, old in (("BF 0-20", bf_new, bf_old), ("ADF 40-65", adf_new, adf_old)):
            mean = new.mean() / old.mean() - 1
            worst = np.max(np.abs(new / old - 1))
            print(
                f"{label}, {a.positions.shape[0]} atoms {grid.gpts}, {det} mrad: new/former - 1 = {100 * mean:+.3f} % (mean), {100 * worst:.3f} % (largest over 16 positions)",
                flush=True,
            )


def cmd_sim() -> None:
    import cases

    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    at = build_crystal("SrTiO3", repeat=cases.SIM["cells"])
    grid = Grid(tuple(cases.SIM["gpts"]), tuple(float(c) / g for c, g in zip(at.cell[:2], cases.SIM["gpts"])))
    pot = ptyro_core.get("potential", "kirkland")
    dz = cases.SIM["slice_thickness"]
    for projection in ("infinite", "finite"):
        t0 = time.perf_counter()
        jax.block_until_ready(pot(at, grid, slice_thickness=dz, projection=projection).array)
        first = time.perf_counter() - t0
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(pot(at, grid, slice_thickness=dz, projection=projection).array)
            ts.append(time.perf_counter() - t0)
        print(f"SIM-A potential, {projection}: {at.positions.shape[0]} atoms {grid.gpts}: first {first:.2f} s, then {np.median(ts):.3f} s", flush=True)
    configs = frozen_phonon_configurations(at, 8, seed=0, sigmas=0.1)
    t0 = time.perf_counter()
    for c in configs:
        jax.block_until_ready(pot(c, grid, slice_thickness=dz).array)
    print(f"SIM-B phonons: 8 configurations (infinite), {time.perf_counter() - t0:.2f} s in all (compilation included)", flush=True)
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("timing", "all"):
        cmd_timing()
    if what in ("images", "all"):
        cmd_images()
    if what == "sim":
        cmd_sim()
    if what not in ("timing", "images", "sim", "all"):
        raise SystemExit(__doc__)
