"""The ``ptyro`` command: help, info, plugins, and bad input (one line, exit status 2, nothing
written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ptyro_workflows.cli import build_parser, main
from ptyro_workflows.config import SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(capsys, tmp_path, argv, needle):
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("ptyro: error: "), err
    assert needle in lines[-1], lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a failed run wrote something"
    return lines[-1]


def test_help_documents_every_config_key(capsys):
    code, out, _ = run(capsys, "simulate", "--help")
    assert code == 0
    for flag in ("--structure", "--repeat", "--zone-axis", "--parametrization", "--potential-gpts", "--sampling", "--slice-thickness",
                 "--projection", "--energy", "--semiangle-cutoff", "--C10", "--phi12", "--start", "--end", "--scan-gpts",
                 "--configurations", "--sigmas", "--seed", "--detector", "--pixelated", "--simulator", "--batch-size",
                 "--overwrite", "--quiet", "--no-progress", "--coordinator", "--num-processes", "--process-id"):
        assert flag in out, flag
    assert "mrad" in out and "Å" in out and "degrees" in out
    code, out, _ = run(capsys, "reconstruct", "--help")
    assert code == 0
    for key in SCHEMA["reconstruction"]:
        if key != "options":
            assert "--" + key.replace("_", "-") in out or f"--reconstruction-{key.replace('_', '-')}" in out, key
    for flag in ("--config", "--resume", "--energy", "--scan-step", "--sampling", "--reciprocal-sampling", "--semiangle-cutoff"):
        assert flag in out, flag


def test_flags_map_onto_config_tables():
    args = build_parser().parse_args(["simulate", "--potential-gpts", "[32, 32]", "--C10", "-40", "--phi12", "30", "--scan-gpts", "4,4", "--structure", "Si"])
    from ptyro_workflows.cli import _collect

    cfg = _collect(args)
    assert cfg == {"potential": {"gpts": [32, 32]}, "probe": {"C10": -40, "phi12": 30}, "scan": {"gpts": [4, 4]}, "specimen": {"structure": "Si"}}


def test_plugins_still_there(capsys):
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    kinds = {c["kind"] for c in json.loads(out)["components"]}
    assert {"probe", "loss", "optimizer", "reconstruction"} <= kinds


def _npy(tmp_path, shape=(2, 2, 16, 16)):
    p = tmp_path / "data.npy"
    arr = np.zeros(shape, np.float32)
    arr[..., shape[-2] // 2, shape[-1] // 2] = 1.0
    np.save(p, arr)
    return p


def test_missing_file(capsys, tmp_path):
    assert_bad_input(capsys, tmp_path, ["reconstruct", tmp_path / "nope.h5", "-o", tmp_path / "r.h5"], "not found")
    assert_bad_input(capsys, tmp_path, ["info", tmp_path / "nope.h5"], "not found")
    assert_bad_input(capsys, tmp_path, ["simulate", tmp_path / "nope.toml", "-o", tmp_path / "s.h5"], "not found")


def test_unreadable_hdf5(capsys, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x00garbage" * 10)
    assert_bad_input(capsys, tmp_path, ["reconstruct", bad, "-o", tmp_path / "r.h5"], "as HDF5")
    assert_bad_input(capsys, tmp_path, ["info", bad], "as HDF5")


def test_wrong_rank(capsys, tmp_path):
    p = _npy(tmp_path, (4, 16, 16))
    msg = assert_bad_input(capsys, tmp_path, ["reconstruct", p, "--energy", "200e3", "--scan-step", "0.5", "--sampling", "0.2", "-o", tmp_path / "r.h5"], "4D")
    assert "(4, 16, 16)" in msg


def test_npy_without_calibration(capsys, tmp_path):
    p = _npy(tmp_path)
    assert_bad_input(capsys, tmp_path, ["reconstruct", p, "-o", tmp_path / "r.h5"], "--energy")


def test_unknown_component_names_the_known_ones_and_the_closest(capsys, tmp_path):
    p = _npy(tmp_path)
    msg = assert_bad_input(capsys, tmp_path, ["reconstruct", p, "--energy", "200e3", "--scan-step", "0.5", "--sampling", "0.2", "--loss", "amplitud", "-o", tmp_path / "r.h5"], "unknown loss 'amplitud'")
    assert "closest match: 'amplitude'" in msg and "poisson" in msg
    msg = assert_bad_input(capsys, tmp_path, ["simulate", "--parametrization", "kirklandd", "-o", tmp_path / "s.h5"], "unknown potential 'kirklandd'")
    assert "known potentials" in msg


def test_unknown_config_key(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[probe]\nsemiangle = 20\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, "simulate", cfg, "-o", tmp_path / "s.h5")
    assert code == 2 and "unknown key 'semiangle' in [probe]" in err and "closest match: 'semiangle_cutoff'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unknown_element_in_sigmas(capsys, tmp_path):
    msg = assert_bad_input(capsys, tmp_path, ["simulate", "--sigmas", "{Xx = 0.1}", "--configurations", "2", "-o", tmp_path / "s.h5"], "'Xx'")
    assert "unknown element" in msg


def test_negative_energy(capsys, tmp_path):
    assert_bad_input(capsys, tmp_path, ["simulate", "--energy", "-200e3", "-o", tmp_path / "s.h5"], "energy")
    p = _npy(tmp_path)
    assert_bad_input(capsys, tmp_path, ["reconstruct", p, "--energy", "-5", "--scan-step", "0.5", "--sampling", "0.2", "-o", tmp_path / "r.h5"], "energy")


def test_semiangle_beyond_the_band_limit(capsys, tmp_path):
    # 0.5 Å pixels at 200 keV: the band limit is about 17 mrad
    p = _npy(tmp_path)
    assert_bad_input(capsys, tmp_path, ["reconstruct", p, "--energy", "200e3", "--scan-step", "0.5", "--sampling", "0.5", "--semiangle-cutoff", "30", "-o", tmp_path / "r.h5"], "band limit")


def test_existing_output_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "r.h5"
    out.write_text("keep me")
    p = _npy(tmp_path)
    assert_bad_input(capsys, tmp_path, ["reconstruct", p, "--energy", "200e3", "--scan-step", "0.5", "--sampling", "0.2", "-o", out], "--overwrite")
    assert out.read_text() == "keep me"


def test_distributed_flags_go_together(capsys, tmp_path):
    assert_bad_input(capsys, tmp_path, ["simulate", "--coordinator", "127.0.0.1:1234", "-o", tmp_path / "s.h5"], "go together")


def test_info_text_and_json(capsys, tmp_path):
    p = _npy(tmp_path)
    code, out, _ = run(capsys, "info", p)
    assert code == 0 and "(2, 2, 16, 16)" in out
    code, out, _ = run(capsys, "info", p, "--json")
    assert code == 0 and json.loads(out)["arrays"][0]["shape"] == [2, 2, 16, 16]


def test_console_script_reports_bad_input(tmp_path):
    exe = Path(sys.executable).with_name("ptyro")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([str(exe), "reconstruct", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "r.h5")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("ptyro: error: ") and "missing.h5" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_malformed_structure_file_names_the_line(capsys, tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\ncomment\nSr 0 0 0\nTi 1.9 1.9\nO 1 1 1\n")
    msg = assert_bad_input(capsys, tmp_path, ["simulate", "--structure", str(bad), "-o", tmp_path / "s.h5"], "line 4")
    assert "bad.xyz" in msg


def test_unknown_element_in_structure_file(capsys, tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\ncomment\nSr 0 0 0\nXx 1 1 1\n")
    assert_bad_input(capsys, tmp_path, ["simulate", "--structure", str(bad), "-o", tmp_path / "s.h5"], "'Xx'")


def test_scan_outside_the_cell(capsys, tmp_path):
    assert_bad_input(capsys, tmp_path, ["simulate", "--potential-gpts", "32,32", "--start", "0,0", "--end", "50,3", "-o", tmp_path / "s.h5"], "outside the cell")


def test_semiangle_beyond_the_band_limit_of_the_simulation_grid(capsys, tmp_path):
    # SrTiO3 cell (3.905 Å) on 16 points: 0.244 Å pixels, band limit about 34 mrad at 200 keV
    assert_bad_input(capsys, tmp_path, ["simulate", "--potential-gpts", "16,16", "--semiangle-cutoff", "40", "-o", tmp_path / "s.h5"], "band limit")
