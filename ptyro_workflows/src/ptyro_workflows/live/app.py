"""``ptyro live`` as a function: a source SPEC and a configuration in, one output file out, with
an optional live web view."""

import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_workflows.live.processors import DirectMethod, Geometry, LivePtychography, VirtualDetectors
from ptyro_workflows.live.session import LiveResult, LiveSession
from ptyro_workflows.live.sources import Frame, SeriesStart, open_source

__all__ = ["LIVE_DEFAULTS", "live_config", "make_geometry", "processors", "build_session", "run_live"]

#: the ``[live]`` table: key -> default
LIVE_DEFAULTS: dict[str, Any] = {
    "buffer_frames": 4096,  # frames waiting in memory between receiver and processing
    "overflow": "spill",  # beyond buffer_frames: "spill" to a temporary file beside the output (nothing lost) or "drop" (counted)
    "batch": 64,  # frames processed at once
    "reciprocal_sampling": None,  # Å⁻¹ per detector pixel; default: the source's, else measured
    "calibration_frames": 16,  # frames averaged to measure the detector pixel from the BF disc
    "detectors": {},  # name -> [inner, outer] mrad (bf and adf are always there)
    "ptychography": True,  # the iterative reconstruction
    "final_passes": 5,  # passes over the whole scan after the last frame
    "min_frames": None,  # frames before the first pass (default: one scan row)
    "direct": [],  # names of direct methods (ptyro_invert.direct) to run live
    "save_frames": False,  # also store the raw frames (chunked)
    "devices": "all",  # devices the live SSB dispatches frames to: "all" (the mesh), or how many
}


def live_config(config: Any = None) -> dict[str, Any]:
    """The configuration split: the ``[live]`` table (checked, defaults filled) and the rest
    (``[probe]``, ``[scan]``, ``[reconstruction]``, checked as for ``ptyro reconstruct``)."""
    from ptyro_workflows.config import load_config, reconstruction_config

    cfg = load_config(config)
    live = dict(cfg.pop("live", None) or {})
    unknown = sorted(set(live) - set(LIVE_DEFAULTS))
    if unknown:
        raise PtyroValueError(f"[live] {unknown[0]!r}: unknown key; expected one of {', '.join(LIVE_DEFAULTS)}")
    live = {**LIVE_DEFAULTS, **live}
    for k in ("buffer_frames", "batch"):
        if not (isinstance(live[k], int) and live[k] >= 1):
            raise PtyroValueError(f"[live] {k} = {live[k]!r}: expected a whole number of frames >= 1")
    if live["overflow"] not in ("spill", "drop"):
        raise PtyroValueError(f"[live] overflow = {live['overflow']!r}: expected 'spill' (to a temporary file, nothing lost) or 'drop'")
    rec = reconstruction_config(cfg)
    return {**rec, "live": live}


def make_geometry(cfg: Mapping[str, Any], start: SeriesStart, first: list[Frame]) -> Geometry:
    """The geometry from the configuration, else the start message's metadata, else (the
    detector pixel) measured on the first frames' bright-field disc and frozen."""
    from ptyro_workflows.io import _estimate_reciprocal_sampling

    meta = dict(start.metadata or {})
    scan = cfg["scan"]
    shape = scan.get("gpts") or meta.get("scan_shape")
    if shape is None:
        raise PtyroValueError("the scan shape is unknown: the stream does not carry it; expected [scan] gpts = [Rx, Ry] (or --scan-gpts)")
    step = scan.get("step") or meta.get("scan_step")
    if step is None:
        raise PtyroValueError("the scan step is unknown: expected [scan] step = [dx, dy] Å (or --step)")
    step = (float(step[0]), float(step[1])) if isinstance(step, (list, tuple)) else (float(step),) * 2
    energy = float(cfg["probe"]["energy"]) if cfg.get("_energy_given") or "energy" not in meta else float(meta["energy"])
    pshape = start.pattern_shape or (tuple(first[0].pattern.shape) if first else None)
    if pshape is None:
        raise PtyroValueError("the pattern shape is unknown: the stream sent no image size and no frame")
    live = cfg["live"]
    rs = live.get("reciprocal_sampling")
    how = "[live] reciprocal_sampling"
    if rs is None and meta.get("reciprocal_sampling") is not None:
        rs, how = meta["reciprocal_sampling"], "the source's metadata"
    if rs is None:
        if not first:
            raise PtyroValueError("the detector pixel is unknown: expected [live] reciprocal_sampling (Å⁻¹) or calibration_frames > 0")
        mean = np.mean([np.asarray(f.pattern, np.float64) for f in first], axis=0)
        rs = _estimate_reciprocal_sampling(mean, float(cfg["probe"]["semiangle_cutoff"]), energy)
        how = f"measured on the bright-field disc of the first {len(first)} frames, then frozen"
    rs = (float(rs[0]), float(rs[1])) if isinstance(rs, (list, tuple)) else (float(rs),) * 2
    dets = {k: tuple(v) for k, v in (live.get("detectors") or {}).items()}
    return Geometry((int(shape[0]), int(shape[1])), (int(pshape[0]), int(pshape[1])), energy, rs, step,
                    float(cfg["probe"]["semiangle_cutoff"]), dets, how)  # fmt: skip


def _direct(name: str) -> Any:
    """A direct method of ``ptyro_invert.direct``: a function of the partial images, or an
    incremental processor's class."""
    from ptyro_workflows.live.direct import INCREMENTAL, METHODS

    if name not in METHODS and name not in INCREMENTAL:
        raise PtyroValueError(f"[live] direct method {name!r}: unknown; expected one of {', '.join([*METHODS, *INCREMENTAL])}")
    try:
        import ptyro_invert.direct  # noqa: F401  (the direct-phase issue's package)
    except ImportError:
        raise PtyroValueError(f"[live] direct = [{name!r}]: ptyro_invert.direct is not installed in this version") from None
    return METHODS.get(name) or INCREMENTAL[name]


def processors(cfg: Mapping[str, Any]) -> list[Any]:
    """The incremental processors ``cfg`` (from :func:`live_config`) asks for: the virtual
    detectors, the direct methods of ``[live] direct``, the iterative reconstruction."""
    live = cfg["live"]
    virtual = VirtualDetectors()
    procs: list[Any] = [virtual]
    for name in live["direct"]:
        fn = _direct(name)
        procs.append(fn(cfg, devices=live["devices"], block=live["batch"]) if isinstance(fn, type) else DirectMethod(name, fn, virtual))
    if live["ptychography"]:
        procs.append(LivePtychography(cfg, final_passes=int(live["final_passes"]), min_frames=live["min_frames"]))
    return procs


def build_session(spec: str, config: Any = None, output: str | Path | None = None, *, overwrite: bool = False,
                  source_options: Mapping[str, Any] | None = None, energy_given: bool = False) -> LiveSession:  # fmt: skip
    """A :class:`LiveSession` for source SPEC and ``config`` (nothing runs yet; bad input fails here)."""
    cfg = live_config(config)
    cfg["_energy_given"] = energy_given
    live = cfg["live"]
    procs = processors(cfg)
    needs_cal = live.get("reciprocal_sampling") is None
    stream = open_source(spec, **dict(source_options or {}))
    prov = {"source": spec, "config": {k: v for k, v in cfg.items() if not k.startswith("_")}, "command": ["ptyro", *sys.argv[1:]]}
    return LiveSession(stream, procs, lambda s, f: make_geometry(cfg, s, f), output=output, overwrite=overwrite,
                       buffer_frames=live["buffer_frames"], batch=live["batch"], save_frames=live["save_frames"], overflow=live["overflow"],
                       calibration_frames=int(live["calibration_frames"]) if needs_cal else 0, provenance=prov)  # fmt: skip


def run_live(spec: str, config: Any = None, output: str | Path | None = None, *, overwrite: bool = False,
             source_options: Mapping[str, Any] | None = None, view: bool = False, host: str = "127.0.0.1", port: int = 5006,
             progress: bool = True, energy_given: bool = False) -> LiveResult:  # fmt: skip
    """Run one live session (see :class:`LiveSession`), with the web view on ``host:port`` if
    ``view``; prints a status line every second when ``progress``."""
    session = build_session(spec, config, output, overwrite=overwrite, source_options=source_options, energy_given=energy_given)
    server = None
    if view:
        from ptyro_workflows.live.view import serve

        server = serve(session, host=host, port=port)
        print(f"live view: {server.url}", flush=True)
    stop = threading.Event()

    def status() -> None:
        while not stop.wait(1.0):
            s = session.stats()
            line = (f"\r{s['state']}: received {s['received']}/{s['expected'] or '?'} ({s['fps_received']:.0f}/s), "
                    f"processed {s['processed']}, dropped {s['dropped']}, spilled {s['spilled']}, queued {s['queued']}")  # fmt: skip
            if "loss" in s:
                line += f", recon pass {s['passes']} on {s['frames_in_reconstruction']} frames, loss {s['loss']:.4g}"
            print(line, end="", file=sys.stderr, flush=True)

    t = threading.Thread(target=status, daemon=True)
    if progress:
        t.start()
    try:
        return session.run()
    finally:
        stop.set()
        if progress:
            print(file=sys.stderr)
        if server is not None:
            time.sleep(0.5)
            server.stop()
