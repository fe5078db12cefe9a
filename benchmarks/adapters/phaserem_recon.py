"""phaserEM (``phaser``, JAX back end) adapter for the RECON cases, in its own venv.

phaser's gradient-descent engine (its JAX path, the one its paper compares with fold_slice), set
up as its own example plan ``examples/mos2_grad.yaml`` does: Adam at 1e-2 for object and probe,
probe updated from the third pass, the object L2 and Tikhonov regularisers, the probe's support
limited to the aperture; noise model ``anscombe`` (what the issue measured at 1e5 e⁻/pattern;
``--noise`` in the environment variable ``PTYRO_BENCH_PHASER_NOISE`` overrides it). 20 passes,
groups of 64 (the shared batch size). Data and the shared initial probe are handed over in memory
through phaser's own hook mechanism (a ``raw_data`` and a ``probe`` hook given as
``module:function`` references). Only the engine's run is timed (``timed_s``); the plan and state
set-up is reported as ``build_s``.

Conventions: phaser stores images row-major as (y, x) with diffraction patterns zero frequency
first; we hand it our arrays with our x as its y everywhere (patterns, scan, probe), a relabelling
of both spaces at once, so the physics is unchanged; the scorer registers with a transpose search
anyway. phaser's ``defocus`` is positive for overfocus with χ = π λ defocus k², our C10 exactly.
"""

import os
import sys
import time

from _proto import load_meta, serve, timed_import

sys.modules.setdefault("phaserem_recon", sys.modules[__name__])  # the hooks resolve "phaserem_recon:..."

with timed_import():
    import numpy as np
    import jax
    import phaser
    from phaser.execute import execute_engine, initialize_reconstruction
    from phaser.plan import ReconsPlan
    from phaser.state import ProbeState
    from phaser.utils.num import Sampling

_CASE: dict = {}


def load_case(args, props):
    """phaser ``raw_data`` hook: the shared patterns in electrons, zero frequency first."""
    m = _CASE["meta"]
    pats = _CASE["patterns"]
    pats = pats.reshape(tuple(m["scan_gpts"]) + tuple(pats.shape[-2:])) * _CASE["scale"]
    extent = m["pattern_gpts"][0] * m["sampling"]
    sampling = Sampling(tuple(m["pattern_gpts"]), extent=(extent, extent))
    mask = np.ones(pats.shape[-2:], np.float32)
    return {"patterns": np.fft.ifftshift(pats, axes=(-2, -1)).astype(np.float32), "mask": mask, "sampling": sampling,
            "wavelength": m["wavelength"], "probe_hook": None, "scan_hook": None, "tilt_hook": None, "seed": None}  # fmt: skip


def load_probe(args, props):
    """phaser ``probe`` hook: the shared initial probe (real space, centred)."""
    return ProbeState(args["sampling"], np.asarray(_CASE["probe"], np.complex64)[None])


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        _CASE["meta"] = m
        _CASE["patterns"] = np.load(os.path.join(case_dir, "patterns.npy"))
        _CASE["probe"] = np.load(os.path.join(case_dir, "probe.npy"))
        # phaser works in particles per pattern: the dose when there is one, else the same 1e5
        _CASE["scale"] = float(m.get("dose") or 1e5)
        self.noise = os.environ.get("PTYRO_BENCH_PHASER_NOISE", "anscombe")
        self.out_dir = out_dir
        self.state = None

    def _plan(self):
        m = self.meta
        plan = {
            "name": "bench",
            "backend": "jax",
            "dtype": "float32",
            "raw_data": {"type": "phaserem_recon:load_case"},
            "init": {
                "probe": {"type": "phaserem_recon:load_probe"},
                "scan": {"type": "raster", "shape": list(m["scan_gpts"]), "step_size": [m["scan_step"], m["scan_step"]]},
                "object": "random",
            },
            "engines": [{
                "type": "gradient",
                "probe_modes": int(m["modes"]),
                "niter": int(m["iterations"]),
                "grouping": int(m["batch_size"]),
                "noise_model": {"type": self.noise},
                "solvers": {"object": {"type": "adam", "learning_rate": 1.0e-2, "nesterov": True},
                            "probe": {"type": "adam", "learning_rate": 1.0e-2, "nesterov": True}},
                "regularizers": [{"type": "obj_l2", "cost": 1.0}, {"type": "obj_tikh", "cost": 5.0}],
                "iter_constraints": [{"type": "limit_probe_support", "max_angle": float(m["semiangle_cutoff"]) + 1.0}],
                "group_constraints": [],
                "update_probe": {"after": 2},
                "calc_error": False,
                "save": False,
                "save_images": False,
            }],
        }  # fmt: skip
        if m["slices"] > 1:
            plan["slices"] = {"n": int(m["slices"]), "slice_thickness": float(m["slice_thickness"])}
        return ReconsPlan.from_data(plan)

    def run(self):
        t0 = time.perf_counter()
        plan = self._plan()
        recons = initialize_reconstruction(plan)
        build = time.perf_counter() - t0
        t1 = time.perf_counter()
        recons = execute_engine(recons, plan.engines[0])  # its preparation for the engine included
        jax.block_until_ready(recons.state.object.data)
        self.state = recons.state
        return {"timed_s": time.perf_counter() - t1, "build_s": build}

    def finish(self, out_dir):
        obj = np.asarray(self.state.object.data)
        np.save(os.path.join(out_dir, "phase.npy"), np.angle(obj).sum(0).astype(np.float32))
        return {"version": getattr(phaser, "__version__", None), "jax": jax.__version__, "object_shape": list(obj.shape), "noise_model": self.noise}


if __name__ == "__main__":
    serve(Worker)
