"""py4DSTEM adapter for RECON-A / RECON-B.

Reads the shared dataset (patterns.npy centred, positions.npy in Å, probe.npy centred with
Σ|ψ|² = 1) and runs py4DSTEM's ``SingleslicePtychography`` (``MultislicePtychography`` /
``MixedstatePtychography`` for RECON-B) with its default gradient-descent update, 20 passes,
batch 64, probe updated. The COM rotation/transposition/shift fits are forced to their known
values (0°, no transpose, pattern centre) so that no preprocessing guess can differ between
codes; all regularisers (Gaussian, Butterworth, TV) are off. One "run" = ``reconstruct(reset=True)``;
``preprocess`` is done once at start-up (reported as setup time).
"""

import os

from _proto import load_meta, serve, timed_import

with timed_import():
    import numpy as np
    import py4DSTEM
    from py4DSTEM.process import phase


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        patterns = np.load(os.path.join(case_dir, "patterns.npy"))
        positions = np.load(os.path.join(case_dir, "positions.npy"))
        probe = np.load(os.path.join(case_dir, "probe.npy"))
        dc = py4DSTEM.DataCube(data=patterns)
        dc.calibration.set_R_pixel_size(m["scan_step"])
        dc.calibration.set_R_pixel_units("A")
        dc.calibration.set_Q_pixel_size(m["angular_sampling_mrad"])
        dc.calibration.set_Q_pixel_units("mrad")
        npx = probe.shape[-1]
        # py4DSTEM's probe is corner-centred and scaled so that Σ|FFT(ψ)|² (unnormalised FFT)
        # equals the mean pattern sum
        mean_int = float(patterns.sum(axis=(-2, -1)).mean())
        p = np.fft.ifftshift(probe) * np.sqrt(mean_int / (npx * npx * np.sum(np.abs(probe) ** 2)))
        common = dict(
            datacube=dc,
            energy=m["energy"],
            semiangle_cutoff=m["semiangle_cutoff"],
            initial_scan_positions=positions.copy(),
            device="cpu",
            verbose=False,
            object_type="complex",
        )
        if m["slices"] > 1:
            cls = phase.MultislicePtychography
            common.update(num_slices=m["slices"], slice_thicknesses=m["slice_thickness"], initial_probe_guess=p)
        elif m["modes"] > 1:
            cls = phase.MixedstatePtychography
            common.update(num_probes=m["modes"])  # py4DSTEM builds its modes from the polar parameters
            common.update(polar_parameters={"C10": m["C10"]})
        else:
            cls = phase.SingleslicePtychography
            common.update(initial_probe_guess=p)
        self.ptycho = cls(**common)
        rx, ry = m["scan_gpts"]
        self.ptycho.preprocess(
            plot_center_of_mass=False,
            plot_rotation=False,
            plot_probe_overlaps=False,
            force_com_rotation=0.0,
            force_com_transpose=False,
            force_com_shifts=(np.full((rx, ry), npx / 2.0), np.full((rx, ry), npx / 2.0)),
            max_batch_size=m["batch_size"],
        )
        self.sampling = tuple(float(s) for s in self.ptycho.sampling)

    def run(self):
        m = self.meta
        self.ptycho.reconstruct(
            num_iter=m["iterations"],
            max_batch_size=m["batch_size"],
            reset=True,
            fix_probe=False,
            gaussian_filter=False,
            butterworth_filter=False,
            tv_denoise=False,
            progress_bar=False,
            store_iterations=False,
        )
        return {}

    def finish(self, out_dir):
        obj = np.asarray(self.ptycho.object)
        if obj.ndim == 3:  # multislice: (slices, x, y)
            phase_ = np.angle(obj).sum(0) if np.iscomplexobj(obj) else obj.sum(0)
        else:
            phase_ = np.angle(obj)
        np.save(os.path.join(out_dir, "phase.npy"), phase_.astype(np.float32))
        return {"version": py4DSTEM.__version__, "sampling": self.sampling, "object_shape": list(obj.shape)}


if __name__ == "__main__":
    serve(Worker)
