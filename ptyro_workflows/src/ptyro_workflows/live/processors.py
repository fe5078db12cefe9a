"""Incremental processors: what runs on the frames as they arrive.

An *incremental processor* has ``start(geometry)`` (once, before the first frame),
``update(indices, patterns)`` (a batch: frame numbers (b,) and patterns (b, Qx, Qy) as received),
``snapshot() -> {name: 2D array}`` (cheap; the live view and the progress line call it at any
time, from another thread) and ``finish(complete) -> {name: array}`` (once, after the last frame:
the final results written to the output). :class:`VirtualDetectors` (virtual BF / ADF / annular
images, centre of mass, DPC) and :class:`LivePtychography` (the iterative reconstruction,
refined while the scan fills in) are built in; :class:`DirectMethod` wraps any function of the
partial virtual images (e.g. the direct methods of ``ptyro_invert.direct``: iCoM, SSB,
parallax) as one.
"""

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_core.conventions import energy2wavelength

__all__ = ["Geometry", "IncrementalProcessor", "VirtualDetectors", "virtual_images", "LivePtychography", "DirectMethod", "live_state"]


@dataclass(frozen=True)
class Geometry:
    """What the processors know of the series: scan (Rx, Ry) and step (Å), pattern (Qx, Qy),
    beam energy (eV), probe semi-angle (mrad), detector pixel (Å⁻¹) and the virtual detectors
    (``detectors``: name -> (inner, outer) mrad; ``bf`` is the bright-field disc)."""

    scan_shape: tuple[int, int]
    pattern_shape: tuple[int, int]
    energy: float
    reciprocal_sampling: tuple[float, float]
    scan_step: tuple[float, float] = (1.0, 1.0)
    semiangle_cutoff: float = 20.0
    detectors: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    calibration: str = "given"  # where the detector pixel came from (reported in the output)

    @property
    def size(self) -> int:
        return int(self.scan_shape[0] * self.scan_shape[1])

    @property
    def mrad_per_pixel(self) -> tuple[float, float]:
        lam = energy2wavelength(self.energy)
        return (self.reciprocal_sampling[0] * lam * 1e3, self.reciprocal_sampling[1] * lam * 1e3)

    def detector_table(self) -> dict[str, tuple[float, float]]:
        """The virtual detectors: ``bf`` (0 to the semi-angle), ``adf`` (2x to 4x the semi-angle,
        clipped to the detector edge) unless configured, plus the configured ones."""
        edge = min(self.pattern_shape[0] // 2 * self.mrad_per_pixel[0], self.pattern_shape[1] // 2 * self.mrad_per_pixel[1])
        out = {"bf": (0.0, self.semiangle_cutoff), "adf": (min(2 * self.semiangle_cutoff, 0.7 * edge), min(4 * self.semiangle_cutoff, edge))}
        out.update({k: (float(v[0]), float(v[1])) for k, v in self.detectors.items()})
        return out


@runtime_checkable
class IncrementalProcessor(Protocol):
    def start(self, geometry: Geometry) -> None: ...

    def update(self, indices: np.ndarray, patterns: np.ndarray) -> None: ...

    def snapshot(self) -> dict[str, np.ndarray]: ...

    def finish(self, complete: bool) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- virtual detectors


def _weights(g: Geometry) -> tuple[np.ndarray, list[str]]:
    """Integer-valued detector weights (pixels, columns): every signal is an exact float64 sum
    (counts < 2^53), so a batch gives bit-for-bit the numbers of the whole scan at once."""
    nx, ny = g.pattern_shape
    ix = np.arange(nx)[:, None] - nx // 2 + np.zeros((1, ny))
    iy = np.arange(ny)[None, :] - ny // 2 + np.zeros((nx, 1))
    mx, my = g.mrad_per_pixel
    theta = np.sqrt((ix * mx) ** 2 + (iy * my) ** 2)
    cols: list[np.ndarray] = []
    names: list[str] = []
    for name, (lo, hi) in g.detector_table().items():
        if not 0 <= lo < hi:
            raise PtyroValueError(f"virtual detector {name!r}: ({lo}, {hi}) mrad; expected 0 <= inner < outer")
        cols.append((theta >= lo) & (theta < hi))
        names.append(name)
    bf = theta < g.semiangle_cutoff
    cols += [np.ones((nx, ny)), ix, iy, bf & (ix > 0), bf & (ix < 0), bf & (iy > 0), bf & (iy < 0)]
    names += ["_total", "_sx", "_sy", "_xp", "_xm", "_yp", "_ym"]
    return np.stack([c.astype(np.float64).ravel() for c in cols], axis=1), names


def _images(sig: np.ndarray, names: list[str], g: Geometry) -> dict[str, np.ndarray]:
    """Signals (m, N) -> named images: the virtual detectors in counts, the centre of mass in
    mrad, DPC as (right - left) / (right + left) of the bright-field half-discs along x and y
    (a segmented detector's difference signal)."""
    s = dict(zip(names, sig))
    out = {k: s[k] for k in names if not k.startswith("_")}
    with np.errstate(invalid="ignore", divide="ignore"):
        tot = s["_total"]
        out["com_x"] = np.where(tot > 0, s["_sx"] / tot, 0.0) * g.mrad_per_pixel[0]
        out["com_y"] = np.where(tot > 0, s["_sy"] / tot, 0.0) * g.mrad_per_pixel[1]
        bfx = s["_xp"] + s["_xm"]
        bfy = s["_yp"] + s["_ym"]
        out["dpc_x"] = np.where(bfx > 0, (s["_xp"] - s["_xm"]) / bfx, 0.0)
        out["dpc_y"] = np.where(bfy > 0, (s["_yp"] - s["_ym"]) / bfy, 0.0)
    return {k: v.reshape(g.scan_shape) for k, v in out.items()}


class _Signals:
    """patterns (b, Qx·Qy) -> exact signals (b, m), float64.

    Fast path: float32 (half the memory traffic of float64). Every product count × weight and
    every partial sum is an integer; float32 holds them exactly while they stay below 2^24, which
    is guaranteed when a frame's total counts (the ``_total`` column, itself exact below 2^24)
    stay below 2^24 / max|weight|. Batches with brighter frames take the float64 path (exact up
    to 2^53). Either way the result is the exact integer sum, whatever the batch."""

    def __init__(self, g: Geometry) -> None:
        self.w64, self.names = _weights(g)
        self.w32 = self.w64.astype(np.float32)
        self.total = self.names.index("_total")
        self.bound = float(2**24) / float(np.abs(self.w64).max())

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        s = flat.astype(np.float32) @ self.w32
        if bool(np.all(s[:, self.total] < self.bound)):
            return s.astype(np.float64)
        return flat.astype(np.float64) @ self.w64


def virtual_images(patterns: Any, geometry: Geometry) -> dict[str, np.ndarray]:
    """The virtual images of a whole (Rx, Ry, Qx, Qy) dataset at once (the offline reference of
    :class:`VirtualDetectors`: the same numbers, bit for bit)."""
    sig = _Signals(geometry)
    p = np.asarray(patterns).reshape(geometry.size, -1)
    return _images(sig(p).T, sig.names, geometry)


class VirtualDetectors:
    """Virtual BF, ADF and annular images (counts), centre of mass (mrad) and DPC, filled in as
    the frames arrive (pixels not yet received are 0)."""

    name = "virtual"

    def start(self, geometry: Geometry) -> None:
        self.geometry = geometry
        self._signals = _Signals(geometry)
        self._names = self._signals.names
        self._sig = np.zeros((len(self._names), geometry.size), np.float64)
        self._lock = threading.Lock()

    def update(self, indices: np.ndarray, patterns: np.ndarray) -> None:
        s = self._signals(np.asarray(patterns).reshape(len(indices), -1))
        with self._lock:
            self._sig[:, indices] = s.T

    def snapshot(self) -> dict[str, np.ndarray]:
        with self._lock:
            sig = self._sig.copy()
        return _images(sig, self._names, self.geometry)

    def finish(self, complete: bool) -> dict[str, Any]:
        return {f"images/{k}": v for k, v in self.snapshot().items()}


# --------------------------------------------------------------------------- direct methods


class DirectMethod:
    """A direct method run on the partial virtual images every ``every`` seconds (and at the
    end): ``fn(images, geometry) -> {name: 2D array}`` where ``images`` is
    :meth:`VirtualDetectors.snapshot`'s dict (plus ``received``, the (Rx, Ry) mask). This is
    how ``ptyro_invert.direct``'s iCoM / SSB / parallax plug in (see docs/live.md)."""

    def __init__(self, name: str, fn: Callable[[dict, Geometry], dict], virtual: VirtualDetectors, *, every: float = 1.0) -> None:
        self.name, self.fn, self.virtual, self.every = name, fn, virtual, float(every)
        self._last = 0.0
        self._out: dict[str, np.ndarray] = {}
        self._received: np.ndarray | None = None

    def start(self, geometry: Geometry) -> None:
        self.geometry = geometry
        self._received = np.zeros(geometry.size, bool)

    def update(self, indices: np.ndarray, patterns: np.ndarray) -> None:
        assert self._received is not None, "start() comes first"
        self._received[indices] = True
        if time.perf_counter() - self._last >= self.every:
            self._run()

    def _run(self) -> None:
        imgs = self.virtual.snapshot()
        assert self._received is not None, "start() comes first"
        imgs["received"] = self._received.reshape(self.geometry.scan_shape)
        self._out = {f"{self.name}_{k}": np.asarray(v) for k, v in self.fn(imgs, self.geometry).items()}
        self._last = time.perf_counter()

    def snapshot(self) -> dict[str, np.ndarray]:
        return dict(self._out)

    def finish(self, complete: bool) -> dict[str, Any]:
        self._run()
        return {f"direct/{k}": v for k, v in self._out.items()}


# --------------------------------------------------------------------------- iterative ptychography


def live_state(config: Mapping[str, Any], g: Geometry) -> tuple[Any, np.ndarray, Any]:
    """(the detector's real-space grid, the raster's positions (Rx·Ry, 2) Å, the initial
    :class:`~ptyro_core.ReconState`) of the series, built from ``config`` (``[probe]``,
    ``[reconstruction]``) as ``ptyro reconstruct`` builds them: what the live reconstruction and
    the live direct methods share."""
    from ptyro_core import Dataset4D, Grid, ScanPositions
    from ptyro_workflows.config import reconstruction_config
    from ptyro_workflows.reconstruct import initial_state

    cfg = reconstruction_config({k: v for k, v in config.items() if k in ("probe", "scan", "reconstruction")})
    nq = g.pattern_shape
    grid = Grid(nq, (1.0 / (nq[0] * g.reciprocal_sampling[0]), 1.0 / (nq[1] * g.reciprocal_sampling[1])))
    rx, ry = g.scan_shape
    positions = np.asarray(ScanPositions.raster((0.0, 0.0), (rx * g.scan_step[0], ry * g.scan_step[1]), (rx, ry)).positions, np.float32)
    dummy = Dataset4D.lazy(np.zeros((rx, ry) + nq, np.float32), positions, grid=grid, energy=g.energy)
    return grid, positions, initial_state(dummy, {**cfg, "probe": {**cfg["probe"], "energy": g.energy}})


class LivePtychography:
    """Iterative ptychography on the frames received so far, refined pass after pass in its own
    thread while the scan fills in, then ``final_passes`` passes over the whole scan after the
    last frame, all through the public ``ptyro_invert.reconstruct``, each call warm-started from
    the previous object and probe: while the scan fills in, a call ends after the first pass
    that finds new frames (so that the next includes them); after the end, one call makes the
    final passes (as an offline run does).

    A pass runs on a dataset of the full scan's size in which every position not yet received
    is stood in for by a received one (frame j of the received list repeated cyclically), so the
    compiled step is the same from the first pass to the last (no recompilation while the scan
    fills in); the stand-ins weigh the received frames, nothing is invented.

    ``config`` is a reconstruction configuration (``[probe]``, ``[reconstruction]``, as for
    ``ptyro reconstruct``); ``min_frames`` (default: one scan row) starts the first pass."""

    name = "ptycho"

    def __init__(self, config: Mapping[str, Any], *, final_passes: int = 5, min_frames: int | None = None, probe_after: float = 0.5,
                 progress: bool = False) -> None:  # fmt: skip
        from ptyro_workflows.config import reconstruction_config

        self.config = reconstruction_config({k: v for k, v in config.items() if k in ("probe", "scan", "reconstruction")})
        if int(final_passes) < 0:
            raise PtyroValueError(f"final_passes {final_passes!r}: expected a number of passes >= 0")
        self.final_passes = int(final_passes)
        self.min_frames = min_frames
        self.probe_after = float(probe_after)
        self.passes_live = 0
        self.passes_final = 0
        self.loss: list[float] = []
        self.coverage: list[int] = []
        self._error: BaseException | None = None

    def start(self, geometry: Geometry) -> None:
        self.geometry = g = geometry
        nq = g.pattern_shape
        self.grid, self.positions, self.state0 = live_state(self.config, g)
        self.state = self.state0
        self._buf = np.zeros((g.size,) + nq, np.float32)
        self._received = np.zeros(g.size, bool)
        self._count = 0
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._stop = threading.Event()
        self._phase: np.ndarray | None = None
        self._thread = threading.Thread(target=self._loop, name="ptyro-live-ptycho", daemon=True)
        self._thread.start()

    def update(self, indices: np.ndarray, patterns: np.ndarray) -> None:
        with self._lock:
            self._buf[indices] = patterns
            self._received[indices] = True
            self._count = int(self._received.sum())

    def _pass(self, iterations: int, *, until_new_frames: bool = False) -> int:
        """Up to ``iterations`` passes in one call (the optimizer's state carried between them,
        as offline); with ``until_new_frames`` the call ends after the first pass that finds
        more frames received than it started with. Every call has the same number of passes, so
        the step compiles once. Returns the passes made."""
        import ptyro_invert
        from ptyro_core import Dataset4D, replace

        r = self.config["reconstruction"]
        with self._lock:
            have = np.flatnonzero(self._received)
        n = self.geometry.size
        fill = have[np.arange(n) % len(have)] if len(have) < n else np.arange(n)
        data = self._buf[fill]
        ds = Dataset4D(data.reshape((1, n) + self.geometry.pattern_shape), self.positions[fill], grid=self.grid, energy=self.geometry.energy)
        # the loss history is kept here (self.loss); a call starting from an empty one keeps the
        # shapes of its small bookkeeping ops the same from call to call (no recompiles)
        st = replace(self.state, positions=np.asarray(self.state0.positions)[fill], loss=np.zeros(0, np.float32))
        opts: dict[str, Any] = {"loss": r["loss"], "optimizer": r["optimizer"], "batch_size": int(r["batch_size"]),
                                "seed": int(r["seed"]) + len(self.loss), "progress": False}  # fmt: skip
        lrs = dict((r.get("options") or {}).get("learning_rates") or {})
        if r.get("learning_rate") is not None:
            lrs["object"] = float(r["learning_rate"])
        if r.get("probe_learning_rate") is not None:
            lrs["probe"] = float(r["probe_learning_rate"])
        if lrs:
            opts["learning_rates"] = lrs
        opts.update({k: v for k, v in (r.get("options") or {}).items() if k != "learning_rates"})
        if len(have) < self.probe_after * n:
            opts["fit_probe"] = False  # on a small part of the scan the probe would absorb the object (one more compile when it turns on)
        done = [0]

        def after_pass(out: Any) -> bool:
            self.state = replace(out, positions=self.state0.positions)
            self.loss.append(float(np.asarray(out.loss)[-1]))
            self.coverage.append(len(have))
            self._phase = np.angle(np.asarray(out.object[0]))
            done[0] += 1
            if until_new_frames and self._count > len(have):
                return False
            return not self._stop.is_set()

        ptyro_invert.reconstruct(ds, st, r["algorithm"], iterations=int(iterations), callback=after_pass, **opts)
        return done[0]

    def _loop(self) -> None:
        try:
            start = self.min_frames if self.min_frames is not None else self.geometry.scan_shape[1]
            while not self._stop.is_set():
                if self._ended.is_set():
                    if self._count and self.final_passes and not self._stop.is_set():
                        self.passes_final = self._pass(self.final_passes)
                    return
                if self._count >= max(1, start):
                    self.passes_live += self._pass(max(self.final_passes, 1), until_new_frames=True)
                else:
                    self._ended.wait(0.05)
        except BaseException as e:  # noqa: BLE001 - reported by finish(); the other processors keep going
            self._error = e

    def snapshot(self) -> dict[str, np.ndarray]:
        return {} if self._phase is None else {"phase": self._phase}

    def finish(self, complete: bool, *, passes: bool = True) -> dict[str, Any]:
        if not passes:
            self._stop.set()
        self._ended.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        s = self.state
        return {
            "reconstruction/object": np.asarray(s.object),
            "reconstruction/probe": np.asarray(s.probe),
            "reconstruction/positions": np.asarray(s.positions),
            "reconstruction/loss": np.asarray(self.loss, np.float32),
            "reconstruction/frames_per_pass": np.asarray(self.coverage, np.int64),
            "reconstruction/passes_while_scanning": np.asarray(self.passes_live),
            "reconstruction/passes_after_end": np.asarray(self.passes_final),
            "reconstruction/sampling": np.asarray(s.sampling, np.float64),
        }

    def abort(self) -> None:
        self._stop.set()
        self._ended.set()
