"""abTEM adapter for SIM-A / SIM-B: multislice 4D-STEM from the shared potential slices.

Reads ``potential_<k>.npy`` (slices, nx, ny) V·Å for every frozen-phonon configuration k and
``meta.json``; builds ``abtem.PotentialArray`` from them (so only the multislice is compared, not
the potential), an aberration-free ``abtem.Probe``, a ``GridScan`` and a full-grid
``PixelatedDetector(max_angle="full")``. Writes the 4D output (Rx, Ry, Qx, Qy), centred, averaged
over configurations, to ``out_dir/data4d.npy``. abTEM's defaults otherwise (dask threads, FFTW).
"""

import os

from _proto import load_meta, serve, timed_import

with timed_import():
    import numpy as np
    import abtem


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        abtem.config.set({"diagnostics.progress_bar": False})
        self.potentials = [
            abtem.PotentialArray(
                np.load(os.path.join(case_dir, f)).astype(np.float32),
                slice_thickness=m["slice_thickness"],
                sampling=tuple(m["sampling"]),
            )
            for f in m["potential_files"]
        ]
        self.probe = abtem.Probe(energy=m["energy"], semiangle_cutoff=m["semiangle_cutoff"], defocus=0.0)
        self.probe.grid.match(self.potentials[0])
        self.scan = abtem.GridScan(start=tuple(m["scan_start"]), end=tuple(m["scan_end"]), gpts=tuple(m["scan_gpts"]), endpoint=False)
        self.detector = abtem.PixelatedDetector(max_angle="full")
        self.result = None

    def run(self):
        total = None
        for pot in self.potentials:
            meas = self.probe.scan(pot, scan=self.scan, detectors=self.detector).compute()
            arr = np.asarray(meas.array)
            total = arr if total is None else total + arr
        self.result = total / len(self.potentials)
        self.calibration = [float(c.sampling) for c in meas.axes_metadata[-2:]]
        return {"shape": list(self.result.shape)}

    def finish(self, out_dir):
        np.save(os.path.join(out_dir, "data4d.npy"), self.result.astype(np.float32))
        return {"version": abtem.__version__, "reciprocal_sampling": self.calibration}


if __name__ == "__main__":
    serve(Worker)
