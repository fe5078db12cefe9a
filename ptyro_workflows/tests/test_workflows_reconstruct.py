"""Reconstruction through files: a dataset with a known object (made by ptyro_invert's forward
model, independent of the simulator), written as EMD, reconstructed by ``ptyro reconstruct``,
read back and compared with the truth; checkpoint/resume; scan step and rotation."""

import numpy as np
import pytest

import ptyro_core as pc
from ptyro_workflows import load_dataset, load_reconstruction, phase_correlation, read_file_provenance, save_dataset
from ptyro_workflows.cli import main
from ptyro_workflows.reconstruct import apply_scan_config

N = 32
D = 0.25
DEFOCUS = -20.0


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A weak-phase object (two cosines, 0.3 rad) scanned 8 x 8 by a 20 mrad probe."""
    import jax.numpy as jnp
    import ptyro_invert

    grid = pc.Grid((N, N), (D, D))
    pos = pc.ScanPositions.raster((0, 0), (4, 4), (8, 8))
    blank = pc.Dataset4D(np.ones((8, 8, N, N), np.float32), pos.positions, grid=grid, energy=200e3)
    s0 = ptyro_invert.initial_state(blank, semiangle_cutoff=20.0, aberrations={"C10": DEFOCUS})
    ox, oy = s0.object.shape[-2:]
    off = np.asarray(s0.positions[0] - pos.positions[0], np.float64)  # specimen -> object frame
    # truth defined in the specimen frame, periodic over 4 Å
    xs = (np.arange(ox) * D - off[0])[:, None]
    ys = (np.arange(oy) * D - off[1])[None, :]
    phase = 0.3 * np.cos(2 * np.pi * xs / 2.0) * np.cos(2 * np.pi * ys / 1.0)
    truth_state = pc.replace(s0, object=jnp.exp(1j * phase)[None].astype(jnp.complex64))
    pats = np.asarray(ptyro_invert.predict_patterns(truth_state)).reshape(8, 8, N, N)
    ds = pc.Dataset4D(pats, pos.positions, grid=grid, energy=200e3)
    path = tmp_path_factory.mktemp("known") / "known.h5"
    save_dataset(path, ds)
    t = np.arange(int(4 / D))
    truth_specimen = 0.3 * np.cos(2 * np.pi * t[:, None] * D / 2.0) * np.cos(2 * np.pi * t[None, :] * D / 1.0)
    return path, ds, truth_specimen


def test_reconstruct_cli_round_trip_recovers_the_phase(known, tmp_path, capsys):
    path, ds, truth = known
    cfg = tmp_path / "rec.toml"
    cfg.write_text(f"[probe]\nsemiangle_cutoff = 20.0\nC10 = {DEFOCUS}\n\n[reconstruction]\niterations = 8\nbatch_size = 16\n")
    out = tmp_path / "rec.h5"
    code = main(["reconstruct", str(path), "--config", str(cfg), "-o", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    state = load_reconstruction(out)
    assert state.object.shape[0] == 1 and state.probe.shape[-2:] == (N, N)
    loss = np.asarray(state.loss)
    assert loss.shape == (8,) and loss[-1] < 0.2 * loss[0]
    r = phase_correlation(state, ds.positions, truth, (D, D))
    assert r > 0.9, r
    prov = read_file_provenance(out)
    assert prov["kind"] == "reconstruction" and "iterations = 8" in prov["config"]
    assert {c["name"] for c in prov["components"]} >= {"single_slice", "adam"}  # loss "auto": chosen from the data
    assert prov["components"][0]["distribution"] == "ptyro-invert"
    from ptyro_core.pipeline import device_mesh
    from ptyro_invert.recon import step_streams

    work = state.object.shape[0] * state.probe.shape[0] * N * N  # one position's transform work
    streams = step_streams(None, device_mesh(), 16, work)  # PTYRO_STREAMS overrides
    # the tests' session has two CPU devices: the steps' far fields are XLA's
    assert prov["execution"] == {"data_dtype": "float32", "data": "memory", "memory_budget": prov["execution"]["memory_budget"], "streams": streams,
                                 "backend": "xla"}  # fmt: skip
    assert prov["execution"]["memory_budget"] > 0


def test_resume_from_a_checkpoint(known, tmp_path, capsys):
    """A run stopped after 2 of 4 passes and resumed with --resume ends where an uninterrupted
    4-pass run ends."""
    from ptyro_workflows import reconstruct

    path, ds, _ = known
    ck = tmp_path / "ck.h5"
    cfg = {"probe": {"semiangle_cutoff": 20.0, "C10": DEFOCUS}, "reconstruction": {"iterations": 4, "batch_size": 32, "checkpoint": str(ck)}}
    stop = {**cfg, "reconstruction": {**cfg["reconstruction"], "options": {"callback": lambda s: int(s.iteration) < 2}}}
    interrupted = reconstruct(ds, stop, progress=False)
    assert int(interrupted.iteration) == 2 and ck.exists()
    args = ["reconstruct", str(path), "--semiangle-cutoff", "20", "--C10", str(DEFOCUS), "--iterations", "4", "--batch-size", "32", "--no-progress"]
    assert main([*args, "--resume", str(ck), "-o", str(tmp_path / "resumed.h5")]) == 0
    assert main([*args, "-o", str(tmp_path / "straight.h5")]) == 0
    a, b = load_reconstruction(tmp_path / "straight.h5"), load_reconstruction(tmp_path / "resumed.h5")
    assert int(b.iteration) == 4 and np.asarray(b.loss).shape == (4,)
    np.testing.assert_allclose(np.asarray(b.object), np.asarray(a.object), atol=1e-5)
    assert main([*args, "--resume", str(tmp_path / "none.h5"), "-o", str(tmp_path / "c.h5")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "c.h5").exists()


def test_scan_step_and_rotation(known):
    _, ds, _ = known
    same = apply_scan_config(ds, {"rotation": 0.0})
    assert same is ds
    rot = apply_scan_config(ds, {"rotation": 90.0})
    p, q = np.asarray(ds.positions, np.float64), np.asarray(rot.positions, np.float64)
    c = p.mean(0)
    # +90°: (x, y) -> (-y, x) about the centre
    np.testing.assert_allclose(q - c, np.stack([-(p - c)[:, 1], (p - c)[:, 0]], -1), atol=1e-5)
    st = apply_scan_config(ds, {"step": [0.25, 0.5]})
    np.testing.assert_allclose(np.asarray(st.positions)[[1, 8]], [[0.0, 0.5], [0.25, 0.0]], atol=1e-6)


def test_reads_back_what_it_reconstructs_from(known):
    path, ds, _ = known
    back = load_dataset(path)
    np.testing.assert_allclose(np.asarray(back.array), np.asarray(ds.array), rtol=1e-6)
