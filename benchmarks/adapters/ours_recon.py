"""Ptyrodactyl adapter for RECON-A / RECON-B (runs in the workspace venv).

Builds a ``Dataset4D`` from the shared files, ``ptyro_invert.initial_state`` with the nominal
optics, replaces its probe by the shared initial probe (every code starts from the same probe),
and runs ``ptyro_invert.reconstruct`` (algorithm "single_slice", "multislice" or "mixed_state")
for 20 passes, batch 64, probe updated, library defaults otherwise (amplitude loss, Adam; the
far fields' back end ``auto``: ptyro-native's ``native`` where it is installed, ``python3 -m uv
sync --group native``, as benchmarks/README.md asks; the one used is in the finish reply's
``backend``).

Extra command ``{"cmd": "extra", "what": "trace"}``: one more run with a per-pass callback that
saves the object phase after every pass (``trace_phase.npy``) with the wall time at each pass, so
the runner can find the pass at which we reach a reference's final phase error.
"""

import os
import time

from _proto import load_meta, serve, timed_import

with timed_import():
    import numpy as np
    import jax
    import jax.numpy as jnp

    import ptyro_core
    from ptyro_core import Dataset4D, Grid, replace
    import ptyro_invert


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        patterns = np.load(os.path.join(case_dir, "patterns.npy"))
        positions = np.load(os.path.join(case_dir, "positions.npy")).astype(np.float32)
        probe = np.load(os.path.join(case_dir, "probe.npy"))
        grid = Grid(tuple(m["pattern_gpts"]), (m["sampling"], m["sampling"]))
        self.ds = Dataset4D(patterns, positions, grid=grid, energy=m["energy"])
        kw = dict(semiangle_cutoff=m["semiangle_cutoff"], aberrations={"C10": m["C10"]})
        if m["slices"] > 1:
            kw.update(num_slices=m["slices"], slice_thickness=m["slice_thickness"])
            self.algorithm, self.options = "multislice", {}
        elif m["modes"] > 1:
            kw.update(num_modes=m["modes"])
            self.algorithm, self.options = "mixed_state", {"num_modes": m["modes"]}
        else:
            self.algorithm, self.options = "single_slice", {}
        st = ptyro_invert.initial_state(self.ds, **kw)
        if m["modes"] == 1:
            st = replace(st, probe=jnp.asarray(probe[None], st.probe.dtype))
        self.st0 = st
        self.result = None
        # where the dataset's frame (object pixel [0,0] at (0,0) Å) sits in the state's frame
        self.offset_A = (np.asarray(st.positions)[0] - positions[0]).tolist()

    def _reconstruct(self, **extra):
        m = self.meta
        # a fresh copy of the initial state every run: reconstruct() donates its parameter buffers
        # (donate_argnums), which deletes the caller's arrays after the first call
        st0 = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, self.st0)
        report = []
        out = ptyro_invert.reconstruct(
            self.ds, st0, algorithm=self.algorithm, iterations=m["iterations"], batch_size=m["batch_size"],
            progress=False, report=report, **self.options, **extra,
        )  # fmt: skip
        jax.block_until_ready(out.object)
        self.backend = report[-1].get("backend", "xla") if report else None  # who computed the steps' far fields (older code: XLA)
        return out

    def run(self):
        self.result = self._reconstruct()
        return {}

    def extra(self, msg):
        if msg.get("what") != "trace":
            raise ValueError(f"unknown extra {msg.get('what')!r}")
        phases, times = [], []
        t0 = time.perf_counter()

        def cb(state):
            obj = np.asarray(state.object)
            times.append(time.perf_counter() - t0)
            phases.append(np.angle(obj).sum(0).astype(np.float32))
            return True

        self._reconstruct(callback=cb)
        np.save(os.path.join(self.out_dir_, "trace_phase.npy"), np.stack(phases))
        return {"pass_times_s": times}

    def finish(self, out_dir):
        obj = np.asarray(self.result.object)
        np.save(os.path.join(out_dir, "phase.npy"), np.angle(obj).sum(0).astype(np.float32))
        return {"version": ptyro_core.__version__, "jax": jax.__version__, "sampling": [self.meta["sampling"]] * 2,
                "object_shape": list(obj.shape), "algorithm": self.algorithm, "backend": getattr(self, "backend", None)}  # fmt: skip


def make(case_dir, out_dir):
    w = Worker(case_dir, out_dir)
    w.out_dir_ = out_dir
    return w


if __name__ == "__main__":
    serve(make)
