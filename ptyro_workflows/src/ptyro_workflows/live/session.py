"""The live session: a source's frames counted end to end, processed as they arrive, and one
output file written atomically at the end (also when the session is interrupted).

Threads: the *receiver* takes events off the source, gathers the frames into blocks (up to
``batch`` frames, or what arrived within ``flush_s`` seconds; one array per block, so the queue
and the locks are touched once per block, not per frame) and queues them. The queue is bounded
by ``buffer_frames`` frames in memory; beyond that a block is *spilled* to a temporary file
beside the output (``overflow = "spill"``, the default: nothing is lost, the processing catches
up later) or dropped, counted and marked (``overflow = "drop"``, when asked for). The
*processor* (the thread that calls :meth:`LiveSession.run`, so Ctrl-C lands there) takes blocks
off the queue (reading spilled ones back) and hands them to every incremental processor (and,
with ``save_frames``, to the output's raw frame array). The iterative reconstruction refines in
a thread of its own. Counters (received, processed, dropped, spilled, missing, rejected) and the
frame rate are available at any time from :meth:`LiveSession.stats`, the images from
:meth:`LiveSession.snapshot`.
"""

import collections
import json
import math
import os
import queue
import tempfile
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

__all__ = ["LiveSession", "LiveResult", "OVERFLOW"]

_END = object()

#: what happens to a block when ``buffer_frames`` frames are already waiting in memory
OVERFLOW = ("spill", "drop")


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


@dataclass
class _Block:
    """Frames ``indices`` (b,) and their ``patterns`` (b, Qx, Qy), or where they were spilled."""

    indices: np.ndarray
    patterns: np.ndarray | None
    spilled: tuple[int, tuple[int, ...], str] | None = None  # (offset, shape, dtype) in the spill file


class _Spill:
    """An append-only temporary file of spilled blocks (written by the receiver, read back by the
    processor with positioned reads), removed by :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.size = 0

    def write(self, a: np.ndarray) -> tuple[int, tuple[int, ...], str]:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        a = np.ascontiguousarray(a)
        off, view = self.size, memoryview(a.data).cast("B")
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], off + done)
        self.size += len(view)
        return off, a.shape, a.dtype.str

    def read(self, ref: tuple[int, tuple[int, ...], str]) -> np.ndarray:
        off, shape, dt = ref
        n = int(np.prod(shape)) * np.dtype(dt).itemsize
        buf = bytearray(n)
        got = 0
        while got < n:
            chunk = os.pread(self._fd, n - got, off + got)  # type: ignore[arg-type]
            if not chunk:
                raise PtyroValueError(f"spill file {str(self.path)!r} ends at {off + got} bytes; expected {off + n}")
            buf[got : got + len(chunk)] = chunk
            got += len(chunk)
        return np.frombuffer(buf, dt).reshape(shape)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)


def _one_blas_thread() -> Any:
    """numpy's BLAS on one thread: the receiver, the processing and the sender (or the
    reconstruction) each need a core, and a BLAS team spinning on the cores they use slows every
    one of them (``threadpoolctl``, when installed; the previous limits come back afterwards)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class LiveSession:
    """One series from ``stream`` through ``processors``.

    ``geometry(start, first_frames) -> Geometry`` builds the geometry from the start message
    and the first ``calibration_frames`` frames (which it may use to measure the calibration;
    it is then frozen). ``output`` (an HDF5 path) is written atomically at the end;
    ``save_frames`` stores the raw frames too (chunked, one chunk per pattern row of the scan).
    ``buffer_frames`` bounds the frames waiting in memory, ``overflow`` says what happens beyond
    it (``"spill"`` to a temporary file beside the output, removed at the end, or ``"drop"``)."""

    def __init__(self, stream: Any, processors: Sequence[Any], geometry: Callable[[SeriesStart, list[Frame]], Geometry], *,
                 output: str | Path | None = None, overwrite: bool = False, buffer_frames: int = 4096, batch: int = 64,
                 save_frames: bool = False, calibration_frames: int = 0, provenance: Mapping[str, Any] | None = None,
                 overflow: str = "spill", flush_s: float = 0.02) -> None:  # fmt: skip
        if int(buffer_frames) < 1 or int(batch) < 1:
            raise PtyroValueError(f"buffer_frames {buffer_frames!r} and batch {batch!r}: expected positive numbers of frames")
        if overflow not in OVERFLOW:
            raise PtyroValueError(f"overflow {overflow!r}: expected one of {', '.join(OVERFLOW)}")
        self.stream = stream
        self.processors = list(processors)
        self._geometry_fn = geometry
        self.output = None
        if output is not None:
            from ptyro_workflows.io import check_output

            self.output = check_output(output, overwrite)
        self.overwrite = overwrite
        self.batch = int(batch)
        self.flush_s = float(flush_s)
        self.save_frames = bool(save_frames)
        self.calibration_frames = int(calibration_frames)
        self.provenance = dict(provenance or {})
        self.overflow = overflow
        self._q: queue.Queue = queue.Queue()  # blocks (bounded in frames by _buffered, below) and events
        self.buffer_frames = int(buffer_frames)
        self._buffered = 0  # frames in memory, queued
        self.geometry: Geometry | None = None
        self.start_message: SeriesStart | None = None
        self._c: collections.Counter = collections.Counter()
        self._rates: collections.deque = collections.deque(maxlen=64)
        self._t0: float | None = None
        self._t_last: float | None = None
        self._ended_normally = False
        self._stream_error: BaseException | None = None
        self._lock = threading.Lock()
        self.state = "waiting for the series"
        self._done = threading.Event()
        self._shape: tuple[int, ...] | None = None
        self._pending: list[Frame] = []
        self._plock = threading.Lock()
        self._spill_lock = threading.Lock()
        self._t_arrival = 0.0
        self._dropped_idx: list[np.ndarray] = []
        self._rejected_idx: list[np.ndarray] = []
        where = self.output.parent if self.output is not None else Path(tempfile.gettempdir())
        name = self.output.name if self.output is not None else "ptyro-live"
        self._spill = _Spill(where / f".{name}.{os.getpid()}.{id(self):x}.spill")

    # ----------------------------------------------------------------- receiver thread

    def _enqueue(self, frames: list[Frame], t_last: float) -> None:
        """One block of frames into the buffer (memory, else spilled or dropped)."""
        if self._shape is None:
            ps = self.start_message.pattern_shape if self.start_message is not None else None
            self._shape = tuple(ps) if ps else tuple(frames[0].pattern.shape)
        good = [f for f in frames if f.pattern.shape == self._shape]
        with self._lock:
            self._c["received"] += len(frames)
            self._t_last = t_last if self._t_last is None else max(self._t_last, t_last)
        if len(good) < len(frames):  # the wrong shape: rejected here, counted
            bad = np.fromiter((f.index for f in frames if f.pattern.shape != self._shape), np.int64)
            with self._lock:
                self._c["rejected"] += len(bad)
                self._rejected_idx.append(bad)
        if not good:
            return
        idx = np.fromiter((f.index for f in good), np.int64, len(good))
        pats = np.stack([f.pattern for f in good])
        b = len(idx)
        with self._lock:
            fits = self._buffered + b <= self.buffer_frames
            if fits:
                self._buffered += b
        if fits:
            self._q.put(_Block(idx, pats))
            return
        if self.overflow == "spill":
            try:
                with self._spill_lock:
                    ref = self._spill.write(pats)
            except OSError as e:  # the disk is full (or gone): these frames are dropped, counted, and the reason noted
                with self._lock:
                    self._c["spill_failed"] += b
                    self._spill_error = f"spilling to {str(self._spill.path)!r} failed ({e.strerror or e}); {b} frames dropped"
            else:
                with self._lock:
                    self._c["spilled"] += b
                self._q.put(_Block(idx, None, ref))
                return
        with self._lock:
            self._c["dropped"] += b
            self._dropped_idx.append(idx)

    def _add(self, frame: Frame) -> None:
        """A frame into the block being gathered; a full block goes to the buffer."""
        now = time.perf_counter()
        with self._plock:
            if self._t0 is None:
                self._t0 = now
            self._pending.append(frame)
            self._t_arrival = now
            if len(self._pending) < self.batch:
                return
            frames, self._pending = self._pending, []
        self._enqueue(frames, now)

    def _flush(self) -> None:
        """The frames gathered so far into the buffer (by the receiver when the source is idle,
        by the processor when it has nothing else to do: frames never wait for a block to fill)."""
        with self._plock:
            frames, self._pending = self._pending, []
            t = self._t_arrival
        if frames:
            self._enqueue(frames, t)

    def _receive(self) -> None:
        try:
            for ev in self.stream:
                if isinstance(ev, Frame):
                    self._add(ev)
                    continue
                self._flush()  # anything else (None: the source is idle) flushes the frames gathered so far
                if isinstance(ev, SeriesStart):
                    self.start_message = ev
                    self._q.put(ev)
                elif isinstance(ev, SeriesEnd):
                    self._ended_normally = True
                    break
        except BaseException as e:  # noqa: BLE001 - a source failing mid-series: the session writes what it has
            self._stream_error = e
        finally:
            self._flush()
            self._q.put(_END)

    # ----------------------------------------------------------------- processing

    def stats(self) -> dict[str, Any]:
        """Counters and rates (a consistent copy; safe from any thread)."""
        with self._lock:
            c = dict(self._c)
            t0, tl = self._t0, self._t_last
            buffered = self._buffered
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
            "dropped": c.get("dropped", 0) + c.get("spill_failed", 0),
            "rejected": c.get("rejected", 0),
            "spilled": c.get("spilled", 0),
            "spill_mb": self._spill.size / 2**20,
            "queued": buffered,
            "buffer": self.buffer_frames,
            "overflow": self.overflow,
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
        g = self._geometry_fn(start, first)
        n = g.size
        if start.number_of_images is not None and int(start.number_of_images) != n:
            raise PtyroValueError(f"the series has {start.number_of_images} images but the scan {g.scan_shape} has {n} positions; "
                                  "expected [scan] gpts to match the detector's number of images")  # fmt: skip
        self._processed_mask = np.zeros(n, bool)
        for p in self.processors:
            p.start(g)
        self.geometry = g  # last: the view's snapshots begin once every processor has started
        self.state = "receiving"

    def _geom(self) -> Geometry:
        """The series' geometry (set when a series starts; asked for only after that)."""
        if self.geometry is None:
            raise RuntimeError("live session: no series has started yet")
        return self.geometry

    def _open_output(self, dtype: Any) -> None:
        import h5py

        self._h5 = None
        if self.output is None:
            return
        self._tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.{id(self):x}.tmp")
        self._h5 = h5py.File(self._tmp, "w")
        if self.save_frames:
            g = self._geom()
            dt = np.dtype(self.start_message.dtype) if self.start_message and self.start_message.dtype else np.dtype(dtype)
            self._frames = self._h5.create_dataset("frames", shape=g.scan_shape + g.pattern_shape, dtype=dt,
                                                   chunks=(1, min(g.scan_shape[1], 8)) + g.pattern_shape, fillvalue=0)  # fmt: skip

    def _process(self, idx: np.ndarray, pats: np.ndarray) -> None:
        g = self._geom()
        n = g.size
        ok = (idx >= 0) & (idx < n)  # out of the scan, a repeat (in this block or before): rejected, counted
        ok[ok] &= ~self._processed_mask[idx[ok]]
        _, first = np.unique(idx, return_index=True)
        once = np.zeros(len(idx), bool)
        once[first] = True
        ok &= once
        if not ok.all():
            with self._lock:
                self._c["rejected"] += int((~ok).sum())
                self._rejected_idx.append(idx[~ok])
            idx, pats = idx[ok], pats[ok]
        if not len(idx):
            return
        for p in self.processors:
            p.update(idx, pats)
        if self.save_frames and self._h5 is not None:
            ry = g.scan_shape[1]
            for k, pat in zip(idx, pats):
                self._frames[k // ry, k % ry] = pat
        self._processed_mask[idx] = True
        with self._lock:
            self._c["processed"] += len(idx)

    def _take(self, block: _Block) -> tuple[np.ndarray, np.ndarray]:
        """A block's frames (read back from the spill file if they were spilled); frees its room."""
        if block.patterns is None:
            assert block.spilled is not None
            return block.indices, self._spill.read(block.spilled)
        with self._lock:
            self._buffered -= len(block.indices)
        return block.indices, block.patterns

    def run(self) -> LiveResult:
        """Receive, process and write; returns when the series ended (or the stream died, or
        on Ctrl-C: then the output is written marked incomplete and KeyboardInterrupt is
        re-raised after it). numpy's BLAS runs on one thread meanwhile (:func:`_one_blas_thread`)."""
        with _one_blas_thread():
            return self._run()

    def _run(self) -> LiveResult:
        self._h5 = None
        self._spill_error = ""
        rx = threading.Thread(target=self._receive, name="ptyro-live-receiver", daemon=True)
        rx.start()
        interrupted: BaseException | None = None
        failure: BaseException | None = None
        pending_start: SeriesStart | None = None
        first: list[tuple[np.ndarray, np.ndarray]] = []
        try:
            ended = False
            while True:
                try:
                    ev = self._q.get(timeout=self.flush_s) if not ended else self._q.get_nowait()
                except queue.Empty:
                    if ended:
                        break
                    self._flush()
                    continue
                if ev is _END:  # the receiver is done; what this thread flushed itself may still be queued behind
                    ended = True
                    continue
                if isinstance(ev, SeriesStart):
                    pending_start = ev
                    first = []
                    if self.calibration_frames == 0 and ev.pattern_shape is not None:  # else: the first frames give the shape
                        self._begin(ev, [])
                        self._open_output(np.uint16)
                    continue
                idx, pats = self._take(ev)
                if self.geometry is None:
                    if pending_start is None:
                        raise PtyroValueError("the stream sent frames before a start message; expected start, image ..., end")
                    first.append((idx, pats))
                    if sum(len(i) for i, _ in first) < max(self.calibration_frames, 1):
                        continue
                    self._start_from(pending_start, first)
                    continue
                self._process(idx, pats)
        except KeyboardInterrupt as e:
            interrupted = e
        except BaseException as e:  # noqa: BLE001 - a thread or processor reports its failure; the session keeps what it has
            failure = e
        finally:
            self.stream.close()
        if self.geometry is None and pending_start is not None and first and failure is None:
            try:
                self._start_from(pending_start, first)
            except BaseException as e:  # noqa: BLE001 - a thread or processor reports its failure; the session keeps what it has
                failure = e
        rx.join(5.0)
        try:
            st = self.stats()
            complete = (interrupted is None and failure is None and self._stream_error is None and self._ended_normally
                        and self.geometry is not None and st["processed"] == self.geometry.size)  # fmt: skip
            self.state = "finishing" if complete else "finishing (incomplete)"
            result = self._finish(complete, quick=interrupted is not None or failure is not None, errors=[interrupted, failure, self._stream_error])
        finally:
            self._spill.close()
        self.state = "done" if complete else "done (incomplete)"
        self.result = result
        self._done.set()
        if interrupted is not None:
            raise interrupted
        if failure is not None:
            raise failure
        return result

    def _start_from(self, start: SeriesStart, blocks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """The geometry from the first frames (the calibration, then frozen), then those frames processed."""
        frames = [Frame(int(k), p) for i, ps in blocks for k, p in zip(i, ps)]
        self._begin(start, frames)
        self._open_output(blocks[0][1].dtype)
        for i, ps in blocks:
            self._process(i, ps)

    # ----------------------------------------------------------------- the end

    def _finish(self, complete: bool, *, quick: bool, errors: list) -> LiveResult:
        results: dict[str, Any] = {}
        notes = [f"{type(e).__name__}: {e}" for e in errors if e is not None]
        if self._spill_error:
            notes.append(self._spill_error)
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
            g = self._geom()
            for k, v in results.items():
                f.create_dataset(k, data=v)
            n = g.size
            for name, idx in (("dropped", self._dropped_idx), ("rejected", self._rejected_idx)):
                m = np.zeros(n, bool)
                flat = np.concatenate(idx) if idx else np.zeros(0, np.int64)
                m[flat[(flat >= 0) & (flat < n)]] = True
                f.create_dataset(f"{name}_mask", data=m.reshape(g.scan_shape))
            f.create_dataset("processed_mask", data=self._processed_mask.reshape(g.scan_shape))
            missing = n - int(self._processed_mask.sum())
            attrs = {
                "kind": "ptyro live session", "complete": bool(complete), "expected": int(n), "received": st["received"],
                "processed": st["processed"], "dropped": st["dropped"], "rejected": st["rejected"], "missing": missing,
                "spilled": st["spilled"], "spill_mb": st["spill_mb"], "overflow": self.overflow,
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
            assert self.output is not None  # an HDF5 file is open only with an output
            if self.output.exists() and not self.overwrite:
                os.replace(self._tmp, self.output.with_name(self.output.name + f".{os.getpid()}.incomplete.h5"))
                raise PtyroValueError(f"output {str(self.output)!r} appeared meanwhile; wrote beside it instead")
            os.replace(self._tmp, self.output)
            path = self.output
        latency = time.perf_counter() - self._t_last if self._t_last is not None else math.nan
        st = {**st, "complete": complete, "notes": notes}
        return LiveResult(complete, st, latency, path, results)
