"""Sustained throughput of ``ptyro live`` on 128x128 uint16 frames of a 64x64 scan, streamed
through a real ZeroMQ socket on localhost by the Stream V2 sender (uncompressed):

    python benchmarks/live/throughput.py virtual          # (a) virtual detectors + COM + DPC
    python benchmarks/live/throughput.py ptycho --fps 200  # (c) + iterative ptychography at 200 frames/s

Mode ``virtual`` sends as fast as the socket takes them (sender and receiver on the same
machine, competing for the same cores) with a buffer of the whole scan, and reports frames per
second received and processed; then it re-runs paced at 90, 70, 50 and 35 % of that rate with a
256-frame buffer until a run drops nothing (the maximum rate before drops), and measures the
processing alone (frames already in memory, no socket) for comparison. Mode ``ptycho`` runs paced at ``--fps`` and reports the passes
made while the scan ran and the latency from the last frame to the written file."""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ptyro_workflows.live import build_session
from ptyro_workflows.live.sender import StreamV2Sender


def frames(n: int, q: int = 128, seed: int = 0) -> np.ndarray:
    """A BF disc (radius 20 px) with Poisson counts, slightly shifted per frame."""
    rng = np.random.default_rng(seed)
    x = np.arange(q) - q // 2
    base = (np.hypot(x[:, None], x[None, :]) < 20) * 50.0 + 1.0
    out = np.empty((n, q, q), np.uint16)
    for k in range(n):
        out[k] = rng.poisson(np.roll(base, (k % 5) - 2, axis=0))
    return out


def run(mode: str, fps: float, buffer: int, scan=(64, 64), final_passes: int = 2) -> dict:
    n = scan[0] * scan[1]
    pats = frames(n)
    cfg = {
        "probe": {"energy": 200e3, "semiangle_cutoff": 20.0},
        "scan": {"gpts": list(scan), "step": [0.4, 0.4]},
        "reconstruction": {"batch_size": 64, "learning_rate": 0.05, "probe_learning_rate": 0.005},
        "live": {"reciprocal_sampling": 1.0 / (128 * 0.1), "batch": 256, "buffer_frames": buffer,
                 "ptychography": mode == "ptycho", "final_passes": final_passes},
    }  # fmt: skip
    sender = StreamV2Sender("tcp://127.0.0.1:0", hwm=100000)
    port = sender.endpoint.rsplit(":", 1)[1]
    with tempfile.TemporaryDirectory() as d:
        session = build_session(f"dectris://127.0.0.1:{port}", cfg, Path(d) / "live.h5")
        t = threading.Thread(target=sender.send_series, args=(pats, n), kwargs={"fps": fps})
        t0 = time.perf_counter()
        t.start()
        res = session.run()
        wall = time.perf_counter() - t0
        t.join()
        sender.close()
    s = res.stats
    out = {"mode": mode, "fps_requested": fps, "buffer": buffer, "frames": n, "received": s["received"], "processed": s["processed"],
           "dropped": s["dropped"], "stream_s": round(s["elapsed"], 3), "wall_s": round(wall, 3),
           "rate_received": round(s["received"] / max(s["elapsed"], 1e-9), 1), "latency_s": round(res.latency, 3)}  # fmt: skip
    if mode == "ptycho":
        out["passes_while_scanning"] = int(res.results["reconstruction/passes_while_scanning"])
        out["frames_in_first_pass"] = int(res.results["reconstruction/frames_per_pass"][0]) if len(res.results["reconstruction/frames_per_pass"]) else 0
    return out


def processing_only(scan=(64, 64), batch: int = 256) -> dict:
    """VirtualDetectors.update alone on frames in memory (the processing capacity)."""
    from ptyro_workflows.live.processors import Geometry, VirtualDetectors

    n = scan[0] * scan[1]
    pats = frames(n)
    v = VirtualDetectors()
    v.start(Geometry(scan, (128, 128), 200e3, (1 / 12.8, 1 / 12.8), (0.4, 0.4), 20.0))
    idx = np.arange(n)
    t = time.perf_counter()
    for lo in range(0, n, batch):
        v.update(idx[lo : lo + batch], pats[lo : lo + batch])
    dt = time.perf_counter() - t
    return {"mode": "virtual processing only", "frames": n, "batch": batch, "seconds": round(dt, 3), "rate": round(n / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["virtual", "ptycho"])
    ap.add_argument("--fps", type=float, default=200.0)
    ap.add_argument("--buffer", type=int, default=256, help="ptycho: the bounded buffer (frames)")
    a = ap.parse_args()
    if a.mode == "virtual":
        r1 = run("virtual", 0.0, 4096)
        print(json.dumps(r1), flush=True)
        for frac in (0.9, 0.7, 0.5, 0.35):
            r2 = run("virtual", round(frac * r1["rate_received"]), 256)
            print(json.dumps(r2), flush=True)
            if r2["dropped"] == 0:
                break
        print(json.dumps(processing_only()), flush=True)
    else:
        print(json.dumps(run("ptycho", a.fps, a.buffer)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
