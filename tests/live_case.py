"""A small simulated 4D-STEM series for the live tests: a MoS2-like phase object, 32x32 patterns,
8x8 scan (step 0.6 Å = 3 object pixels), 300 keV, 25 mrad, Poisson counts as uint16."""

import numpy as np

from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object

GPTS, SAMPLING, SCAN, STEP = 32, 0.2, (8, 8), 0.6
CONFIG = {
    "probe": {"energy": 300e3, "semiangle_cutoff": 25.0, "C10": 60.0},
    "scan": {"gpts": list(SCAN), "step": [STEP, STEP]},
    "reconstruction": {"batch_size": 8, "learning_rate": 0.05, "probe_learning_rate": 0.005},
    "live": {"reciprocal_sampling": 1.0 / (GPTS * SAMPLING), "batch": 8},
}


def make_case(dose: float = 1e5):
    grid, scan, st0 = setup(gpts=GPTS, sampling=SAMPLING, scan=SCAN, step=STEP, aberrations={"C10": 60.0})
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.7, 0.9)))[None])
    ds = simulate(truth, grid, scan, dose=dose)
    counts = np.asarray(ds.array).astype(np.uint16)
    return st0, truth, ds, counts
