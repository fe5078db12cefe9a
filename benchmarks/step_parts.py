"""Where a reconstruction pass's time goes, against the FFT floor, in one process (issue 18):

    .venv/bin/python benchmarks/step_parts.py [--cases recon-a,recon-b-multislice,recon-b-mixed]
        [--rounds 3] [--out benchmarks/results/step_parts.json]

For each case (the benchmark's files, batch 64, the library's defaults as ``adapters/ours_recon.py``
runs them) the pass is taken apart, every part timed on one pass's batches (RECON-A and -B: 16; RECON-L: 256), rounds interleaved,
fastest round kept, wall and CPU (``time.process_time``: this process's threads; what a loaded
machine distorts least):

- ``steps``: the jitted steps alone, one stream (``streams=1``), on batches read beforehand;
- ``steps, default streams``: the same with the library's default (RECON-B: two parts per step);
- ``prepare``: reading the pass's batches onto the device (``_Steps.prepare``), nothing else, one
  batch at a time, each let go before the next is read, as the pass holds them (holding all of
  RECON-L's 256 batches at once, 1 GiB of new memory, cost 0.8-2.2 s of page faults, against 0.19
  s one at a time: the 1.56 s "prepare" of earlier runs was that, not the reads);
- ``pass``: a whole pass of ``run_reconstruction`` (default streams; between the callbacks of
  passes 1-2 and 2-3 of a 3-pass run, the faster);
- ``floor, 1 stream`` and ``floor``: ``adapters/_floor.FFTFloor`` (the floor of
  ``adapters/recon_floor.py``: (2s − 1) FFT + inverse FFT pairs per position and mode, its fastest
  chunk) in one stream and in the library's default streams (what profile_recon.py compares with);
- ``floor with the shifts`` (cases whose positions each have a sub-pixel shift of their own, as
  RECON-L's): the floor with one FFT pair more per position and mode, the probe's exact sub-pixel
  shift (an inverse FFT forward, an FFT back), which the floor does not count; ``wall / floor with
  the shifts wall`` is what everything but the model's FFTs costs there.

Then one profiler trace (``jax.profiler``, CPU) of a pass of one-stream steps, its XLA operations
summed by kind: the FFTs and the other operations inside the chunks' loop (per position), the FFTs
outside it (the probe's sub-pixel shifts, forward and back) and the rest outside it (the optimizer,
constraints, accumulators), each in ms per pass and as a share of the floor's one-stream CPU time;
the largest operations are listed by name. The step's configuration is the one
``run_reconstruction`` builds (read by standing in for its ``_loop`` once).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "adapters"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _floor import FFTFloor  # noqa: E402
from profile_recon import run_cases  # noqa: E402

import ptyro_invert  # noqa: E402
from ptyro_core import Dataset4D, Grid, replace  # noqa: E402
from ptyro_invert import recon  # noqa: E402

CASES = os.path.join(HERE, ".work", "cases")


def load_case(name: str) -> tuple[dict, Dataset4D, object, str, dict]:
    """(meta, dataset, initial state, algorithm, options) as adapters/ours_recon.py makes them."""
    d = os.path.join(CASES, name)
    if not os.path.exists(os.path.join(d, "meta.json")):
        import cases

        cases.make_any_recon_case(d, name)
    m = json.load(open(os.path.join(d, "meta.json")))
    grid = Grid(tuple(m["pattern_gpts"]), (m["sampling"], m["sampling"]))
    ds = Dataset4D(np.load(os.path.join(d, "patterns.npy")), np.load(os.path.join(d, "positions.npy")).astype(np.float32), grid=grid, energy=m["energy"])
    kw: dict = dict(semiangle_cutoff=m["semiangle_cutoff"], aberrations={"C10": m["C10"]})
    algorithm, options = "single_slice", {}
    if m["slices"] > 1:
        kw.update(num_slices=m["slices"], slice_thickness=m["slice_thickness"])
        algorithm = "multislice"
    elif m["modes"] > 1:
        kw.update(num_modes=m["modes"])
        algorithm, options = "mixed_state", {"num_modes": m["modes"]}
    st = ptyro_invert.initial_state(ds, **kw)
    if m["modes"] == 1:
        st = replace(st, probe=jnp.asarray(np.load(os.path.join(d, "probe.npy"))[None], st.probe.dtype))
    return m, ds, st, algorithm, options


def fresh(tree):
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)


def step_setup(ds, st, algorithm: str, options: dict, batch: int, streams: int | None) -> dict:
    """The keyword arguments run_reconstruction hands to ``_loop`` (configuration, constants, ...)."""
    got: dict = {}
    loop = recon._loop
    recon._loop = lambda **k: got.update(k) or k["state"]
    try:
        ptyro_invert.reconstruct(ds, fresh(st), algorithm=algorithm, iterations=5, batch_size=batch, progress=False, streams=streams, **options)
    finally:
        recon._loop = loop
    return got


def timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


class PassParts:
    """One pass's batches and the steps of one stream count."""

    def __init__(self, k: dict) -> None:
        self.k = k
        self.steps = recon._Steps(k["cfg"], k["consts"], k["source"], k["mesh"], k["streams"])
        n, b = len(k["active_idx"]), k["cfg"].batch
        self.perm = k["active_idx"][np.random.default_rng([0, 0]).permutation(n)]
        self.bounds = recon.batch_bounds(n, b)
        self.batches = self.prepare()
        self.params, self.opt = fresh(k["params"]), fresh(k["opt_state"])
        self.params, self.opt, _ = self.steps(self.params, self.opt, self.batches[0], first=True)
        self.run()

    def prepare(self) -> list:
        """The pass's batches, read and kept (the steps' input)."""
        return [jax.block_until_ready(self.steps.prepare(self.perm[lo:hi])) for lo, hi in self.bounds]

    def read_each(self) -> None:
        """The pass's batches read one at a time, each let go before the next (what is timed)."""
        for lo, hi in self.bounds:
            jax.block_until_ready(self.steps.prepare(self.perm[lo:hi]))

    def run(self) -> None:
        for b in self.batches:
            self.params, self.opt, _ = self.steps(self.params, self.opt, b, first=False)
        jax.block_until_ready(self.params)


def trace_ops(parts: PassParts, nchunks: int) -> dict:
    """XLA's operations of one pass of steps, summed by kind (ms per pass)."""
    tmp = tempfile.mkdtemp(prefix="step_parts_")
    try:
        with jax.profiler.trace(tmp):
            parts.run()
        f = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)[0]
        events = json.load(gzip.open(f))["traceEvents"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    steps = len(parts.batches)
    dur: dict = collections.defaultdict(float)
    count: dict = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or not (name.startswith(("fft", "wrapped_", "copy", "ynn_", "xnn_")) or "fusion" in name):
            continue
        dur[name] += e.get("dur", 0) / 1e3
        count[name] += 1
    kinds: dict = collections.defaultdict(float)
    for name, ms in dur.items():
        loop = count[name] >= steps * nchunks and nchunks > 1
        kinds[("loop" if loop else "outside loop") + (", FFT" if name.startswith("fft") else ", other")] += ms
    top = sorted(dur.items(), key=lambda kv: -kv[1])[: int(os.environ.get("STEP_PARTS_TOP", "14"))]
    return {"by kind ms": {k: round(v, 2) for k, v in sorted(kinds.items())},
            "largest ms": {f"{n} (x{count[n] // steps} per step)": round(v, 2) for n, v in top}}  # fmt: skip


def profile_case(name: str, rounds: int) -> dict:
    m, ds, st, algorithm, options = load_case(name)
    batch = int(m["batch_size"])
    one = PassParts(step_setup(ds, st, algorithm, options, batch, 1))
    dflt_k = step_setup(ds, st, algorithm, options, batch, None)
    dflt = PassParts(dflt_k) if dflt_k["streams"] > 1 else None
    n = int(np.prod(m["scan_gpts"]))
    pairs = 2 * int(m["slices"]) - 1
    floor = FFTFloor(m["pattern_gpts"], pairs, n * int(m["modes"]), batch)
    floor.run()  # compiles and picks its chunk
    # positions each with a sub-pixel shift of its own: the exact model shifts each position's
    # probe (an inverse FFT forward, an FFT back), one FFT pair per position and mode more than
    # the floor counts (grouped shifts cost a few per step, not per position)
    shifted = None if one.k["cfg"].grouped else FFTFloor(m["pattern_gpts"], pairs + 1, n * int(m["modes"]), batch)
    if shifted is not None:
        shifted.run()

    def floor_streams(k: str | None, floor: FFTFloor = floor):
        old = os.environ.get("PTYRO_STREAMS")
        if k is None:
            os.environ.pop("PTYRO_STREAMS", None)
        else:
            os.environ["PTYRO_STREAMS"] = k
        try:
            floor.run()
        finally:
            if old is None:
                os.environ.pop("PTYRO_STREAMS", None)
            else:
                os.environ["PTYRO_STREAMS"] = old

    def whole_pass() -> tuple[float, float]:
        """(wall, cpu) of the fastest of passes 2 and 3 of a run: between its callbacks."""
        marks: list = []
        ptyro_invert.reconstruct(ds, fresh(st), algorithm=algorithm, iterations=3, batch_size=batch, progress=False,
                                 callback=lambda s: marks.append((time.perf_counter(), time.process_time())), **options)  # fmt: skip
        return min(marks[i][0] - marks[i - 1][0] for i in (1, 2)), min(marks[i][1] - marks[i - 1][1] for i in (1, 2))

    whole_pass()  # compiles run_reconstruction's own programs
    parts = {"steps": one.run, "prepare": one.read_each, "floor, 1 stream": lambda: floor_streams("1"), "floor": lambda: floor_streams(None)}
    if dflt is not None:
        parts["steps, default streams"] = dflt.run
    if shifted is not None:
        parts["floor with the shifts"] = lambda: floor_streams(None, shifted)
    res: dict = {k: [] for k in parts}
    res["pass"] = []
    for r in range(rounds):
        for k, fn in list(parts.items())[r % len(parts) :] + list(parts.items())[: r % len(parts)]:
            res[k].append(timed(fn))
        res["pass"].append(whole_pass())
    out: dict = {"algorithm": algorithm, "streams by default": dflt_k["streams"], "chunk positions": one.k["cfg"].chunk_size,
                 "floor chunk": floor.chunk, "loadavg": os.getloadavg()}  # fmt: skip
    for k, v in res.items():
        out[k] = {"wall ms": round(1e3 * min(w for w, _ in v), 1), "cpu ms": round(1e3 * min(c for _, c in v), 1)}
    fl = out["floor, 1 stream"]["cpu ms"]
    for k in list(res):
        out[k]["/ floor 1-stream cpu"] = round(out[k]["cpu ms"] / fl, 3)
    for k in ("steps", "pass", "steps, default streams"):
        if k in out:
            out[k]["wall / floor wall"] = round(out[k]["wall ms"] / out["floor"]["wall ms"], 3)
            if shifted is not None:
                out[k]["wall / floor with the shifts wall"] = round(out[k]["wall ms"] / out["floor with the shifts"]["wall ms"], 3)
    b = one.k["cfg"]
    local = b.batch // b.ndev
    nchunks = -(-local // max(1, min(b.chunk_size, local)))
    ops = trace_ops(one, nchunks)
    ops["by kind / floor 1-stream cpu"] = {k: round(v / fl, 3) for k, v in ops["by kind ms"].items()}
    out["one-stream step's operations (one pass, profiler)"] = ops
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="recon-a,recon-b-multislice,recon-b-mixed")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(HERE, "results", "step_parts.json"))
    a = p.parse_args(argv)
    return run_cases("benchmarks/step_parts.py", argv, a.cases, lambda name: profile_case(name, a.rounds), a.out)


if __name__ == "__main__":
    sys.exit(main())
