"""The live session: a source's frames counted end to end, processed as they arrive, and one
output file written atomically at the end (also when the session is interrupted).

Threads: the *receiver* takes events off the source and puts frames into a bounded queue
(``buffer_frames``); when the queue is full the frame is dropped, counted and marked. The
*processor* (the thread that calls :meth:`LiveSession.run`, so Ctrl-C lands there) takes frames
off the queue in batches and hands them to every incremental processor (and, with
``save_frames``, to the output's raw frame array). The iterative reconstruction refines in a
thread of its own. Counters (received, processed, dropped, missing, rejected) and the frame rate
are available at any time from :meth:`LiveSession.stats`, the images from
:meth:`LiveSession.snapshot`.
"""

import collections
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_workflows.live.processors import Geometry
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart

__all__ = ["LiveSession", "LiveResult"]

_END = object()


@dataclass
class LiveResult:
    """What a session did: ``complete`` (the whole series arrived and was processed), the
    counters, ``latency`` (seconds from the last frame's arrival to the output renamed into
    place), the output path and the final arrays."""

    complete: bool
    stats: dict[str, Any]
    latency: float
    path: Path | None
    results: dict[str, Any]


class LiveSession:
    """One series from ``stream`` through ``processors``.

    ``geometry(start, first_frames) -> Geometry`` builds the geometry from the start message
    and the first ``calibration_frames`` frames (which it may use to measure the calibration;
    it is then frozen). ``output`` (an HDF5 path) is written atomically at the end;
    ``save_frames`` stores the raw frames too (chunked, one chunk per pattern row of the scan)."""

    def __init__(self, stream: Any, processors: Sequence[Any], geometry: Callable[[SeriesStart, list[Frame]], Geometry], *,
                 output: str | Path | None = None, overwrite: bool = False, buffer_frames: int = 4096, batch: int = 64,
                 save_frames: bool = False, calibration_frames: int = 0, provenance: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        if int(buffer_frames) < 1 or int(batch) < 1:
            raise PtyroValueError(f"buffer_frames {buffer_frames!r} and batch {batch!r}: expected positive numbers of frames")
        self.stream = stream
        self.processors = list(processors)
        self._geometry_fn = geometry
        self.output = None
        if output is not None:
            from ptyro_workflows.io import check_output

            self.output = check_output(output, overwrite)
        self.overwrite = overwrite
        self.batch = int(batch)
        self.save_frames = bool(save_frames)
        self.calibration_frames = int(calibration_frames)
        self.provenance = dict(provenance or {})
        self._q: queue.Queue = queue.Queue(maxsize=int(buffer_frames))
        self.buffer_frames = int(buffer_frames)
        self.geometry: Geometry | None = None
        self.start_message: SeriesStart | None = None
        self._c = collections.Counter()
        self._rates: collections.deque = collections.deque(maxlen=64)
        self._t0: float | None = None
        self._t_last: float | None = None
        self._ended_normally = False
        self._stream_error: BaseException | None = None
        self._lock = threading.Lock()
        self.state = "waiting for the series"
        self._done = threading.Event()

    # ----------------------------------------------------------------- receiver thread

    def _receive(self) -> None:
        try:
            for ev in self.stream:
                if isinstance(ev, Frame):
                    now = time.perf_counter()
                    with self._lock:
                        self._c["received"] += 1
                        self._t_last = now
                        if self._t0 is None:
                            self._t0 = now
                    try:
                        self._q.put_nowait(ev)
                    except queue.Full:
                        with self._lock:
                            self._c["dropped"] += 1
                            self._dropped_idx.append(ev.index)
                elif isinstance(ev, SeriesStart):
                    self.start_message = ev
                    self._q.put(ev)
                elif isinstance(ev, SeriesEnd):
                    self._ended_normally = True
                    break
        except BaseException as e:  # noqa: BLE001 - a source failing mid-series: the session writes what it has
            self._stream_error = e
        finally:
            self._q.put(_END)

    # ----------------------------------------------------------------- processing

    def stats(self) -> dict[str, Any]:
        """Counters and rates (a consistent copy; safe from any thread)."""
        with self._lock:
            c = dict(self._c)
            t0, tl = self._t0, self._t_last
        now = time.perf_counter()
        self._rates.append((now, c.get("received", 0), c.get("processed", 0)))
        old = next((r for r in self._rates if now - r[0] <= 2.0), self._rates[0])
        dt = now - old[0]
        g = self.geometry
        expected = (self.start_message.number_of_images if self.start_message else None) or (g.size if g else None)
        out = {
            "state": self.state,
            "expected": expected,
            "received": c.get("received", 0),
            "processed": c.get("processed", 0),
            "dropped": c.get("dropped", 0),
            "rejected": c.get("rejected", 0),
            "queued": self._q.qsize(),
            "buffer": self.buffer_frames,
            "elapsed": (tl - t0) if (t0 is not None and tl is not None) else 0.0,
            "fps_received": (c.get("received", 0) - old[1]) / dt if dt > 0.2 else 0.0,
            "fps_processed": (c.get("processed", 0) - old[2]) / dt if dt > 0.2 else 0.0,
        }
        for p in self.processors:
            if hasattr(p, "loss") and p.loss:
                out["loss"] = p.loss[-1]
                out["passes"] = len(p.loss)
                out["frames_in_reconstruction"] = p.coverage[-1]
        return out

    def snapshot(self) -> dict[str, np.ndarray]:
        """The processors' current images (the live view's data)."""
        out: dict[str, np.ndarray] = {}
        if self.geometry is None:
            return out
        for p in self.processors:
            out.update(p.snapshot())
        out["received"] = self._processed_mask.reshape(self.geometry.scan_shape).astype(np.float32)
        return out

    def _begin(self, start: SeriesStart, first: list[Frame]) -> None:
        self.geometry = g = self._geometry_fn(start, first)
        n = g.size
        if start.number_of_images is not None and int(start.number_of_images) != n:
            raise PtyroValueError(f"the series has {start.number_of_images} images but the scan {g.scan_shape} has {n} positions; "
                                  "expected [scan] gpts to match the detector's number of images")  # fmt: skip
        self._processed_mask = np.zeros(n, bool)
        for p in self.processors:
            p.start(g)
        self.state = "receiving"

    def _open_output(self) -> None:
        import h5py

        self._h5 = None
        if self.output is None:
            return
        self._tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.{id(self):x}.tmp")
        self._h5 = h5py.File(self._tmp, "w")
        if self.save_frames:
            g = self.geometry
            dt = np.dtype(self.start_message.dtype) if self.start_message and self.start_message.dtype else self._first_dtype
            self._frames = self._h5.create_dataset("frames", shape=g.scan_shape + g.pattern_shape, dtype=dt,
                                                   chunks=(1, min(g.scan_shape[1], 8)) + g.pattern_shape, fillvalue=0)  # fmt: skip

    def _process(self, frames: list[Frame]) -> None:
        g = self.geometry
        n = g.size
        good, bad, seen = [], [], set()
        for f in frames:  # out of the scan, a repeat, or the wrong shape: rejected, counted
            ok = 0 <= f.index < n and f.index not in seen and not self._processed_mask[f.index] and tuple(f.pattern.shape) == g.pattern_shape
            (good if ok else bad).append(f)
            seen.add(f.index)
        if bad:
            with self._lock:
                self._c["rejected"] += len(bad)
                self._rejected_idx.extend(f.index for f in bad)
        if not good:
            return
        idx = np.fromiter((f.index for f in good), np.int64, len(good))
        pats = np.stack([f.pattern for f in good])
        for p in self.processors:
            p.update(idx, pats)
        if self.save_frames and self._h5 is not None:
            ry = g.scan_shape[1]
            for k, f in zip(idx, good):
                self._frames[k // ry, k % ry] = f.pattern
        self._processed_mask[idx] = True
        with self._lock:
            self._c["processed"] += len(good)

    def run(self) -> LiveResult:
        """Receive, process and write; returns when the series ended (or the stream died, or
        on Ctrl-C: then the output is written marked incomplete and KeyboardInterrupt is
        re-raised after it)."""
        self._dropped_idx: list[int] = []
        self._rejected_idx: list[int] = []
        self._h5 = None
        rx = threading.Thread(target=self._receive, name="ptyro-live-receiver", daemon=True)
        rx.start()
        interrupted: BaseException | None = None
        failure: BaseException | None = None
        pending_start: SeriesStart | None = None
        first: list[Frame] = []
        try:
            while True:
                ev = self._q.get()
                if ev is _END:
                    break
                if isinstance(ev, SeriesStart):
                    pending_start = ev
                    first = []
                    if self.calibration_frames == 0:
                        self._first_dtype = np.dtype("uint16")
                        self._begin(ev, first)
                        self._open_output()
                    continue
                batch = [ev]
                while len(batch) < self.batch:
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(nxt, Frame):
                        self._q.put(nxt)  # _END after the frames: seen on the next turn
                        break
                    batch.append(nxt)
                if self.geometry is None:
                    if pending_start is None:
                        raise PtyroValueError("the stream sent frames before a start message; expected start, image ..., end")
                    first.extend(batch)
                    if len(first) < self.calibration_frames:
                        continue
                    self._first_dtype = first[0].pattern.dtype
                    self._begin(pending_start, first)
                    self._open_output()
                    batch = first
                self._process(batch)
        except KeyboardInterrupt as e:
            interrupted = e
        except BaseException as e:  # noqa: BLE001 - a thread or processor reports its failure; the session keeps what it has
            failure = e
        finally:
            self.stream.close()
        if self.geometry is None and pending_start is not None and first and failure is None:
            try:
                self._begin(pending_start, first)
                self._open_output()
                self._process(first)
            except BaseException as e:  # noqa: BLE001 - a thread or processor reports its failure; the session keeps what it has
                failure = e
        st = self.stats()
        complete = (interrupted is None and failure is None and self._stream_error is None and self._ended_normally
                    and self.geometry is not None and st["processed"] == self.geometry.size)  # fmt: skip
        self.state = "finishing" if complete else "finishing (incomplete)"
        result = self._finish(complete, quick=interrupted is not None or failure is not None, errors=[interrupted, failure, self._stream_error])
        self.state = "done" if complete else "done (incomplete)"
        self.result = result
        self._done.set()
        if interrupted is not None:
            raise interrupted
        if failure is not None:
            raise failure
        return result

    # ----------------------------------------------------------------- the end

    def _finish(self, complete: bool, *, quick: bool, errors: list) -> LiveResult:
        results: dict[str, Any] = {}
        notes = [f"{type(e).__name__}: {e}" for e in errors if e is not None]
        if self.geometry is not None:
            for p in self.processors:
                try:
                    results.update(p.finish(complete, passes=not quick) if hasattr(p, "abort") else p.finish(complete))
                except BaseException as e:  # noqa: BLE001 - one processor failing must not lose the others' results
                    notes.append(f"{getattr(p, 'name', type(p).__name__)}: {type(e).__name__}: {e}")
        st = self.stats()
        path = None
        if self.output is not None and self._h5 is None and self.geometry is None:
            notes.append("no series started: nothing to write")
        if self._h5 is not None:
            f = self._h5
            g = self.geometry
            for k, v in results.items():
                f.create_dataset(k, data=v)
            n = g.size
            for name, idx in (("dropped", self._dropped_idx), ("rejected", self._rejected_idx)):
                m = np.zeros(n, bool)
                ok = [i for i in idx if 0 <= i < n]
                m[ok] = True
                f.create_dataset(f"{name}_mask", data=m.reshape(g.scan_shape))
            f.create_dataset("processed_mask", data=self._processed_mask.reshape(g.scan_shape))
            missing = n - int(self._processed_mask.sum())
            attrs = {
                "kind": "ptyro live session", "complete": bool(complete), "expected": int(n), "received": st["received"],
                "processed": st["processed"], "dropped": st["dropped"], "rejected": st["rejected"], "missing": missing,
                "elapsed_s": st["elapsed"], "mean_fps": st["received"] / st["elapsed"] if st["elapsed"] > 0 else 0.0,
                "buffer_frames": self.buffer_frames, "scan_shape": list(g.scan_shape), "pattern_shape": list(g.pattern_shape),
                "scan_step": list(g.scan_step), "energy": g.energy, "reciprocal_sampling": list(g.reciprocal_sampling),
                "semiangle_cutoff": g.semiangle_cutoff, "calibration": g.calibration, "notes": "; ".join(notes),
            }  # fmt: skip
            for k, v in attrs.items():
                f.attrs[k] = v
            f.attrs["detectors_mrad"] = json.dumps(g.detector_table())
            f.attrs["provenance"] = json.dumps(self.provenance, default=str)
            f.close()
            if self.output.exists() and not self.overwrite:
                os.replace(self._tmp, self.output.with_name(self.output.name + f".{os.getpid()}.incomplete.h5"))
                raise PtyroValueError(f"output {str(self.output)!r} appeared meanwhile; wrote beside it instead")
            os.replace(self._tmp, self.output)
            path = self.output
        latency = time.perf_counter() - self._t_last if self._t_last is not None else math.nan
        st = {**st, "complete": complete, "notes": notes}
        return LiveResult(complete, st, latency, path, results)
