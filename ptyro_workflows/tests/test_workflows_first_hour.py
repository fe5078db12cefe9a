"""The first hour of a new user (issue 20): one meaning per value, plausibility checks with the
likely fix, optics taken from a file's provenance, dose, a start-up without JAX, the persistent
compilation cache."""

import json
import os
import subprocess
import sys
import tomllib

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_workflows.cli import main
from ptyro_workflows.config import ALIAS_OF, aberrations_for_api, merge, reconstruction_config, validate
from ptyro_workflows.reconstruct import optics_from_provenance
from ptyro_workflows.simulate import poisson_counts

TINY = {
    "specimen": {"structure": "SrTiO3"},
    "potential": {"gpts": [32, 32], "slice_thickness": 3.905},
    "probe": {"semiangle_cutoff": 20.0, "C10": -30.0},
    "scan": {"gpts": [3, 3]},
    "simulation": {"batch_size": 9},
}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_toml(path, cfg):
    from ptyro_workflows.config import to_toml

    path.write_text(to_toml(cfg))
    return path


# --------------------------------------------------------------------------- one meaning per value


@pytest.mark.parametrize("alias", sorted(ALIAS_OF))
def test_alias_and_coefficient_together_is_an_error_naming_both(alias):
    with pytest.raises(ValueError) as e:
        validate({"probe": {alias: 10.0, ALIAS_OF[alias]: 20.0}})
    assert alias in str(e.value) and ALIAS_OF[alias] in str(e.value)


def test_alias_and_coefficient_flags_together_fail_on_the_command_line(capsys, tmp_path):
    code, _, err = run(capsys, "simulate", "-o", tmp_path / "x.h5", "--C10", "-50", "--defocus", "50")
    assert code == 2
    assert "defocus" in err and "C10" in err and "expected only one" in err
    assert not list(tmp_path.iterdir())


@settings(max_examples=40, deadline=None)
@given(
    alias=st.sampled_from(sorted(ALIAS_OF)),
    file_uses_alias=st.booleans(),
    flag_uses_alias=st.booleans(),
    a=st.floats(-500, 500, allow_nan=False),
    b=st.floats(-500, 500, allow_nan=False),
)
def test_a_flag_replaces_the_files_value_whichever_spelling_either_used(alias, file_uses_alias, flag_uses_alias, a, b):
    coeff = ALIAS_OF[alias]
    file_key = alias if file_uses_alias else coeff
    flag_key = alias if flag_uses_alias else coeff
    cfg = validate(merge({"probe": {file_key: a}}, {"probe": {flag_key: b}}), ("probe",))
    api = aberrations_for_api(cfg["probe"])
    # exactly one spelling survives and it carries the flag's value
    assert [k for k in (alias, coeff) if k in api] == [flag_key]
    assert api[flag_key] == pytest.approx(np.radians(b) if "angle" in flag_key or flag_key.startswith("phi") else b)


def test_the_issue_example_defocus_flag_over_a_c10_file():
    cfg = validate(merge({"probe": {"C10": -60.0}}, {"probe": {"defocus": 30.0}}), ("probe",))
    assert "C10" not in cfg["probe"] and cfg["probe"]["defocus"] == 30.0


@pytest.mark.parametrize(
    "table, needle",
    [
        ({"probe": {"energy": 300}}, "did you mean 300000 eV"),
        ({"probe": {"semiangle_cutoff": 0.02}}, "did you mean 20 mrad"),
        ({"scan": {"step": 0.04}}, "did you mean [0.4, 0.4] Å"),
    ],
)
def test_implausible_units_name_the_likely_fix(table, needle):
    with pytest.raises(ValueError) as e:
        validate(table)
    assert needle in str(e.value)


def test_energy_flag_in_kev_is_refused_with_the_fix(capsys, tmp_path):
    code, _, err = run(capsys, "simulate", "-o", tmp_path / "x.h5", "--energy", "300")
    assert code == 2 and "did you mean 300000 eV" in err


def test_plausible_values_pass():
    cfg = validate({"probe": {"energy": 60e3, "semiangle_cutoff": 0.5}, "scan": {"step": 0.1}}, ("probe", "scan"))
    assert cfg["probe"]["energy"] == 60e3


def test_a_detectors_table_without_pixelated_does_not_break_a_reconstruction_config():
    cfg = reconstruction_config({"detectors": {"bf": [0, 20]}, "reconstruction": {"iterations": 1}})
    assert cfg["detectors"] == {"bf": [0, 20]}


# --------------------------------------------------------------------------- optics from provenance


def test_optics_from_provenance_fill_only_what_the_configuration_lacks():
    prov = {"config": '[probe]\nname = "aberrated"\nenergy = 300000.0\nsemiangle_cutoff = 25.0\nC10 = -40.0\nC30 = 1000.0\n'}
    taken, note = optics_from_provenance({}, prov, name="d.h5")
    assert taken == {"name": "aberrated", "energy": 300000.0, "semiangle_cutoff": 25.0, "C10": -40.0, "C30": 1000.0}
    assert note.startswith("optics from d.h5's provenance") and "300 keV" in note and "C10 = -40 Å" in note
    # the user's aberrations (any spelling) replace the recorded ones as a whole
    taken, _ = optics_from_provenance({"defocus": 10.0, "semiangle_cutoff": 21.0}, prov)
    assert taken == {"name": "aberrated", "energy": 300000.0}
    assert optics_from_provenance({}, {}) == ({}, None)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    cfg = write_toml(d / "sim.toml", TINY)
    assert main(["simulate", str(cfg), "-o", str(d / "data.h5"), "-q", "--no-jax-cache"]) == 0
    return d / "data.h5"


def test_reconstruct_takes_the_optics_of_our_file_and_says_so(tiny_file, tmp_path, capsys):
    out = tmp_path / "rec.h5"
    code, stdout, err = run(capsys, "reconstruct", tiny_file, "-o", out, "--iterations", "1", "--no-progress", "--no-jax-cache")
    assert code == 0, err
    assert "compiling the reconstruction" in stdout + err and "reconstructing: single_slice" in stdout + err  # named once chosen
    lines = [ln for ln in stdout.splitlines() if "provenance" in ln]
    assert len(lines) == 1 and "C10 = -30 Å" in lines[0] and "20 mrad" in lines[0], stdout
    with h5py.File(out) as f:
        recorded = tomllib.loads(f["provenance/config"][()].decode())
    assert recorded["probe"]["C10"] == -30.0
    # a flag is the user's choice: the recorded aberrations are not added to it
    code, stdout, _ = run(capsys, "reconstruct", tiny_file, "-o", out, "--overwrite", "--iterations", "1", "--defocus", "30", "--no-progress", "--no-jax-cache")
    assert code == 0
    with h5py.File(out) as f:
        recorded = tomllib.loads(f["provenance/config"][()].decode())
    assert recorded["probe"]["defocus"] == 30.0 and "C10" not in recorded["probe"]


# --------------------------------------------------------------------------- dose


def test_poisson_counts_are_seeded_integers_independent_of_the_batching():
    rng = np.random.default_rng(1)
    p = rng.random((6, 8, 8))
    p /= p.sum(axis=(1, 2), keepdims=True)
    whole = poisson_counts(p, 500.0, 7, 10)
    split = np.concatenate([poisson_counts(p[:2], 500.0, 7, 10), poisson_counts(p[2:], 500.0, 7, 12)])
    assert whole.dtype == np.uint32 and np.array_equal(whole, split)
    assert not np.array_equal(whole, poisson_counts(p, 500.0, 8, 10))


def test_poisson_counts_have_the_mean_and_variance_of_the_dose():
    p = np.full((400, 4, 4), 1 / 16)
    c = poisson_counts(p, 160.0, 0, 0).astype(np.float64)  # 10 electrons expected per pixel
    assert c.mean() == pytest.approx(10.0, rel=0.03)
    assert c.var() == pytest.approx(10.0, rel=0.1)  # Poisson: variance = mean


def test_dose_is_stored_as_integer_counts_and_recorded(tiny_file, tmp_path, capsys):
    cfg = write_toml(tmp_path / "sim.toml", {**TINY, "detectors": {"dose": 2000.0, "dose_seed": 3}})
    out = tmp_path / "noisy.h5"
    code, _, err = run(capsys, "simulate", cfg, "-o", out, "-q", "--no-jax-cache")
    assert code == 0, err
    with h5py.File(out) as f, h5py.File(tiny_file) as g:
        counts = f["ptyrodactyl/datacube/data"][()]
        clean = g["ptyrodactyl/datacube/data"][()]
        prov = dict(f["provenance"].attrs)
    step = 3.905 / 3
    electrons = 2000.0 * step * step
    assert counts.dtype == np.uint32
    assert "Poisson" in prov["dose"] and prov["electrons_per_position"] == pytest.approx(electrons)
    # the counts scatter about the noise-free patterns times the electrons per position
    assert counts.sum(axis=(2, 3)).mean() == pytest.approx(electrons * clean.sum(axis=(2, 3)).mean(), rel=0.02)
    # --dose-per-position replaces the file's dose
    code, _, err = run(capsys, "simulate", cfg, "-o", tmp_path / "n2.h5", "-q", "--dose-per-position", "100", "--no-jax-cache")
    assert code == 0, err
    with h5py.File(tmp_path / "n2.h5") as f:
        assert f["provenance"].attrs["electrons_per_position"] == 100.0


# --------------------------------------------------------------------------- start-up and cache


def test_help_info_and_plugins_import_no_jax(tiny_file):
    """``ptyro --help``, every ``ptyro CMD --help``, ``ptyro plugins`` (components are registered
    by reference and imported on first use) and ``ptyro info FILE`` leave JAX unimported."""
    code = (
        "import sys\n"
        "from ptyro_workflows.cli import COMMANDS, main\n"
        "runs = [['--help'], *([c, '--help'] for c in COMMANDS), ['plugins'], ['plugins', '--json'], ['info', sys.argv[1]]]\n"
        "for argv in runs:\n"
        "    try:\n"
        "        assert main(argv) == 0, argv\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, argv\n"
        "print('RAN', len(runs), 'JAX', 'jax' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tiny_file)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from ptyro_workflows.cli import COMMANDS

    assert r.stdout.strip().splitlines()[-1] == f"RAN {len(COMMANDS) + 4} JAX False", r.stdout[-500:]


def test_compilation_cache_switches(tmp_path, monkeypatch):
    from ptyro_workflows import cache

    monkeypatch.setenv("PTYRO_JAX_CACHE", "0")
    assert cache.default_cache_dir() is None
    monkeypatch.setenv("PTYRO_JAX_CACHE", str(tmp_path / "c"))
    assert cache.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PTYRO_JAX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.default_cache_dir() == tmp_path / "x" / "ptyrodactyl" / "jax"
    assert cache.enable_compilation_cache(enabled=False) == "off"
    assert cache.cache_record() == {"jax_compilation_cache": "off", "executable_cache": "off"}


def test_the_executable_cache_follows_the_compilation_cache(tmp_path, monkeypatch):
    """On with JAX's cache, in its ``executables`` subdirectory (private, recorded); off with
    ``PTYRO_EXEC_CACHE=0`` alone, and with the compilation cache."""
    from ptyro_core import exec_cache
    from ptyro_workflows import cache

    try:
        monkeypatch.delenv("PTYRO_EXEC_CACHE", raising=False)
        where = cache.enable_compilation_cache(tmp_path / "c")
        assert cache.cache_record() == {"jax_compilation_cache": where, "executable_cache": str(tmp_path / "c" / "executables")}
        assert exec_cache.installed() == str(tmp_path / "c" / "executables")
        assert (tmp_path / "c" / "executables").stat().st_mode & 0o077 == 0
        monkeypatch.setenv("PTYRO_EXEC_CACHE", "off")
        assert cache.enable_compilation_cache(tmp_path / "c") == where
        assert cache.cache_record()["executable_cache"] == "off" and exec_cache.installed() is None
        monkeypatch.delenv("PTYRO_EXEC_CACHE")
        cache.enable_compilation_cache(tmp_path / "c")
        assert cache.enable_compilation_cache(enabled=False) == "off" and exec_cache.installed() is None
    finally:
        exec_cache.uninstall()
        import jax

        jax.config.update("jax_compilation_cache_dir", None)


def test_the_cache_switched_off_or_moved_in_one_process_is_off_or_moved(tmp_path, monkeypatch):
    """After a compilation with the cache on, switching it off (or to another directory) in the
    same process takes effect: JAX decides once whether its cache is used, and it had gone on
    writing where it first did while the run recorded "off"."""
    import jax
    import jax.numpy as jnp

    from ptyro_workflows import cache

    monkeypatch.setenv("PTYRO_EXEC_CACHE", "0")  # JAX's cache alone: its files are what is counted
    n = lambda d: len(list(d.iterdir())) if d.exists() else 0  # noqa: E731
    a, b = tmp_path / "a", tmp_path / "b"
    assert cache.enable_compilation_cache(a) == str(a)
    jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.arange(7.0)).block_until_ready()
    assert n(a) >= 1
    before = n(a)
    assert cache.enable_compilation_cache(enabled=False) == "off"
    jax.jit(lambda x: jnp.cos(x) * 5.0)(jnp.arange(9.0)).block_until_ready()
    assert n(a) == before
    assert cache.enable_compilation_cache(b) == str(b)
    jax.jit(lambda x: jnp.tan(x) * 7.0)(jnp.arange(11.0)).block_until_ready()
    assert n(a) == before and n(b) >= 1


def test_the_cache_is_used_by_a_second_process(tmp_path):
    """A second process compiling the same function finds it in the cache directory."""
    code = (
        "import sys, jax, jax.numpy as jnp\n"
        "from ptyro_workflows.cache import enable_compilation_cache\n"
        "print(enable_compilation_cache(sys.argv[1]))\n"
        "jax.jit(lambda x: jnp.sin(x) * 3 + 1)(jnp.ones(17)).block_until_ready()\n"
    )
    where = tmp_path / "cache"
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code, str(where)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(where)
    entries = [p.name for p in where.iterdir()]
    assert any(n.startswith("jit__lambda") for n in entries), entries


def test_a_second_demo_loads_every_program_from_the_cache(tmp_path):
    """Issue 18: a second demo of the same shapes compiles nothing: every program is loaded from
    our executable cache (neither lowered nor compiled: no key depends on a closure, a random
    name or the output path), and with that cache off (``PTYRO_EXEC_CACHE=0``) from JAX's
    persistent cache; its results are computed again, not cached (the same numbers). One
    process, the in-memory caches cleared between the runs; the demo on a small default, same
    code path."""
    code = """
import json, os, sys
from pathlib import Path
import jax, jax.monitoring as mon
from ptyro_core import exec_cache
from ptyro_workflows import demo
from ptyro_workflows.cache import enable_compilation_cache
tmp = Path(sys.argv[1])
demo.DEMO_SIMULATION = {**demo.DEMO_SIMULATION, "specimen": {"structure": "SrTiO3", "repeat": [2, 2, 1]},
    "potential": {"gpts": [32, 32], "slice_thickness": 1.9525}, "scan": {"start": [0.0, 0.0], "end": [3.905, 3.905], "gpts": [6, 6]},
    "detectors": {"pixelated": True, "bf": [0, 10], "adf": [22, 30]}, "simulation": {"batch_size": 12}}
demo.DEMO_RECONSTRUCTION = {"probe": {"semiangle_cutoff": 20.0, "defocus": 30.0}, "reconstruction": {"iterations": 3, "batch_size": 12}}
seen = []
mon.register_event_listener(lambda name, **kw: seen.append(name))
mon.register_event_duration_secs_listener(lambda name, secs, **kw: seen.append(name))
runs = []
for i, ours in ((1, "1"), (2, "1"), (3, "0")):
    os.environ["PTYRO_EXEC_CACHE"] = ours
    assert enable_compilation_cache(tmp / "cache") == str(tmp / "cache")
    jax.clear_caches()
    seen.clear()
    before = exec_cache.stats()
    r = demo.run_demo(tmp / f"d{i}", quiet=True, progress=False)
    count = lambda key: sum(n.endswith(key) for n in seen)
    ex = {k: v - before[k] for k, v in exec_cache.stats().items()}
    runs.append({"programs": count("backend_compile_duration"), "hits": count("cache_hits"), "misses": count("cache_misses"),
                 "lowered": count("jaxpr_to_mlir_module_duration"), "loaded": ex["hits"], "stored": ex["stored"], "compiled": ex["misses"],
                 "correlation": r["correlation"], "loss": [float(v) for v in r["loss"]], "files": sorted(p.name for p in (tmp / f"d{i}").iterdir())})
print(json.dumps(runs))
"""
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    first, second, jax_only = json.loads(r.stdout.strip().splitlines()[-1])
    assert first["programs"] >= 5 and first["misses"] == first["programs"] and first["hits"] == 0, first
    assert first["stored"] == first["compiled"] == first["programs"], first  # every compiled program stored
    # ours: nothing lowered, compiled or loaded by JAX; (one program fewer at most: a value a module keeps once computed)
    assert second["programs"] == second["lowered"] == second["compiled"] == 0, second
    assert first["programs"] - 1 <= second["loaded"] <= first["programs"], (first, second)
    # JAX's alone: every program lowered and found in its cache
    assert first["programs"] - 1 <= jax_only["programs"] <= first["programs"] and jax_only["loaded"] == 0, (first, jax_only)
    assert jax_only["hits"] == jax_only["programs"] and jax_only["misses"] == 0, jax_only
    for run in (second, jax_only):
        assert run["correlation"] == first["correlation"] and run["loss"] == first["loss"]
        assert run["files"] == first["files"] and "phase.png" in run["files"]


def test_provenance_records_the_cache(tiny_file):
    with h5py.File(tiny_file) as f:
        assert f["provenance"].attrs["jax_compilation_cache"] == "off"
        assert f["provenance"].attrs["executable_cache"] == "off"
        json.loads(f["provenance/versions"][()])


# --------------------------------------------------------------------------- structures as users have them


def _graphene_hex():
    ase = pytest.importorskip("ase")
    a = 2.46
    return ase.Atoms(
        "C2", scaled_positions=[[1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]], cell=[[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, 3.35]], pbc=True
    )


def test_simulate_takes_an_ase_atoms_with_a_hexagonal_cell():
    from ptyro_simul.structures import StructureNote
    from ptyro_workflows.simulate import simulate

    cfg = {
        "specimen": {"structure": _graphene_hex(), "repeat": [1, 1, 1]},
        "potential": {"gpts": [24, 40], "slice_thickness": 3.35},
        "probe": {"semiangle_cutoff": 25.0},
        "scan": {"gpts": [2, 2]},
    }
    with pytest.warns(StructureNote, match="orthorhombic supercell"):
        res = simulate(cfg, progress=False)
    assert res.dataset.array.shape == (2, 2, 24, 40)
    assert "4 atoms" in res.config["specimen"]["structure"]
    xyz = res.provenance["structure_xyz"].splitlines()
    assert xyz[0] == "4" and sum(ln.startswith("C ") for ln in xyz) == 4


def test_cli_says_in_one_line_that_a_hexagonal_file_was_made_orthogonal(tmp_path, capsys):
    a = 2.46
    path = tmp_path / "g.extxyz"
    path.write_text(f'2\nLattice="{a} 0 0 {-a / 2} {a * np.sqrt(3) / 2} 0 0 0 3.35"\nC 0 {a / np.sqrt(3)} 1.675\nC {a / 2} {a / (2 * np.sqrt(3))} 1.675\n')
    code, _, err = run(
        capsys,
        "simulate",
        "-o",
        tmp_path / "g.h5",
        "--structure",
        str(path),
        "--potential-gpts",
        "[24, 40]",
        "--slice-thickness",
        "3.35",
        "--scan-gpts",
        "[2, 2]",
        "-q",
        "--no-jax-cache",
    )
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("ptyro: note:")]
    assert len(notes) == 1 and "g.extxyz" in notes[0] and "2.46 × 4.261" in notes[0], err


# --------------------------------------------------------------------------- py4DSTEM-native files

import emdfile  # noqa: E402

_emd_hook = True  # emdfile finds the py4DSTEM stand-ins below through this module


class DataCube(emdfile.Array):
    """py4DSTEM's DataCube is an emdfile Array subclass of this name."""


class Calibration(emdfile.Metadata):
    """py4DSTEM's Calibration is an emdfile Metadata subclass of this name, in the root."""


def test_our_dataset_is_a_calibrated_datacube_for_py4dstem(tiny_file):
    try:
        root = emdfile.read(str(tiny_file))
    except RuntimeError:  # emdfile's walk of sys.modules raced a lazy import
        root = emdfile.read(str(tiny_file))
    cube = root.tree("datacube")
    # (another test module may hold stand-ins of the same names: emdfile takes either)
    assert type(cube).__name__ == "DataCube" and isinstance(cube, emdfile.Array)
    cal = root.metadata["calibration"]
    assert type(cal).__name__ == "Calibration" and isinstance(cal, emdfile.Metadata)
    assert cal["R_pixel_units"] == "A" and cal["Q_pixel_units"] == "A^-1"
    assert cal["R_pixel_size"] == pytest.approx(3.905 / 3, rel=1e-6)  # the scan step
    assert cal["Q_pixel_size"] == pytest.approx(1 / 3.905, rel=1e-6)  # 1 / (32 px × 3.905/32 Å)
    assert cal["beam_energy"] == 200e3 and list(cal["_target_paths"]) == ["/datacube"]


def test_py4dstem_reads_a_calibrated_datacube(tiny_file):
    py4DSTEM = pytest.importorskip("py4DSTEM")
    root = py4DSTEM.read(str(tiny_file))
    cube = root.tree("datacube")
    assert type(cube).__name__ == "DataCube"
    assert cube.calibration.get_R_pixel_size() == pytest.approx(3.905 / 3, rel=1e-6)
    assert cube.calibration.get_Q_pixel_units() == "A^-1"


# --------------------------------------------------------------------------- look without code

from ptyro_workflows.show import default_detectors, idpc, transfer_limited, virtual_images  # noqa: E402


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), step=st.floats(0.1, 1.0))
def test_idpc_inverts_the_centre_of_mass_of_a_known_phase(seed, step):
    """Independent reference: the COM field of a periodic phase φ is ∇φ / 2π (spectral derivative);
    iDPC must give φ back (mean zero)."""
    rng = np.random.default_rng(seed)
    n = 16
    q = np.fft.fftfreq(n, step)
    spec = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) * (np.hypot(q[:, None], q[None, :]) < 0.3 / step)
    phi = np.real(np.fft.ifft2(spec))
    phi -= phi.mean()
    gx = np.real(np.fft.ifft2(2j * np.pi * q[:, None] * np.fft.fft2(phi)))
    gy = np.real(np.fft.ifft2(2j * np.pi * q[None, :] * np.fft.fft2(phi)))
    com = np.stack([gx, gy], -1) / (2 * np.pi)
    np.testing.assert_allclose(idpc(com, (step, step)), phi, atol=1e-9 * (1 + np.abs(phi).max()))


def test_virtual_detectors_covering_every_angle_add_up_to_the_whole_beam():
    rng = np.random.default_rng(0)
    data = rng.random((3, 4, 9, 9))
    k = np.arange(9) - 4.0
    kx, ky = np.meshgrid(k, k, indexing="ij")
    mrad = np.hypot(kx, ky) * 5.0
    dets = {"a": [0, 7], "b": [7, 15], "c": [15, 100]}
    imgs, com, mean, _ = virtual_images(iter(data), mrad, dets, (kx, ky))
    np.testing.assert_allclose(imgs["a"] + imgs["b"] + imgs["c"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(mean, data.reshape(-1, 9, 9).mean(axis=0))
    np.testing.assert_allclose(com[1, 2, 0], (data[1, 2] * kx).sum() / data[1, 2].sum())


def test_transfer_limit_keeps_what_passes_and_removes_the_rest():
    x = np.arange(32) * 0.1
    low = np.cos(2 * np.pi * 0.9375 * x)[:, None] * np.ones(32)[None, :]  # 0.9375 Å⁻¹ (on the grid)
    high = np.cos(2 * np.pi * 3.125 * x)[:, None] * np.ones(32)[None, :]  # 3.125 Å⁻¹
    np.testing.assert_allclose(transfer_limited(low + high, (0.1, 0.1), 2.0), low, atol=1e-12)
    assert default_detectors(20, 137) == {"bf": [0.0, 10.0], "abf": [10.0, 20.0], "adf": [25.0, 60.0], "haadf": [60.0, 137]}
    assert "haadf" not in default_detectors(20, 45)


@pytest.fixture(scope="module")
def tiny_reconstruction(tiny_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "rec.h5"
    assert main(["reconstruct", str(tiny_file), "-o", str(out), "--iterations", "2", "-q", "--no-jax-cache"]) == 0
    return out


def test_show_draws_a_dataset(tiny_file, tmp_path, capsys):
    code, out, err = run(capsys, "show", tiny_file, "-o", tmp_path / "fig", "--position", "0,1")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert names == ["cbed.png", "mean_diffraction.png", "potential.png", "virtual_images.png"]
    assert "3 x 3 scan" in out and "wrote 4 figures" in out
    # refuses to overwrite, and a bad position names the range
    assert run(capsys, "show", tiny_file, "-o", tmp_path / "fig")[0] == 2
    code, _, err = run(capsys, "show", tiny_file, "-o", tmp_path / "f2", "--position", "5,0")
    assert code == 2 and "[0, 2] x [0, 2]" in err and not (tmp_path / "f2").exists()


def test_show_draws_a_reconstruction_against_its_ground_truth(tiny_reconstruction, tmp_path, capsys):
    code, out, err = run(capsys, "show", tiny_reconstruction, "-o", tmp_path / "fig")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["loss.png", "object.png", "phase.png", "probe.png"]
    r = float(out.split("over the scanned area: ")[1].split()[0])
    assert -1 <= r <= 1 and "band-limited to the probe's transfer" in out


def test_show_and_info_on_a_file_import_no_jax(tiny_file, tmp_path):
    code = (
        "import sys\n"
        "from ptyro_workflows.cli import main\n"
        "assert main(['show', sys.argv[1], '-o', sys.argv[2], '-q']) == 0\n"
        "print('JAX', 'jax' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tiny_file), str(tmp_path / "f")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("JAX False"), r.stdout


def test_results_have_a_concise_repr_and_html(tmp_path):
    from ptyro_workflows.simulate import simulate

    res = simulate(TINY, tmp_path / "d.h5", progress=False)
    text = repr(res)
    assert len(text) < 400 and "SrTiO3" in text and "(3, 3, 32, 32)" in text
    assert "<table>" in res._repr_html_()
    assert repr(res.dataset).startswith("Dataset4D(array=float32[3, 3, 32, 32]")
    shown = res.show(tmp_path / "fig")
    assert {p.name for p in shown["files"]} == {"cbed.png", "mean_diffraction.png", "potential.png", "virtual_images.png"}


def test_lazy_package_names_stay_the_functions_after_their_modules_are_imported():
    import importlib

    import ptyro_workflows as pw

    for name in ("simulate", "reconstruct"):
        importlib.import_module(f"ptyro_workflows.{name}")
        assert callable(getattr(pw, name)) and getattr(pw, name).__name__ == name


def test_the_ptyro_process_ends_at_once_with_its_output_whole(tiny_file, tmp_path):
    """``ptyro`` as its own process skips the interpreter's teardown of JAX (cli._end): its
    printed lines still arrive through a pipe, the file it wrote is whole, the status is kept
    (0 for a run, 2 for bad input), and a run that never imports JAX (``ptyro plugins``) ends
    normally with its output."""
    code = "import sys; from ptyro_workflows.cli import main; sys.exit(main())"
    out = tmp_path / "r.h5"
    args = ["reconstruct", str(tiny_file), "-o", str(out), "--iterations", "1", "--no-progress", "--no-jax-cache"]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote" in r.stdout, r.stdout
    with h5py.File(out, "r") as f:
        assert np.isfinite(np.asarray(f["reconstruction/object"])).all()
    bad = subprocess.run([sys.executable, "-c", code, *args[:3], "--iterations", "-3"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error" in bad.stderr
    plugins = subprocess.run([sys.executable, "-c", code, "plugins"], capture_output=True, text=True, timeout=120)
    assert plugins.returncode == 0 and plugins.stdout.strip()


_GC_SCRIPT = """
import gc, sys
import ptyro_workflows.cache as cache
from ptyro_workflows import cli
seen = []
def spy(*a, **k):
    seen.append(("importing jax", gc.isenabled()))
    return real(*a, **k)
real, cache.enable_compilation_cache = cache.enable_compilation_cache, spy
def command(args):
    seen.append(("before", gc.isenabled()))
    cli._start_jax(args, "nothing")
    seen.append(("after", gc.isenabled(), gc.get_freeze_count() > 1000))
    print(seen, flush=True)
    return 0
cli._run_demo = command
if sys.argv[1] == "process":  # the ptyro process itself: main() reads sys.argv and ends with os._exit
    sys.argv = ["ptyro", "demo", "-q"]
    cli.main()
print(cli.main(["demo", "-q"]), gc.isenabled(), gc.get_freeze_count())
"""


@pytest.mark.parametrize("jax_cache", ["on", "0"])
def test_the_ptyro_process_imports_jax_without_the_garbage_collector(jax_cache, tmp_path):
    """The ``ptyro`` process pauses Python's garbage collector while JAX is imported, with the
    compilation cache on or off (off, JAX was imported after the pause, unfrozen, until
    2026-12-02), then resumes it with the imported modules frozen out of its way; a caller's
    interpreter (``main(argv)``) keeps its collector as it is."""
    env = {**os.environ, "PTYRO_JAX_CACHE": str(tmp_path / "c") if jax_cache == "on" else jax_cache}
    r = subprocess.run([sys.executable, "-c", _GC_SCRIPT, "process"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[('before', True), ('importing jax', False), ('after', True, True)]"
    r = subprocess.run([sys.executable, "-c", _GC_SCRIPT, "in-process"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines() == ["[('before', True), ('importing jax', True), ('after', True, False)]", "0 True 0"]


_DEMO_GC_SCRIPT = """
import gc, os, sys
from ptyro_workflows import cli, demo
seen = []
class Drawing:
    def __init__(self):
        seen.append(("blas threads", os.environ.get("OPENBLAS_NUM_THREADS")))
    def close(self):
        seen.append(("closed", gc.isenabled()))
demo._Drawing = Drawing
demo.run_demo = lambda *a, **k: seen.append(("running", gc.isenabled(), "jax" in sys.modules))
cli._end = lambda status: status
if sys.argv[1] == "process":
    sys.argv = ["ptyro", "demo", "-q", "--out", sys.argv[2]]
    cli.main()
else:
    cli.main(["demo", "-q", "--out", sys.argv[2]])
print(seen, gc.isenabled(), gc.get_freeze_count() > 1000)
"""


def test_the_ptyro_demo_runs_without_the_garbage_collector(tmp_path):
    """The demo (a job of fixed size) runs with the collector paused in the ``ptyro`` process
    (the imports it makes as it goes set off 112 collections), resumed after with what it made
    frozen; a caller's interpreter keeps its collector. NumPy, not yet imported, gets one
    OpenBLAS thread unless the caller set a number."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    cases = [
        ("process", env, "[('blas threads', '1'), ('running', False, True), ('closed', True)] True True"),
        ("in-process", env, "[('blas threads', '1'), ('running', True, True), ('closed', True)] True False"),
        ("process", {**env, "OPENBLAS_NUM_THREADS": "2"}, "[('blas threads', '2'), ('running', False, True), ('closed', True)] True True"),
    ]
    for how, environ, expected in cases:
        r = subprocess.run([sys.executable, "-c", _DEMO_GC_SCRIPT, how, str(tmp_path / how)], capture_output=True, text=True, timeout=120, env=environ)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip() == expected, how


_ROCM_SCRIPT = """
import importlib, importlib.metadata as md, sys
sys.path.insert(0, sys.argv[2])  # a ROCm plugin's metadata (its module is not there)
from ptyro_workflows import cli
read, tried = [], []
real_read, real_import = md.PathDistribution.read_text, importlib.import_module
md.PathDistribution.read_text = lambda self, name: (read.append(name) if name == "METADATA" else None) or real_read(self, name)
importlib.import_module = lambda name, *a, **k: (tried.append(name) if name.endswith("rocm_plugin_extension") else None) or real_import(name, *a, **k)
cli._GC["process"] = sys.argv[1] == "process"
with cli._importing_jax():
    import jax
print(len(read), tried, md.distributions.__module__)
"""


def test_the_ptyro_process_imports_jax_without_reading_every_distributions_metadata(tmp_path):
    """JAX's import looks for a ROCm plugin by reading every installed distribution's metadata;
    in the ``ptyro`` process it is given only those whose directory names ROCm, so it reads a
    few (here none but the plugin's) and still finds (tries to import) the plugin; afterwards
    ``distributions`` is the library's own again. A caller's interpreter is left as it is."""
    info = tmp_path / "site" / "jax_rocm7_plugin-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jax-rocm7-plugin\nVersion: 0.1.0\n")
    out = {}
    for how in ("process", "in-process"):
        r = subprocess.run([sys.executable, "-c", _ROCM_SCRIPT, how, str(tmp_path / "site")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        n, rest = r.stdout.strip().split(" ", 1)
        out[how] = int(n), rest
    assert out["process"] == (1, "['jax_rocm7_plugin.rocm_plugin_extension'] importlib.metadata")
    assert out["in-process"][0] > 10 and out["in-process"][1] == out["process"][1]


def test_a_jax_without_the_internals_runs_with_its_own_cache(tmp_path, monkeypatch):
    """Where JAX's internals are not what the executable cache patches, the command runs with
    JAX's persistent cache alone (recorded), rather than failing."""
    from jax._src import pjit

    from ptyro_core import exec_cache
    from ptyro_workflows import cache

    monkeypatch.delenv("PTYRO_EXEC_CACHE", raising=False)
    monkeypatch.delattr(pjit, "_resolve_and_lower")
    try:
        assert cache.enable_compilation_cache(tmp_path / "c") == str(tmp_path / "c")
        assert cache.cache_record()["executable_cache"] == "off" and exec_cache.installed() is None
    finally:
        import jax

        jax.config.update("jax_compilation_cache_dir", None)
