"""The fault battery of issue 17: bad inputs and a hostile environment, tried through the ``ptyro``
command as a user would, each judged *held* (refused with one clear line, nothing lost, nothing
left behind, no crash) or *failed*.

Severities: S1 data lost, S2 a wrong result with exit 0, S3 a crash (traceback, segfault, an
allocation that is not refused), S4 debris (files left behind), S5 a message that does not name
the bad value or file, N a pre-flight feature the issue asks for (``--dry-run``), and C a
control (a case that held before, kept to catch regressions).

Each case is ``fn(ctx) -> (held, note)``; ``ctx.run(argv, ...)`` runs ``ptyro argv`` in the
case's own directory (a subprocess with this tree's sources first on ``sys.path``, or in this
process for the pytest suite) and returns ``(rc, stdout, stderr)``. ``run_battery.py`` prints
the table; ``tests/test_battery_*.py`` run the same cases under pytest.
"""

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIM_TOML = """
[specimen]
structure = "SrTiO3"
[potential]
gpts = [32, 32]
[probe]
semiangle_cutoff = 20.0
[scan]
gpts = [{n}, {n}]
"""
REC = ["--iterations", "2", "--no-progress", "-q"]


def src_paths(tree: Path) -> list[str]:
    """The source directories of a checkout (first on sys.path of a subprocess)."""
    tree = Path(tree)
    out = [str(tree / d / "src") for d in ("ptyro_core", "ptyro_simul", "ptyro_invert", "ptyro_workflows")]
    out += [str(p) for p in sorted((tree / "plugins").glob("*/src"))]
    return out


class Context:
    """One case's directory, fixtures and runner."""

    def __init__(self, workdir: Path, fixtures: Path, tree: Path | None, inprocess: bool) -> None:
        self.dir, self.fixtures, self.tree, self.inprocess = workdir, fixtures, tree, inprocess

    def copy(self, name: str, to: str | None = None) -> Path:
        dst = self.dir / (to or name)
        shutil.copy(self.fixtures / name, dst)
        return dst

    def write(self, name: str, text: str | bytes) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
        return p

    def plugin(self, dist: str, source: str) -> Path:
        """A distribution on a private site directory (module + dist-info with an entry point
        in the group ``ptyrodactyl``); pass ``site=`` to :meth:`run`."""
        site = self.dir / "site"
        mod = dist.replace("-", "_")
        self.write(f"site/{mod}.py", source)
        self.write(f"site/{mod}-0.1.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        self.write(f"site/{mod}-0.1.dist-info/entry_points.txt", f"[ptyrodactyl]\n{dist} = {mod}\n")
        return site

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, site: Path | None = None, timeout: float = 600,
            signal_after: float | None = None, sig: int = signal.SIGINT, cwd: Path | None = None, isolate: bool = False) -> tuple[int, str, str]:
        cwd = cwd or self.dir
        if self.inprocess and signal_after is None and not isolate:
            return _run_inprocess(argv, cwd, env or {}, site)
        paths = ([str(site)] if site else []) + (src_paths(self.tree) if self.tree else [])
        # the XLA path: the cases judge files and messages, not the kernel (whose build is per machine)
        e = {**os.environ, "PTYRO_NATIVE": "0", **(env or {}), "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])}
        # default signal dispositions, as in a terminal (a shell's background job ignores SIGINT)
        code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); signal.signal(signal.SIGTERM, signal.SIG_DFL); "
                "from ptyro_workflows.cli import main; sys.exit(main())")  # as the ptyro script: argv from sys.argv
        p = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if signal_after is not None:
            # once the output's temporary file exists (the run is writing), wait, then signal
            t0 = time.time()
            while p.poll() is None and not list(Path(cwd).glob(".*.tmp")) and time.time() - t0 < 300:
                time.sleep(0.02)
            time.sleep(signal_after)
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            return -999, out, err + f"\n(killed after {timeout} s)"
        return p.returncode, out, err


def _run_inprocess(argv: list[str], cwd: Path, env: dict[str, str], site: Path | None = None) -> tuple[int, str, str]:
    """``main(argv)`` in this process; ``site``: a private site directory whose distributions the
    registry discovers for this run only."""
    from ptyro_core import reset_registry
    from ptyro_workflows.cli import main

    old_env = {k: os.environ.get(k) for k in env}
    old_cwd = os.getcwd()
    old_modules = set(sys.modules)
    out, err = io.StringIO(), io.StringIO()
    if site is not None:
        sys.path.insert(0, str(site))
        reset_registry()
    try:
        os.environ.update(env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except BaseException as e:  # noqa: BLE001 - a traceback is a result here
                import traceback

                rc = 1
                err.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception(e)))
    finally:
        os.chdir(old_cwd)
        if site is not None:
            sys.path.remove(str(site))
            for m in set(sys.modules) - old_modules:
                if str(getattr(sys.modules[m], "__file__", "") or "").startswith(str(site)):
                    del sys.modules[m]
            reset_registry()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- judging helpers


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else ""


def _one_line(err: str) -> bool:
    """A clean refusal: a single ``ptyro: error:`` line, no traceback, no crash."""
    lines = err.strip().splitlines()
    return bool(lines) and lines[-1].startswith("ptyro: error:") and "Traceback" not in err


def _debris(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*.tmp"))


def refused(rc: int, err: str, *words: str) -> tuple[bool, str]:
    ok = rc not in (0, -11, 139, -999) and _one_line(err) and all(w.lower() in err.lower() for w in words)
    return ok, f"rc={rc}: {err.strip().splitlines()[-1][:160] if err.strip() else '(no message)'}"


# --------------------------------------------------------------------------- cases

CASES: list[tuple[str, str, str, Callable[[Context], tuple[bool, str]]]] = []


def case(name: str, severity: str, what: str) -> Callable:
    def deco(fn: Callable[[Context], tuple[bool, str]]) -> Callable:
        CASES.append((name, severity, what, fn))
        return fn

    return deco


def _survives(ctx: Context, victim: Path, argv: list[str], named: str) -> tuple[bool, str]:
    """Run ``argv``: held when refused with one line naming ``named`` and ``victim`` unchanged."""
    before = _sha(victim)
    rc, _, err = ctx.run(argv)
    ok, note = refused(rc, err, named)
    same = _sha(victim) == before
    return ok and same, note + ("" if same else f" [{victim.name} REPLACED]")


@case("checkpoint_is_the_input", "S1", "reconstruct data.h5 --checkpoint data.h5: the raw dataset must survive")
def _(ctx: Context) -> tuple[bool, str]:
    data = ctx.copy("data.h5")
    return _survives(ctx, data, ["reconstruct", "data.h5", "--checkpoint", "data.h5", "-o", "rec.h5", *REC], "data.h5")


@case("existing_file_as_checkpoint", "S1", "an existing file named as a checkpoint, no --overwrite, no --resume")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    keep = ctx.write("precious.h5", b"results of last week\n")
    return _survives(ctx, keep, ["reconstruct", "data.h5", "--checkpoint", "precious.h5", "-o", "rec.h5", *REC], "precious.h5")


@case("existing_checkpoint_from_shared_config", "S1", "[reconstruction] checkpoint in a shared configuration names an existing file")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    keep = ctx.write("team.h5", b"another user's checkpoint\n")
    ctx.write("shared.toml", '[reconstruction]\ncheckpoint = "team.h5"\n')
    return _survives(ctx, keep, ["reconstruct", "data.h5", "--config", "shared.toml", "-o", "rec.h5", *REC], "team.h5")


@case("output_is_the_input_with_overwrite", "S1", "reconstruct data.h5 -o data.h5 --overwrite: the raw dataset must survive")
def _(ctx: Context) -> tuple[bool, str]:
    data = ctx.copy("data.h5")
    return _survives(ctx, data, ["reconstruct", "data.h5", "-o", "data.h5", "--overwrite", *REC], "data.h5")


@case("output_is_the_input_through_a_link", "C", "-o names the input through a hard link, with --overwrite: the input survives")
def _(ctx: Context) -> tuple[bool, str]:
    data = ctx.copy("data.h5")
    os.link(data, ctx.dir / "alias.h5")
    before = _sha(data)
    rc, _, err = ctx.run(["reconstruct", "data.h5", "-o", "alias.h5", "--overwrite", *REC])
    same = _sha(data) == before
    return same, f"rc={rc}, data.h5 {'intact' if same else 'REPLACED'}: {err.strip().splitlines()[-1][:120] if err.strip() else ''}"


def _resume(ctx: Context, data: str, extra: list[str], named: str) -> tuple[bool, str]:
    """Make a checkpoint of data.h5 (single slice), then resume it on ``data`` with ``extra``."""
    ctx.copy("data.h5")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "--checkpoint", "ck.h5", "-o", "first.h5", *REC])
    if rc != 0:
        return False, f"could not make the checkpoint: {err.strip()[-160:]}"
    rc, _, err = ctx.run(["reconstruct", data, *extra, "--resume", "ck.h5", "-o", "rec.h5", *REC])
    return refused(rc, err, named) if named else (rc == 0 and (ctx.dir / "rec.h5").exists(), f"rc={rc} {err.strip()[-120:]}")


@case("resume_other_dataset", "S2", "--resume a checkpoint of a 16-position dataset on a 64-position one")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data8.h5")
    return _resume(ctx, "data8.h5", [], "positions")


@case("resume_other_calibration", "S2", "--resume with another beam energy (calibration)")
def _(ctx: Context) -> tuple[bool, str]:
    return _resume(ctx, "data.h5", ["--energy", "300000"], "energy")


@case("resume_other_model", "S2", "--resume a single-slice checkpoint with --algorithm multislice")
def _(ctx: Context) -> tuple[bool, str]:
    return _resume(ctx, "data.h5", ["--algorithm", "multislice", "--num-slices", "2", "--slice-thickness", "2"], "algorithm")


@case("complex_patterns", "S2", "a complex-valued .npy dataset (the imaginary part would be dropped)")
def _(ctx: Context) -> tuple[bool, str]:
    a = (np.ones((2, 2, 16, 16)) * (1 + 1j)).astype(np.complex64)
    np.save(ctx.dir / "c.npy", a)
    rc, _, err = ctx.run(["reconstruct", "c.npy", "--energy", "200e3", "--scan-step", "0.5", "--sampling", "0.2", "-o", "rec.h5", *REC])
    return refused(rc, err, "complex")


_BAD_PLUGIN = '''
import jax.numpy as jnp
from ptyro_core import hookimpl, get

def nanprop(wave, dz, grid, energy, *, tilt=(0.0, 0.0)):
    return get("propagator", "fresnel")(wave, dz, grid, energy, tilt=tilt) * jnp.nan

def nanloss(predicted, measured, *, mask=None, weights=None):
    return jnp.mean(predicted) * jnp.nan

def raiser(atoms, grid, *, slice_thickness, projection="infinite", **options):
    return 1 / 0

@hookimpl
def ptyro_register_potentials(register):
    register("raiser", raiser, description="raises at call time")

@hookimpl
def ptyro_register_propagators(register):
    register("nanprop", nanprop, description="returns NaN")

@hookimpl
def ptyro_register_losses(register):
    register("nanloss", nanloss, description="returns NaN")
'''


@case("nan_from_a_plugin_in_simulate", "S2", "a propagator plugin returning NaN: a 100 % NaN dataset with exit 0?")
def _(ctx: Context) -> tuple[bool, str]:
    site = ctx.plugin("ptyro-bad", _BAD_PLUGIN)
    ctx.write("sim.toml", SIM_TOML.format(n=2) + '[simulation]\npropagator = "nanprop"\n')
    rc, _, err = ctx.run(["simulate", "sim.toml", "-o", "out.h5", "-q"], site=site, env={"PTYRO_NATIVE": "0"})
    ok, note = refused(rc, err, "nanprop", "ptyro-bad")
    return ok and not (ctx.dir / "out.h5").exists(), note


@case("nan_from_a_plugin_in_reconstruct", "S2", "a loss plugin returning NaN: a NaN reconstruction with exit 0?")
def _(ctx: Context) -> tuple[bool, str]:
    site = ctx.plugin("ptyro-bad", _BAD_PLUGIN)
    ctx.copy("data.h5")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "--loss", "nanloss", "-o", "rec.h5", *REC], site=site)
    ok, note = refused(rc, err, "nanloss", "ptyro-bad")
    return ok and not (ctx.dir / "rec.h5").exists(), note


def _negative_file(ctx: Context) -> None:
    import h5py

    src = ctx.copy("data.h5", "neg.h5")
    with h5py.File(src, "r+") as f:
        d = f["ptyrodactyl/datacube/data"]
        a = d[()]
        a[1, 1, 0, 0] = -0.5
        d[...] = a


@case("negative_out_of_core", "S2", "negative intensities: refused in memory, accepted out of core?")
def _(ctx: Context) -> tuple[bool, str]:
    _negative_file(ctx)
    rc_mem, _, err_mem = ctx.run(["reconstruct", "neg.h5", "-o", "a.h5", "--no-out-of-core", *REC])
    rc_ooc, _, err_ooc = ctx.run(["reconstruct", "neg.h5", "-o", "b.h5", "--out-of-core", *REC])
    ok1, _ = refused(rc_mem, err_mem, "negative")
    ok2, note = refused(rc_ooc, err_ooc, "negative")
    return ok1 and ok2, f"in memory rc={rc_mem}, out of core {note}"


@case("huge_grid", "S3", "gpts = [100000, 100000] must be refused before allocating")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.write("sim.toml", SIM_TOML.format(n=2).replace("[32, 32]", "[100000, 100000]"))
    rc, _, err = ctx.run(["simulate", "sim.toml", "-o", "out.h5", "-q"], timeout=120)
    return refused(rc, err, "memory")


@case("int64_max_grid", "S3", "gpts = [int64 max, 2]: the message names gpts")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.write("sim.toml", SIM_TOML.format(n=2).replace("[32, 32]", "[9223372036854775807, 2]"))
    rc, _, err = ctx.run(["simulate", "sim.toml", "-o", "out.h5", "-q"], timeout=120)
    return refused(rc, err, "gpts")


@case("huge_structure", "S3", "a 10^6 Å structure file (default 0.1 Å sampling) must be refused before allocating")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.write("big.xyz", '2\nLattice="1000000 0 0 0 1000000 0 0 0 4" Properties=species:S:1:pos:R:3\nSr 0 0 0\nTi 1.9 1.9 2\n')
    ctx.write("sim.toml", '[specimen]\nstructure = "big.xyz"\n[probe]\nsemiangle_cutoff = 20.0\n[scan]\ngpts = [2, 2]\nend = [4.0, 4.0]\n')
    rc, _, err = ctx.run(["simulate", "sim.toml", "-o", "out.h5", "-q"], timeout=120)
    return refused(rc, err, "memory")


@case("huge_num_modes", "S3", "num_modes = 100000 must be refused before allocating")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "--num-modes", "100000", "-o", "rec.h5", *REC], timeout=120)
    return refused(rc, err, "memory")


@case("implausible_detector_pixel", "S3", "a detector pixel of 100 Å⁻¹ (a 37,000² object): the calibration named")
def _(ctx: Context) -> tuple[bool, str]:
    np.save(ctx.dir / "d.npy", np.ones((8, 8, 64, 64), np.float32))
    rc, _, err = ctx.run(["reconstruct", "d.npy", "--energy", "200e3", "--scan-step", "40", "--reciprocal-sampling", "100", "-o", "rec.h5", *REC], timeout=120)
    return refused(rc, err, "100")


def _tmpfs(d: Path, size: str) -> bool:
    d.mkdir(exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True).returncode == 0


def _umount(d: Path) -> None:
    subprocess.run(["umount", str(d)], capture_output=True)


def _small_disk(ctx: Context, extra: list[str], named: str) -> tuple[bool, str]:
    """ptyro simulate (256 patterns of 64 x 64, 4 MiB) onto a 1 MiB file system: held when
    refused with one line naming ``named`` and nothing left there."""
    full = ctx.dir / "full"
    if not _tmpfs(full, "1m"):
        return True, "skipped: cannot mount a small tmpfs here (not root)"
    try:
        ctx.write("sim.toml", SIM_TOML.format(n=16).replace("[32, 32]", "[64, 64]"))
        rc, _, err = ctx.run(["simulate", "sim.toml", "-o", "full/out.h5", "-q", *extra], env={"PTYRO_NATIVE": "0"}, isolate=True)
        left = os.listdir(full)
    finally:
        _umount(full)
    ok, note = refused(rc, err, named)
    return ok and not left, note + (f" [left {left}]" if left else "")


@case("disk_full_during_simulate", "S3", "the disk fills up during ptyro simulate (--force past the pre-flight where there is one)")
def _(ctx: Context) -> tuple[bool, str]:
    _, out, _ = ctx.run(["simulate", "--help"])
    return _small_disk(ctx, ["--force"] if "--force" in out else [], "full")


@case("output_cannot_fit_on_disk", "S3", "the output is larger than the free space: refused up front, naming --force")
def _(ctx: Context) -> tuple[bool, str]:
    return _small_disk(ctx, [], "--force")


def _interrupt(ctx: Context, sig: int, delays: list[float]) -> tuple[list[int], list[str], str]:
    ctx.write("sim.toml", SIM_TOML.format(n=32).replace("[32, 32]", "[64, 64]"))
    rcs, left, last = [], [], ""
    for i, t in enumerate(delays):
        rc, _, err = ctx.run(["simulate", "sim.toml", "-o", f"out{i}.h5", "--no-progress"], signal_after=t, sig=sig, env={"PTYRO_NATIVE": "0"})
        # a signal that arrives once the run has finished (its output complete) ends the exiting process: not a fault
        rcs.append(0 if rc == -sig and (ctx.dir / f"out{i}.h5").exists() else rc)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        left += [p for p in _debris(ctx.dir)]
    return rcs, left, last


@case("sigterm_during_simulate", "S4", "SIGTERM (SLURM time limit, docker stop) during ptyro simulate")
def _(ctx: Context) -> tuple[bool, str]:
    rcs, left, last = _interrupt(ctx, signal.SIGTERM, [0.1])
    return rcs == [143] and not left, f"rc={rcs}, left={left}: {last}"


@case("ctrl_c_repeated", "S3", "Ctrl-C at 8 moments (0 to 0.35 s after writing starts) of ptyro simulate: never a segfault, nothing left")
def _(ctx: Context) -> tuple[bool, str]:
    n = int(os.environ.get("BATTERY_INTERRUPTIONS", "8"))
    rcs, left, last = _interrupt(ctx, signal.SIGINT, [0.05 * i for i in range(n)])
    ok = all(rc in (0, 130) for rc in rcs) and not left
    return ok, f"rc={rcs}, left={left}"


@case("stale_temporary_removed", "S4", "a hidden temporary left by a SIGKILLed run is removed by the next run")
def _(ctx: Context) -> tuple[bool, str]:
    import socket
    import re

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"
    stale = ctx.write(f".rec.h5.{host}.{dead.pid}-0123abcd.tmp", b"partial")
    ctx.copy("data.h5")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "-o", "rec.h5", *REC])
    return rc == 0 and not stale.exists(), f"rc={rc}, stale file {'removed' if not stale.exists() else 'LEFT'}"


@case("checkpoint_temporary_shared", "S4", "two runs share a checkpoint path: the other run's <path>.tmp is not touched")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    other = ctx.write("ck.h5.tmp", b"the other run is writing this")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "--checkpoint", "ck.h5", "-o", "rec.h5", *REC])
    same = other.exists() and other.read_bytes() == b"the other run is writing this"
    return rc == 0 and same, f"rc={rc}, other run's temporary {'intact' if same else 'CLOBBERED'}"


@case("checkpoint_equals_output", "S4", "--checkpoint rec.h5 -o rec.h5: refused before the run, nothing written")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "--checkpoint", "rec.h5", "-o", "rec.h5", *REC])
    ok, note = refused(rc, err, "rec.h5")
    return ok and not (ctx.dir / "rec.h5").exists(), note + (" [rec.h5 written]" if (ctx.dir / "rec.h5").exists() else "")


@case("plugin_sys_exit_at_import", "S3", "a plugin calling sys.exit at import must not silence ptyro")
def _(ctx: Context) -> tuple[bool, str]:
    site = ctx.plugin("ptyro-exit", "import sys\nsys.exit(3)\n")
    rc, out, err = ctx.run(["plugins"], site=site)
    return rc == 0 and "kirkland" in out and "ptyro-exit" in out + err, f"rc={rc}, listing {'shown' if 'kirkland' in out else 'MISSING'}"


@case("component_raises_at_call_time", "S3", "a potential plugin that raises when called: one line naming it and its distribution")
def _(ctx: Context) -> tuple[bool, str]:
    site = ctx.plugin("ptyro-bad", _BAD_PLUGIN)
    ctx.write("sim.toml", SIM_TOML.format(n=2).replace("gpts = [32, 32]", 'gpts = [32, 32]\nparametrization = "raiser"'))
    rc, _, err = ctx.run(["simulate", "sim.toml", "-o", "out.h5", "-q"], site=site)
    return refused(rc, err, "raiser", "ptyro-bad")


@case("memory_budget_not_a_number", "S5", "PTYRO_MEMORY_BUDGET=lots: the message names the variable")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "-o", "rec.h5", *REC], env={"PTYRO_MEMORY_BUDGET": "lots"})
    return refused(rc, err, "PTYRO_MEMORY_BUDGET")


@case("garbage_resume_file", "S5", "--resume a file that is not HDF5: the message names the file")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    ctx.write("junk.h5", b"\x00garbage" * 100)
    rc, _, err = ctx.run(["reconstruct", "data.h5", "--resume", "junk.h5", "-o", "rec.h5", *REC])
    return refused(rc, err, "junk.h5")


@case("nan_out_of_core", "S5", "NaN in a pattern read out of core: the message says NaN, not 'no intensity'")
def _(ctx: Context) -> tuple[bool, str]:
    import h5py

    src = ctx.copy("data.h5", "nan.h5")
    with h5py.File(src, "r+") as f:
        d = f["ptyrodactyl/datacube/data"]
        a = d[()]
        a[3, 3, 5, 5] = np.nan
        d[...] = a
    rc, _, err = ctx.run(["reconstruct", "nan.h5", "-o", "rec.h5", "--out-of-core", *REC])
    ok, note = refused(rc, err, "nan.h5")
    return ok and "NaN" in err and "no intensity" not in err, note


@case("malformed_extxyz_properties", "S5", "a malformed extended-XYZ Properties=: the message names the file")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.write("bad.xyz", '1\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R\nSr 0 0 0\n')
    ctx.write("sim.toml", '[specimen]\nstructure = "bad.xyz"\n[potential]\ngpts = [32, 32]\n[probe]\nsemiangle_cutoff = 20.0\n[scan]\ngpts = [2, 2]\n')
    rc, _, err = ctx.run(["simulate", "sim.toml", "-o", "out.h5", "-q"])
    return refused(rc, err, "bad.xyz")


@case("binary_xyz", "S5", "a binary file named .xyz: the message names the file")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.write("bin.xyz", bytes(range(256)) * 8)
    ctx.write("sim.toml", '[specimen]\nstructure = "bin.xyz"\n[potential]\ngpts = [32, 32]\n[probe]\nsemiangle_cutoff = 20.0\n[scan]\ngpts = [2, 2]\n')
    rc, _, err = ctx.run(["simulate", "sim.toml", "-o", "out.h5", "-q"])
    return refused(rc, err, "bin.xyz")


@case("dry_run", "N", "simulate --dry-run prints sizes, memory, disk and time, and writes nothing")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.write("sim.toml", SIM_TOML.format(n=4))
    rc, out, err = ctx.run(["simulate", "sim.toml", "-o", "out.h5", "--dry-run"])
    ok = rc == 0 and all(w in out for w in ("memory", "disk", "time")) and not (ctx.dir / "out.h5").exists()
    return ok, f"rc={rc}: {' | '.join(out.strip().splitlines()[-4:])[:160] if out.strip() else err.strip()[-160:]}"


@case("existing_output_refused", "C", "-o names an existing file, no --overwrite")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    keep = ctx.write("rec.h5", b"old")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "-o", "rec.h5", *REC])
    ok, note = refused(rc, err, "--overwrite")
    return ok and keep.read_bytes() == b"old", note


@case("resume_same_run", "C", "--resume the run's own checkpoint continues it (exit 0)")
def _(ctx: Context) -> tuple[bool, str]:
    return _resume(ctx, "data.h5", [], "")


@case("unknown_component", "C", "--loss typo: the known names and the closest one")
def _(ctx: Context) -> tuple[bool, str]:
    ctx.copy("data.h5")
    rc, _, err = ctx.run(["reconstruct", "data.h5", "--loss", "poison", "-o", "rec.h5", *REC])
    return refused(rc, err, "poisson")


# --------------------------------------------------------------------------- running


def make_fixtures(d: Path, tree: Path | None = None, inprocess: bool = False) -> Path:
    """data.h5 (4 x 4 positions, 32 x 32 patterns) and data8.h5 (8 x 8), simulated once."""
    d.mkdir(parents=True, exist_ok=True)
    ctx = Context(d, d, tree, inprocess)
    for n, name in ((4, "data.h5"), (8, "data8.h5")):
        if not (d / name).exists():
            ctx.write(f"sim{n}.toml", SIM_TOML.format(n=n))
            rc, _, err = ctx.run(["simulate", f"sim{n}.toml", "-o", name, "-q"])
            if rc != 0:
                raise RuntimeError(f"fixture {name}: {err}")
    return d


def run_case(fn: Callable[[Context], tuple[bool, str]], fixtures: Path, tree: Path | None, inprocess: bool) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="battery-") as t:
        try:
            return fn(Context(Path(t), fixtures, tree, inprocess))
        except Exception as e:  # noqa: BLE001 - a case that cannot even be set up failed
            return False, f"case error: {type(e).__name__}: {e}"


def table(results: list[tuple[str, str, bool, str]]) -> str:
    lines = [f"{'case':40s} {'sev':4s} {'result':7s} note", "-" * 120]
    for name, sev, held, note in results:
        lines.append(f"{name:40s} {sev:4s} {'held' if held else 'FAILED':7s} {note}")
    skipped = [r[0] for r in results if r[3].startswith("skipped")]
    results = [r for r in results if r[0] not in skipped]
    tried = len(results)
    held = sum(1 for r in results if r[2])
    lines.append("-" * 120)
    lines.append(f"tried {tried}, held {held}, failed {tried - held}" + (f" (skipped, not counted: {', '.join(skipped)})" if skipped else ""))
    for sev in ("S1", "S2", "S3", "S4", "S5", "N", "C"):
        rs = [r for r in results if r[1] == sev]
        if rs:
            lines.append(f"  {sev}: {len(rs)} tried, {sum(r[2] for r in rs)} held, failed: {', '.join(r[0] for r in rs if not r[2]) or '-'}")
    return "\n".join(lines)
