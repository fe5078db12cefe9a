"""``ptyro demo`` (on a smaller default, same code path), the figures, and the docs: the Python
example of the getting-started page runs, every configuration key is documented, matplotlib is
imported only by the figures module."""

import re
from pathlib import Path

import numpy as np
import pytest

from ptyro_workflows import demo
from ptyro_workflows.cli import main
from ptyro_workflows.config import ABERRATION_KEYS, SCHEMA

DOCS = Path(__file__).resolve().parents[2] / "docs"
A = 3.905


@pytest.fixture
def small_demo(monkeypatch):
    sim = {
        **demo.DEMO_SIMULATION,
        "specimen": {"structure": "SrTiO3", "repeat": [2, 2, 1]},
        "potential": {"parametrization": "kirkland", "gpts": [32, 32], "slice_thickness": A / 2},
        "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "C10": -20.0},
        "scan": {"start": [0.0, 0.0], "end": [A, A], "gpts": [8, 8]},
        "detectors": {"pixelated": True, "bf": [0, 10], "abf": [10, 20], "adf": [22, 33]},
        "simulation": {"batch_size": 16},
    }
    rec = {"probe": {"semiangle_cutoff": 20.0, "C10": -20.0}, "reconstruction": {"iterations": 10, "batch_size": 16}}
    monkeypatch.setattr(demo, "DEMO_SIMULATION", sim)
    monkeypatch.setattr(demo, "DEMO_RECONSTRUCTION", rec)


def test_demo_writes_everything_and_reports_quality(small_demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "_cores", lambda: 3)  # a drawing process (which forks for half of the reconstruction's figures where it has 2+ cores)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for name in demo.DEMO_FILES:
        assert (out / name).is_file(), name
        assert name in text
    r = float(re.search(r"phase correlation with the ground truth .*: (-?[0-9.]+)", text).group(1))
    assert r > 0.8, text
    from matplotlib.image import imread

    for png in sorted(out.glob("*.png")):
        img = imread(png)
        assert img.shape[0] > 300 and img.shape[1] > 300, png.name
        assert float(np.std(img[..., :3])) > 0.02, f"{png.name} looks blank"
        rim = np.r_[img[:2, :, :3].ravel(), img[-2:, :, :3].ravel(), img[:, :2, :3].ravel(), img[:, -2:, :3].ravel()]
        assert rim.min() >= 0.99, f"{png.name}: something is drawn on the outermost pixels (a label cut at the edge?)"
    # drawn into figures made ahead (by the drawing process, while it waited): the same pixels as
    # figures made at once, and the figures made ahead for the demo's configuration are the ones drawn
    from ptyro_workflows import figures, show

    again = tmp_path / "again"
    show.dataset_figures(out / "dataset.h5", again)
    show.reconstruction_figures(out / "reconstruction.h5", again, truth=out / "dataset.h5")
    try:
        for which in ("dataset", "reconstruction"):
            for _ in demo._figures_ahead(demo.DEMO_SIMULATION, demo.DEMO_RECONSTRUCTION, which):
                pass
        assert sum(len(v) for v in figures._SPARE.values()) == 8
        show.dataset_figures(out / "dataset.h5", again, overwrite=True)
        show.reconstruction_figures(out / "reconstruction.h5", again, truth=out / "dataset.h5", overwrite=True)
        assert not any(figures._SPARE.values())
    finally:
        figures._SPARE.clear()
    for png in sorted(out.glob("*.png")):
        assert (imread(png) == imread(again / png.name)).all(), png.name
    # the written configurations are valid configurations of each step
    from ptyro_workflows.config import reconstruction_config, simulation_config

    assert simulation_config(out / "simulation.toml")["specimen"]["structure"] == "SrTiO3"
    assert reconstruction_config(out / "reconstruction.toml")["reconstruction"]["iterations"] == 10
    # an existing demo is not overwritten without --overwrite
    assert main(["demo", "--out", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_an_error_drawing_the_dataset_figures_during_the_reconstruction_is_raised(small_demo, tmp_path, monkeypatch, capsys):
    import functools

    from ptyro_workflows import show

    # drawn by the drawing process (so the failure is made there: a CBED position off the scan)
    monkeypatch.setattr(demo, "_draw_dataset", functools.partial(show.dataset_figures, positions=[[99, 99]]))
    assert main(["demo", "--out", str(tmp_path / "d"), "-q", "--iterations", "1"]) == 2
    assert "--position [99, 99]: expected a scan index within [0, 7] x [0, 7]" in capsys.readouterr().err
    assert not list((tmp_path / "d").glob("*.png"))  # nor the reconstruction's figures after it
    assert not list((tmp_path / "d").glob(".*.tmp"))


def test_the_figures_are_drawn_by_another_process_or_here_when_none_starts(monkeypatch):
    import gc
    import os

    for processes in (1, 2):
        drawing = demo._Drawing(processes)
        try:
            tasks = [drawing.submit(demo._ready) for _ in range(4)]  # shared out over the processes
            pids = {drawing.result(t) for t in tasks}
            assert os.getpid() not in pids and len(pids) == processes
            # its garbage collector off (a figure's artists are cycles), its imports frozen
            assert drawing.result(drawing.submit(gc.isenabled)) is False and drawing.result(drawing.submit(gc.get_freeze_count)) > 1000
            with pytest.raises(ZeroDivisionError):  # raised here, where the result is asked for
                drawing.result(drawing.submit(divmod, 1, 0))
        finally:
            drawing.close()
    # one process where there is a spare core (it forks for the second half of the
    # reconstruction's figures), none on one core (drawn here)
    monkeypatch.setattr(demo, "_cores", lambda: 8)
    assert demo._Drawing(0).processes == 0 and demo._Drawing.__init__.__defaults__ == (None,)
    drawing = demo._Drawing()
    try:
        assert drawing.processes == 1 == len(drawing._procs)
    finally:
        drawing.close()
    monkeypatch.setattr(demo, "_cores", lambda: 1)
    drawing = demo._Drawing()
    assert drawing.processes == 0 and drawing.result(drawing.submit(demo._ready)) == os.getpid()
    with pytest.raises(ZeroDivisionError):
        drawing.result(drawing.submit(divmod, 1, 0))
    # a process that dies leaves what it was sent, and not answered, to this process
    import signal

    drawing = demo._Drawing(1)
    try:
        pid = drawing._procs[0].pid
        killed, after = drawing.submit(os.kill, pid, signal.SIGKILL), drawing.submit(demo._ready)
        assert drawing.result(after) == os.getpid()
        assert drawing.result(killed) is None  # sent again here: the dead process is not yet waited for
    finally:
        drawing.close()
    # a process that cannot start leaves the drawing to this process
    monkeypatch.setattr(demo, "_WORKER", "import os; os._exit(3)")
    drawing = demo._Drawing(1)
    try:
        assert drawing.result(drawing.submit(demo._ready)) == os.getpid()
    finally:
        drawing.close()


def test_the_drawing_process_runs_one_blas_thread_unless_told(monkeypatch):
    """Its NumPy gets one OpenBLAS thread (a second one spins at import, taking the other
    process's core); a number the caller set is kept."""
    for given, expected in ((None, "1"), ("3", "3")):
        if given is None:
            monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OPENBLAS_NUM_THREADS", given)
        drawing = demo._Drawing(1)
        try:
            assert drawing.result(drawing.submit(__import__("os").getenv, "OPENBLAS_NUM_THREADS")) == expected
        finally:
            drawing.close()


def test_work_ahead_is_done_by_the_drawing_process_between_its_calls(monkeypatch):
    """``ahead``: an iterator stepped in the drawing process while nothing else waits (figures
    made ahead of their data), never answered; one that fails is dropped, the process answers
    on; without a process nothing is done ahead."""
    import os
    import time

    from ptyro_workflows import figures

    spare = "len(__import__('ptyro_workflows.figures').figures._SPARE.get('loss', []))"  # there
    drawing = demo._Drawing(1)
    try:
        drawing.ahead(map, divmod, [1, 2], [1, 0])  # its second step fails
        drawing.ahead(map, figures.prepare, ["loss"] * 3)
        deadline = time.monotonic() + 60
        while drawing.result(drawing.submit(eval, spare)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert drawing.result(drawing.submit(eval, spare)) == 3
        assert drawing.result(drawing.submit(demo._ready)) != os.getpid()
    finally:
        drawing.close()
    monkeypatch.setattr(demo, "_cores", lambda: 1)
    demo._Drawing().ahead(map, figures.prepare, ["loss"])
    assert not figures._SPARE.get("loss")


_HALVES_SCRIPT = """
import os, sys
from pathlib import Path
from ptyro_workflows import demo
demo._IN_DRAWING_PROCESS = sys.argv[1] == "drawing"
demo._cores = lambda: 2
parent = os.getpid()
def half(path, out, truth, only):
    if sys.argv[2] == "dies" and os.getpid() != parent:
        os._exit(3)  # the copy ends without answering
    if sys.argv[2] == "fails" and only and "loss.png" in only:
        raise ValueError(f"no {only[-1]} here")
    names = only or demo._HALVES[0] + demo._HALVES[1]
    files = [Path(out) / n for n in names[::-1]]  # merged in DEMO_FILES' order
    return {"files": files, "lines": ["copy" if os.getpid() != parent else "here"], "correlation": 0.5 if "phase.png" in names else None}
demo._draw_half = half
try:
    r = demo._draw_reconstruction("rec.h5", "out", "data.h5")
except ValueError as e:
    print("error", e)
else:
    print(" ".join(r["lines"]), r["correlation"], " ".join(f.name for f in r["files"]))
demo._reap()  # what the drawing process does before it ends: no copy left unreaped
try:
    os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    print("reaped")
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="forks only on Linux")
@pytest.mark.parametrize(
    "where, how, expected",
    [
        ("drawing", "ok", "here copy 0.5 phase.png object.png probe.png loss.png\nreaped"),  # two halves at once
        ("drawing", "dies", "here here 0.5 phase.png object.png probe.png loss.png\nreaped"),  # the copy's half drawn here
        ("drawing", "fails", "error no loss.png here\nreaped"),  # the copy's exception raised here
        ("main", "ok", "here 0.5 phase.png object.png probe.png loss.png\nreaped"),  # never forks a process that is not a drawing one
    ],
)
def test_the_reconstructions_figures_are_drawn_in_halves_by_a_forked_copy(where, how, expected, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _HALVES_SCRIPT, where, how], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == expected


_EARLY_SCRIPT = """
import sys
from ptyro_workflows import cli, demo
seen = []
class Drawing:
    def __init__(self):
        seen.append(("started, JAX imported", "jax" in sys.modules))
    def close(self):
        seen.append("closed")
demo._Drawing = Drawing
demo.run_demo = lambda *a, figures=None, **k: seen.append(("run with it", isinstance(figures, Drawing), "jax" in sys.modules))
print(cli.main(["demo", "--out", sys.argv[1], "-q"]), seen)
"""


def test_ptyro_demo_starts_its_drawing_process_before_importing_jax(tmp_path):
    """So that the drawing process's imports run beside JAX's (not beside the simulation); a
    demo refused for its output directory starts none."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _EARLY_SCRIPT, str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "0 [('started, JAX imported', False), ('run with it', True, True), 'closed']"
    (tmp_path / "d" / "phase.png").parent.mkdir()
    (tmp_path / "d" / "phase.png").write_bytes(b"")
    r = subprocess.run([sys.executable, "-c", _EARLY_SCRIPT, str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "2 []" and "already holds demo outputs (phase.png)" in r.stderr


def test_the_demo_runs_from_a_script_without_a_main_guard(tmp_path):
    """The drawing processes do not import the caller's main script again (as multiprocessing's
    spawn would: a script without ``if __name__ == "__main__"`` would run the demo twice)."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "from ptyro_workflows import demo\n"
        "print('RUN')\n"
        "drawing = demo._Drawing(1)\n"
        "print('CHILD', drawing.result(drawing.submit(demo._ready)) != __import__('os').getpid())\n"
        "drawing.close()\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["RUN", "CHILD", "True"]


def test_getting_started_python_example_runs(tmp_path, monkeypatch):
    text = (DOCS / "getting-started.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "pw.simulate" in b)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "getting-started.md", "exec"), ns)  # noqa: S102 - our own documentation
    assert (tmp_path / "sim.h5").is_file() and (tmp_path / "rec.h5").is_file()
    assert ns["state"].object.shape[0] == 1


def test_every_configuration_key_is_in_the_reference():
    text = (DOCS / "configuration.md").read_text()
    for table, keys in SCHEMA.items():
        assert f"[{table}]" in text, table
        for k in keys:
            assert f"`{k}`" in text, f"[{table}] {k}"
    for k in ABERRATION_KEYS:
        assert f"`{k}`" in text, k


def test_every_subcommand_is_in_the_cli_reference():
    text = (DOCS / "cli.md").read_text()
    for cmd in ("demo", "simulate", "reconstruct", "info", "show", "plugins"):
        assert f"## `ptyro {cmd}`" in text, cmd


def test_only_the_figures_module_imports_matplotlib():
    src = Path(__file__).resolve().parents[1] / "src" / "ptyro_workflows"
    for py in src.glob("*.py"):
        if py.name == "figures.py":
            continue
        imports = re.findall(r"^\s*(?:import|from)\s+matplotlib", py.read_text(), re.M)
        assert not imports, f"{py.name} imports matplotlib"
    figures = (src / "figures.py").read_text()
    assert "matplotlib.use(" not in figures  # no global backend switch: the Agg canvas is used directly
