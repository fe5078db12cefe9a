"""py4DSTEM 0.14.18 worker of benchmarks/direct/compare.py (run by the py4DSTEM venv's python).

Usage: python ref_py4dstem.py CASE.npz OUT.npz. Runs DPC (iCoM), Parallax (with its aberration
fit) and SSB on the case's patterns with the case's calibration, rotation forced to 0 and no
transpose (the data have none): once to warm up (imports, caches), then ``repeats`` (from the
case, default 3) timed runs; the median wall time is reported, with every run's time.

Each timed run is the whole call from the patterns in memory: the DataCube (no copy of float32
patterns), preprocess (centres of mass, descan fit, rotation forced) and reconstruct. DPC is
run as ours is: the descan a constant (``fit_function="constant"``), no padding
(``padding_factor=1``: periodic, as our Fourier integration), no Gaussian or Butterworth
filter (our ``highpass`` is 0); py4DSTEM integrates iteratively (up to 64 gradient steps).
Its centre of mass runs per scan position by default (``vectorized_com_calculation=False``)
or on the whole 4D array at once; both are timed and the faster is py4DSTEM's time."""

import sys
import warnings

import numpy as np
from _warm import warm_runs

warnings.filterwarnings("ignore")


def datacube(c):
    import py4DSTEM

    dc = py4DSTEM.DataCube(data=np.asarray(c["array"], np.float32))
    dc.calibration.set_R_pixel_size(float(c["step"]))
    dc.calibration.set_R_pixel_units("A")
    dc.calibration.set_Q_pixel_size(float(c["angular_sampling_mrad"]))
    dc.calibration.set_Q_pixel_units("mrad")
    return dc


def dpc(c, vectorized=False):
    from py4DSTEM.process.phase import DPC

    d = DPC(datacube=datacube(c), energy=float(c["energy"]), verbose=False)
    d.preprocess(force_com_rotation=0.0, force_com_transpose=False, plot_center_of_mass=None, plot_rotation=False, padding_factor=1,
                 fit_function="constant", vectorized_com_calculation=vectorized)  # fmt: skip
    d.reconstruct(max_iter=64, progress_bar=False, gaussian_filter=False, butterworth_filter=False)
    return np.asarray(d.object_phase), {}


def dpc_vectorized(c):
    return dpc(c, vectorized=True)


def parallax(c):
    from py4DSTEM.process.phase import Parallax

    p = Parallax(energy=float(c["energy"]), datacube=datacube(c), verbose=False, object_padding_px=(8, 8))
    p.preprocess(force_rotation_angle_deg=0.0, force_transpose=False, plot_average_bf=False, edge_blend=4)
    p.reconstruct(progress_bar=False, plot_aligned_bf=False, plot_convergence=False)
    p.aberration_fit(force_rotation_angle_deg=0.0, force_transpose=False)
    img = np.asarray(p.recon_BF)
    pad = 8
    img = img[pad : img.shape[0] - pad, pad : img.shape[1] - pad] if img.shape[0] > 2 * pad else img
    # its fit (aberration_fit, polar: C10, C12, phi12 ... in Å and radians; 0.14.18 names it
    # aberrations_dict_polar) and the starting polar decomposition's C1 / C12a / C12b
    ab = {k: float(v) for k, v in getattr(p, "aberrations_dict_polar", {}).items()}
    for k in ("C1", "C12a", "C12b"):
        if hasattr(p, "aberrations_" + k):
            ab["start_" + k] = float(getattr(p, "aberrations_" + k))
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
    repeats = int(c["repeats"]) if "repeats" in c.files else 3
    out = {}
    # icom: the per-position and the vectorised centre of mass, the faster one reported
    for name, fns in (("icom", {"loop": dpc, "vectorized": dpc_vectorized}), ("parallax", {"": parallax}), ("ssb", {"": ssb})):
        if name not in str(c["methods"]):
            continue
        try:
            best = None
            for variant, fn in fns.items():
                (img, ab), med, times = warm_runs(lambda fn=fn: fn(c), repeats)
                if variant:
                    out[f"{name}_time_{variant}"] = med
                    out[f"{name}_times_{variant}"] = np.asarray(times)
                if best is None or med < best[0]:
                    best = (med, img, ab, times, variant)
            med, img, ab, times, variant = best
            out[name + "_time"] = med
            out[name + "_times"] = np.asarray(times)
            out[name + "_phase"] = img
            if variant:
                out[name + "_variant"] = variant
            for k, v in ab.items():
                out[f"{name}_ab_{k}"] = v
        except Exception as e:  # noqa: BLE001 - a reference's failure is data, not a crash
            out[name + "_error"] = f"{type(e).__name__}: {e}"
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
