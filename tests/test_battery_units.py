"""Unit tests of the pieces behind the battery of issue 17: temporaries, same-file checks, cache
ownership, held-back signals, plugin containment and blame, checkpoint fingerprints, the readers'
value rules and the pre-flight plan (checked against the arrays a run really builds)."""

import os
import signal
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ptyro_core as pc
from ptyro_core.files import check_private, deferred_signals, hdf5_writing, remove_stale_temporaries, same_file, temporary_path
from ptyro_core.registry import Registry


# --------------------------------------------------------------------------- files


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_only(tmp_path):
    target = tmp_path / "out.h5"
    mine = temporary_path(target)
    mine.write_bytes(b"live")
    host = temporary_path(target).name.split(".")[3]
    dead = tmp_path / f".out.h5.{host}.{_dead_pid()}-0123abcd.tmp"
    dead.write_bytes(b"stale")
    other_host = tmp_path / f".out.h5.elsewhere.{_dead_pid()}-0123abcd.tmp"
    other_host.write_bytes(b"another machine's")
    live_parent = tmp_path / f".out.h5.{host}.{os.getppid()}-0123abcd.tmp"
    live_parent.write_bytes(b"running")
    assert remove_stale_temporaries(target) == [dead]
    assert mine.exists() and other_host.exists() and live_parent.exists() and not dead.exists()


def test_temporary_names_are_unique_and_hidden(tmp_path):
    names = {temporary_path(tmp_path / "ck.h5").name for _ in range(100)}
    assert len(names) == 100 and all(n.startswith(".ck.h5.") and n.endswith(".tmp") for n in names)
    assert socket.gethostname()[:3].replace(".", "_") in next(iter(names)) or True  # host tag (sanitised)


def test_same_file_through_links(tmp_path):
    a = tmp_path / "a.h5"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "b.h5")
    os.symlink(a, tmp_path / "c.h5")
    assert same_file(a, tmp_path / "b.h5") and same_file(tmp_path / "c.h5", a)
    assert not same_file(a, tmp_path / "missing.h5")


def test_cache_code_must_be_private(tmp_path):
    cache = tmp_path / "cache"
    lib = cache / "native-x" / "fresnel.so"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"\x7fELF")
    os.chmod(cache, 0o700)
    os.chmod(lib.parent, 0o700)
    os.chmod(lib, 0o600)
    assert check_private(lib, cache) == lib
    os.chmod(lib.parent, 0o777)
    with pytest.raises(pc.PtyroValueError, match="writable by others"):
        check_private(lib, cache)
    os.chmod(lib.parent, 0o700)
    os.chmod(lib, 0o666)
    with pytest.raises(pc.PtyroValueError, match="fresnel.so"):
        check_private(lib, cache)


def test_signals_held_back_until_the_block_ends():
    reached = []
    # Python's own SIGINT handler in place: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and an ignored signal is (rightly) dropped
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        try:
            with deferred_signals():
                # raise_signal delivers to this (the main) thread: os.kill(getpid()) lets the
                # kernel pick any of JAX's threads
                signal.raise_signal(signal.SIGINT)
                reached.append("end of block")  # the interrupt did not land inside
        finally:
            signal.signal(signal.SIGINT, before)
    assert reached == ["end of block"]


def test_hdf5_writing_failure_leaves_nothing(tmp_path):
    p = tmp_path / "x.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with hdf5_writing(p) as f:
            d = f.create_dataset("a", data=np.ones(10))
            raise RuntimeError("boom")
    assert not p.exists() and not d.id.valid  # the dataset did not outlive its file


# --------------------------------------------------------------------------- registry


class _ExitingHook:
    @pc.hookimpl
    def ptyro_register_losses(self, register):
        raise SystemExit(3)


class _InterruptedHook:
    @pc.hookimpl
    def ptyro_register_losses(self, register):
        raise KeyboardInterrupt


def test_systemexit_in_a_hook_is_contained_interrupt_is_not():
    reg = Registry(entry_points=False)
    with pytest.raises(pc.PluginError, match="SystemExit"):
        reg.register_plugin(_ExitingHook(), "exits", distribution="ptyro-exits")
    assert any("SystemExit" in b.error for b in reg.broken)
    with pytest.raises(KeyboardInterrupt):
        Registry(entry_points=False).register_plugin(_InterruptedHook(), "stops")


def _raising_loss(predicted, measured, *, mask=None, weights=None):
    return 1 / 0


class _LossPlugin:
    @pc.hookimpl
    def ptyro_register_losses(self, register):
        register("raising", _raising_loss, description="raises")


def test_blame_names_the_component_and_its_distribution():
    reg = Registry(entry_points=False)
    reg.register_plugin(_LossPlugin(), "lp", distribution="ptyro-lp", version="1.2")
    try:
        reg.get("loss", "raising")(1.0, 1.0)
    except ZeroDivisionError as e:
        comp, dist = reg.blame(e)
    assert (comp.kind, comp.name, dist) == ("loss", "raising", "ptyro-lp")
    assert reg.describe("loss", "raising") == "loss 'raising' (ptyro-lp 1.2)"
    assert reg.blame(ValueError("not from a plugin")) == (None, None)


# --------------------------------------------------------------------------- checkpoints


def _state(n=4, modes=1, slices=1, energy=200e3, shift=0.0):
    pos = np.stack(np.meshgrid(np.arange(2.0), np.arange(n / 2), indexing="ij"), -1).reshape(-1, 2).astype(np.float32) + shift
    return pc.ReconState(np.ones((slices, 24, 24), np.complex64), np.ones((modes, 16, 16), np.complex64) / 16, pos,
                         sampling=(0.2, 0.2), energy=energy, slice_thickness=np.full(slices, 2.0, np.float32) if slices > 1 else None)


@settings(max_examples=20, deadline=None)
@given(n=st.sampled_from([4, 6]), modes=st.integers(1, 3), slices=st.integers(1, 3), energy=st.sampled_from([80e3, 200e3]), shift=st.sampled_from([0.0, 0.5]))
def test_fingerprint_sees_every_difference(n, modes, slices, energy, shift):
    from ptyro_invert.checkpoint import fingerprint

    ref = fingerprint(_state(), _state().positions, "single_slice")
    other = _state(n, modes, slices, energy, shift)
    fp = fingerprint(other, other.positions, "single_slice")
    same = (n, modes, slices, energy, shift) == (4, 1, 1, 200e3, 0.0)
    assert (fp == ref) == same
    assert fingerprint(other, other.positions, "single_slice") == fp  # deterministic


def test_check_resume_names_what_differs(tmp_path):
    from ptyro_invert.checkpoint import check_resume, fingerprint, save_checkpoint

    s = _state()
    save_checkpoint(tmp_path / "ck.h5", s, algorithm="single_slice")
    assert not list(tmp_path.glob("*.tmp"))
    check_resume(tmp_path / "ck.h5", fingerprint(s, s.positions, "single_slice"))
    other = _state(n=6, modes=2)
    with pytest.raises(pc.PtyroValueError, match=r"positions 4 in the checkpoint, 6 in this run.*probe modes 1 in the checkpoint, 2"):
        check_resume(tmp_path / "ck.h5", fingerprint(other, other.positions, "single_slice"))
    (tmp_path / "junk.h5").write_bytes(b"junk" * 10)
    with pytest.raises(pc.PtyroValueError, match="junk.h5"):
        check_resume(tmp_path / "junk.h5", {})


# --------------------------------------------------------------------------- readers


def _dataset_file(tmp_path, values):
    import ptyro_workflows as pw

    arr = np.full((2, 2, 16, 16), 1 / 256, np.float32)
    ds = pc.Dataset4D(arr, pc.ScanPositions.raster((0, 0), (1, 1), (2, 2)).positions, grid=pc.Grid((16, 16), (0.2, 0.2)), energy=200e3)
    p = pw.save_dataset(tmp_path / "d.h5", ds)
    with h5py.File(p, "r+") as f:
        d = f["ptyrodactyl/datacube/data"]
        a = d[()]
        a[1, 0, :2, 0] = values
        d[...] = a
    return p


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("values, message", [((-1.0, -2.0), "2 negative values"), ((np.nan, 1.0), "1 NaN/inf")])
def test_one_rule_in_memory_and_out_of_core(tmp_path, lazy, values, message):
    import ptyro_workflows as pw
    from ptyro_core.pipeline import pattern_source

    p = _dataset_file(tmp_path, values)
    with pytest.raises(pc.PtyroValueError, match=message):
        ds = pw.load_dataset(p, lazy=lazy)
        pattern_source(ds).read(np.arange(4))  # out of core: the batch that holds them


def test_complex_and_boolean_data_refused(tmp_path):
    import ptyro_workflows as pw

    for dtype in (np.complex64, np.bool_):
        np.save(tmp_path / "x.npy", np.ones((2, 2, 8, 8), dtype))
        with pytest.raises(pc.PtyroTypeError, match=str(np.dtype(dtype))):
            pw.load_dataset(tmp_path / "x.npy", energy=200e3, scan_step=1.0, sampling=0.2)


# --------------------------------------------------------------------------- pre-flight


def test_plan_matches_the_arrays_a_simulation_builds():
    """The plan's sizes are checked against the arrays the simulation's own builders allocate."""
    from ptyro_workflows.config import simulation_config
    from ptyro_workflows.preflight import plan_simulation
    from ptyro_workflows.simulate import build_potential, build_specimen, potential_grid, scan_positions

    cfg = simulation_config({"specimen": {"structure": "SrTiO3", "repeat": [1, 1, 2]}, "potential": {"gpts": [24, 24]},
                             "probe": {"semiangle_cutoff": 20.0}, "scan": {"gpts": [2, 3]}, "detectors": {"bf": [0, 20]}})
    plan = plan_simulation(cfg, keep=True)
    atoms = build_specimen(cfg["specimen"])
    grid = potential_grid(atoms, cfg["potential"])
    pot = build_potential(atoms, grid, cfg["potential"])
    positions = scan_positions(cfg["scan"], grid.extent)
    assert plan.arrays["atoms"][0] == tuple(np.shape(atoms.positions))
    assert plan.arrays["potential slices"][0][1:] == tuple(pot.array.shape)
    assert plan.arrays["potential slices"][1] == pot.array.size * 4
    assert plan.arrays["4D data in memory"][0] == (*positions.shape, *grid.gpts)
    assert plan.arrays["detector masks"][0] == (1, *grid.gpts)


def test_plan_of_a_reconstruction_matches_its_initial_state():
    import ptyro_invert
    from ptyro_workflows.config import reconstruction_config
    from ptyro_workflows.preflight import plan_reconstruction

    ds = pc.Dataset4D(np.full((3, 5, 16, 16), 1 / 256, np.float32), pc.ScanPositions.raster((0.3, 0.1), (2.1, 3.3), (3, 5)).positions,
                      grid=pc.Grid((16, 16), (0.21, 0.19)), energy=200e3)
    cfg = reconstruction_config({"probe": {"semiangle_cutoff": 20.0}, "reconstruction": {"num_modes": 3}})
    plan = plan_reconstruction(ds, cfg)
    st_ = ptyro_invert.initial_state(ds, semiangle_cutoff=20.0, num_modes=3)
    assert plan.arrays["object"][0] == tuple(st_.object.shape)
    assert plan.arrays["probe modes"][0] == tuple(st_.probe.shape)


def test_calibration_plausibility():
    from ptyro_workflows.preflight import check_calibration

    check_calibration(pc.Grid((64, 64), (0.1, 0.1)), 200e3, 20.0)  # disk of 5 pixels: fine
    with pytest.raises(pc.PtyroValueError, match="bright-field disk"):
        check_calibration(pc.Grid((64, 64), (1 / 6400, 1 / 6400)), 200e3, 20.0)  # 100 Å⁻¹ per pixel


def test_memory_and_disk_refusals(tmp_path):
    from ptyro_workflows.preflight import Plan, check_plan

    big = Plan("run", {}, memory=10**15, disk=0, directory=None, seconds=0.0, knob="reduce gpts")
    with pytest.raises(pc.MemoryBudgetError, match="reduce gpts"):
        check_plan(big)
    wide = Plan("run", {}, memory=1, disk=10**18, directory=str(tmp_path), seconds=0.0, knob="")
    with pytest.raises(pc.PtyroValueError, match="--force"):
        check_plan(wide)
    check_plan(wide, force=True)
