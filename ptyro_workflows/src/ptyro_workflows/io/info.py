"""What a file holds (``ptyro info``), the provenance record stored in it, and what a run
did with its data (the ``execution`` record a reconstruction's provenance carries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptyro_workflows.io.emd import _open_h5, _read_metadata, _units
from ptyro_workflows.io.reading import load_array
from ptyro_workflows.provenance import read_provenance

__all__ = ["read_file_provenance", "file_info", "execution_record"]


def read_file_provenance(path: str | Path) -> dict[str, Any]:
    """The ``/provenance`` record of one of our files ({} if none)."""
    with _open_h5(path) as f:
        if "provenance" not in f:
            return {}
        return read_provenance(f["provenance"])


def execution_record(dataset: Any, *, memory_budget: float | None = None, streams: int = 1, backend: str = "xla") -> dict[str, Any]:
    """What a reconstruction actually used, for its provenance's ``execution``: the data's
    dtype as held (counts stay integers) and where they were read from, the memory budget
    (bytes: ``memory_budget``, else ``PTYRO_MEMORY_BUDGET`` or 80% of available memory),
    ``streams``: the parts of each batch whose gradients were computed at once (the steps run
    in order; on one CPU device one part per core, ``PTYRO_STREAMS`` overrides), and ``backend``:
    who computed the steps' far fields (``xla``, or a registered back end such as ``native``)."""
    from ptyro_core.pipeline import memory_budget as budget

    src = dataset.array
    where = "memory" if not getattr(dataset, "is_lazy", False) else f"out of core ({type(src).__name__})"
    return {
        "data_dtype": str(np.dtype(src.dtype)),
        "data": where,
        "memory_budget": float(budget() if memory_budget is None else memory_budget),
        "streams": int(streams),
        "backend": str(backend),
    }


def file_info(path: str | Path) -> dict[str, Any]:
    """What a file holds: every array with shape, dtype, units and calibrations, the file's
    kind, and its provenance (``ptyro info``)."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        a = load_array(p)
        return {"path": str(p), "format": "npy", "arrays": [{"path": "/", "shape": list(a.shape), "dtype": str(a.dtype)}], "provenance": {}}
    arrays: list[dict[str, Any]] = []
    with _open_h5(p) as f:
        is_emd = f.attrs.get("emd_group_type") in ("file", b"file")
        kind = "reconstruction" if "reconstruction" in f else ("dataset" if is_emd else "hdf5")

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset) or name.startswith("provenance") or "metadatabundle" in name:
                return
            if name.rsplit("/", 1)[-1].startswith("dim") and obj.parent.attrs.get("emd_group_type") in ("array", b"array"):
                return
            entry: dict[str, Any] = {"path": "/" + name, "shape": list(obj.shape), "dtype": str(obj.dtype)}
            if _units(obj):
                entry["units"] = _units(obj)
            if "sampling" in obj.attrs:
                entry["sampling"] = [float(v) for v in np.ravel(obj.attrs["sampling"])]
            parent = obj.parent
            if obj.name.endswith("/data") and parent.attrs.get("emd_group_type") in ("array", b"array"):
                dims = []
                for n in range(obj.ndim):
                    d = parent.get(f"dim{n}")
                    if d is None:
                        continue
                    v = np.asarray(d[()]).ravel()
                    step = float(v[1] - v[0]) if v.size > 1 and np.issubdtype(v.dtype, np.number) else None
                    origin = float(v[0]) if v.size and np.issubdtype(v.dtype, np.number) else None
                    name_ = d.attrs.get("name", f"dim{n}")
                    dims.append({"name": name_.decode() if isinstance(name_, bytes) else str(name_), "units": _units(d), "origin": origin, "step": step})
                entry["dims"] = dims
                md = _read_metadata(parent)
                if md:
                    entry["calibration"] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in md.items()}
            arrays.append(entry)

        f.visititems(visit)
        prov = read_provenance(f["provenance"]) if "provenance" in f else {}
        attrs = {k: (v.item() if hasattr(v, "item") else (v.decode() if isinstance(v, bytes) else v)) for k, v in f.attrs.items()}
    return {"path": str(p), "format": "emd-1.0" if is_emd else "hdf5", "kind": kind, "attrs": attrs, "arrays": arrays, "provenance": prov}
