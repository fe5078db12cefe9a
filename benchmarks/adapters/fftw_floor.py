"""The FFT floor again, with FFTW (the FFT library abTEM uses on the CPU, via pyfftw, planned with
FFTW_MEASURE, with one FFTW thread per core, as our ``fft-floor`` uses one stream per core): 2 FFTs
per slice per position, 256×256 complex64, batch 64. Runs in abTEM's venv. Diagnostic: shows how much of the gap between codes
is the FFT library itself (XLA's CPU FFT vs FFTW)."""

import os

from _proto import load_meta, serve, timed_import

with timed_import():
    import numpy as np
    import pyfftw


class Worker:
    def __init__(self, case_dir, out_dir):
        m = load_meta(case_dir)
        self.n = int(np.prod(m["scan_gpts"])) * max(1, len(m["potential_files"]))
        self.slices = int(m["num_slices"])
        self.b = int(m.get("batch_size", 64))
        shape = (self.b,) + tuple(m["gpts"])
        a = pyfftw.empty_aligned(shape, dtype="complex64")
        o = pyfftw.empty_aligned(shape, dtype="complex64")
        a[:] = 1.0
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.fwd = pyfftw.FFTW(a, o, axes=(-2, -1), threads=threads, flags=("FFTW_MEASURE",))
        self.bwd = pyfftw.FFTW(o, a, axes=(-2, -1), direction="FFTW_BACKWARD", threads=threads, flags=("FFTW_MEASURE",))
        self.a = a
        self.threads = threads

    def run(self):
        for _ in range(-(-self.n // self.b)):
            for _ in range(self.slices):
                self.fwd()
                self.bwd()
        return {}

    def finish(self, out_dir):
        return {"version": pyfftw.__version__, "threads": self.threads}


if __name__ == "__main__":
    serve(Worker)
