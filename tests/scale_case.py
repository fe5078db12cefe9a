"""A small simulate + reconstruct case run in a subprocess with a given number of fake CPU devices
(or as one process of a multi-process run); writes the results to an .npz file.

    python scale_case.py NUM_DEVICES OUT.npz [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

ndev = int(sys.argv[1])
jax.config.update("jax_num_cpu_devices", ndev)
if len(sys.argv) > 3:
    from ptyro_core.pipeline import initialize_distributed

    initialize_distributed(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))

import numpy as np  # noqa: E402

import ptyro_workflows as pw  # noqa: E402

SIM = {
    "specimen": {"structure": "SrTiO3", "repeat": [2, 2, 2]},
    "potential": {"gpts": [48, 48], "slice_thickness": 1.9525},
    "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "C10": -30.0},
    "scan": {"start": [1.0, 1.0], "end": [6.0, 6.0], "gpts": [6, 6]},
    "detectors": {"pixelated": True, "bf": [0, 20], "adf": [40, 100]},
}
RECON = {
    "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "C10": -30.0},
    # probe rate pinned (the default is scaled to the window since issue 21): a larger rate amplifies round-off over 20 Adam passes
    "reconstruction": {"algorithm": "single_slice", "iterations": 20, "batch_size": 8, "seed": 3, "probe_learning_rate": 0.002},
}

if __name__ == "__main__":
    sim = pw.simulate(SIM, progress=False)
    state = pw.reconstruct(sim.dataset, RECON, progress=False)
    sgd = {**RECON, "reconstruction": {**RECON["reconstruction"], "optimizer": "sgd"}}
    state_sgd = pw.reconstruct(sim.dataset, sgd, progress=False)
    if jax.process_index() == 0:
        np.savez(
            sys.argv[2],
            data=np.asarray(sim.dataset.array),
            bf=np.asarray(sim.images["bf"]),
            adf=np.asarray(sim.images["adf"]),
            object=np.asarray(state.object),
            probe=np.asarray(state.probe),
            loss=np.asarray(state.loss),
            sgd_object=np.asarray(state_sgd.object),
            sgd_probe=np.asarray(state_sgd.probe),
            sgd_loss=np.asarray(state_sgd.loss),
            devices=np.asarray(jax.device_count()),
        )
