"""Simulation pipeline: structure → potential → probe → 4D-STEM, streamed to EMD; checked
against physics (intensity conservation, the crystal's mirror symmetry, the ground-truth phase
of a reconstruction) and round-tripped through files."""

import numpy as np
import pytest

from ptyro_core import PtyroValueError
from ptyro_workflows import load_dataset, load_images, load_reconstruction, phase_correlation, read_file_provenance, simulate
from ptyro_workflows.cli import main

A = 3.905
SMALL = {
    "specimen": {"structure": "SrTiO3", "repeat": [2, 2, 1]},
    "potential": {"gpts": [32, 32], "slice_thickness": A / 2},
    "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "C10": -20.0},
    "scan": {"start": [0.0, 0.0], "end": [A, A], "gpts": [8, 8]},
    "detectors": {"bf": [0, 20], "adf": [22, 33]},
    "simulation": {"batch_size": 16},
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "sim.h5"
    res = simulate(SMALL, out, progress=False)
    return res, out


def test_patterns_conserve_intensity(simulated):
    res, _ = simulated
    sums = np.asarray(res.dataset.array).sum(axis=(-2, -1))
    # unitary FFT, normalised probe: at most the incident beam, and little lost beyond the band
    # limit. The transmission function is band-limited to 2/3 Nyquist (against aliasing), which
    # makes it slightly non-unitary (|t| overshoots 1 near the columns): a few 1e-4 of excess.
    assert sums.max() <= 1.0 + 2e-3
    assert sums.min() > 0.9


def test_mirror_symmetry_of_srtio3_001(simulated):
    """SrTiO3 [001] is symmetric under x <-> y; with a square raster from the origin the
    virtual images and the mean pattern must be too (checks axis 0 = x throughout)."""
    res, _ = simulated
    for name, img in res.images.items():
        np.testing.assert_allclose(img, img.T, rtol=2e-3, atol=1e-6, err_msg=name)
    mean = np.asarray(res.dataset.array).mean(axis=(0, 1))
    np.testing.assert_allclose(mean, mean.T, rtol=1e-2, atol=1e-7)
    # electrons scatter at the atoms: more dark-field signal on the Sr (origin) and TiO (centre)
    # columns than halfway between them; the bright field dips there
    adf, bf = res.images["adf"], res.images["bf"]
    assert adf[0, 0] > adf[2, 2] and adf[4, 4] > adf[2, 2]
    assert bf[0, 0] < bf[2, 2] and bf[4, 4] < bf[2, 2]


def test_file_holds_what_was_simulated(simulated):
    res, out = simulated
    ds = load_dataset(out)
    np.testing.assert_array_equal(np.asarray(ds.array), np.asarray(res.dataset.array))
    imgs = load_images(out)
    np.testing.assert_allclose(imgs["bf"], res.images["bf"], rtol=1e-6)
    np.testing.assert_allclose(imgs["projected_potential"], res.projected_potential, rtol=1e-6)
    prov = read_file_provenance(out)
    names = {(c["kind"], c["name"]) for c in prov["components"]}
    assert {("potential", "kirkland"), ("probe", "aberrated"), ("propagator", "fresnel")} <= names
    assert "structure = \"SrTiO3\"" in prov["config"] and prov["seed"] == 0
    # what the run actually used: the tests' two fake devices shard batches, so XLA and one stream
    assert prov["execution"]["backend"] == "xla" and prov["execution"]["streams"] == 1
    assert prov["execution"]["memory_budget"] > 0 and res.provenance["execution"] == prov["execution"]


def test_frozen_phonons_change_the_patterns_and_are_seeded(simulated):
    static = simulated[0]
    cfg = {**SMALL, "frozen_phonons": {"configurations": 2, "sigmas": {"Sr": 0.1, "Ti": 0.1, "O": 0.1}, "seed": 1}}
    a = simulate(cfg, progress=False)
    assert not np.allclose(np.asarray(a.dataset.array), np.asarray(static.dataset.array))
    assert np.asarray(a.dataset.array).sum(axis=(-2, -1)).max() <= 1.0 + 2e-3  # an average of (nearly) unitary runs
    # the displacements are drawn from the seed alone, with the requested rms
    from ptyro_simul.phonons import frozen_phonon_configurations

    from ptyro_workflows.simulate import build_specimen

    at = build_specimen(SMALL["specimen"])
    d1 = np.asarray(frozen_phonon_configurations(at, 1, seed=1, sigmas=0.1)[0].positions)
    d2 = np.asarray(frozen_phonon_configurations(at, 1, seed=1, sigmas=0.1)[0].positions)
    np.testing.assert_array_equal(d1, d2)
    lx = at.cell[0]
    dx = (d1[:, 0] - np.asarray(at.positions)[:, 0] + lx / 2) % lx - lx / 2  # periodic in x
    assert 0.06 < float(np.std(dx)) < 0.15


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"scan": {"start": [0.0, 0.0], "end": [20.0, 3.0], "gpts": [2, 2]}}, "outside the cell"),
        ({"probe": {"semiangle_cutoff": 60.0}}, "band limit"),
        ({"detectors": {"haadf": [70, 200]}}, "band limit"),
        ({"specimen": {"structure": "Unobtainium"}}, "Unobtainium"),
    ],
)
def test_non_physical_requests_are_refused_before_anything_is_written(tmp_path, change, needle):
    with pytest.raises(PtyroValueError, match=needle):
        simulate({**SMALL, **change}, tmp_path / "x.h5", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_simulate_then_reconstruct_through_files(simulated, tmp_path, capsys):
    """The round trip a user runs: ptyro simulate CONFIG.toml → ptyro reconstruct → compare
    with σ·ΣV. The CLI streams the patterns into the file batch by batch without holding the 4D
    array (``keep=False``); the file holds what the Python API computes in memory."""
    from ptyro_simul.constants import energy2sigma

    from ptyro_workflows.config import to_toml

    cfg = tmp_path / "sim.toml"
    cfg.write_text(to_toml(SMALL))
    data = tmp_path / "sim.h5"
    assert main(["simulate", str(cfg), "-o", str(data), "--no-progress"]) == 0, capsys.readouterr().err
    np.testing.assert_allclose(np.asarray(load_dataset(data).array), np.asarray(simulated[0].dataset.array), rtol=1e-5, atol=1e-8)
    out = tmp_path / "rec.h5"
    code = main(["reconstruct", str(data), "--semiangle-cutoff", "20", "--C10", "-20", "--iterations", "10", "--batch-size", "16", "-o", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    state = load_reconstruction(out)
    ds = load_dataset(data)
    truth = energy2sigma(ds.energy) * load_images(data)["projected_potential"]
    r = phase_correlation(state, ds.positions, truth, ds.grid.sampling)
    assert r > 0.8, r
    prov = read_file_provenance(out)
    assert prov["source"]["kind"] == "simulation" and "structure = \"SrTiO3\"" in prov["source"]["config"]


def test_a_third_party_simulator_is_usable_by_name_once_installed(fake_distribution, tmp_path, capsys):
    """A plugin distribution registering a 'vacuum' simulator (the probe's own diffraction
    pattern, no specimen) is picked up from the configuration; in vacuum every electron stays
    inside the (soft-edged) aperture: the BF image is flat and nearly 1, the dark field empty."""
    fake_distribution(
        "ptyro-vacuum",
        """
        import jax.numpy as jnp
        from ptyro_core import hookimpl

        def vacuum(potential, probe, **options):
            def fn(positions):
                pk = jnp.fft.fftshift(jnp.fft.fft2(probe.array, norm="ortho"), axes=(-2, -1))
                one = jnp.sum(jnp.abs(pk) ** 2, axis=0)
                return jnp.broadcast_to(one[None], (positions.shape[0],) + one.shape) + 0.0 * positions[:, :1, None]
            return fn

        @hookimpl
        def ptyro_register_simulators(register):
            register("vacuum", vacuum, description="no specimen")
        """,
    )
    out = tmp_path / "vac.h5"
    cfg = tmp_path / "vac.toml"
    from ptyro_workflows.config import to_toml

    cfg.write_text(to_toml({**SMALL, "simulation": {"simulator": "vacuum", "batch_size": 16}}))
    assert main(["simulate", str(cfg), "-o", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    imgs = load_images(out)
    assert float(np.ptp(imgs["bf"])) < 1e-5 and 0.97 < float(imgs["bf"].mean()) <= 1.0 + 1e-5
    np.testing.assert_allclose(imgs["adf"], 0.0, atol=1e-6)
    comp = {c["kind"]: c for c in read_file_provenance(out)["components"]}
    assert comp["simulator"]["name"] == "vacuum" and comp["simulator"]["distribution"] == "ptyro-vacuum"


def test_windowed_simulation_from_the_configuration(tmp_path):
    # a 4x4-cell crystal on 64x64, each probe propagated in a 48x48 window of it: the dataset's
    # patterns and grid are the window's, and the virtual images match the full-grid ones to the
    # accuracy the window costs (measured: BF 0.4 %, ADF 0.5 %; a 40x40 window: 1.5 %, 4.8 %)
    import copy

    base = copy.deepcopy(SMALL)
    base["specimen"]["repeat"] = [4, 4, 1]
    base["potential"]["gpts"] = [64, 64]
    base["scan"] = {"start": [1.5 * A, 1.5 * A], "end": [2.5 * A, 2.5 * A], "gpts": [4, 4]}
    base["detectors"] = {"bf": [0, 20], "adf": [25, 60], "pixelated": True}
    full = simulate(base, progress=False)
    win = copy.deepcopy(base)
    win["simulation"]["options"] = {"window": [48, 48]}
    out = tmp_path / "win.h5"
    res = simulate(win, out, progress=False)
    assert res.dataset.array.shape == (4, 4, 48, 48)
    assert res.dataset.grid.gpts == (48, 48)
    np.testing.assert_allclose(res.dataset.grid.sampling, full.dataset.grid.sampling)
    assert load_dataset(out).array.shape == (4, 4, 48, 48)
    for name in ("bf", "adf"):
        a, b = res.images[name], full.images[name]
        assert float(np.max(np.abs(a - b)) / np.max(np.abs(b))) < 0.015, name
    for bad in ([40], [40.5, 40], [0, 40], [80, 80], "big"):
        cfg = copy.deepcopy(base)
        cfg["simulation"]["options"] = {"window": bad}
        with pytest.raises(PtyroValueError, match="window"):
            simulate(cfg, progress=False)
