"""The numbers behind tests/test_live_stream.py's reconstruction check: the simulated series of
tests/live_case.py streamed through ZeroMQ (bslz4) at ``--fps``, the live reconstruction's phase
against the ground truth after ``--final`` passes over the whole scan, and the offline
reconstruction with the same options and the same number of passes over the whole scan.

    python benchmarks/live/acceptance.py --fps 400 --final 12
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import ptyro_invert  # noqa: E402
from live_case import CONFIG, make_case  # noqa: E402
from ptyro_invert.synthetic import phase_metrics, scanned_region  # noqa: E402
from ptyro_workflows.live import build_session  # noqa: E402
from ptyro_workflows.live.sender import StreamV2Sender  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fps", type=float, default=400.0)
    ap.add_argument("--final", type=int, default=12)
    ap.add_argument("--hold-at", type=int, default=32, help="hold the stream after this many frames until a live pass has run on them")
    ap.add_argument("--min-frames", type=int, default=None)
    a = ap.parse_args()
    st0, truth, ds, counts = make_case()
    cfg = {**CONFIG, "live": {**CONFIG["live"], "final_passes": a.final, "min_frames": a.min_frames}}
    sender = StreamV2Sender("tcp://127.0.0.1:0")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "live.h5"
        session = build_session(f"dectris://127.0.0.1:{sender.endpoint.rsplit(':', 1)[1]}", cfg, out)
        ptycho = session.processors[-1]

        def frames():
            for k, p in enumerate(counts.reshape(64, 32, 32)):
                while k == a.hold_at and ptycho.passes_live == 0:
                    time.sleep(0.01)
                yield p

        t = threading.Thread(target=sender.send_series, args=(frames(), 64), kwargs={"compression": "bslz4", "fps": a.fps})
        t.start()
        res = session.run()
        t.join()
        sender.close()
        with h5py.File(out) as f:
            obj = f["reconstruction/object"][()]
            loss = f["reconstruction/loss"][()]
            cover = f["reconstruction/frames_per_pass"][()]
    off = ptyro_invert.reconstruct(ds, st0, "single_slice", iterations=a.final, batch_size=8,
                                   learning_rates={"object": 0.05, "probe": 0.005}, progress=False)  # fmt: skip
    region = scanned_region(st0)
    rl, cl = phase_metrics(obj[0], truth.object[0], region)
    ro, co = phase_metrics(np.asarray(off.object[0]), truth.object[0], region)
    print(json.dumps({
        "frames": res.stats["received"], "complete": res.complete, "passes_while_scanning": int(len(loss) - a.final),
        "frames_per_pass_while_scanning": cover[: len(loss) - a.final].tolist(), "latency_s": round(res.latency, 3),
        "live": {"phase_corr": round(cl, 4), "phase_rmse_rad": round(rl, 4), "final_loss": float(loss[-1])},
        "offline": {"phase_corr": round(co, 4), "phase_rmse_rad": round(ro, 4), "final_loss": float(np.asarray(off.loss)[-1])},
        "live_loss_per_pass": [round(float(v), 2) for v in loss],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
