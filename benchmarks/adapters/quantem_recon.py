"""quantem (0.1.10, PyTorch, CPU build) adapter for the RECON cases, in its own venv.

quantem's iterative ``Ptychography`` (the successor of py4DSTEM's phase work):
``PtychographyDatasetRaster`` from the 4D array with calibrated sampling (scan step in Å,
detector pixel in Å⁻¹), ``ObjectPixelated.from_uniform`` (complex; slices and thicknesses for
RECON-B multislice), ``ProbePixelated.from_params`` with the true optics (C10, semi-angle,
energy; quantem's χ = π λ C10 k² with ψ = A exp(−iχ), as ours, so the probe is the shared one up
to the aperture edge; ``num_probes`` = the case's modes), 20 passes, batch 64 (the shared batch
size), probe updated.

The engine is quantem's analytic gradient (``autograd=False``) of its default ``l2_amplitude``
loss with ``analytic_step_normalization`` (its default): the gradient rescaled to the ePIE step
(object by the largest summed probe intensity of the batch, probe by the largest summed object
intensity), plain SGD at lr 0.5 for object and probe: the docstring of ``reconstruct`` gives this
as the path that takes py4DSTEM's gradient-descent step, and py4DSTEM's adapter runs that
algorithm at its default step 0.5. The earlier set-up (autograd, Adam at 5e-2 for object and
probe, the HPC tutorial's rates) did not converge on RECON-A in 20 passes: 0.178 rad, ncc 0.52,
against 0.0037 rad, ncc 0.985 with this one (measured in session 7; with this adapter 0.0037 rad,
ncc 0.99 in benchmarks/results/anchors-s7-default.json).

The dataset's centre-of-mass preprocessing is run with the rotation and transpose forced to
their known values (0°, none) and ``com_fit_function="no_shift"`` (every pattern's centre is the
array centre, as py4DSTEM's adapter forces); descan and scan-position learning are off. Building
the reconstruction object (``from_models`` + ``preprocess``) is reported as ``build_s``; only
``reconstruct`` is timed. The object is padded by half a probe window plus 8 px on each side
(quantem's objects are periodic: with less padding the windows wrap around the object; see
``run``). Threads: ``_proto.threads()`` (the runner's ``--threads``).
"""

import os
import time

from _proto import load_meta, serve, threads, timed_import

with timed_import():
    import numpy as np
    import torch
    import quantem
    from quantem.core.ml import OptimizerParams
    from quantem.diffractive_imaging import DetectorPixelated, ObjectPixelated, ProbePixelated, Ptychography, PtychographyDatasetRaster


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        torch.set_num_threads(threads())
        patterns = np.load(os.path.join(case_dir, "patterns.npy")).astype(np.float32)
        recip = m["reciprocal_sampling"]
        self.pdset = PtychographyDatasetRaster.from_array(
            patterns, sampling=(m["scan_step"], m["scan_step"], recip, recip), units=["A", "A", "A^-1", "A^-1"],
            verbose=0, learn_descan=False, learn_scan_positions=False,
        )  # fmt: skip
        self.pdset.preprocess(com_fit_function="no_shift", force_com_rotation=0.0, force_com_transpose=False,
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
        # the analytic l2-amplitude gradient, ePIE-normalised, SGD at py4DSTEM's step (module docstring)
        ptycho.reconstruct(
            num_iters=int(m["iterations"]), reset=True, batch_size=int(m["batch_size"]), autograd=False,
            optimizer_params={"object": OptimizerParams.SGD(lr=0.5), "probe": OptimizerParams.SGD(lr=0.5)},
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
