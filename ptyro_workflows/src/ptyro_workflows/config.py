"""The configuration contract: TOML files (read with :mod:`tomllib`) whose table and key names
are public and stable.

A configuration is a plain ``dict`` of tables. :func:`load_config` reads a file, :func:`validate`
checks every table and key (unknown keys are errors naming the key, the known keys of that
table and the closest match), fills in defaults and returns a new dict. :func:`to_toml` writes a
configuration back as TOML text (stored in every output file's provenance, so a run can be
repeated from the file alone).

Units as a user types them: lengths Å, energies eV, angles mrad, aberration azimuths (``phi12``,
``phi21``, ...) and the scan rotation in degrees. :func:`aberrations_for_api` converts azimuths to
radians for the Python API.
"""

import copy
import difflib
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ptyro_core import PtyroTypeError, PtyroValueError

__all__ = [
    "SCHEMA",
    "ABERRATION_KEYS",
    "load_config",
    "validate",
    "simulation_config",
    "reconstruction_config",
    "to_toml",
    "merge",
    "aberrations_for_api",
    "ALIAS_OF",
    "same_quantity",
    "annular_detectors",
]

#: polar aberration symbols (magnitudes, Å) and azimuths (degrees in configs) up to 5th order,
#: plus the common aliases (abTEM's names); ``defocus`` = -C10.
_MAGNITUDES = ("C10", "C12", "C21", "C23", "C30", "C32", "C34", "C41", "C43", "C45", "C50", "C52", "C54", "C56")
_AZIMUTHS = tuple("phi" + s[1:] for s in _MAGNITUDES if s[2] != "0")
_ALIASES = ("defocus", "Cs", "C5", "astigmatism", "astigmatism_angle", "coma", "coma_angle")
ABERRATION_KEYS: tuple[str, ...] = _MAGNITUDES + _AZIMUTHS + _ALIASES
_AZIMUTH_KEYS = frozenset(_AZIMUTHS + ("astigmatism_angle", "coma_angle"))
#: alias -> the coefficient it names (one physical quantity, two spellings; ``defocus`` = -C10)
ALIAS_OF: dict[str, str] = {
    "defocus": "C10",
    "Cs": "C30",
    "C5": "C50",
    "astigmatism": "C12",
    "astigmatism_angle": "phi12",
    "coma": "C21",
    "coma_angle": "phi21",
}
_SPELLINGS: dict[str, tuple[str, str]] = {**{a: (a, c) for a, c in ALIAS_OF.items()}, **{c: (a, c) for a, c in ALIAS_OF.items()}}

_REQUIRED = object()

#: table -> key -> default. ``None`` means "not set" (derived or optional).
SCHEMA: dict[str, dict[str, Any]] = {
    "specimen": {
        "structure": "SrTiO3",
        "repeat": [1, 1, 1],
        "zone_axis": [0, 0, 1],
    },
    "potential": {
        "parametrization": "kirkland",
        "gpts": None,
        "sampling": None,
        "slice_thickness": 2.0,
        "projection": "infinite",
    },
    "probe": {
        "name": "aberrated",
        "energy": 200e3,
        "semiangle_cutoff": 20.0,
        **{k: None for k in ABERRATION_KEYS},
    },
    "scan": {
        "start": None,
        "end": None,
        "gpts": None,
        "step": None,
        "rotation": 0.0,
    },
    "frozen_phonons": {
        "configurations": 1,
        "sigmas": 0.0,
        "seed": 0,
    },
    "detectors": {
        "pixelated": True,
        "dose": None,
        "dose_per_position": None,
        "dose_seed": 0,
        # any other key: an annular detector name -> [inner, outer] mrad
    },
    "simulation": {
        "simulator": "multislice",
        "propagator": "fresnel",
        "backend": "auto",
        "batch_size": 16,
        "options": {},
    },
    "reconstruction": {
        "algorithm": "single_slice",
        "loss": "auto",
        "optimizer": "adam",
        "iterations": 20,
        "batch_size": 64,
        "learning_rate": None,
        "probe_learning_rate": None,
        "num_modes": 1,
        "num_slices": 1,
        "slice_thickness": None,
        "seed": 0,
        "checkpoint": None,
        "checkpoint_every": None,
        "optics_from": None,
        "options": {},
        # issue 21: a reconstruction that forgives nominal optics
        "fit_aberrations": False,
        "scan_scale": "hold",
    },
}

#: which tables each kind of run reads
SIMULATION_TABLES = ("specimen", "potential", "probe", "scan", "frozen_phonons", "detectors", "simulation")
RECONSTRUCTION_TABLES = ("probe", "scan", "reconstruction")
_FREE_TABLES = {"detectors"}  # extra keys allowed (annular detectors by name)


def annular_detectors(detectors: Mapping[str, Any]) -> dict[str, Any]:
    """The annular detectors of a ``[detectors]`` table (name -> [inner, outer] mrad), without
    its settings (pixelated, dose, ...)."""
    return {k: v for k, v in detectors.items() if k not in SCHEMA["detectors"]}


def _closest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f"; closest match: {close[0]!r}" if close else ""


def _unknown(where: str, key: str, known: list[str]) -> PtyroValueError:
    return PtyroValueError(f"unknown key {key!r} in {where}; known keys: {', '.join(known)}{_closest(key, known)}")


def load_config(path: str | Path | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a TOML configuration file (or copy a mapping) without filling defaults.

    Raises :class:`PtyroValueError` naming the file and the line for a missing file or a TOML
    syntax error.
    """
    if path is None:
        return {}
    if isinstance(path, Mapping):
        return copy.deepcopy(dict(path))
    p = Path(path)
    if not p.exists():
        raise PtyroValueError(f"configuration file {str(p)!r} not found; expected a TOML file")
    if p.is_dir():
        raise PtyroValueError(f"configuration file {str(p)!r} is a directory; expected a TOML file")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise PtyroValueError(f"configuration file {str(p)!r} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise PtyroValueError(f"configuration file {str(p)!r} is not a UTF-8 text (TOML) file") from None


def same_quantity(key: str) -> tuple[str, ...]:
    """Every spelling of the physical quantity ``key`` names (``defocus`` -> (defocus, C10))."""
    return _SPELLINGS.get(key, (key,))


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables of ``override`` merged into ``base`` key by key (override wins); None values in
    ``override`` are skipped (so unset command-line flags keep the file's values). An override
    replaces the base's value of the same physical quantity whichever spelling either used
    (``--defocus 30`` over a file's ``C10 = -60`` gives defocus 30, not both)."""
    out = copy.deepcopy(dict(base))
    for table, values in override.items():
        if isinstance(values, Mapping):
            tgt = dict(out.get(table) or {})
            for k, v in values.items():
                if v is not None:
                    for other in same_quantity(k):
                        if other != k and other not in values:
                            tgt.pop(other, None)
                    tgt[k] = copy.deepcopy(v)
            out[table] = tgt
        elif values is not None:
            out[table] = values
    return out


# --------------------------------------------------------------------------- checks


def _number(where: str, v: Any, *, positive: bool = False, nonneg: bool = False, integer: bool = False) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        what = "an integer" if integer else "a number"
        raise PtyroTypeError(f"{where}: expected {what}, got {v!r}")
    if integer and not float(v).is_integer():
        raise PtyroTypeError(f"{where}: expected an integer, got {v!r}")
    if not math.isfinite(v):
        raise PtyroValueError(f"{where}: expected a finite number, got {v!r}")
    if positive and v <= 0:
        raise PtyroValueError(f"{where}: expected a positive value, got {v!r}")
    if nonneg and v < 0:
        raise PtyroValueError(f"{where}: expected a value >= 0, got {v!r}")
    return int(v) if integer else float(v)


def _vector(where: str, v: Any, n: int, **kw: Any) -> list:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and n == 2:
        v = [v, v]
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise PtyroTypeError(f"{where}: expected a list of {n} numbers, got {v!r}")
    return [_number(where, x, **kw) for x in v]


def _string(where: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise PtyroTypeError(f"{where}: expected a non-empty string, got {v!r}")
    return v


def _check_table(name: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise PtyroTypeError(f"[{name}]: expected a table, got {table!r}")
    known = list(SCHEMA[name])
    for key in table:
        if key not in known and name not in _FREE_TABLES:
            raise _unknown(f"[{name}]", key, known)
    out = {k: copy.deepcopy(v) for k, v in SCHEMA[name].items() if v is not None}
    out.update({k: v for k, v in table.items() if v is not None})
    return out


def validate(config: Mapping[str, Any], tables: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A checked copy of ``config`` with defaults filled in for ``tables`` (default: every table
    present). Unknown tables and keys raise :class:`PtyroValueError` with the known names."""
    if not isinstance(config, Mapping):
        raise PtyroTypeError(f"configuration: expected a table of tables, got {type(config).__name__}")
    allowed = list(tables or SCHEMA)
    for name in config:
        if name not in SCHEMA:
            raise PtyroValueError(f"unknown table [{name}]; known tables: {', '.join(SCHEMA)}{_closest(name, list(SCHEMA))}")
        if tables is not None and name not in allowed:
            # a reconstruction may be given a full simulation config: keep other tables unchecked
            continue
    out: dict[str, Any] = {}
    for name in allowed:
        out[name] = _check_table(name, config.get(name, {}))
    _check_values(out)  # only the tables read (a simulation's [detectors] given to a reconstruction is kept as is)
    for name in config:
        if name not in out:
            out[name] = copy.deepcopy(config[name])
    return out


def _check_values(c: dict[str, Any]) -> None:
    if "specimen" in c:
        s = c["specimen"]
        if isinstance(s["structure"], str) or not (hasattr(s["structure"], "get_positions") or hasattr(s["structure"], "numbers")):
            _string("[specimen] structure (a name or a file; in Python also an ase.Atoms or ptyro_core.Atoms)", s["structure"])
        s["repeat"] = _vector("[specimen] repeat", s["repeat"], 3, positive=True, integer=True)
        s["zone_axis"] = _vector("[specimen] zone_axis", s["zone_axis"], 3, integer=True)
        if all(v == 0 for v in s["zone_axis"]):
            raise PtyroValueError("[specimen] zone_axis: expected a non-zero direction [u, v, w], got [0, 0, 0]")
    if "potential" in c:
        p = c["potential"]
        _string("[potential] parametrization", p["parametrization"])
        if "gpts" in p and "sampling" in p:
            raise PtyroValueError("[potential]: give either gpts or sampling, not both")
        if isinstance(p.get("gpts"), str) and p["gpts"] != "auto":  # issue 14
            raise PtyroValueError(f'[potential] gpts: expected [nx, ny] or "auto", got {p["gpts"]!r}')
        if "gpts" in p and p["gpts"] != "auto":  # "auto": chosen from the detectors (issue 14)
            p["gpts"] = _vector("[potential] gpts", p["gpts"], 2, positive=True, integer=True)
        if "sampling" in p:
            p["sampling"] = _vector("[potential] sampling", p["sampling"], 2, positive=True)
        p["slice_thickness"] = _number("[potential] slice_thickness", p["slice_thickness"], positive=True)
        _string("[potential] projection", p["projection"])
    if "probe" in c:
        p = c["probe"]
        _string("[probe] name", p["name"])
        p["energy"] = _number("[probe] energy (eV)", p["energy"], positive=True)
        if p["energy"] < 1e3:
            raise PtyroValueError(
                f"[probe] energy: {p['energy']:g} eV is below 1 keV; energies are in eV: did you mean {p['energy'] * 1e3:g} eV ({p['energy']:g}e3)?"
            )
        p["semiangle_cutoff"] = _number("[probe] semiangle_cutoff (mrad)", p["semiangle_cutoff"], positive=True)
        if p["semiangle_cutoff"] < 0.2:
            raise PtyroValueError(
                f"[probe] semiangle_cutoff: {p['semiangle_cutoff']:g} mrad looks like radians; semi-angles are in mrad: did you mean {p['semiangle_cutoff'] * 1e3:g} mrad?"
            )
        for alias, coeff in ALIAS_OF.items():
            if alias in p and coeff in p:
                sign = "-" if alias == "defocus" else ""
                raise PtyroValueError(
                    f"[probe]: both {alias} = {p[alias]!r} and {coeff} = {p[coeff]!r} are given; they are one quantity ({alias} = {sign}{coeff}): expected only one of them"
                )
        for k in ABERRATION_KEYS:
            if k in p:
                p[k] = _number(f"[probe] {k}", p[k])
    if "scan" in c:
        s = c["scan"]
        for k in ("start", "end"):
            if k in s:
                s[k] = _vector(f"[scan] {k} (Å)", s[k], 2)
        if "gpts" in s:
            s["gpts"] = _vector("[scan] gpts", s["gpts"], 2, positive=True, integer=True)
        if "step" in s:
            s["step"] = _vector("[scan] step (Å)", s["step"], 2, positive=True)
            if min(s["step"]) < 0.05:
                nm = [round(v * 10, 6) for v in s["step"]]
                raise PtyroValueError(f"[scan] step: {s['step']} Å is below 0.05 Å; steps are in Å: did you mean {nm} Å (the value in nm)?")
        s["rotation"] = _number("[scan] rotation (degrees)", s["rotation"])
        if "start" in s and "end" in s and any(e <= a for a, e in zip(s["start"], s["end"])):
            raise PtyroValueError(f"[scan]: expected end > start in x and y, got start={s['start']} end={s['end']}")
    if "frozen_phonons" in c:
        f = c["frozen_phonons"]
        f["configurations"] = _number("[frozen_phonons] configurations", f["configurations"], positive=True, integer=True)
        f["seed"] = _number("[frozen_phonons] seed", f["seed"], nonneg=True, integer=True)
        if isinstance(f["sigmas"], Mapping):
            f["sigmas"] = {str(k): _number(f"[frozen_phonons] sigmas.{k} (Å)", v, nonneg=True) for k, v in f["sigmas"].items()}
        else:
            f["sigmas"] = _number("[frozen_phonons] sigmas (Å)", f["sigmas"], nonneg=True)
    if "detectors" in c:
        d = c["detectors"]
        if not isinstance(d["pixelated"], bool):
            raise PtyroTypeError(f"[detectors] pixelated: expected true or false, got {d['pixelated']!r}")
        if "dose" in d and "dose_per_position" in d:
            raise PtyroValueError(
                f"[detectors]: both dose = {d['dose']!r} (e⁻/Å²) and dose_per_position = {d['dose_per_position']!r} (e⁻) are given; expected only one of them"
            )
        for k in ("dose", "dose_per_position"):
            if k in d:
                d[k] = _number(f"[detectors] {k}", d[k], positive=True)
        d["dose_seed"] = _number("[detectors] dose_seed", d["dose_seed"], nonneg=True, integer=True)
        for k, v in annular_detectors(d).items():
            rng = _vector(f"[detectors] {k} (annular range [inner, outer] mrad)", v, 2, nonneg=True)
            if rng[1] <= rng[0]:
                raise PtyroValueError(f"[detectors] {k}: expected inner < outer (mrad), got {v!r}")
            d[k] = rng
    if "simulation" in c:
        s = c["simulation"]
        _string("[simulation] simulator", s["simulator"])
        _string("[simulation] propagator", s["propagator"])
        _string("[simulation] backend", s["backend"])
        s["batch_size"] = _number("[simulation] batch_size", s["batch_size"], positive=True, integer=True)
        if not isinstance(s["options"], Mapping):
            raise PtyroTypeError(f"[simulation] options: expected a table, got {s['options']!r}")
    if "reconstruction" in c:
        r = c["reconstruction"]
        for k in ("algorithm", "loss", "optimizer"):
            _string(f"[reconstruction] {k}", r[k])
        for k in ("iterations", "batch_size", "num_modes", "num_slices"):
            r[k] = _number(f"[reconstruction] {k}", r[k], positive=True, integer=True)
        r["seed"] = _number("[reconstruction] seed", r["seed"], nonneg=True, integer=True)
        if "checkpoint_every" in r:
            r["checkpoint_every"] = _number("[reconstruction] checkpoint_every", r["checkpoint_every"], positive=True, integer=True)
        if "learning_rate" in r:
            r["learning_rate"] = _number("[reconstruction] learning_rate", r["learning_rate"], positive=True)
        if "probe_learning_rate" in r:
            r["probe_learning_rate"] = _number("[reconstruction] probe_learning_rate", r["probe_learning_rate"], nonneg=True)
        if "slice_thickness" in r:
            r["slice_thickness"] = _number("[reconstruction] slice_thickness (Å)", r["slice_thickness"], positive=True)
        if "checkpoint" in r:
            _string("[reconstruction] checkpoint", r["checkpoint"])
        if not isinstance(r["options"], Mapping):
            raise PtyroTypeError(f"[reconstruction] options: expected a table, got {r['options']!r}")
        if not isinstance(r["fit_aberrations"], bool):
            raise PtyroTypeError(f"[reconstruction] fit_aberrations: expected true or false, got {r['fit_aberrations']!r}")
        if r["scan_scale"] not in ("hold", "fit"):
            raise PtyroValueError(f"[reconstruction] scan_scale: expected 'hold' or 'fit', got {r['scan_scale']!r}")


def simulation_config(config: Any = None) -> dict[str, Any]:
    """Read (path or mapping) and validate a simulation configuration, defaults filled in."""
    return validate(load_config(config), SIMULATION_TABLES)


def reconstruction_config(config: Any = None) -> dict[str, Any]:
    """Read (path or mapping) and validate a reconstruction configuration, defaults filled in."""
    return validate(load_config(config), RECONSTRUCTION_TABLES)


def aberrations_for_api(probe_table: Mapping[str, Any]) -> dict[str, float]:
    """The aberrations of a ``[probe]`` table for the Python API: magnitudes in Å as given,
    azimuths converted from degrees to radians."""
    out: dict[str, float] = {}
    for k in ABERRATION_KEYS:
        v = probe_table.get(k)
        if v is None:
            continue
        out[k] = math.radians(float(v)) if k in _AZIMUTH_KEYS else float(v)
    return out


# --------------------------------------------------------------------------- TOML writer


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        out = []
        for ch in v:
            if ch == "\\":
                out.append("\\\\")
            elif ch == '"':
                out.append('\\"')
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if hasattr(v, "tolist"):
        return _toml_value(v.tolist())
    raise PtyroTypeError(f"cannot write {v!r} ({type(v).__name__}) as TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(str(k))


def to_toml(config: Mapping[str, Any]) -> str:
    """TOML text for a configuration (tables of scalars, lists and inline tables)."""
    lines: list[str] = []
    for table, values in config.items():
        if not isinstance(values, Mapping):
            lines.insert(0, f"{_toml_key(table)} = {_toml_value(values)}")
            continue
        lines.append(f"[{_toml_key(table)}]")
        for k, v in values.items():
            if v is None:
                continue
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


#: one line per key: what it means, its units (also the ``--help`` text of the matching flag
#: and the configuration reference in docs/configuration.md)
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "specimen": {
        "structure": "built-in crystal name (SrTiO3, Si, Au, GaAs, MoS2, graphene) or a structure file (.xyz, .extxyz; .cif/.vasp with the ase extra; any cell shape); in Python also an ase.Atoms",
        "repeat": "unit cells along x, y, z [nx, ny, nz]",
        "zone_axis": "crystal direction [u, v, w] along the beam (z); for a structure file or ase.Atoms of any cell, the orthorhombic supercell along it is built (with a note)",
    },
    "potential": {
        "parametrization": "registered potential name (kirkland, or a plugin's, e.g. lobato)",
        "gpts": 'grid points [nx, ny] over the cell (also the diffraction pattern size); or give sampling; "auto": chosen so that the largest detector angle is at most 0.6 of the band limit',
        "sampling": "real-space pixel size in Å (scalar or [dx, dy]); default 0.1 when gpts is not given",
        "slice_thickness": "slice thickness in Å",
        "projection": "how atoms are projected into slices (infinite, or what the parametrization supports)",
    },
    "probe": {
        "name": "registered probe name (aberrated, or a plugin's)",
        "energy": "beam energy in eV",
        "semiangle_cutoff": "probe-forming aperture semiangle in mrad",
        **{k: f"aberration {k} in Å (C10 = -defocus)" for k in _MAGNITUDES},
        **{k: f"aberration azimuth {k} in degrees" for k in _AZIMUTHS},
        "defocus": "defocus in Å (= -C10)",
        "Cs": "spherical aberration in Å (= C30)",
        "C5": "fifth-order spherical aberration in Å (= C50)",
        "astigmatism": "two-fold astigmatism in Å (= C12)",
        "astigmatism_angle": "two-fold astigmatism azimuth in degrees (= phi12)",
        "coma": "axial coma in Å (= C21)",
        "coma_angle": "axial coma azimuth in degrees (= phi21)",
    },
    "scan": {
        "start": "first probe position [x, y] in Å (default [0, 0])",
        "end": "end of the raster [x, y] in Å, exclusive (default: the cell size)",
        "gpts": "probe positions [Rx, Ry] (default [16, 16], or from step)",
        "step": "scan step [dx, dy] in Å (reconstruction: replaces the file's step)",
        "rotation": "scan rotation in degrees, counter-clockwise from x towards y (reconstruction)",
    },
    "frozen_phonons": {
        "configurations": "number of frozen-phonon configurations averaged",
        "sigmas": "rms displacement in Å: one number for all atoms, or a table by element {Sr = 0.08, O = 0.1}",
        "seed": "random seed of the displacements",
    },
    "detectors": {
        "pixelated": "store the 4D data (true) or only the virtual images (false)",
        "dose": "electron dose in e⁻/Å² (per scan step area): patterns become seeded Poisson counts stored as integers (default: no noise, fractions of the beam)",
        "dose_per_position": "electrons per probe position instead of dose (one of the two)",
        "dose_seed": "random seed of the Poisson counts",
        "<name>": "an annular detector: [inner, outer] in mrad, e.g. haadf = [70, 200] (stored as a virtual image)",
    },
    "simulation": {
        "simulator": "registered simulator name (multislice, or a plugin's, e.g. prism)",
        "propagator": "registered propagator name (fresnel)",
        "backend": "far-field back end: auto (a registered one on a single CPU device, else XLA), xla, or a registered name (native)",
        "batch_size": "probe positions per batch (memory is bounded by the batch)",
        "options": "table of extra options passed to the simulator",
    },
    "reconstruction": {
        "algorithm": "registered reconstruction name (single_slice, multislice, mixed_state, ...)",
        "loss": "registered loss name (amplitude, intensity, poisson, ...), or auto: poisson for counted data, amplitude otherwise",
        "optimizer": "registered optimizer name (adam, sgd, ...)",
        "iterations": "passes over the data",
        "batch_size": "patterns per gradient step",
        "learning_rate": "object learning rate (default: the algorithm's), decayed by a cosine schedule",
        "probe_learning_rate": "probe learning rate (default: the algorithm's; 0 keeps the probe fixed)",
        "num_modes": "probe modes (mixed-state ptychography)",
        "num_slices": "object slices (multislice ptychography)",
        "slice_thickness": "object slice thickness in Å (multislice)",
        "seed": "random seed (batch order, mode initialisation)",
        "checkpoint": "checkpoint file written during the run",
        "checkpoint_every": "iterations between checkpoints (default 1, when checkpoint is set)",
        "optics_from": "TOML file whose [probe] optics (e.g. fitted by --algorithm parallax with --algorithm-option optics_out=FILE) replace [probe]'s",
        "options": "table of extra options passed to the algorithm (e.g. fit_positions, tv_weight, lr_schedule, learning_rates = {positions = 0.01})",
        "fit_aberrations": "fit C10, C12/phi12 and C30 of the probe by autodiff (alone for 3 passes, then with the pixel-wise probe)",
        "scan_scale": "position correction: hold the scan's step (only its rotation is fitted) or fit its full 2x2 map",
    },
}


# --------------------------------------------------------------------------- [preprocess] (issue 21)
# Kept in its own block: experimental data before a reconstruction (ptyro_workflows.preprocess
# checks the values). Keys are unique across the reconstruction tables, so each is a plain flag.
SCHEMA["preprocess"] = {
    "preprocess": "auto",
    "bad_pixels": True,
    "detector_mask": None,
    "dark": None,
    "gain": None,
    "descan": "plane",
    "recentre": True,
    "scan_frame": "auto",
    "estimate_defocus": True,
    "crop": None,
    "bin": 1,
    "max_curl": 0.25,
    "max_offset": 0.5,
    "refine": True,
}
DESCRIPTIONS["preprocess"] = {
    "preprocess": 'run the preprocessing before reconstructing: true, false, or "auto" (on for data from elsewhere, off for our own simulated files, which are only checked)',
    "bad_pixels": "find hot and dead pixels in the mean pattern and repair them",
    "detector_mask": "a .npy boolean (Qx, Qy) array, true where pixels are good (the others are repaired)",
    "dark": "a .npy (Qx, Qy) dark reference subtracted from every pattern",
    "gain": "a .npy (Qx, Qy) gain reference multiplied into every pattern",
    "descan": "descan model of the pattern centres: plane (linear in the scan), free (each pattern its own), constant, none",
    "recentre": "move every pattern so that its descan centre is on the detector centre (sub-pixel)",
    "scan_frame": "scan rotation and transpose from the DPC curl: auto (find and apply), check (refuse a clearly wrong frame), keep",
    "estimate_defocus": "estimate the defocus and astigmatism from the bright-field parallax (when ptyro_invert.direct is present)",
    "crop": "crop the detector to this many pixels (square, centred) after re-centring",
    "bin": "bin the detector by this factor after cropping",
    "max_curl": "relative DPC curl below which a scan frame counts as found",
    "max_offset": "largest mean offset (px) of the pattern centres from the detector centre accepted without preprocessing",
    "refine": "after preprocessing, the reconstruction refines what it estimated: scan rotation (position correction, scale held), C10/C12/C30, and no phase ramp",
}
RECONSTRUCTION_TABLES = (*RECONSTRUCTION_TABLES, "preprocess")
