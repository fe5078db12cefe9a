"""Live processing of a detector stream: sources (DECTRIS Stream V2, replay), incremental
processors (virtual detectors, centre of mass, DPC, direct methods, iterative ptychography), the
session that counts every frame and writes one output atomically, and the web view.

Importing this package imports nothing heavy (no JAX): the names below load on first use.
``ptyro live`` is :func:`run_live`.
"""

import importlib
from typing import Any

_WHERE = {
    "run_live": "app", "build_session": "app", "live_config": "app", "make_geometry": "app",
    "LiveSession": "session", "LiveResult": "session",
    "Geometry": "processors", "IncrementalProcessor": "processors", "VirtualDetectors": "processors",
    "LivePtychography": "processors", "DirectMethod": "processors", "virtual_images": "processors",
    "Frame": "sources", "SeriesStart": "sources", "SeriesEnd": "sources", "Stream": "sources",
    "open_source": "sources", "parse_spec": "sources",
}  # fmt: skip
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"ptyro_workflows.live.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'ptyro_workflows.live' has no attribute {name!r}")
