"""SIM-A timing: SrTiO3 [001] 8x8x10, 256x256, 20 slices of 1.9525 Å, 200 keV, 20 mrad,
16x16 scan over one unit cell (3.5a..4.5a, end excluded), Kirkland, infinite projection.

Run: .venv/bin/python ptyro_simul/scripts/sim_a.py [batch_size] [window]
(window: propagate each probe in a window x window crop of the periodic potential)
Prints the potential time, the first (jit-compiling) 4D-STEM call and the steady-state call.
"""

import sys
import time

import jax
import numpy as np

from ptyro_core import Grid, ScanPositions
from ptyro_simul.detectors import AnnularDetector, PixelatedDetector
from ptyro_simul.potentials import kirkland
from ptyro_simul.probe import aberrated_probe
from ptyro_simul.stem import simulate_4dstem
from ptyro_simul.structures import build_crystal

a = 3.905
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
window = int(sys.argv[2]) if len(sys.argv) > 2 else None
atoms = build_crystal("SrTiO3", repeat=(8, 8, 10))
grid = Grid.from_extent(atoms.cell[:2], gpts=(256, 256))
t = time.perf_counter()
pot = kirkland(atoms, grid, slice_thickness=1.9525)
pot.array.block_until_ready()
t_pot1 = time.perf_counter() - t
t = time.perf_counter()
pot = kirkland(atoms, grid, slice_thickness=1.9525)
pot.array.block_until_ready()
t_pot2 = time.perf_counter() - t
probe_grid = grid if window is None else Grid((window, window), grid.sampling)
probe = aberrated_probe(probe_grid, 200e3, semiangle_cutoff=20.0)
options = {} if window is None else {"window": (window, window)}
scan = ScanPositions.raster((3.5 * a, 3.5 * a), (4.5 * a, 4.5 * a), (16, 16))
dets = [PixelatedDetector(), AnnularDetector(70, 200, name="haadf")]
times = []
for _ in range(3):
    t = time.perf_counter()
    out = simulate_4dstem(pot, probe, scan, detectors=dets, batch_size=batch, progress=False, **options)
    times.append(time.perf_counter() - t)
print(f"devices: {jax.devices()}  slices: {pot.num_slices}  atoms: {len(atoms)}  batch: {batch}  window: {window}")
print(f"potential: first {t_pot1:.2f} s, again {t_pot2:.2f} s")
print(f"4D-STEM: first call {times[0]:.2f} s, steady state {min(times[1:]):.2f} s; {out['pixelated'].shape}")
print(f"haadf range: {out['haadf'].min():.4g} .. {out['haadf'].max():.4g}")
