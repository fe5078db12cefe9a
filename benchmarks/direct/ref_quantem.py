"""quantem 0.1.10 worker of benchmarks/direct/compare.py (run by the quantem venv's python).

Usage: python ref_quantem.py CASE.npz OUT.npz. ``DirectPtychography.from_dataset4d`` on the
case's patterns and calibration (rotation forced to 0), then ``reconstruct`` with the kernels
icom, prlx (parallax), ssb, obf and wdd with the case's aberrations; each timed on a second run
(the first pays imports' and caches' costs); the set-up (virtual bright-field stack) apart."""

import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def main():
    import torch
    from quantem.core.datastructures import Dataset4d
    from quantem.diffractive_imaging.direct_ptychography import DirectPtychography

    torch.set_num_threads(2)
    c = np.load(sys.argv[1], allow_pickle=True)
    ab = {k: float(v) for k, v in c["aberrations"][()].items()}
    step, dk = float(c["step"]), float(c["reciprocal_sampling"])
    ds = Dataset4d.from_array(np.asarray(c["array"], np.float32), sampling=[step, step, dk, dk], units=["A", "A", "A^-1", "A^-1"])
    out = {}

    def setup():
        return DirectPtychography.from_dataset4d(
            ds, energy=float(c["energy"]), semiangle_cutoff=float(c["semiangle"]), aberration_coefs=ab, rotation_angle=0.0, verbose=False
        )

    try:
        setup()
        t = time.perf_counter()
        dp = setup()
        out["setup_time"] = time.perf_counter() - t
    except Exception as e:
        out["setup_error"] = f"{type(e).__name__}: {e}"
        np.savez(sys.argv[2], **out)
        return
    for name, kernel in (("icom", "icom"), ("parallax", "prlx"), ("ssb", "ssb"), ("obf", "obf"), ("wdd", "wdd")):
        if name not in str(c["methods"]):
            continue
        try:
            dp.reconstruct(deconvolution_kernel=kernel, verbose=False)
            t = time.perf_counter()
            dp.reconstruct(deconvolution_kernel=kernel, verbose=False)
            out[name + "_time"] = time.perf_counter() - t
            img = dp.corrected_bf
            img = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(getattr(img, "array", img))
            out[name + "_phase"] = np.asarray(img, np.float64)
        except Exception as e:
            out[name + "_error"] = f"{type(e).__name__}: {e}"
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
