"""Provenance: everything needed to repeat a run from its output file alone.

Stored in every file we write as the HDF5 group ``/provenance``:

- ``config``: the full configuration as TOML text (defaults filled in);
- ``components``: JSON list of ``{kind, name, distribution, version}`` for every registered
  component the run used;
- ``versions``: JSON object of library versions (python, jax, numpy, h5py, every ptyro
  distribution);
- attributes ``seed``, ``kind`` ("simulation" / "reconstruction"), ``created`` (UTC ISO time),
  ``command`` (the command line, when run from the CLI);
- for a simulation, ``execution``: JSON object of what the run actually used: ``backend`` (the
  multislice far field's back end, e.g. ``xla`` or ``native``), ``streams`` (batches at once) and
  ``memory_budget`` (bytes);
- for a reconstruction, ``execution`` too (:func:`ptyro_workflows.io.execution_record`): the
  data's dtype as held (``data_dtype``: counts stay integers), where they were read from
  (``data``), ``memory_budget`` (bytes), ``streams`` and ``backend`` (the steps' far fields,
  e.g. ``xla`` or ``native``);
- for a reconstruction, a subgroup ``source`` with the provenance of the dataset it read.
"""

import datetime
import functools
import importlib.metadata as md
import json
import platform
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import h5py

from ptyro_workflows.config import to_toml

__all__ = ["library_versions", "component_records", "make_provenance", "write_provenance", "read_provenance"]

_DISTRIBUTIONS = ("ptyrodactyl", "ptyro-core", "ptyro-simul", "ptyro-invert", "ptyro-workflows", "jax", "jaxlib", "numpy", "h5py", "scipy")


@functools.cache
def _distribution_versions() -> tuple[tuple[str, str], ...]:
    """(distribution, version) of each of ``_DISTRIBUTIONS`` installed: read once per process
    (each read parses a metadata file; a demo records them twice, in each of its two files)."""
    out = []
    for d in _DISTRIBUTIONS:
        try:
            out.append((d, md.version(d)))
        except md.PackageNotFoundError:
            continue
    return tuple(out)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a run's numbers depend on."""
    out = {"python": platform.python_version(), **dict(_distribution_versions())}
    try:
        import jax

        out["jax_backend"] = jax.default_backend()
        out["jax_devices"] = str(len(jax.devices()))
        out["jax_enable_x64"] = str(bool(jax.config.read("jax_enable_x64")))
    except Exception:  # noqa: BLE001 - the record is best effort: jax is a dependency
        pass
    return out


def component_records(used: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """``{kind, name, description, distribution, version}`` of each (kind, name) used."""
    from ptyro_core import get_registry

    reg = get_registry()
    out = []
    for kind, name in used:
        try:
            out.append(reg.component(kind, name).as_dict())
        except Exception:  # noqa: BLE001 - a glue implementation of ours, not a registered component
            out.append({"kind": kind, "name": name, "description": "", "distribution": "ptyro-workflows", "version": _version("ptyro-workflows")})
    return out


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


def make_provenance(
    kind: str,
    config: Mapping[str, Any],
    components: Iterable[tuple[str, str]],
    seed: int,
    *,
    command: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record of one run, as a plain dict (see the module docstring)."""
    return {
        "kind": kind,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(command) if command is not None else " ".join(sys.argv),
        "seed": int(seed),
        "config": to_toml(config),
        "components": component_records(components),
        "versions": library_versions(),
        **(dict(extra) if extra else {}),
    }


def write_provenance(group: h5py.Group, prov: Mapping[str, Any]) -> None:
    """Write a provenance dict into ``group`` (an h5py group, usually ``/provenance``)."""
    str_dt = h5py.string_dtype()
    for key, value in prov.items():
        if key == "source" and isinstance(value, Mapping):
            write_provenance(group.create_group("source"), value)
        elif key in ("config",):
            group.create_dataset(key, data=str(value), dtype=str_dt)
        elif key in ("components", "versions") or isinstance(value, (list, dict)):
            group.create_dataset(key, data=json.dumps(value, indent=1), dtype=str_dt)
        elif isinstance(value, (int, float, bool)):
            group.attrs[key] = value
        else:
            group.attrs[key] = str(value)


def read_provenance(group: h5py.Group) -> dict[str, Any]:
    """Inverse of :func:`write_provenance`."""
    out: dict[str, Any] = {}
    for k, v in group.attrs.items():
        out[k] = v.item() if hasattr(v, "item") else v
    for k, v in group.items():
        if isinstance(v, h5py.Group):
            out[k] = read_provenance(v)
            continue
        text = v[()]
        text = text.decode() if isinstance(text, bytes) else str(text)
        if k == "config":
            out[k] = text
        else:
            try:
                out[k] = json.loads(text)
            except json.JSONDecodeError:
                out[k] = text
    return out
