"""quantem (0.1.10, PyTorch, CPU build) adapter for the RECON cases, in its own venv.

quantem's iterative ``Ptychography`` (the successor of py4DSTEM's phase work), set up as its own
HPC tutorial script does: ``PtychographyDatasetRaster`` from the 4D array with calibrated
sampling (scan step in Å, detector pixel in Å⁻¹), ``ObjectPixelated.from_uniform``,
``ProbePixelated.from_params`` with the true optics (C10, semi-angle, energy; quantem's C10 is
ours, χ = π λ C10 k², so the probe is the shared one up to the aperture edge), Adam at 5e-2 for
object and probe (the tutorial's rates), the default amplitude loss, autograd, batch 64 (the
shared batch size), 20 passes (``num_iters``). The dataset's centre-of-mass preprocessing is run
with the rotation and transpose forced to their known values (0°, none) and a constant centre, as
py4DSTEM's adapter does; descan and scan-position learning are off. Building the reconstruction
object (``from_models`` + ``preprocess``) is reported as ``build_s``; only ``reconstruct`` is
timed. The object is padded by half a probe window plus 8 px on each side (quantem's objects are
periodic: with less padding the windows wrap around the object; see ``run``).
"""

import os
import time

from _proto import load_meta, serve, timed_import

with timed_import():
    import numpy as np
    import torch
    import quantem
    from quantem.core.ml import OptimizerParams
    from quantem.diffractive_imaging import DetectorPixelated, ObjectPixelated, ProbePixelated, Ptychography, PtychographyDatasetRaster


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        torch.set_num_threads(os.cpu_count() or 2)
        patterns = np.load(os.path.join(case_dir, "patterns.npy")).astype(np.float32)
        recip = m["reciprocal_sampling"]
        self.pdset = PtychographyDatasetRaster.from_array(
            patterns, sampling=(m["scan_step"], m["scan_step"], recip, recip), units=["A", "A", "A^-1", "A^-1"],
            verbose=0, learn_descan=False, learn_scan_positions=False,
        )  # fmt: skip
        self.pdset.preprocess(com_fit_function="constant", force_com_rotation=0.0, force_com_transpose=False,
                              plot_rotation=False, plot_com=False, probe_energy=m["energy"])  # fmt: skip
        self.ptycho = None

    def run(self):
        m = self.meta
        t0 = time.perf_counter()
        kw = {"slice_thicknesses": m["slice_thickness"]} if m["slices"] > 1 else {}
        ptycho = Ptychography.from_models(
            dset=self.pdset,
            obj_model=ObjectPixelated.from_uniform(num_slices=int(m["slices"]), obj_type="complex", **kw),
            probe_model=ProbePixelated.from_params(
                probe_params={"energy": m["energy"], "semiangle_cutoff": m["semiangle_cutoff"], "C10": m["C10"]}, num_probes=int(m["modes"])
            ),
            detector_model=DetectorPixelated(),
            verbose=False,
            rng=42,
        )  # fmt: skip
        # quantem's object is periodic: each probe window is cut with indices modulo the object
        # shape (dataset_models._set_patch_indices), and the object spans the scan plus
        # 2 x obj_padding_px. The tutorial's 16 px on 128-px windows made a 136-px (20 Å) object
        # that every window wrapped around (phase error 0.19 rad, ncc 0.33 on RECON-A): pad by
        # half a window plus 8 px, as our initial_state does, so no window wraps
        pad = (int(m["pattern_gpts"][0]) // 2 + 8, int(m["pattern_gpts"][1]) // 2 + 8)
        ptycho.preprocess(obj_padding_px=pad)
        build = time.perf_counter() - t0
        t1 = time.perf_counter()
        ptycho.reconstruct(
            num_iters=int(m["iterations"]), reset=True, batch_size=int(m["batch_size"]), autograd=True,
            optimizer_params={"object": OptimizerParams.Adam(lr=5e-2), "probe": OptimizerParams.Adam(lr=5e-2)},
        )  # fmt: skip
        self.ptycho = ptycho
        return {"timed_s": time.perf_counter() - t1, "build_s": build}

    def finish(self, out_dir):
        obj = np.asarray(self.ptycho.obj)
        obj = obj.reshape((-1,) + obj.shape[-2:])
        np.save(os.path.join(out_dir, "phase.npy"), np.angle(obj).sum(0).astype(np.float32))
        return {"version": getattr(quantem, "__version__", None), "torch": torch.__version__, "object_shape": list(obj.shape)}


if __name__ == "__main__":
    serve(Worker)
