"""Pty-chi adapter for RECON-A / RECON-B (CPU build of torch).

Pty-chi's flagship algorithm, LSQML (PtychoShelves' least-squares maximum likelihood), with its
defaults, 20 epochs, batch 64, object and probe optimised, positions fixed, on the CPU. Axes:
Pty-chi's (y, x) = (row, column) = our (x, y). Positions are given in pixels, centred on their
mean (Pty-chi's default origin is the centre of the object support). The shared probe is scaled
to the data with Pty-chi's ``rescale_probe`` (its far-field FFT is unnormalised). Extra probe modes (RECON-B
mixed) come from Pty-chi's own ``orthogonalize_initial_probe``. Only ``task.run()`` is timed;
building the task (allocation, option checks) is excluded and reported in ``build_s``.
"""

import os
import time

from _proto import load_meta, serve, threads, timed_import

with timed_import():
    import numpy as np
    import torch
    import _torch_shim  # noqa: F401  (torchvision next to the CPU torch)
    import ptychi
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask
    from ptychi.utils import get_suggested_object_size, orthogonalize_initial_probe, rescale_probe


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        self.patterns = np.load(os.path.join(case_dir, "patterns.npy"))
        self.patterns = self.patterns.reshape((-1,) + self.patterns.shape[-2:])
        pos = np.load(os.path.join(case_dir, "positions.npy")) / m["sampling"]
        self.pos_px = pos - pos.mean(0)
        probe = np.load(os.path.join(case_dir, "probe.npy")).astype(np.complex64)
        p = np.zeros((1, m["modes"]) + probe.shape, np.complex64)
        p[0, 0] = probe
        self.probe = torch.as_tensor(p)
        if m["modes"] > 1:
            self.probe = orthogonalize_initial_probe(self.probe)
        # Pty-chi's far field is the unnormalised FFT: scale the probe to the data with its helper
        self.probe = torch.as_tensor(rescale_probe(self.probe.numpy(), self.patterns))
        self.obj_shape = get_suggested_object_size(self.pos_px, probe.shape, extra=20)
        torch.set_num_threads(threads())

    def _task(self):
        m = self.meta
        o = api.LSQMLOptions()
        o.data_options.data = self.patterns
        o.data_options.wavelength_m = m["wavelength"] * 1e-10
        o.data_options.fft_shift = True
        shape = ((m["slices"],) if True else ()) + tuple(self.obj_shape)
        o.object_options.initial_guess = torch.ones(shape, dtype=torch.complex64)
        o.object_options.pixel_size_m = m["sampling"] * 1e-10
        o.object_options.optimizable = True
        if m["slices"] > 1:
            o.object_options.slice_spacings_m = np.full(m["slices"] - 1, m["slice_thickness"] * 1e-10)
        o.probe_options.initial_guess = self.probe.clone()
        o.probe_options.optimizable = True
        o.probe_position_options.position_y_px = self.pos_px[:, 0]
        o.probe_position_options.position_x_px = self.pos_px[:, 1]
        o.probe_position_options.optimizable = False
        o.reconstructor_options.batch_size = m["batch_size"]
        o.reconstructor_options.num_epochs = m["iterations"]
        o.reconstructor_options.default_device = api.Devices.CPU
        return PtychographyTask(o)

    def run(self):
        t0 = time.perf_counter()
        self.task = self._task()
        build = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.task.run()
        return {"timed_s": time.perf_counter() - t1, "build_s": build}

    def finish(self, out_dir):
        obj = self.task.get_data_to_cpu("object", as_numpy=True)
        ph = np.angle(obj)
        ph = ph.sum(0) if ph.ndim == 3 else ph
        np.save(os.path.join(out_dir, "phase.npy"), ph.astype(np.float32))
        return {"version": getattr(ptychi, "__version__", None) or _version("ptychi"), "torch": torch.__version__, "object_shape": list(obj.shape)}


def _version(name):
    import importlib.metadata as md

    return md.version(name)


if __name__ == "__main__":
    serve(Worker)
