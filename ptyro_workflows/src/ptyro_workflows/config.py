"""The configuration contract: TOML files (read with :mod:`tomllib`) whose table and key names
are public and stable.

The schema is declared once, as one class per TOML table (:class:`Table` subclasses in
:data:`TABLES`) whose :class:`Key` attributes give each key's default, its check and its one-line
description. From it come the validation (:func:`validate`), the command-line flags and their
``--help`` text (``ptyro_workflows.cli``), the TOML writer (:func:`to_toml`, in the schema's
order; :func:`template_toml`, every key with its description) and the views :data:`SCHEMA`
(defaults) and :data:`DESCRIPTIONS`.

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
import dataclasses
import difflib
import math
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ptyro_core import PtyroTypeError, PtyroValueError
from ptyro_core.conventions import ALIASES, AZIMUTHS, POLAR_SYMBOLS

__all__ = [
    "Key",
    "Table",
    "TABLES",
    "SCHEMA",
    "DESCRIPTIONS",
    "template_toml",
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
_MAGNITUDES = tuple(POLAR_SYMBOLS)  # the symbols of ptyro_core.conventions
_AZIMUTHS = AZIMUTHS
_ALIASES = ("defocus", *ALIASES)
ABERRATION_KEYS: tuple[str, ...] = _MAGNITUDES + _AZIMUTHS + _ALIASES
_AZIMUTH_KEYS = frozenset(_AZIMUTHS + ("astigmatism_angle", "coma_angle"))
#: alias -> the coefficient it names (one physical quantity, two spellings; ``defocus`` = -C10)
ALIAS_OF: dict[str, str] = {"defocus": "C10", **ALIASES}
_SPELLINGS: dict[str, tuple[str, str]] = {**{a: (a, c) for a, c in ALIAS_OF.items()}, **{c: (a, c) for a, c in ALIAS_OF.items()}}


def annular_detectors(detectors: Mapping[str, Any]) -> dict[str, Any]:
    """The annular detectors of a ``[detectors]`` table (name -> [inner, outer] mrad), without
    its settings (pixelated, dose, ...)."""
    return {k: v for k, v in detectors.items() if k not in Detectors.keys()}


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


def validate(config: Mapping[str, Any], tables: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A checked copy of ``config`` with defaults filled in for ``tables`` (default: every table
    present). Unknown tables and keys raise :class:`PtyroValueError` with the known names."""
    if not isinstance(config, Mapping):
        raise PtyroTypeError(f"configuration: expected a table of tables, got {type(config).__name__}")
    allowed = list(tables or TABLES)
    for name in config:
        if name not in TABLES:
            raise PtyroValueError(f"unknown table [{name}]; known tables: {', '.join(TABLES)}{_closest(name, list(TABLES))}")
    # only the tables read are checked; others (a simulation's [detectors] given to a
    # reconstruction) are kept as they are
    out = {name: TABLES[name].validate(config.get(name, {})) for name in allowed}
    for name in config:
        if name not in out:
            out[name] = copy.deepcopy(config[name])
    return out


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


def _in_schema_order(table: str, values: Mapping[str, Any]) -> list[str]:
    declared = list(TABLES[table].keys()) if table in TABLES else []
    return [k for k in declared if k in values] + [k for k in values if k not in declared]


def to_toml(config: Mapping[str, Any]) -> str:
    """TOML text for a configuration (tables of scalars, lists and inline tables): the tables and
    keys in the schema's order, then any others in the order given; unset (None) keys left out."""
    lines: list[str] = []
    names = [t for t in TABLES if t in config] + [t for t in config if t not in TABLES]
    for table in names:
        values = config[table]
        if not isinstance(values, Mapping):
            lines.insert(0, f"{_toml_key(table)} = {_toml_value(values)}")
            continue
        lines.append(f"[{_toml_key(table)}]")
        for k in _in_schema_order(table, values):
            if values[k] is not None:
                lines.append(f"{_toml_key(k)} = {_toml_value(values[k])}")
        lines.append("")
    return "\n".join(lines)


def template_toml(tables: tuple[str, ...] | None = None, config: Mapping[str, Any] | None = None) -> str:
    """A commented TOML file of ``tables``: every key with its description, set to the value of
    ``config`` or its default (keys without either are written commented out). It reads back as
    the same configuration."""
    config = config or {}
    lines: list[str] = []
    for name in tables or tuple(TABLES):
        table = TABLES[name]
        values = {**{k: key.default for k, key in table.keys().items()}, **dict(config.get(name) or {})}
        lines.append(f"[{name}]")
        for k in _in_schema_order(name, values):
            doc = table.doc_of(k)
            v = values[k]
            lines.append(f"# {doc}" if doc else f"# {k}")
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}" if v is not None and v != {} else f"# {_toml_key(k)} =")
        if table.extra:
            lines.append(f"# <name>: {table.extra}")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the schema


Check = Callable[[str, Any], Any]


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a TOML table: its default (None: not set, derived or optional), its check
    (``check(where, value) -> value``, raising a one-line error that names ``where``), its
    one-line description (also the ``--help`` text of its flag) and the ``label`` that follows
    the key's name in error messages (its unit)."""

    default: Any
    doc: str
    check: Check | None = None
    label: str = ""


def _numeric(**kw: Any) -> Check:
    return lambda where, v: _number(where, v, **kw)


def _vec(n: int, **kw: Any) -> Check:
    return lambda where, v: _vector(where, v, n, **kw)


def _text(where: str, v: Any) -> str:
    return _string(where, v)


def _boolean(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise PtyroTypeError(f"{where}: expected true or false, got {v!r}")
    return v


def _mapping(where: str, v: Any) -> Any:
    if not isinstance(v, Mapping):
        raise PtyroTypeError(f"{where}: expected a table, got {v!r}")
    return v


def _one_of(*choices: str) -> Check:
    def check(where: str, v: Any) -> Any:
        if v not in choices:
            raise PtyroValueError(f"{where}: expected {' or '.join(repr(c) for c in choices)}, got {v!r}")
        return v

    return check


class Table:
    """A TOML table, declared by its :class:`Key` class attributes (in the order of the file,
    of ``--help`` and of :func:`to_toml`). :meth:`validate` checks a table: unknown keys (unless
    ``extra`` describes what other keys mean), each key's own check, then :meth:`check_between`
    for rules between keys; defaults are filled in."""

    #: the table's name in TOML files
    table_name: ClassVar[str]
    #: what any other key means (None: other keys are errors)
    extra: ClassVar[str | None] = None

    @classmethod
    def keys(cls) -> dict[str, Key]:
        return {k: v for k, v in vars(cls).items() if isinstance(v, Key)}

    @classmethod
    def doc_of(cls, key: str) -> str:
        k = cls.keys().get(key)
        return k.doc if k is not None else (cls.extra or "")

    @classmethod
    def where(cls, key: str) -> str:
        label = cls.keys()[key].label
        return f"[{cls.table_name}] {key}" + (f" ({label})" if label else "")

    @classmethod
    def validate(cls, table: Any) -> dict[str, Any]:
        if not isinstance(table, Mapping):
            raise PtyroTypeError(f"[{cls.table_name}]: expected a table, got {table!r}")
        keys = cls.keys()
        if cls.extra is None:
            for key in table:
                if key not in keys:
                    raise _unknown(f"[{cls.table_name}]", key, list(keys))
        out = {k: copy.deepcopy(key.default) for k, key in keys.items() if key.default is not None}
        out.update({k: v for k, v in table.items() if v is not None})
        cls.check_first(out)
        for k, key in keys.items():
            if key.check is not None and k in out:
                out[k] = key.check(cls.where(k), out[k])
        cls.check_between(out)
        return out

    @classmethod
    def check_first(cls, t: dict[str, Any]) -> None:
        """Rules between keys checked on the values as given, before each key's own check."""

    @classmethod
    def check_between(cls, t: dict[str, Any]) -> None:
        """Rules between keys, on the checked values."""


def _structure(where: str, v: Any) -> Any:
    if isinstance(v, str) or not (hasattr(v, "get_positions") or hasattr(v, "numbers")):
        _string(f"{where} (a name or a file; in Python also an ase.Atoms or ptyro_core.Atoms)", v)
    return v


def _zone_axis(where: str, v: Any) -> list:
    axis = _vector(where, v, 3, integer=True)
    if all(x == 0 for x in axis):
        raise PtyroValueError(f"{where}: expected a non-zero direction [u, v, w], got [0, 0, 0]")
    return axis


class Specimen(Table):
    table_name = "specimen"
    structure = Key(
        "SrTiO3",
        "built-in crystal name (SrTiO3, Si, Au, GaAs, MoS2, graphene) or a structure file (.xyz, .extxyz; .cif/.vasp with the ase extra; any cell shape); in Python also an ase.Atoms",
        _structure,
    )
    repeat = Key([1, 1, 1], "unit cells along x, y, z [nx, ny, nz]", _vec(3, positive=True, integer=True))
    zone_axis = Key(
        [0, 0, 1],
        "crystal direction [u, v, w] along the beam (z); for a structure file or ase.Atoms of any cell, the orthorhombic supercell along it is built (with a note)",
        _zone_axis,
    )


def _gpts(where: str, v: Any) -> Any:
    if isinstance(v, str):  # "auto": chosen from the detectors (issue 14)
        if v != "auto":
            raise PtyroValueError(f'{where}: expected [nx, ny] or "auto", got {v!r}')
        return v
    return _vector(where, v, 2, positive=True, integer=True)


class Potential(Table):
    table_name = "potential"
    parametrization = Key("kirkland", "registered potential name (kirkland, or a plugin's, e.g. lobato)", _text)
    gpts = Key(
        None,
        'grid points [nx, ny] over the cell (also the diffraction pattern size); or give sampling; "auto": chosen so that the largest detector angle is at most 0.6 of the band limit',
        _gpts,
    )
    sampling = Key(None, "real-space pixel size in Å (scalar or [dx, dy]); default 0.1 when gpts is not given", _vec(2, positive=True))
    slice_thickness = Key(2.0, "slice thickness in Å", _numeric(positive=True))
    projection = Key("infinite", "how atoms are projected into slices (infinite, or what the parametrization supports)", _text)

    @classmethod
    def check_first(cls, t: dict[str, Any]) -> None:
        if "gpts" in t and "sampling" in t:
            raise PtyroValueError("[potential]: give either gpts or sampling, not both")


def _energy(where: str, v: Any) -> float:
    e = _number(where, v, positive=True)
    if e < 1e3:
        raise PtyroValueError(f"[probe] energy: {e:g} eV is below 1 keV; energies are in eV: did you mean {e * 1e3:g} eV ({e:g}e3)?")
    return e


def _semiangle(where: str, v: Any) -> float:
    a = _number(where, v, positive=True)
    if a < 0.2:
        raise PtyroValueError(f"[probe] semiangle_cutoff: {a:g} mrad looks like radians; semi-angles are in mrad: did you mean {a * 1e3:g} mrad?")
    return a


_ALIAS_DOCS = {
    "defocus": "defocus in Å (= -C10)",
    "Cs": "spherical aberration in Å (= C30)",
    "C5": "fifth-order spherical aberration in Å (= C50)",
    "astigmatism": "two-fold astigmatism in Å (= C12)",
    "astigmatism_angle": "two-fold astigmatism azimuth in degrees (= phi12)",
    "coma": "axial coma in Å (= C21)",
    "coma_angle": "axial coma azimuth in degrees (= phi21)",
}


class Probe(Table):
    table_name = "probe"
    name = Key("aberrated", "registered probe name (aberrated, or a plugin's)", _text)
    energy = Key(200e3, "beam energy in eV", _energy, "eV")
    semiangle_cutoff = Key(20.0, "probe-forming aperture semiangle in mrad", _semiangle, "mrad")

    @classmethod
    def keys(cls) -> dict[str, Key]:
        own = super().keys()
        aberrations = {k: Key(None, f"aberration {k} in Å (C10 = -defocus)", _numeric()) for k in _MAGNITUDES}
        aberrations |= {k: Key(None, f"aberration azimuth {k} in degrees", _numeric()) for k in _AZIMUTHS}
        aberrations |= {k: Key(None, doc, _numeric()) for k, doc in _ALIAS_DOCS.items()}
        return own | aberrations

    @classmethod
    def check_first(cls, t: dict[str, Any]) -> None:
        for alias, coeff in ALIAS_OF.items():
            if alias in t and coeff in t:
                sign = "-" if alias == "defocus" else ""
                raise PtyroValueError(
                    f"[probe]: both {alias} = {t[alias]!r} and {coeff} = {t[coeff]!r} are given; they are one quantity ({alias} = {sign}{coeff}): expected only one of them"
                )


def _step(where: str, v: Any) -> list:
    step = _vector(where, v, 2, positive=True)
    if min(step) < 0.05:
        nm = [round(x * 10, 6) for x in step]
        raise PtyroValueError(f"[scan] step: {step} Å is below 0.05 Å; steps are in Å: did you mean {nm} Å (the value in nm)?")
    return step


class Scan(Table):
    table_name = "scan"
    start = Key(None, "first probe position [x, y] in Å (default [0, 0])", _vec(2), "Å")
    end = Key(None, "end of the raster [x, y] in Å, exclusive (default: the cell size)", _vec(2), "Å")
    gpts = Key(None, "probe positions [Rx, Ry] (default [16, 16], or from step)", _vec(2, positive=True, integer=True))
    step = Key(None, "scan step [dx, dy] in Å (reconstruction: replaces the file's step)", _step, "Å")
    rotation = Key(0.0, "scan rotation in degrees, counter-clockwise from x towards y (reconstruction)", _numeric(), "degrees")

    @classmethod
    def check_between(cls, t: dict[str, Any]) -> None:
        if "start" in t and "end" in t and any(e <= a for a, e in zip(t["start"], t["end"])):
            raise PtyroValueError(f"[scan]: expected end > start in x and y, got start={t['start']} end={t['end']}")


def _sigmas(where: str, v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _number(f"[frozen_phonons] sigmas.{k} (Å)", x, nonneg=True) for k, x in v.items()}
    return _number(where, v, nonneg=True)


class FrozenPhonons(Table):
    table_name = "frozen_phonons"
    configurations = Key(1, "number of frozen-phonon configurations averaged", _numeric(positive=True, integer=True))
    sigmas = Key(0.0, "rms displacement in Å: one number for all atoms, or a table by element {Sr = 0.08, O = 0.1}", _sigmas, "Å")
    seed = Key(0, "random seed of the displacements", _numeric(nonneg=True, integer=True))


class Detectors(Table):
    table_name = "detectors"
    extra = "an annular detector: [inner, outer] in mrad, e.g. haadf = [70, 200] (stored as a virtual image)"
    pixelated = Key(True, "store the 4D data (true) or only the virtual images (false)", _boolean)
    dose = Key(
        None,
        "electron dose in e⁻/Å² (per scan step area): patterns become seeded Poisson counts stored as integers (default: no noise, fractions of the beam)",
        _numeric(positive=True),
    )
    dose_per_position = Key(None, "electrons per probe position instead of dose (one of the two)", _numeric(positive=True))
    dose_seed = Key(0, "random seed of the Poisson counts", _numeric(nonneg=True, integer=True))

    @classmethod
    def check_first(cls, t: dict[str, Any]) -> None:
        if "dose" in t and "dose_per_position" in t:
            raise PtyroValueError(
                f"[detectors]: both dose = {t['dose']!r} (e⁻/Å²) and dose_per_position = {t['dose_per_position']!r} (e⁻) are given; expected only one of them"
            )

    @classmethod
    def check_between(cls, t: dict[str, Any]) -> None:
        for k, v in annular_detectors(t).items():
            rng = _vector(f"[detectors] {k} (annular range [inner, outer] mrad)", v, 2, nonneg=True)
            if rng[1] <= rng[0]:
                raise PtyroValueError(f"[detectors] {k}: expected inner < outer (mrad), got {v!r}")
            t[k] = rng


class Simulation(Table):
    table_name = "simulation"
    simulator = Key("multislice", "registered simulator name (multislice, or a plugin's, e.g. prism)", _text)
    propagator = Key("fresnel", "registered propagator name (fresnel)", _text)
    backend = Key("auto", "far-field back end: auto (a registered one on a single CPU device, else XLA), xla, or a registered name (native)", _text)
    batch_size = Key(16, "probe positions per batch (memory is bounded by the batch)", _numeric(positive=True, integer=True))
    options = Key({}, "table of extra options passed to the simulator", _mapping)


class Reconstruction(Table):
    table_name = "reconstruction"
    algorithm = Key("single_slice", "registered reconstruction name (single_slice, multislice, mixed_state, ...)", _text)
    loss = Key("auto", "registered loss name (amplitude, intensity, poisson, ...), or auto: poisson for counted data, amplitude otherwise", _text)
    optimizer = Key("adam", "registered optimizer name (adam, sgd, ...)", _text)
    iterations = Key(20, "passes over the data", _numeric(positive=True, integer=True))
    batch_size = Key(64, "patterns per gradient step", _numeric(positive=True, integer=True))
    learning_rate = Key(None, "object learning rate (default: the algorithm's), decayed by a cosine schedule", _numeric(positive=True))
    probe_learning_rate = Key(None, "probe learning rate (default: the algorithm's; 0 keeps the probe fixed)", _numeric(nonneg=True))
    num_modes = Key(1, "probe modes (mixed-state ptychography)", _numeric(positive=True, integer=True))
    num_slices = Key(1, "object slices (multislice ptychography)", _numeric(positive=True, integer=True))
    slice_thickness = Key(None, "object slice thickness in Å (multislice)", _numeric(positive=True), "Å")
    seed = Key(0, "random seed (batch order, mode initialisation)", _numeric(nonneg=True, integer=True))
    checkpoint = Key(None, "checkpoint file written during the run", _text)
    checkpoint_every = Key(None, "iterations between checkpoints (default 1, when checkpoint is set)", _numeric(positive=True, integer=True))
    optics_from = Key(None, "TOML file whose [probe] optics (e.g. fitted by --algorithm parallax with --algorithm-option optics_out=FILE) replace [probe]'s")
    options = Key(
        {},
        "table of extra options passed to the algorithm (e.g. fit_positions, tv_weight, lr_schedule, learning_rates = {positions = 0.01})",
        _mapping,
    )
    # issue 21: a reconstruction that forgives nominal optics
    fit_aberrations = Key(False, "fit C10, C12/phi12 and C30 of the probe by autodiff (alone for 3 passes, then with the pixel-wise probe)", _boolean)
    scan_scale = Key("hold", "position correction: hold the scan's step (only its rotation is fitted) or fit its full 2x2 map", _one_of("hold", "fit"))


class Preprocess(Table):
    """Experimental data before a reconstruction (issue 21): the values are checked by
    :mod:`ptyro_workflows.preprocess`. Keys are unique across the reconstruction tables, so each
    is a plain flag."""

    table_name = "preprocess"
    preprocess = Key(
        "auto",
        'run the preprocessing before reconstructing: true, false, or "auto" (on for data from elsewhere, off for our own simulated files, which are only checked)',
    )
    bad_pixels = Key(True, "find hot and dead pixels in the mean pattern and repair them")
    detector_mask = Key(None, "a .npy boolean (Qx, Qy) array, true where pixels are good (the others are repaired)")
    dark = Key(None, "a .npy (Qx, Qy) dark reference subtracted from every pattern")
    gain = Key(None, "a .npy (Qx, Qy) gain reference multiplied into every pattern")
    descan = Key("plane", "descan model of the pattern centres: plane (linear in the scan), free (each pattern its own), constant, none")
    recentre = Key(True, "move every pattern so that its descan centre is on the detector centre (sub-pixel)")
    scan_frame = Key("auto", "scan rotation and transpose from the DPC curl: auto (find and apply), check (refuse a clearly wrong frame), keep")
    estimate_defocus = Key(True, "estimate the defocus and astigmatism from the bright-field parallax (when ptyro_invert.direct is present)")
    crop = Key(None, "crop the detector to this many pixels (square, centred) after re-centring")
    bin = Key(1, "bin the detector by this factor after cropping")
    max_curl = Key(0.25, "relative DPC curl below which a scan frame counts as found")
    max_offset = Key(0.5, "largest mean offset (px) of the pattern centres from the detector centre accepted without preprocessing")
    refine = Key(
        True,
        "after preprocessing, the reconstruction refines what it estimated: scan rotation (position correction, scale held), C10/C12/C30, and no phase ramp",
    )


#: table name -> its class, in the order of files and listings
TABLES: dict[str, type[Table]] = {t.table_name: t for t in (Specimen, Potential, Probe, Scan, FrozenPhonons, Detectors, Simulation, Reconstruction, Preprocess)}
#: which tables each kind of run reads
SIMULATION_TABLES = ("specimen", "potential", "probe", "scan", "frozen_phonons", "detectors", "simulation")
RECONSTRUCTION_TABLES = ("probe", "scan", "reconstruction", "preprocess")

#: views of the schema: table -> key -> default (None: not set), and table -> key -> description
#: (an extra-keys table also has ``"<name>"``)
SCHEMA: dict[str, dict[str, Any]] = {n: {k: key.default for k, key in t.keys().items()} for n, t in TABLES.items()}
DESCRIPTIONS: dict[str, dict[str, str]] = {n: {k: key.doc for k, key in t.keys().items()} | ({"<name>": t.extra} if t.extra else {}) for n, t in TABLES.items()}
