"""The EMD 1.0 format as we write and read it: node helpers (file, root, arrays, dims,
metadata, py4DSTEM's calibration) and the look-ups that find a datacube and its calibrations
in any EMD 1.0 file (ours, py4DSTEM's, emdfile's). The layout is in :mod:`ptyro_workflows.io`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ptyro_core import PtyroValueError

if TYPE_CHECKING:
    from ptyro_core import Grid

__all__ = ["ROOT", "DATACUBE", "R_UNITS", "Q_UNITS", "write_emd_array"]

ROOT = "ptyrodactyl"
DATACUBE = "datacube"
R_UNITS = "A"  # Å, spelled as py4DSTEM writes it
Q_UNITS = "A^-1"  # Å⁻¹
_R_UNIT_NAMES = {"a", "å", "angstrom", "angstroms", "ang"}
_Q_UNIT_NAMES = {"a^-1", "å^-1", "å⁻¹", "a-1", "1/a", "1/å", "angstrom^-1"}


def _emd_file_attrs(f: h5py.File) -> None:
    f.attrs["emd_group_type"] = "file"
    f.attrs["version_major"] = 1
    f.attrs["version_minor"] = 0
    f.attrs["authoring_program"] = "ptyrodactyl"
    f.attrs["authoring_user"] = ""
    f.attrs["UUID"] = str(uuid.uuid4())


def _emd_root(f: h5py.File) -> h5py.Group:
    root = f.create_group(ROOT)
    root.attrs["emd_group_type"] = "root"
    root.attrs["python_class"] = "Root"
    return root


def _emd_array_group(parent: h5py.Group, name: str) -> h5py.Group:
    g = parent.create_group(name)
    g.attrs["emd_group_type"] = "array"
    g.attrs["python_class"] = "Array"
    return g


def _emd_dims(g: h5py.Group, dims: list[tuple[str, str, Any]]) -> None:
    for n, (name, units, vec) in enumerate(dims):
        d = g.create_dataset(f"dim{n}", data=np.asarray(vec))
        d.attrs["name"] = str(name)
        d.attrs["units"] = str(units)


def _emd_metadata(g: h5py.Group, name: str, values: Mapping[str, Any], python_class: str = "Metadata") -> None:
    bundle = g.require_group("metadatabundle")
    bundle.attrs["emd_group_type"] = "metadatabundle"
    m = bundle.create_group(name)
    m.attrs["emd_group_type"] = "metadata"
    m.attrs["python_class"] = python_class
    for k, v in values.items():
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            lst = m.create_group(k)  # emdfile's list of strings
            lst.attrs["type"] = b"list_of_strings"
            lst.attrs["length"] = len(v)
            for i, x in enumerate(v):
                lst.create_dataset(str(i), data=x.encode("utf-8"))
        elif isinstance(v, str):
            d = m.create_dataset(k, data=v.encode("utf-8"))
            d.attrs["type"] = b"string"
        elif isinstance(v, bool):
            d = m.create_dataset(k, data=v, dtype=bool)
            d.attrs["type"] = b"bool"
        elif isinstance(v, (int, float)):
            d = m.create_dataset(k, data=v)
            d.attrs["type"] = b"number"
        else:
            d = m.create_dataset(k, data=np.asarray(v))
            d.attrs["type"] = b"array"


def write_emd_array(
    parent: h5py.Group, name: str, data: Any, dims: list[tuple[str, str, Any]], units: str = "", *, python_class: str = "Array", **create: Any
) -> h5py.Group:
    """An emdfile ``Array`` node ``name`` under ``parent`` (data may be None when ``create``
    gives shape and dtype, to be filled later); ``python_class="DataCube"`` makes it the node
    py4DSTEM reads as a DataCube."""
    g = _emd_array_group(parent, name)
    g.attrs["python_class"] = python_class
    if data is None:
        d = g.create_dataset("data", **create)
    else:
        d = g.create_dataset("data", data=np.asarray(data), **create)
    d.attrs["units"] = units
    _emd_dims(g, dims)
    return g


def _raster_calibration(positions: np.ndarray, scan_shape: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(origin, step) in Å of a row-major raster of positions, (0, 0)/(1, 1) if not a raster."""
    rx, ry = scan_shape
    pos = positions.reshape(rx, ry, 2)
    origin = (float(pos[0, 0, 0]), float(pos[0, 0, 1]))
    sx = float(pos[1, 0, 0] - pos[0, 0, 0]) if rx > 1 else 1.0
    sy = float(pos[0, 1, 1] - pos[0, 0, 1]) if ry > 1 else 1.0
    return origin, (sx if sx > 0 else 1.0, sy if sy > 0 else 1.0)


def _q_dims(grid: Grid) -> list[tuple[str, str, Any]]:
    dq = grid.reciprocal_sampling
    out = []
    for name, n, d in (("Qx", grid.gpts[0], dq[0]), ("Qy", grid.gpts[1], dq[1])):
        out.append((name, Q_UNITS, [-(n // 2) * d, -(n // 2) * d + d]))
    return out


# --------------------------------------------------------------------------- reading


def _open_h5(path: str | Path) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise PtyroValueError(f"file {str(p)!r} not found")
    if p.is_dir():
        raise PtyroValueError(f"{str(p)!r} is a directory; expected a file")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise PtyroValueError(f"cannot read {str(p)!r} as HDF5 ({str(e).splitlines()[0]}); expected an EMD 1.0 / HDF5 file or a .npy array") from None


def _find_4d(f: h5py.File) -> h5py.Group | h5py.Dataset | None:
    """The 4D datacube of an EMD file (an emd array node whose data is 4D), or a plain 4D dataset."""
    found: list[Any] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and obj.attrs.get("emd_group_type") in ("array", b"array") and "data" in obj:
            if obj["data"].ndim == 4:
                found.append(obj)
        elif isinstance(obj, h5py.Dataset) and obj.ndim == 4 and not found:
            found.append(obj)

    f.visititems(visit)
    groups = [x for x in found if isinstance(x, h5py.Group)]
    return (groups or found or [None])[0]


def _dim_step(dim: h5py.Dataset) -> float | None:
    v = np.asarray(dim[()], dtype=np.float64).ravel()
    if v.size < 2:
        return None
    return float(v[1] - v[0])


def _units(obj: Any) -> str:
    u = obj.attrs.get("units", "")
    return (u.decode() if isinstance(u, bytes) else str(u)).strip()


def _read_metadata(g: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bundle = g.get("metadatabundle")
    if bundle is None:
        return out
    for md in bundle.values():
        if not isinstance(md, h5py.Group):
            continue
        for k, v in md.items():
            if isinstance(v, h5py.Dataset):
                val = v[()]
                out[k] = val.decode() if isinstance(val, bytes) else (val.item() if hasattr(val, "item") and np.ndim(val) == 0 else val)
    return out
