"""Where our RECON-A time goes: per-stage timing of ``ptyro_invert.reconstruct`` on the RECON-A
dataset (run ``benchmarks/run.sh --only recon-a`` first, or pass a case directory).

    .venv/bin/python benchmarks/profile_recon.py [case_dir] [--passes 3]

Prints: the first call (compilation included) and the next calls of ``reconstruct`` for the same
number of passes (so the compilation share of every call shows), the per-pass time, and the
floor for one pass: the jitted FFTs that the plain algorithm needs (forward FFT of every exit wave
and the inverse FFT of its gradient: 2 per position per pass, 128×128 complex64, batch 64) and
the same FFTs plus the object-patch gather/scatter of a plain jitted gradient step written here.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Dataset4D, Grid, replace
import ptyro_invert

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "adapters"))

from _proto import _status_mb  # noqa: E402


def rss_mb(field="VmRSS"):
    value = _status_mb(field)
    return None if value is None else round(value, 1)


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    jax.block_until_ready(jax.tree_util.tree_leaves(out))
    return out, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("case_dir", nargs="?", default=os.path.join(HERE, ".work", "cases", "recon-a"))
    p.add_argument("--passes", type=int, default=3)
    a = p.parse_args()
    mem = {"after imports": rss_mb()}
    m = json.load(open(os.path.join(a.case_dir, "meta.json")))
    pats = np.load(os.path.join(a.case_dir, "patterns.npy"))
    pos = np.load(os.path.join(a.case_dir, "positions.npy")).astype(np.float32)
    probe = np.load(os.path.join(a.case_dir, "probe.npy"))
    grid = Grid(tuple(m["pattern_gpts"]), (m["sampling"],) * 2)
    ds = Dataset4D(pats, pos, grid=grid, energy=m["energy"])
    st0 = ptyro_invert.initial_state(ds, semiangle_cutoff=m["semiangle_cutoff"], aberrations={"C10": m["C10"]})
    st0 = replace(st0, probe=jnp.asarray(probe[None]))
    mem["after loading the data, Dataset4D and initial state"] = rss_mb()
    fresh = lambda: jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, st0)  # noqa: E731
    res = {}
    calls = []
    for i in range(3):
        _, t = timed(ptyro_invert.reconstruct, ds, fresh(), algorithm="single_slice", iterations=a.passes, batch_size=m["batch_size"], progress=False)
        calls.append(t)
    res["reconstruct calls (s)"] = [round(t, 3) for t in calls]
    mem["after reconstruct (current)"] = rss_mb()
    mem["peak (VmHWM)"] = rss_mb("VmHWM")
    res["memory MiB"] = mem
    # one call of 2*passes: the extra passes cost (t2 - t1) / passes each
    _, t2 = timed(ptyro_invert.reconstruct, ds, fresh(), algorithm="single_slice", iterations=2 * a.passes, batch_size=m["batch_size"], progress=False)
    per_pass = (t2 - np.median(calls[1:])) / a.passes
    res["per pass (s)"] = round(per_pass, 3)
    res["fixed cost per call, mostly compilation (s)"] = round(float(np.median(calls[1:]) - a.passes * per_pass), 3)

    # FFT floor of one pass: 2 FFTs per position (exit wave forward, its gradient back)
    n, b = pats.shape[0] * pats.shape[1], m["batch_size"]
    w = jnp.ones((b,) + tuple(m["pattern_gpts"]), jnp.complex64)
    f = jax.jit(lambda x: jnp.fft.ifft2(jnp.fft.fft2(x)))
    jax.block_until_ready(f(w))
    t = time.perf_counter()
    for _ in range(-(-n // b)):
        jax.block_until_ready(f(w))
    res["FFT floor per pass (s)"] = round(time.perf_counter() - t, 3)
    res["per pass / FFT floor"] = round(per_pass / res["FFT floor per pass (s)"], 2)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    sys.exit(main())
