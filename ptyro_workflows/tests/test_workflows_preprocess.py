"""Preprocessing of experiment-like data made by benchmarks/experimental/generate.py (numpy
only, independent of our simulator): what it finds against the generator's truth, the
`ptyro preprocess` command, and the refusal of uncentred data or a wrong scan frame."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ptyro_core import PtyroValueError
from ptyro_workflows.cli import main
from ptyro_workflows.preprocess import check_or_prepare, preprocess, preprocess_options, refine_found
from ptyro_workflows.readers import load

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "experimental"))
from generate import generate  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    made = generate(out, size="tiny", seed=1)
    return out, made["known"], made["truth"], np.load(out / "truth.npz")


def _load(tiny):
    out, known, _, _ = tiny
    ds, _ = load(out / "raw.npy", energy=known["energy"], scan_step=known["scan_step"], reciprocal_sampling=(known["detector_pixel_mrad"], "mrad"), lazy=False)
    return ds


def test_preprocessing_finds_what_the_generator_put_in(tiny):
    _, known, truth, t = tiny
    ds = _load(tiny)
    out, rep = preprocess(ds, {}, semiangle_cutoff=known["semiangle_cutoff"], defocus=known["defocus"])
    v = rep.values
    assert sorted(map(list, v["hot_pixels"])) == sorted(t["hot"].tolist())
    assert sorted(map(list, v["dead_pixels"])) == sorted(t["dead"].tolist())
    assert np.hypot(*(np.array(v["disc_center"]) - truth["mean_disc_center"])) < 0.2
    assert abs(v["disc_semiangle"] / known["semiangle_cutoff"] - 1) < 0.03
    # 16x16 positions: a few degrees (the acceptance run, 32x32, measures < 1 degree)
    assert abs((v["rotation"] - truth["rotation"] + 180) % 360 - 180) < 5.0 and v["transpose"] is False
    assert abs(v["defocus"] / truth["defocus"] - 1) < 0.1  # nominal was 25 % off
    # the output is centred: its mean centre of mass on the detector centre, counts kept
    from ptyro_invert.calibrate import center_of_mass

    com = np.asarray(center_of_mass(np.asarray(out.array))).reshape(-1, 2)
    np.testing.assert_allclose(com.mean(0), np.array(out.grid.gpts) // 2, atol=0.05)
    raw = np.asarray(ds.array)
    hot_counts = sum(raw[:, :, x, y].sum() for x, y in t["hot"])
    np.testing.assert_allclose(np.asarray(out.array).sum(), raw.sum() - hot_counts, rtol=0.01)  # counts kept but the hot pixels'

    assert not rep.warnings
    assert any("defocus from parallax" in line for line in rep.summary())


def test_uncentred_or_wrongly_rotated_data_is_refused_not_reconstructed(tiny):
    ds = _load(tiny)
    with pytest.raises(PtyroValueError, match="scan frame looks wrong|not centred"):
        check_or_prepare(ds, {"preprocess": False}, elsewhere=True)
    # with the frame check off, the centring check still refuses
    with pytest.raises(PtyroValueError, match="not centred.*ptyro preprocess"):
        check_or_prepare(ds, {"preprocess": False, "scan_frame": "keep"}, elsewhere=True)
    # "auto" preprocesses data from elsewhere
    out, rep = check_or_prepare(ds, {}, elsewhere=True)
    assert rep is not None and out is not ds


def test_the_reconstruction_refines_what_preprocessing_estimated(tiny):
    _, known, _, _ = tiny
    _, rep = preprocess(_load(tiny), {}, semiangle_cutoff=known["semiangle_cutoff"], defocus=known["defocus"])
    r = {"algorithm": "single_slice", "fit_aberrations": False}
    line = refine_found(r, rep, {})
    assert r["algorithm"] == "position_corrected" and r["fit_aberrations"] is True
    assert r["options"] == {"remove_phase_ramp": "plane"} and "refine = false" in line
    assert rep.values["refined_by_reconstruction"]
    # a user's own choices stay; refine = false keeps everything as given
    r = {"algorithm": "mixed_state", "options": {"remove_phase_ramp": False}}
    refine_found(r, rep, {})
    assert r["algorithm"] == "mixed_state" and r["options"] == {"remove_phase_ramp": False}
    r = {"algorithm": "single_slice"}
    assert refine_found(r, rep, {"refine": False}) is None and r == {"algorithm": "single_slice"}
    assert refine_found(r, None, {}) is None


def test_reconstruct_on_raw_data_refines_and_leaves_no_phase_plane(tiny):
    from ptyro_workflows.reconstruct import reconstruct

    _, known, _, _ = tiny
    passes = []
    cfg = {"probe": {"semiangle_cutoff": known["semiangle_cutoff"], "defocus": known["defocus"]}, "reconstruction": {"iterations": 2}}
    st = reconstruct(_load(tiny), cfg, progress=False, elsewhere=True, report=passes)
    assert "scan" in passes[-1] and "aberrations" in passes[-1]  # position_corrected, fit_aberrations
    p = np.asarray(st.positions, np.float64) / np.asarray(st.sampling)
    lo, hi = np.floor(p.min(0)).astype(int), np.ceil(p.max(0)).astype(int) + 1
    ph = np.angle(np.asarray(st.object)[0])[lo[0] : hi[0], lo[1] : hi[1]]
    xx, yy = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
    coef, *_ = np.linalg.lstsq(np.stack([np.ones(xx.size), xx.ravel(), yy.ravel()], 1), ph.ravel(), rcond=None)
    assert np.all(np.abs(coef[1:]) < 1e-5), coef  # rad per pixel: the plane went into the probe


def test_options_are_checked_with_one_clear_line():
    with pytest.raises(PtyroValueError, match="unknown key 'descann'.*closest match: 'descan'"):
        preprocess_options({"descann": "plane"})
    with pytest.raises(PtyroValueError, match="descan: expected one of plane, free, constant, none, got 'cubic'"):
        preprocess_options({"descan": "cubic"})
    with pytest.raises(PtyroValueError, match="bin: expected an integer >= 1, got 0"):
        preprocess_options({"bin": 0})


def test_crop_and_bin_keep_the_reciprocal_calibration(tiny):
    _, known, _, _ = tiny
    ds = _load(tiny)
    out, _ = preprocess(ds, {"crop": 40, "bin": 2, "estimate_defocus": False, "scan_frame": "keep"})
    assert out.grid.gpts == (20, 20)
    np.testing.assert_allclose(out.grid.reciprocal_sampling, 2 * np.array(ds.grid.reciprocal_sampling), rtol=1e-6)


def test_ptyro_preprocess_command(tiny, tmp_path, capsys):
    raw, known, truth, _ = tiny
    out = tmp_path / "pre.h5"
    rc = main(["preprocess", str(raw / "raw.npy"), "-o", str(out), "--energy", "300 keV", "--scan-step", f"{known['scan_step'] / 10} nm",
               "--reciprocal-sampling", f"{known['detector_pixel_mrad']} mrad", "--semiangle-cutoff", str(known["semiangle_cutoff"]), "--defocus", str(known["defocus"])])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "bright-field disc" in text and "scan frame: rotation" in text and "reconstruct it with" in text
    assert (tmp_path / "preprocess.png").stat().st_size > 10_000
    from ptyro_workflows.io import load_dataset, read_file_provenance

    prov = read_file_provenance(out)
    assert prov["kind"] == "preprocess"
    found = json.loads(prov["preprocess"]) if isinstance(prov["preprocess"], str) else prov["preprocess"]
    assert abs(found["rotation"] - truth["rotation"]) < 5.0
    ds = load_dataset(out)  # our EMD: calibrations and rotated positions travel with it
    assert ds.energy == 300e3
    # reconstructing the preprocessed file refines what that run estimated, as on the raw file
    rc = main(["reconstruct", str(out), "-o", str(tmp_path / "r.h5"), "--iterations", "1", "--semiangle-cutoff", str(known["semiangle_cutoff"]), "--no-progress", "--no-jax-cache"])
    said = capsys.readouterr()
    assert rc == 0 and "the reconstruction refines: scan rotation and positions" in said.out + said.err
    assert "position_corrected" in str(read_file_provenance(tmp_path / "r.h5")["config"])  # the algorithm run, recorded
    # bad input: one line, exit 2, nothing written
    rc = main(["preprocess", str(raw / "raw.npy"), "-o", str(tmp_path / "x.h5"), "--energy", "300 keV", "--bin", "0"])
    assert rc == 2 and not (tmp_path / "x.h5").exists()
    assert "bin: expected an integer >= 1" in capsys.readouterr().err


def test_a_crystals_defocus_is_estimated_though_its_shifts_alias():
    """A periodic specimen (a 3.16 Å honeycomb) at 200 Å defocus: its bright-field shifts pass
    half the lattice period and alias, so they do not follow the fitted optics (the shift
    residual refused the estimate and the nominal defocus was used); the fit's evidence (its
    exact-transfer objective over that of optics picked at random) accepts it. Vacuum, noise
    alone, is still refused, naming both measures."""
    from ptyro_invert import synthetic as syn
    from ptyro_workflows.preprocess import MIN_EVIDENCE, PreprocessReport, estimate_optics

    grid, scan, state = syn.setup(gpts=32, sampling=0.25, scan=(40, 40), step=0.25, energy=300e3, semiangle_cutoff=20.0, aberrations={"C10": -200.0})
    truth = syn.with_object(state, np.exp(1j * syn.hexagonal_phase(tuple(state.object.shape[-2:]), state.sampling, peaks=(0.1, 0.06))))
    rep = PreprocessReport()
    estimate_optics(syn.simulate(truth, grid, scan, dose=5000.0), rep, defocus=150.0)
    v = rep.values
    assert "defocus_note" not in v, v.get("defocus_note")
    assert abs(v["defocus"] / 200.0 - 1) < 0.05, v["defocus"]
    assert v["parallax_evidence"] > 2 * MIN_EVIDENCE
    rep = PreprocessReport()
    estimate_optics(syn.simulate(state, grid, scan, dose=5000.0), rep, defocus=150.0)
    assert "defocus" not in rep.values
    assert "explain the bright-field images" in rep.values["defocus_note"] and "nominal defocus is used" in rep.values["defocus_note"]
