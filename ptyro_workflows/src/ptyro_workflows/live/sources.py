"""Frame sources: what a detector stream (or a file replayed as one) yields, and how a source
is named on the command line.

A *source* is a component of kind ``source`` (hook ``ptyro_register_sources``):
``component(address, **options) -> Stream``, where ``Stream`` is iterable and yields, in order, one
:class:`SeriesStart`, any number of :class:`Frame` and (when the series ended normally) one
:class:`SeriesEnd`, and may yield ``None`` when nothing arrived for a while (the session then
processes the frames it has gathered instead of waiting for a full block); ``stream.close()`` releases it (sockets, files) and may be called from another
thread to stop a blocking iteration. A SPEC on the command line is ``NAME:ADDRESS`` or
``NAME://ADDRESS``; the name picks the registered source (``dectris``, ``replay``, or a plugin's).

Conventions: ``Frame.pattern`` is a diffraction pattern in our axes (axis 0 = Qx), i.e. a
detector image stored row-major ``[y, x]`` is transposed; ``Frame.index`` is the frame number in
the series, scan position ``(ix, iy) = divmod(index, Ry)``.
"""

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ptyro_core import PtyroValueError

__all__ = ["SeriesStart", "Frame", "SeriesEnd", "Stream", "parse_spec", "open_source", "ReplayStream", "replay"]


@dataclass(frozen=True)
class SeriesStart:
    """The series' metadata: ``number_of_images`` (None when unknown), the pattern shape
    (Qx, Qy) and dtype when known, and whatever else the source knows (``metadata``: e.g.
    ``energy`` eV, ``scan_shape``, ``scan_step`` Å, ``reciprocal_sampling`` Å⁻¹)."""

    number_of_images: int | None
    pattern_shape: tuple[int, int] | None = None
    dtype: str | None = None
    series_id: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Frame:
    """One diffraction pattern (Qx, Qy) and its frame number in the series."""

    index: int
    pattern: np.ndarray


@dataclass(frozen=True)
class SeriesEnd:
    """The series ended as the source announced it (an interrupted stream yields none)."""

    series_id: Any = None


@runtime_checkable
class Stream(Protocol):
    def __iter__(self) -> Iterator[SeriesStart | Frame | SeriesEnd | None]: ...

    def close(self) -> None: ...


def parse_spec(spec: str) -> tuple[str, str]:
    """``"dectris://host:31001"`` -> ("dectris", "host:31001"); ``"replay:data.h5"`` ->
    ("replay", "data.h5")."""
    if not isinstance(spec, str) or ":" not in spec or spec.startswith(":"):
        raise PtyroValueError(f"source {spec!r}: expected NAME:ADDRESS, e.g. dectris://127.0.0.1:31001 or replay:data.h5")
    name, _, rest = spec.partition(":")
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest:
        raise PtyroValueError(f"source {spec!r}: no address after '{name}:'; expected NAME:ADDRESS")
    return name, rest


def open_source(spec: str, **options: Any) -> Stream:
    """The stream of the registered source SPEC names, opened with ``options``."""
    from ptyro_core import get

    name, address = parse_spec(spec)
    return get("source", name)(address, **options)


class ReplayStream:
    """A dataset file (our EMD files, EMD 1.0 from py4DSTEM, .npy) streamed frame by frame at
    ``fps`` frames per second (0: as fast as the reader goes), in scan order."""

    def __init__(self, path: str, *, fps: float = 0.0, dtype: str | None = None, limit: int | None = None, **load: Any) -> None:
        from ptyro_workflows.io import load_dataset

        if not float(fps) >= 0:
            raise PtyroValueError(f"replay: fps {fps!r}: expected a frame rate >= 0 (0 = as fast as possible)")
        self._ds = load_dataset(path, lazy=True, **load)
        self.fps = float(fps)
        self.dtype = dtype
        self.limit = limit
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[SeriesStart | Frame | SeriesEnd]:
        ds = self._ds
        rx, ry = ds.scan_shape
        n = rx * ry if self.limit is None else min(int(self.limit), rx * ry)
        pos = np.asarray(ds.positions, np.float64)
        step = (float(pos[ry, 0] - pos[0, 0]) if rx > 1 else 0.0, float(pos[1, 1] - pos[0, 1]) if ry > 1 else 0.0)
        meta = {"energy": float(ds.energy), "scan_shape": (rx, ry), "scan_step": step,
                "reciprocal_sampling": tuple(float(v) for v in ds.grid.reciprocal_sampling)}  # fmt: skip
        shape = (int(ds.array.shape[-2]), int(ds.array.shape[-1]))
        yield SeriesStart(rx * ry, shape, self.dtype or str(np.dtype(ds.array.dtype)), "replay", meta)
        t0 = time.perf_counter()
        for k in range(n):
            if self._stop.is_set():
                return
            if self.fps > 0:
                wait = t0 + k / self.fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            ix, iy = divmod(k, ry)
            p = np.asarray(ds.array[ix, iy])
            yield Frame(k, p.astype(self.dtype) if self.dtype else p)
        if n == rx * ry:
            yield SeriesEnd("replay")

    def close(self) -> None:
        self._stop.set()


def replay(address: str, *, fps: float = 0.0, **options: Any) -> ReplayStream:
    """Source ``replay:PATH``: a dataset file streamed at ``fps`` frames per second."""
    return ReplayStream(address, fps=fps, **options)
