"""The FFT floor of a RECON case (workspace venv): only the FFTs a pass of the plain gradient
algorithm must do, for the case's passes. Per position and probe mode, the forward model does
2s − 1 FFTs for s slices (one forward and one inverse per propagation between slices, one to the
far field) and the gradient as many again: (2s − 1) FFT + inverse FFT pairs on the pattern window,
complex64, the case's batch, run by ``_floor.FFTFloor`` (fastest chunk size, the library's
streams). The probe's sub-pixel shifts, the loss, the object's gather and scatter and the
optimizer are not counted: the ratio ours / floor is what they and everything else cost."""

from _proto import load_meta, serve, timed_import

with timed_import():
    import numpy as np
    import jax

    from _floor import FFTFloor


class Worker:
    def __init__(self, case_dir, out_dir):
        m = load_meta(case_dir)
        n = int(np.prod(m["scan_gpts"]))
        waves = n * int(m["modes"]) * int(m["iterations"])  # every mode of every position, every pass
        self.floor = FFTFloor(m["pattern_gpts"], 2 * int(m["slices"]) - 1, waves, int(m["batch_size"]))

    def run(self):
        self.floor.run()
        return {}

    def finish(self, out_dir):
        return {"jax": jax.__version__, **self.floor.info()}


if __name__ == "__main__":
    serve(Worker)
