"""quantem 0.1.10 worker of benchmarks/direct/compare.py (run by the quantem venv's python).

Usage: python ref_quantem.py CASE.npz OUT.npz. ``DirectPtychography.from_dataset4d`` on the
case's patterns and calibration (rotation forced to 0), then ``reconstruct`` with the kernels
icom, prlx (parallax), ssb, obf and wdd with the case's aberrations (and, asked for
``parallax_fit``, quantem's own fit of the optics: :func:`parallax_fit`); each run once to warm up
(imports, caches), then ``repeats`` (from the case, default 3) timed runs, the median reported
with every run's time. The set-up (``from_dataset4d``: reading the patterns into the virtual
bright-field stack, which every kernel then uses) is timed apart (``setup_time``) and is not in
the kernels' times: theirs start from the stack, ours from the patterns."""

import sys
import warnings

import numpy as np
from _warm import warm_runs

warnings.filterwarnings("ignore")


def parallax_fit(ds, c, out):
    """quantem's own optics fit (``parallax_fit``, for parallax_accuracy.py): set up without the
    case's aberrations, then ``fit_hyperparameters_cross_correlation`` (the bright-field images
    aligned, the shifts fitted to C10, C12, φ12 and the rotation); one timed run."""
    import time

    from quantem.diffractive_imaging.direct_ptychography import DirectPtychography

    try:
        t = time.perf_counter()
        dp = DirectPtychography.from_dataset4d(ds, energy=float(c["energy"]), semiangle_cutoff=float(c["semiangle"]), aberration_coefs={},
                                               rotation_angle=0.0, verbose=False)  # fmt: skip
        dp.fit_hyperparameters_cross_correlation(verbose=False)
        out["parallax_fit_time"] = time.perf_counter() - t
        state = dp.hyperparameter_state
        for k, v in dict(state.optimized_aberrations).items():
            out["parallax_fit_ab_" + k] = float(v)
        out["parallax_fit_rotation"] = float(state.optimized_rotation_angle)
    except Exception as e:  # noqa: BLE001 - a reference's failure is data, not a crash
        out["parallax_fit_error"] = f"{type(e).__name__}: {e}"


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

    repeats = int(c["repeats"]) if "repeats" in c.files else 3
    try:
        dp, out["setup_time"], times = warm_runs(setup, repeats)
        out["setup_times"] = np.asarray(times)
    except Exception as e:  # noqa: BLE001 - a reference's failure is data, not a crash
        out["setup_error"] = f"{type(e).__name__}: {e}"
        np.savez(sys.argv[2], **out)
        return
    methods = str(c["methods"]).split(",")
    if "parallax_fit" in methods:
        parallax_fit(ds, c, out)
    for name, kernel in (("icom", "icom"), ("parallax", "prlx"), ("ssb", "ssb"), ("obf", "obf"), ("wdd", "wdd")):
        if name not in methods:
            continue
        try:
            _, out[name + "_time"], times = warm_runs(lambda kernel=kernel: dp.reconstruct(deconvolution_kernel=kernel, verbose=False), repeats)
            out[name + "_times"] = np.asarray(times)
            img = dp.corrected_bf
            img = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(getattr(img, "array", img))
            out[name + "_phase"] = np.asarray(img, np.float64)
        except Exception as e:  # noqa: BLE001 - a reference's failure is data, not a crash
            out[name + "_error"] = f"{type(e).__name__}: {e}"
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
