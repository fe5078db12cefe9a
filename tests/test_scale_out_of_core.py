"""Datasets larger than memory: a reconstruction that reads its patterns batch by batch from the
HDF5 file gives the same result as one from memory, and the CLI switches to it by itself when
the data would not fit in the memory budget."""

import numpy as np
import pytest

import ptyro_workflows as pw
from ptyro_workflows.cli import main

SIM = {
    "specimen": {"structure": "SrTiO3", "repeat": [2, 2, 1]},
    "potential": {"gpts": [32, 32], "slice_thickness": 1.9525},
    "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "C10": -40.0},
    "scan": {"start": [1.0, 1.0], "end": [6.0, 6.0], "gpts": [5, 5]},
    "detectors": {"pixelated": True},
}
RECON = {
    "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "C10": -40.0},
    "reconstruction": {"iterations": 3, "batch_size": 8},
}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ooc") / "sim.h5"
    pw.simulate(SIM, out=path, progress=False, keep=False)
    return path


def test_lazy_reconstruction_matches_in_memory(data_file) -> None:
    in_memory = pw.load_dataset(data_file, lazy=False)
    on_disk = pw.load_dataset(data_file, lazy=True)
    assert not in_memory.is_lazy and on_disk.is_lazy
    a = pw.reconstruct(in_memory, RECON, progress=False)
    b = pw.reconstruct(on_disk, RECON, progress=False)
    np.testing.assert_array_equal(np.asarray(a.loss), np.asarray(b.loss))
    np.testing.assert_array_equal(np.asarray(a.object), np.asarray(b.object))


def test_cli_streams_when_the_data_exceed_the_budget(data_file, tmp_path, monkeypatch) -> None:
    out_mem, out_disk = tmp_path / "mem.h5", tmp_path / "disk.h5"
    cfg = tmp_path / "r.toml"
    cfg.write_text('[probe]\nenergy = 200e3\nsemiangle_cutoff = 20.0\nC10 = -40.0\n[reconstruction]\niterations = 2\nbatch_size = 8\n')
    assert main(["reconstruct", str(data_file), "--config", str(cfg), "-o", str(out_mem), "-q", "--no-out-of-core"]) == 0
    assert main(["reconstruct", str(data_file), "--config", str(cfg), "-o", str(out_disk), "-q", "--out-of-core"]) == 0
    r_mem, r_disk = pw.load_reconstruction(out_mem), pw.load_reconstruction(out_disk)
    np.testing.assert_array_equal(np.asarray(r_mem.object), np.asarray(r_disk.object))
    # by default the choice follows the budget: 25 patterns of 32x32 float32 = 100 KiB are
    # "larger than memory" under a 150 KiB budget, and fit under the machine's
    assert not pw.load_dataset(data_file).is_lazy
    monkeypatch.setenv("PTYRO_MEMORY_BUDGET", str(150 * 1024))
    assert pw.load_dataset(data_file).is_lazy
