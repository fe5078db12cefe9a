"""py4DSTEM 0.14.18 worker of benchmarks/direct/compare.py (run by the py4DSTEM venv's python).

Usage: python ref_py4dstem.py CASE.npz OUT.npz. Runs DPC (iCoM), Parallax (with its aberration
fit) and SSB on the case's patterns with the case's calibration, rotation forced to 0 and no
transpose (the data have none), each twice; the second run's wall time is reported (the first
pays imports' and caches' costs)."""

import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def datacube(c):
    import py4DSTEM

    dc = py4DSTEM.DataCube(data=np.asarray(c["array"], np.float32))
    dc.calibration.set_R_pixel_size(float(c["step"]))
    dc.calibration.set_R_pixel_units("A")
    dc.calibration.set_Q_pixel_size(float(c["angular_sampling_mrad"]))
    dc.calibration.set_Q_pixel_units("mrad")
    return dc


def dpc(c):
    from py4DSTEM.process.phase import DPC

    d = DPC(datacube=datacube(c), energy=float(c["energy"]), verbose=False)
    d.preprocess(force_com_rotation=0.0, force_com_transpose=False, plot_center_of_mass=None, plot_rotation=False, padding_factor=1)
    d.reconstruct(max_iter=64, progress_bar=False, gaussian_filter=False, butterworth_filter=False)
    return np.asarray(d.object_phase), {}


def parallax(c):
    from py4DSTEM.process.phase import Parallax

    p = Parallax(energy=float(c["energy"]), datacube=datacube(c), verbose=False, object_padding_px=(8, 8))
    p.preprocess(force_rotation_angle_deg=0.0, force_transpose=False, plot_average_bf=False, edge_blend=4)
    p.reconstruct(progress_bar=False, plot_aligned_bf=False, plot_convergence=False)
    p.aberration_fit(force_rotation_angle_deg=0.0, force_transpose=False)
    img = np.asarray(p.recon_BF)
    pad = 8
    img = img[pad : img.shape[0] - pad, pad : img.shape[1] - pad] if img.shape[0] > 2 * pad else img
    ab = {k: float(v) for k, v in getattr(p, "aberration_dict_polar", {}).items()} if hasattr(p, "aberration_dict_polar") else {}
    if not ab and hasattr(p, "aberration_C1"):
        ab = {"C10": float(p.aberration_C1), "C12": float(p.aberration_A1), "phi12": float(getattr(p, "aberration_A1_theta", 0.0))}
    return img, ab


def ssb(c):
    from py4DSTEM.process.phase import SSB

    ab = {k: float(c["aberrations"][()][k]) for k in c["aberrations"][()]}
    s = SSB(energy=float(c["energy"]), datacube=datacube(c), semiangle_cutoff=float(c["semiangle"]), verbose=False, **ab)
    s.preprocess(force_com_rotation=0.0, force_com_transpose=False, plot_center_of_mass=None, plot_rotation=False, plot_overlap_trotters=False)
    s.reconstruct(progress_bar=False, num_jobs=1)
    return np.angle(np.asarray(s.object)), {}


def main():
    c = np.load(sys.argv[1], allow_pickle=True)
    out = {}
    for name, fn in (("icom", dpc), ("parallax", parallax), ("ssb", ssb)):
        if name not in str(c["methods"]):
            continue
        try:
            fn(c)
            t = time.perf_counter()
            img, ab = fn(c)
            out[name + "_time"] = time.perf_counter() - t
            out[name + "_phase"] = img
            for k, v in ab.items():
                out[f"{name}_ab_{k}"] = v
        except Exception as e:  # a reference's failure is data, not a crash
            out[name + "_error"] = f"{type(e).__name__}: {e}"
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
