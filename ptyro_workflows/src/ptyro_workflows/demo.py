"""``ptyro demo``: the whole job on an embedded default, no input needed.

Simulates a 4D-STEM dataset of SrTiO3 [001] (a 4 x 4 x 2 unit-cell slab on a 0.061 Å grid, so
that the patterns reach 137 mrad and an HAADF detector is possible; each probe propagated in a
96 x 96 window; a 16 x 16 scan over 2 x 2 unit cells; 200 keV, 20 mrad, 30 Å defocus),
reconstructs it with single-slice ptychography, and writes into the output directory the
dataset, the reconstruction, the two configurations (so each step can be rerun with
``ptyro simulate`` / ``ptyro reconstruct``) and the figures of ``ptyro show`` for both files;
prints what it wrote and the phase correlation with the ground truth σ·ΣV.

The figures are drawn by another process (none on one core), started first (``ptyro demo``
starts it before importing JAX): its imports (matplotlib) overlap JAX's, the dataset's figures
the reconstruction, so that a second run (its programs loaded from the compilation cache) waits
only for the reconstruction's figures; those it draws in two halves at once, the second half by
a forked copy of itself (its imports made: no start-up; Linux). While it waits for the data it
makes the figures ahead (:func:`ptyro_workflows.figures.prepare_steps`: canvases, axes, tick
artists), the dataset's during the simulation, the reconstruction's once the dataset's are
drawn. Only compiled programs are cached, never the demo's results.
"""

import copy
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ptyro_core import PtyroValueError
from ptyro_workflows.config import to_toml

__all__ = ["DEMO_SIMULATION", "DEMO_RECONSTRUCTION", "DEMO_FILES", "run_demo", "check_demo"]

_A = 3.905  # SrTiO3 lattice parameter, Å

DEMO_SIMULATION: dict[str, Any] = {
    "specimen": {"structure": "SrTiO3", "repeat": [4, 4, 2], "zone_axis": [0, 0, 1]},
    # 256 px over 4a = 15.62 Å: 0.061 Å pixels, band limit λ/(3·dx) = 137 mrad at 200 keV
    "potential": {"parametrization": "kirkland", "gpts": [256, 256], "slice_thickness": _A / 2, "projection": "infinite"},
    "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "defocus": 30.0},
    "scan": {"start": [_A, _A], "end": [3 * _A, 3 * _A], "gpts": [16, 16]},
    "frozen_phonons": {"configurations": 1, "sigmas": 0.0, "seed": 0},
    # HAADF from 3α and every ring inside 60 % of the 137 mrad band limit (ptyro_simul/README.md, Convergence: beyond that the ADF signal is not converged)
    "detectors": {"pixelated": True, "bf": [0.0, 10.0], "abf": [10.0, 20.0], "adf": [25.0, 55.0], "haadf": [60.0, 82.0]},
    "simulation": {"simulator": "multislice", "propagator": "fresnel", "batch_size": 64, "options": {"window": [96, 96]}},
}

DEMO_RECONSTRUCTION: dict[str, Any] = {
    "probe": {"semiangle_cutoff": 20.0, "defocus": 30.0},
    "reconstruction": {"algorithm": "single_slice", "loss": "amplitude", "optimizer": "adam", "iterations": 20, "batch_size": 32, "seed": 0},
}

#: file name -> what it shows
DEMO_FILES: dict[str, str] = {
    "dataset.h5": "simulated 4D-STEM dataset (EMD 1.0; py4DSTEM reads a calibrated DataCube) with virtual images and provenance",
    "reconstruction.h5": "reconstructed object, probe, positions, loss (HDF5) with provenance",
    "simulation.toml": "configuration of the simulation (ptyro simulate simulation.toml)",
    "reconstruction.toml": "configuration of the reconstruction (ptyro reconstruct dataset.h5 --config reconstruction.toml)",
    "potential.png": "ground-truth projected potential ΣV (V·Å) with the scanned area (2 x 2 unit cells)",
    "mean_diffraction.png": "mean diffraction pattern (log, mrad) with the BF/ABF/ADF/HAADF annuli, aperture and band limit",
    "virtual_images.png": "virtual BF, ABF, ADF, HAADF and iDPC images from the 4D data, CBED positions marked",
    "cbed.png": "CBED patterns on a Sr column and between columns (one log scale)",
    "phase.png": "reconstructed phase beside the truth σ·ΣV band-limited to the probe's transfer (2α), one colour scale",
    "object.png": "reconstructed object phase and amplitude over the whole field",
    "probe.png": "reconstructed probe: intensity and phase, and its amplitude in reciprocal space",
    "loss.png": "loss per iteration",
}


def _timed(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(*args, **kw), time.perf_counter() - t


#: a drawing process: Python on this interpreter, the caller's module path (its argument), then
#: :func:`_serve` (not multiprocessing's spawn, which imports the caller's main script again: a
#: script without an ``if __name__ == "__main__"`` guard would run the demo once more there)
_WORKER = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from ptyro_workflows.demo import _serve; _serve()"

#: set in a drawing process (:func:`_serve`): only there may a call fork (never in a process
#: that runs JAX, whose threads a fork would not copy)
_IN_DRAWING_PROCESS = False


def _serve() -> None:
    """A drawing process: the figures' imports (numpy, h5py, matplotlib's Agg canvas) first,
    made while the main process imports JAX and simulates; then each ``(function, arguments,
    answer)`` read from stdin (:func:`_send`) is called and its ``("ok", result)`` or
    ``("error", exception)`` written (pickled) to stdout, until stdin ends; a call without
    ``answer`` is work ahead (:meth:`_Drawing.ahead`): an iterator, stepped while nothing else
    waits. An interruption is left to the main process (which stops sending): a figure being
    drawn is finished, never left half-written. Python's cyclic garbage collector stays off in
    it: a figure's artists are cycles that it would scan again and again (a fifth of the
    drawing's CPU time, measured), and the eight figures' garbage is about 1 MiB (measured: 126
    MiB at the end against 125 with the collector)."""
    import gc
    import pickle

    gc.disable()
    global _IN_DRAWING_PROCESS
    _IN_DRAWING_PROCESS = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, never between the answers
    import ptyro_workflows.show  # noqa: F401
    from ptyro_workflows.figures import preload

    preload()
    gc.freeze()  # what the imports made is never garbage: out of the collector's way (for gc.collect too)
    ahead: list[Any] = []
    while True:
        while ahead and not _waiting(0):
            _step(ahead)
        message = _receive(0)
        if message is None:
            answers.close()
            _reap()  # its CPU time counted in this process's (and so in the demo's)
            os._exit(0)  # everything is written and closed: no interpreter shutdown to wait for
        fn, args, answer = pickle.loads(message)
        if not answer:
            kind, steps = _outcome(fn, args)
            ahead += [steps] if kind == "ok" else []
            continue
        answers.write(_pickled(_outcome(fn, args)))
        answers.flush()


def _step(ahead: list[Any]) -> None:
    """One step of the first iterator of work ahead (gone when it ends or fails: work ahead is
    never needed, only saves time later)."""
    try:
        next(ahead[0])
    except Exception:  # noqa: BLE001 - StopIteration, or a failure: the work is left undone
        ahead.pop(0)


def _send(stream: Any, message: Any) -> None:
    """``message`` pickled into ``stream`` with its length first (:func:`_receive`)."""
    import pickle

    blob = pickle.dumps(message)
    stream.write(len(blob).to_bytes(8, "little") + blob)
    stream.flush()


def _receive(fd: int) -> bytes | None:
    """The next message :func:`_send` wrote into file descriptor ``fd`` (None: it ended), read
    without a buffer: whether another is waiting is then what :func:`_waiting` sees."""
    head = _read(fd, 8)
    return None if head is None else _read(fd, int.from_bytes(head, "little"))


def _read(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _waiting(fd: int) -> bool:
    """Whether something can be read from ``fd`` now (True where that cannot be known: no pipes
    in ``select`` on Windows, so no work ahead there)."""
    import select

    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _pickled(outcome: tuple[str, Any]) -> bytes:
    """``outcome`` pickled; a value or exception that does not pickle (or would not unpickle on
    the other side) is sent as its line."""
    import pickle

    try:
        answer = pickle.dumps(outcome)
        pickle.loads(answer)  # what the other side will do with it
    except Exception:  # noqa: BLE001 - its line instead
        answer = pickle.dumps(("error", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    return answer


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    """``("ok", fn(*args))``, or ``("error", exception)`` to raise where the result is asked for."""
    try:
        return "ok", fn(*args)
    except Exception as e:  # noqa: BLE001 - raised where the result is asked for
        return "error", e


def _ready() -> int:
    return os.getpid()


def _figures_ahead(sim_cfg: dict[str, Any], rec_cfg: dict[str, Any], which: str) -> Iterator[None]:
    """(Work ahead, in a drawing process) the demo's figures of ``which`` (``"dataset"`` or
    ``"reconstruction"``) made ahead of their data, a cell a step, in the order they are drawn
    (:func:`ptyro_workflows.show.figure_layouts`)."""
    from ptyro_workflows import figures
    from ptyro_workflows.config import annular_detectors
    from ptyro_workflows.show import figure_layouts

    slices = int(rec_cfg["reconstruction"].get("num_slices") or 1)
    for figure, counts in figure_layouts(len(annular_detectors(sim_cfg.get("detectors") or {})), slices=slices)[which]:
        yield from figures.prepare_steps(figure, **counts)
        yield


def _draw_dataset(path: Path, out: Path) -> tuple[dict[str, Any], float]:
    from ptyro_workflows.show import dataset_figures

    return _timed(dataset_figures, path, out, overwrite=True)


#: the reconstruction's figures in two halves of about equal drawing time (idle, CPU s: phase
#: 0.12 + object 0.12, probe 0.16 + loss 0.06); the half with the phase (its correlation) first
_HALVES = (("phase.png", "object.png"), ("probe.png", "loss.png"))


def _draw_half(path: Path, out: Path, truth: Path, only: tuple[str, ...] | None) -> dict[str, Any]:
    from ptyro_workflows.show import reconstruction_figures

    return reconstruction_figures(path, out, truth=truth, overwrite=True, only=only)


def _draw_reconstruction(path: Path, out: Path, truth: Path) -> dict[str, Any]:
    """The reconstruction's figures (``ptyro show``'s result: files in DEMO_FILES' order, lines,
    correlations). In a drawing process (:func:`_can_fork`) in two halves at once, the second by
    a forked copy of this process, which answers through a pipe and ends; a copy that cannot be
    made, or ends without answering, leaves its half to this process."""
    halves: tuple[tuple[str, ...] | None, ...] = _HALVES if _can_fork() else (None,)
    copies = [_forked(_draw_half, (path, out, truth, h)) for h in halves[1:]]
    drawn = [_outcome(_draw_half, (path, out, truth, halves[0]))]
    drawn += [_joined(copy, _draw_half, (path, out, truth, h)) for copy, h in zip(copies, halves[1:])]
    for kind, value in drawn:
        if kind == "error":
            raise value
    parts = [value for _, value in drawn]
    files = sorted((p for d in parts for p in d["files"]), key=lambda p: list(DEMO_FILES).index(p.name))
    return {**parts[0], "files": files, "lines": [line for d in parts for line in d["lines"]]}


def _can_fork() -> bool:
    """Whether this process may fork a copy to draw beside it: only a drawing process (no JAX, no
    other threads of ours), on Linux (a fork elsewhere may not copy the system's libraries
    safely), with a core for the copy."""
    return _IN_DRAWING_PROCESS and sys.platform.startswith("linux") and _cores() > 1


def _forked(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[int, int] | None:
    """``fn(*args)`` in a forked copy of this process, its outcome pickled into a pipe: (the
    copy's pid, the pipe's reading end), or None when no copy can be made."""
    import warnings

    read, write = os.pipe()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of any thread (e.g. BLAS's): none of ours runs
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the copy: its outcome into the pipe, then gone (nothing of the parent's flushed or run)
        status = 1
        try:
            os.close(read)
            with os.fdopen(write, "wb") as pipe:
                pipe.write(_pickled(_outcome(fn, args)))
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    return pid, read


def _joined(copy: tuple[int, int] | None, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    """The outcome a forked copy answered (the copy reaped now if it has ended, else by
    :func:`_reap` before this process ends: its exit, up to 6 ms measured, is not waited for);
    made here when there was no copy or it ended without answering."""
    import pickle

    if copy is not None:
        pid, read = copy
        with os.fdopen(read, "rb") as pipe:
            answer = pipe.read()  # read before waiting: an answer larger than the pipe holds
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            _UNREAPED.append(pid)
        try:
            outcome: tuple[str, Any] = pickle.loads(answer)
            return outcome
        except Exception:  # noqa: BLE001 - no (whole) answer: the copy died
            pass
    return _outcome(fn, args)


#: forked copies that had not ended when their answer was read
_UNREAPED: list[int] = []


def _reap() -> None:
    """Wait for the forked copies not yet reaped."""
    while _UNREAPED:
        try:
            os.waitpid(_UNREAPED.pop(), 0)
        except ChildProcessError:
            pass


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS and Windows
        return os.cpu_count() or 1


class _Task:
    """A call sent to a drawing process (``process`` None: made here, ``value`` its outcome)."""

    def __init__(self, process: Any, fn: Callable[..., Any], args: tuple[Any, ...], value: Any = None) -> None:
        self.process, self.fn, self.args, self.value = process, fn, args, value


class _Drawing:
    """The figures drawn beside the main process's work by another process, started with the
    demo where there is a spare core (one is enough: it forks a copy for the reconstruction's
    second half of figures, when the main process only waits; a second process would compete
    with the reconstruction by its imports). It imports beside JAX's import (or the simulation)
    and draws the dataset's figures beside the reconstruction (on another core, not sharing the interpreter
    lock with the reconstruction's Python). On one core, or where the process cannot start or
    dies, the figures are drawn here."""

    def __init__(self, processes: int | None = None) -> None:
        self.processes = min(1, max(0, _cores() - 1)) if processes is None else processes
        self._procs: list[Any] = []
        self._answers: dict[Any, list[Any]] = {}  # process -> its tasks sent and not yet answered
        for _ in range(self.processes):
            self._start()

    def _start(self) -> None:
        import json
        import subprocess

        try:
            # its own session: Ctrl-C at the terminal reaches only this process, which stops sending
            argv = [sys.executable, "-c", _WORKER, json.dumps([str(p) for p in sys.path])]
            # one OpenBLAS thread (unless the caller chose): a second one spins while NumPy is
            # imported, taking CPU from the other process, and drawing needs none
            env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
            proc: Any = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, env=env)
        except OSError:  # no process here: drawn in this one
            return
        self._procs.append(proc)
        self._answers[proc] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Task:
        """Send ``fn(*args)`` to the process with the fewest calls waiting (made here without one)."""
        if self._procs:
            proc = min(self._procs, key=lambda p: len(self._answers[p]))
            try:
                _send(proc.stdin, (fn, args, True))
                task = _Task(proc, fn, args)
                self._answers[proc].append(task)
                return task
            except OSError:  # the process has gone: made here
                pass
        return _Task(None, fn, args, _outcome(fn, args))

    def ahead(self, fn: Callable[..., Any], *args: Any) -> None:
        """Work ahead for every drawing process: ``fn(*args)``, an iterator, is stepped there
        while nothing else waits (what each step makes is kept there, e.g. figures made ahead
        of their data); nothing is answered, nothing waits for it, and without a process it
        is not done."""
        for proc in self._procs:
            try:
                _send(proc.stdin, (fn, args, False))
            except OSError:  # the process has gone: nothing ahead
                pass

    def result(self, task: _Task) -> Any:
        """The task's result (its exception raised); made here if its process died."""
        import pickle

        if task.process is not None:
            pending = self._answers[task.process]
            while task.value is None and pending:
                try:
                    value = pickle.load(task.process.stdout)
                except (EOFError, OSError, pickle.UnpicklingError):  # the process died: what it had is made here
                    pending.clear()
                    break
                pending.pop(0).value = value
        if task.value is None:
            task.value = _outcome(task.fn, task.args)
        kind, value = task.value
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        """End the processes: each finishes what it was sent (a figure being drawn is never cut)."""
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self._procs:
            proc.wait()
            proc.stdout.close()
        self._procs.clear()


def check_demo(out: str | Path, *, overwrite: bool = False, iterations: int | None = None) -> Path:
    """The output directory ``out`` checked (not a file; no demo outputs in it without
    ``overwrite``) and ``iterations`` (a positive integer or None): one error line otherwise."""
    outdir = Path(out)
    if outdir.exists() and not outdir.is_dir():
        raise PtyroValueError(f"--out {str(outdir)!r} is a file; expected a directory")
    existing = [n for n in DEMO_FILES if (outdir / n).exists()]
    if existing and not overwrite:
        raise PtyroValueError(f"{str(outdir)!r} already holds demo outputs ({', '.join(existing)}); pass --overwrite to replace them")
    if iterations is not None and int(iterations) < 1:
        raise PtyroValueError(f"--iterations: expected a positive integer, got {iterations}")
    return outdir


def run_demo(
    out: str | Path = "ptyro-demo",
    *,
    overwrite: bool = False,
    progress: bool = True,
    quiet: bool = False,
    iterations: int | None = None,
    figures: _Drawing | None = None,
) -> dict[str, Any]:
    """Run the demo into directory ``out``; returns a summary (files, timings, quality).
    ``figures``: the drawing process to use (``_Drawing()``, which the caller ends; ``ptyro
    demo`` starts it before importing JAX, so that its imports run beside JAX's); by default one
    started here."""

    def say(*a: Any) -> None:
        if not quiet:
            print(*a, flush=True)

    outdir = check_demo(out, overwrite=overwrite, iterations=iterations)
    sim_cfg = copy.deepcopy(DEMO_SIMULATION)
    rec_cfg = copy.deepcopy(DEMO_RECONSTRUCTION)
    if iterations is not None:
        rec_cfg["reconstruction"]["iterations"] = int(iterations)
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    drawing = _Drawing() if figures is None else figures  # started first: its imports overlap the simulation
    drawing.ahead(_figures_ahead, sim_cfg, rec_cfg, "dataset")  # while it waits for the simulation
    try:
        run = _run(outdir, sim_cfg, rec_cfg, drawing, progress=progress, say=say)
    finally:
        if figures is None:
            drawing.close()
    total = time.perf_counter() - t0
    shown, rec, algorithm = run.pop("shown"), run.pop("rec"), run.pop("algorithm")
    say(
        f"simulated {run['patterns']} patterns in {run['time_simulation']:.1f} s; reconstructed ({algorithm}, "
        f"{run['iterations']} iterations) in {run['time_reconstruction']:.1f} s; figures in {run['time_figures']:.1f} s more "
        f"(the dataset's, {run['time_dataset_figures']:.1f} s, drawn during the reconstruction)"
    )
    for line in shown["lines"]:
        say(line)
    say(f"wrote into {outdir}/:")
    for name, what in DEMO_FILES.items():
        say(f"  {name:<20} {what}")
    for line in rec["lines"]:
        say(line)
    say(f"total {total:.1f} s")
    return {
        "out": outdir,
        "files": [outdir / n for n in DEMO_FILES],
        "figures": shown["files"] + rec["files"],
        "correlation": rec["correlation"],
        "correlation_unfiltered": rec["correlation_unfiltered"],
        **run,
        "time_total": total,
    }


def _run(outdir: Path, sim_cfg: dict[str, Any], rec_cfg: dict[str, Any], figures: _Drawing, *, progress: bool, say: Callable[..., None]) -> dict[str, Any]:
    """Simulate, reconstruct and draw (the dataset's figures during the reconstruction)."""
    import numpy as np

    from ptyro_workflows.config import reconstruction_config
    from ptyro_workflows.reconstruct import reconstruct
    from ptyro_workflows.simulate import simulate

    t0 = time.perf_counter()
    sp, rep = sim_cfg["potential"]["gpts"], sim_cfg["specimen"]["repeat"]
    window = (sim_cfg["simulation"].get("options") or {}).get("window") or sp
    say(
        f"ptyro demo: SrTiO3 [001], {rep} cells on {sp[0]} x {sp[1]} px ({rep[0] * _A / sp[0]:.3f} Å), {list(window)} patterns, "
        f"{sim_cfg['scan']['gpts']} scan, {sim_cfg['probe']['energy'] / 1e3:g} keV, {sim_cfg['probe']['semiangle_cutoff']:g} mrad"
    )
    sim = simulate(sim_cfg, outdir / "dataset.h5", overwrite=True, progress=progress, keep=True, command=["ptyro", "demo"])
    t_sim = time.perf_counter() - t0
    ds = sim.dataset
    assert ds is not None
    (outdir / "simulation.toml").write_text(to_toml(sim.config))

    t1 = time.perf_counter()
    data, recon = outdir / "dataset.h5", outdir / "reconstruction.h5"
    drawing = figures.submit(_draw_dataset, data, outdir)  # drawn while the reconstruction runs
    figures.ahead(_figures_ahead, sim_cfg, rec_cfg, "reconstruction")  # once they are drawn
    state = reconstruct(ds, rec_cfg, recon, progress=progress, overwrite=True, command=["ptyro", "demo"], record={"input": str(data), "source": sim.provenance})
    t_rec = time.perf_counter() - t1
    cfg_r = reconstruction_config(rec_cfg)
    cfg_r["probe"]["energy"] = ds.energy
    (outdir / "reconstruction.toml").write_text(to_toml(cfg_r))
    t2 = time.perf_counter()
    shown, t_shown = figures.result(drawing)  # an error in it stops here
    rec = figures.result(figures.submit(_draw_reconstruction, recon, outdir, data))
    return {
        "shown": shown,
        "rec": rec,
        "algorithm": cfg_r["reconstruction"]["algorithm"],
        "patterns": ds.scan_shape[0] * ds.scan_shape[1],
        "iterations": int(np.asarray(state.iteration)),
        "loss": np.asarray(state.loss),
        "time_simulation": t_sim,
        "time_reconstruction": t_rec,
        "time_figures": time.perf_counter() - t2,
        "time_dataset_figures": t_shown,
    }
