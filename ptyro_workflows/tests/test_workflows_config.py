"""The configuration contract: key names, defaults, unknown keys, units, TOML round trip."""

import math
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptyro_core import PtyroTypeError, PtyroValueError
from ptyro_workflows.config import (
    ABERRATION_KEYS,
    DESCRIPTIONS,
    SCHEMA,
    aberrations_for_api,
    load_config,
    merge,
    reconstruction_config,
    simulation_config,
    to_toml,
    validate,
)

ISSUE_EXAMPLE = """
[specimen]
structure = "SrTiO3"
repeat = [8, 8, 10]
zone_axis = [0, 0, 1]

[potential]
parametrization = "kirkland"
gpts = [256, 256]
slice_thickness = 1.9525
projection = "infinite"

[probe]
energy = 200e3
semiangle_cutoff = 20.0
C10 = -50.0
C12 = 10.0
phi12 = 30.0
C30 = 1e4

[scan]
start = [0.0, 0.0]
end = [3.905, 3.905]
gpts = [16, 16]

[frozen_phonons]
configurations = 4
sigmas = {Sr = 0.08, Ti = 0.07, O = 0.09}
seed = 3

[detectors]
pixelated = true
haadf = [70, 200]
bf = [0, 20]

[simulation]
simulator = "multislice"
batch_size = 32
"""


def test_issue_example_parses_with_the_documented_keys(tmp_path):
    p = tmp_path / "sim.toml"
    p.write_text(ISSUE_EXAMPLE)
    cfg = simulation_config(p)
    assert cfg["specimen"]["repeat"] == [8, 8, 10]
    assert cfg["potential"]["gpts"] == [256, 256]
    assert cfg["probe"]["energy"] == 200e3
    assert cfg["frozen_phonons"]["sigmas"] == {"Sr": 0.08, "Ti": 0.07, "O": 0.09}
    assert cfg["detectors"]["haadf"] == [70.0, 200.0]
    assert cfg["simulation"]["propagator"] == "fresnel"  # default filled in


def test_sampling_scalar_becomes_a_pair():
    cfg = simulation_config({"potential": {"sampling": 0.05}})
    assert cfg["potential"]["sampling"] == [0.05, 0.05]


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"probe": {"semiangle": 20}}, "closest match: 'semiangle_cutoff'"),
        ({"potentail": {}}, "closest match: 'potential'"),
        ({"reconstruction": {"iteration": 3}}, "closest match: 'iterations'"),
        ({"specimen": {"structur": "Si"}}, "known keys: structure, repeat, zone_axis"),
    ],
)
def test_unknown_keys_name_the_key_the_known_keys_and_the_closest(config, needle):
    with pytest.raises(PtyroValueError, match="unknown") as e:
        validate(config)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("config", "err"),
    [
        ({"probe": {"energy": -200e3}}, PtyroValueError),
        ({"probe": {"semiangle_cutoff": 0}}, PtyroValueError),
        ({"probe": {"energy": "200kV"}}, PtyroTypeError),
        ({"scan": {"start": [1, 1], "end": [0, 2]}}, PtyroValueError),
        ({"scan": {"gpts": [16]}}, PtyroTypeError),
        ({"potential": {"gpts": [64, 64], "sampling": 0.1}}, PtyroValueError),
        ({"detectors": {"haadf": [200, 70]}}, PtyroValueError),
        ({"specimen": {"zone_axis": [0, 0, 0]}}, PtyroValueError),
        ({"reconstruction": {"iterations": 2.5}}, PtyroTypeError),
        ({"frozen_phonons": {"sigmas": {"Sr": -0.1}}}, PtyroValueError),
    ],
)
def test_non_physical_values_are_refused(config, err):
    with pytest.raises(err):
        validate(config)


def test_azimuths_are_degrees_in_configs_and_radians_in_the_api():
    ab = aberrations_for_api({"C12": 10.0, "phi12": 90.0, "astigmatism_angle": 180.0, "C10": -5.0})
    assert ab["C12"] == 10.0 and ab["C10"] == -5.0
    assert math.isclose(ab["phi12"], math.pi / 2)
    assert math.isclose(ab["astigmatism_angle"], math.pi)


def test_merge_lets_flags_override_and_skips_unset():
    base = {"probe": {"energy": 300e3, "C10": 5.0}}
    out = merge(base, {"probe": {"energy": 80e3, "C10": None}, "scan": {"gpts": [4, 4]}})
    assert out == {"probe": {"energy": 80e3, "C10": 5.0}, "scan": {"gpts": [4, 4]}}
    assert base["probe"]["energy"] == 300e3


def test_reconstruction_defaults_match_the_issue():
    r = reconstruction_config({})["reconstruction"]
    assert (r["algorithm"], r["loss"], r["optimizer"], r["iterations"], r["batch_size"]) == ("single_slice", "auto", "adam", 20, 64)


def test_every_key_is_documented():
    for table, keys in SCHEMA.items():
        for k in keys:
            assert k in DESCRIPTIONS[table], f"[{table}] {k} has no description"
    assert set(ABERRATION_KEYS) <= set(DESCRIPTIONS["probe"])


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(PtyroValueError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[probe]\nenergy = = 3\n")
    with pytest.raises(PtyroValueError, match="line 2"):
        load_config(bad)


values = st.one_of(
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=8),
    st.booleans(),
    st.lists(st.integers(0, 100), max_size=3),
)


@given(st.dictionaries(st.sampled_from(["probe", "scan", "extra"]), st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), values, max_size=4), max_size=3))
def test_to_toml_round_trips(config):
    assert tomllib.loads(to_toml(config)) == config


def test_validated_config_round_trips_through_toml():
    cfg = simulation_config(tomllib.loads(ISSUE_EXAMPLE))
    assert simulation_config(tomllib.loads(to_toml(cfg))) == cfg


def test_azimuth_degrees_reach_the_probe_as_radians():
    """A probe with axial coma along φ21 = 45° (as typed in a config) is symmetric under
    x <-> y, along φ21 = 0° it is not; were the degrees passed on as radians, 45 would break
    the symmetry."""
    import numpy as np

    from ptyro_core import Grid
    from ptyro_workflows.simulate import build_probe

    grid = Grid((48, 48), (0.2, 0.2))
    table = simulation_config({"probe": {"semiangle_cutoff": 25.0, "C21": 2000.0, "phi21": 45.0}})["probe"]
    amp = np.abs(np.asarray(build_probe(grid, table).array[0]))
    np.testing.assert_allclose(amp, amp.T, atol=1e-6 * amp.max())
    table0 = simulation_config({"probe": {"semiangle_cutoff": 25.0, "C21": 2000.0, "phi21": 0.0}})["probe"]
    amp0 = np.abs(np.asarray(build_probe(grid, table0).array[0]))
    assert np.abs(amp0 - amp0.T).max() > 0.05 * amp0.max()


# --------------------------------------------------------------------------- the one declarative schema


def test_the_schema_classes_give_defaults_descriptions_and_help():
    """SCHEMA and DESCRIPTIONS are views of the table classes, and every generated flag's --help
    text is its key's description (with the default), so the schema is written once."""
    from ptyro_workflows.cli import build_parser
    from ptyro_workflows.config import TABLES, Key

    for name, table in TABLES.items():
        keys = table.keys()
        assert keys and all(isinstance(k, Key) and k.doc for k in keys.values()), name
        assert SCHEMA[name] == {k: key.default for k, key in keys.items()}
        assert all(DESCRIPTIONS[name][k] == key.doc for k, key in keys.items())
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["simulate"]
    helps = {a.dest: a.help for a in sub._actions}
    assert helps["cfg__probe__energy"] == "beam energy in eV (default: 200000.0)"
    assert helps["cfg__scan__step"] == TABLES["scan"].keys()["step"].doc
    assert helps["cfg__potential__gpts"].startswith(TABLES["potential"].keys()["gpts"].doc)


def test_the_template_lists_every_key_and_reads_back_as_the_defaults():
    from ptyro_workflows.config import RECONSTRUCTION_TABLES, SIMULATION_TABLES, TABLES, template_toml

    for tables in (SIMULATION_TABLES, RECONSTRUCTION_TABLES):
        text = template_toml(tables)
        for name in tables:
            for k, key in TABLES[name].keys().items():
                assert f"# {key.doc}\n" in text and (f"\n{k} = " in text or f"\n# {k} =" in text), (name, k)
        assert validate(tomllib.loads(text), tables) == validate({}, tables)
    assert "# <name>: an annular detector" in template_toml(("detectors",))
    # with a configuration: its values, the rest defaults
    text = template_toml(("probe",), {"probe": {"energy": 80e3, "defocus": 25.0}})
    assert validate(tomllib.loads(text), ("probe",))["probe"] == validate({"probe": {"energy": 80e3, "defocus": 25.0}}, ("probe",))["probe"]


def test_to_toml_writes_the_schema_order():
    text = to_toml({"reconstruction": {"iterations": 3, "algorithm": "multislice"}, "probe": {"C10": -5.0, "energy": 3e5}})
    assert text.index("[probe]") < text.index("[reconstruction]")
    assert text.index("energy") < text.index("C10") and text.index("algorithm") < text.index("iterations")


@given(
    energy=st.floats(1e3, 1e6),
    alpha=st.floats(0.2, 100.0),
    defocus=st.one_of(st.none(), st.floats(-1e3, 1e3)),
    gpts=st.lists(st.integers(1, 512), min_size=2, max_size=2),
    iterations=st.integers(1, 1000),
    haadf=st.tuples(st.floats(0.0, 100.0), st.floats(0.1, 100.0)).map(lambda t: [t[0], t[0] + t[1]]),
)
def test_validated_configurations_round_trip_through_the_writer(energy, alpha, defocus, gpts, iterations, haadf):
    from ptyro_workflows.config import template_toml

    cfg = {
        "probe": {"energy": energy, "semiangle_cutoff": alpha, "defocus": defocus},
        "potential": {"gpts": gpts},
        "detectors": {"haadf": haadf},
        "reconstruction": {"iterations": iterations},
    }
    checked = validate(cfg)
    assert validate(tomllib.loads(to_toml(checked))) == checked
    assert validate(tomllib.loads(template_toml(config=checked))) == checked
