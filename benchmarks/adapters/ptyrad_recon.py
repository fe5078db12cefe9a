"""PtyRAD adapter for RECON-A / RECON-B (CPU build of torch).

PtyRAD's automatic-differentiation reconstruction with its default model/optimiser settings
(Adam, its default learning rates), 20 iterations, batch 64, probe optimised, on the CPU,
configured as a user would through a params dict (validated by ``PtyRADParams``):
measurements and probe passed in memory ('custom'), positions from the raster description
('simu': 32×32, 0.5 Å step; PtyRAD's (y, x) = our (x, y), y being the slow axis like our
row-major raster), pixel size given directly (``meas_calibration: dx``). For RECON-B mixed the
probe is PtyRAD's own 'simu' probe with 4 modes. Only the reconstruction loop is timed
(``PtyRADSolver.reconstruct``); building the solver is reported as ``build_s``.
"""

import logging
import os
import time

from _proto import load_meta, serve, threads, timed_import

with timed_import():
    import numpy as np
    import torch
    import _torch_shim  # noqa: F401  (torchvision next to the CPU torch)
    import _ptyrad_shim  # noqa: F401  (PtyRAD's figure module needs Python 3.12)
    import ptyrad
    from ptyrad.params.ptyrad_params import PtyRADParams
    from ptyrad.solver.ptyrad_solver import PtyRADSolver


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        self.out_dir = out_dir
        patterns = np.load(os.path.join(case_dir, "patterns.npy"))
        self.meas = patterns.reshape((-1,) + patterns.shape[-2:]).astype(np.float32)
        self.probe = np.load(os.path.join(case_dir, "probe.npy")).astype(np.complex64)[None]
        torch.set_num_threads(threads())
        logging.getLogger("ptyrad").setLevel(logging.WARNING)

    def _params(self):
        m = self.meta
        init = {
            "probe_kv": m["energy"] / 1e3,
            "probe_conv_angle": m["semiangle_cutoff"],
            "probe_aberrations": {"C10": m["C10"]},
            "meas_Npix": int(m["pattern_gpts"][0]),
            "pos_N_scan_slow": int(m["scan_gpts"][0]),
            "pos_N_scan_fast": int(m["scan_gpts"][1]),
            "pos_scan_step_size": m["scan_step"],
            "probe_pmode_max": int(m["modes"]),
            "obj_Nlayer": int(m["slices"]),
            "obj_slice_thickness": float(m["slice_thickness"]),
            "meas_flipT": [0, 0, 0],
            "meas_calibration": {"mode": "dx", "value": m["sampling"]},
            "meas_source": "custom",
            "meas_params": self.meas,
            "pos_source": "simu",
        }
        if m["modes"] == 1:
            init.update(probe_source="custom", probe_params=self.probe)
        params = {
            "init_params": init,
            "recon_params": {
                "NITER": int(m["iterations"]),
                "BATCH_SIZE": {"size": int(m["batch_size"]), "grad_accumulation": 1},
                "SAVE_ITERS": None,
                "output_dir": os.path.join(self.out_dir, "ptyrad_output"),
            },
        }
        return PtyRADParams(**params).model_dump()

    def run(self):
        t0 = time.perf_counter()
        self.solver = PtyRADSolver(self._params(), device=os.environ.get("PTYRO_BENCH_DEVICE", "cpu"))
        build = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.solver.reconstruct()
        return {"timed_s": time.perf_counter() - t1, "build_s": build}

    def finish(self, out_dir):
        model = self.solver.reconstruct_results
        objp = model.opt_objp.detach().cpu().numpy()  # (omode, Nz, Ny, Nx) phase
        ph = objp[0].sum(0)
        np.save(os.path.join(out_dir, "phase.npy"), ph.astype(np.float32))
        return {"version": getattr(ptyrad, "__version__", None), "torch": torch.__version__, "object_shape": list(objp.shape)}


if __name__ == "__main__":
    serve(Worker)
