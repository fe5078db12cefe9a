"""Sustained throughput of ``ptyro live`` on 128x128 uint16 frames of a 64x64 scan, streamed
through a real ZeroMQ socket on localhost by the Stream V2 sender, which runs in a process of
its own with the series encoded ahead of time (as a detector's hardware sends it; encoding in
the receiver's process would measure our sender, not the receiver):

    python benchmarks/live/throughput.py virtual                  # virtual detectors + COM + DPC, uncompressed and bslz4
    python benchmarks/live/throughput.py ssb                      # + live SSB
    python benchmarks/live/throughput.py ptycho --fps 200         # + iterative ptychography at 200 frames/s

For each compression, mode ``virtual`` (and ``ssb``) first sends unpaced (as fast as the socket
takes the messages; ZeroMQ's back-pressure paces the sender) and reports the rate received;
then it sends paced at rates from ``--rates`` (default: 5,000 frames/s and fractions of the
unpaced rate) with a ``--buffer`` frame buffer that *drops* when full (``overflow = "drop"``),
and reports the highest rate with no frame dropped and the series received in time (the
received rate ≥ 95 % of the requested one; otherwise ZeroMQ's queues were hiding a receiver
that falls behind). Last, the processing alone (frames already in memory, no socket). Mode
``ptycho`` runs paced at ``--fps`` and reports the passes made while the scan ran, and the
latency from the last frame to the written file. The sender sends the start message, then
waits until the session is ready (geometry built; for SSB the weights built and the step
compiled: ``start_to_ready_s``), as a detector is armed before the scan is triggered.
``uptime`` is printed beside the numbers."""

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SCAN, Q = (64, 64), 128


def frames(n: int, q: int = Q, seed: int = 0) -> np.ndarray:
    """A BF disc (radius 10 px, as 20 mrad at 200 keV is here) on a faint background, Poisson
    counts, the disc moved by a few pixels from frame to frame."""
    rng = np.random.default_rng(seed)
    x = np.arange(q) - q // 2
    base = (np.hypot(x[:, None], x[None, :]) < 10) * 200.0 + 1.0
    out = np.empty((n, q, q), np.uint16)
    for k in range(n):
        out[k] = rng.poisson(np.roll(base, ((k % 5) - 2, (k // 7) % 3 - 1), axis=(0, 1)))
    return out


def _sender(conn, n: int, compression: str | None) -> None:
    """The sender process: encodes the series once, then sends it each time it is told a rate."""
    from ptyro_workflows.live.sender import StreamV2Sender

    pats = frames(n)
    s = StreamV2Sender("tcp://127.0.0.1:0", hwm=100000)
    msgs = list(s.messages(pats, n, compression=compression))
    conn.send((s.endpoint, sum(len(m) for m in msgs) / n))
    while True:
        fps = conn.recv()
        if fps is None:
            break
        s.send(msgs[:1])  # the start message (a detector sends it when armed) ...
        conn.recv()  # ... and the scan begins when the receiver is ready
        t = time.perf_counter()
        s.send(msgs[1:], fps=fps)
        conn.send(time.perf_counter() - t)
    s.close()


def _config(mode: str, buffer: int, overflow: str) -> dict:
    return {
        "probe": {"energy": 200e3, "semiangle_cutoff": 20.0},
        "scan": {"gpts": list(SCAN), "step": [0.4, 0.4]},
        "reconstruction": {"batch_size": 64, "learning_rate": 0.05, "probe_learning_rate": 0.005},
        "live": {"reciprocal_sampling": 1.0 / (Q * 0.1), "batch": 128, "buffer_frames": buffer, "overflow": overflow,
                 "ptychography": mode == "ptycho", "final_passes": 2, "direct": ["ssb"] if mode == "ssb" else []},
    }  # fmt: skip


def run_once(conn, endpoint: str, mode: str, fps: float, buffer: int, overflow: str = "drop") -> dict:
    from ptyro_workflows.live import build_session

    n = SCAN[0] * SCAN[1]
    with tempfile.TemporaryDirectory() as d:
        session = build_session(f"dectris://{endpoint.split('://')[1]}", _config(mode, buffer, overflow), Path(d) / "live.h5")
        done: list = []
        runner = threading.Thread(target=lambda: done.append(session.run()))
        t0 = time.perf_counter()
        runner.start()
        conn.send(fps)
        while session.state != "receiving" and runner.is_alive():  # the start message's work: geometry, SSB weights, compilation
            time.sleep(0.01)
        ready = time.perf_counter() - t0
        conn.send("go")
        runner.join()
        wall = time.perf_counter() - t0
        send_s = conn.recv()
        res = done[0]
    s = res.stats
    rate = s["received"] / max(s["elapsed"], 1e-9)
    out = {"mode": mode, "fps_requested": fps, "buffer": buffer, "overflow": overflow, "frames": n, "received": s["received"],
           "processed": s["processed"], "dropped": s["dropped"], "spilled": s["spilled"], "stream_s": round(s["elapsed"], 3),
           "sender_s": round(send_s, 3), "wall_s": round(wall, 3), "start_to_ready_s": round(ready, 3), "rate_received": round(rate, 1), "latency_s": round(res.latency, 3),
           "kept_up": bool(s["dropped"] == 0 and s["processed"] == n and (fps == 0 or rate >= 0.95 * fps))}  # fmt: skip
    if mode == "ptycho":
        out["passes_while_scanning"] = int(res.results["reconstruction/passes_while_scanning"])
        fpp = res.results["reconstruction/frames_per_pass"]
        out["frames_in_first_pass"] = int(fpp[0]) if len(fpp) else 0
    return out


def processing_only(mode: str, batch: int = 128) -> dict:
    """The processors' update alone on frames in memory (the processing capacity)."""
    from ptyro_workflows.live.app import live_config, make_geometry, processors
    from ptyro_workflows.live.session import _one_blas_thread
    from ptyro_workflows.live.sources import SeriesStart

    n = SCAN[0] * SCAN[1]
    pats = frames(n)

    cfg = live_config(_config(mode, 4096, "drop"))
    cfg["_energy_given"] = True
    procs = processors(cfg)
    g = make_geometry(cfg, SeriesStart(n, (Q, Q), "uint16"), [])
    for p in procs:
        p.start(g)
    idx = np.arange(n)
    with _one_blas_thread():
        t = time.perf_counter()
        for lo in range(0, n, batch):
            for p in procs:
                p.update(idx[lo : lo + batch], pats[lo : lo + batch])
        dt = time.perf_counter() - t
    return {"mode": f"{mode}, processing only", "frames": n, "batch": batch, "seconds": round(dt, 3), "rate": round(n / dt, 1)}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def sweep(mode: str, compression: str | None, rates: list[float] | None, buffer: int) -> dict:
    n = SCAN[0] * SCAN[1]
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=_sender, args=(child, n, compression), daemon=True)
    proc.start()
    endpoint, msg_bytes = conn.recv()
    runs = []
    try:
        first = run_once(conn, endpoint, mode, 0.0, n)
        first.update(compression=compression or "none", message_bytes=round(msg_bytes), uptime=_uptime())
        print(json.dumps(first), flush=True)
        todo = sorted(set(rates or [5000.0] + [round(f * first["rate_received"], -1) for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)]), reverse=True)
        best = 0.0
        for fps in todo:
            if fps <= best:
                continue
            r = run_once(conn, endpoint, mode, fps, buffer)
            r.update(compression=compression or "none", uptime=_uptime())
            print(json.dumps(r), flush=True)
            runs.append(r)
            if r["kept_up"]:
                best = max(best, fps)
                if fps < 5000:  # lower rates than one that kept up tell nothing more
                    break
    finally:
        conn.send(None)
        proc.join(10)
    return {"mode": mode, "compression": compression or "none", "unpaced_rate": first["rate_received"],
            "max_rate_without_drops": max([r["fps_requested"] for r in runs if r["kept_up"]], default=0.0), "buffer": buffer}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["virtual", "ssb", "ptycho"])
    ap.add_argument("--fps", type=float, default=200.0, help="ptycho: the rate")
    ap.add_argument("--buffer", type=int, default=256, help="the bounded buffer (frames) of the paced runs")
    ap.add_argument("--rates", type=float, nargs="*", help="paced rates to try (default: 5000 and fractions of the unpaced rate)")
    ap.add_argument("--compression", nargs="*", default=["none", "bslz4"], choices=["none", "bslz4", "lz4"])
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if a.mode == "ptycho":
        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=_sender, args=(child, SCAN[0] * SCAN[1], None), daemon=True)
        proc.start()
        endpoint, _ = conn.recv()
        r = run_once(conn, endpoint, "ptycho", a.fps, a.buffer, overflow="spill")
        r["uptime"] = _uptime()
        print(json.dumps(r), flush=True)
        conn.send(None)
        proc.join(10)
        return
    summary = [sweep(a.mode, None if c == "none" else c, a.rates, a.buffer) for c in a.compression]
    print(json.dumps(processing_only(a.mode)), flush=True)
    for s in summary:
        print(json.dumps({"summary": s}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
