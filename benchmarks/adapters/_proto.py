"""The worker protocol shared by every adapter (stdlib + numpy only: it runs in every venv).

The runner starts one adapter process per (code, case) with the venv's python:

    python adapters/<code>_<kind>.py <case_dir> <out_dir>

The adapter imports its library (timed as ``import_s``, excluded from the speeds), loads its
inputs from ``case_dir`` (``meta.json`` + ``.npy`` files), then serves commands, one JSON object
per line on stdin, answering one JSON line each on a private copy of the original stdout (the
library's own prints are sent to stderr so they cannot corrupt the protocol):

    {"cmd": "run"}     -> {"ok": true, "seconds": time of one complete run (the adapter may
                          exclude its own set-up by returning "timed_s"), "wall_s": ...}
    {"cmd": "extra", ...} -> adapter-specific (e.g. a per-pass trace), {"ok": true, ...}
    {"cmd": "finish"}  -> writes outputs into out_dir, {"ok": true, "peak_rss_mb": ...}, exits

The first "run" includes any JIT compilation and is reported as "first call"; the runner then
interleaves the codes' "run" commands round by round.
"""

import json
import os
import resource
import sys
import time
import traceback


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in MiB, None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: VmHWM from /proc/self/status.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that value over fork + exec, so a
    worker would report at least the RSS its parent (the runner) had when it was started."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float | None:
    """Resident set size of this process now, MiB (VmRSS)."""
    return _status_mb("VmRSS")


def threads() -> int:
    """The threads a worker may use: OMP_NUM_THREADS where the runner set it (``--threads``),
    else every core. Shared by the PyTorch adapters' ``torch.set_num_threads``."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 2


def load_meta(case_dir: str) -> dict:
    with open(os.path.join(case_dir, "meta.json")) as f:
        return json.load(f)


def serve(make_worker) -> None:
    """``make_worker(case_dir, out_dir)`` returns an object with ``run()``, ``finish(out_dir)``
    and optionally ``extra(msg) -> dict``. ``make_worker`` is called after the imports are timed
    by the caller; its own setup time is reported as ``setup_s``."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    case_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    try:
        t0 = time.perf_counter()
        worker = make_worker(case_dir, out_dir)
        reply({"ok": True, "ready": True, "setup_s": time.perf_counter() - t0, "import_s": _IMPORT_S.get("s"),
               "import_rss_mb": _IMPORT_S.get("rss_mb")})  # fmt: skip
    except Exception as e:  # report and quit: the runner records "failed: <reason>"
        traceback.print_exc()
        reply({"ok": False, "error": f"{type(e).__name__}: {e}"[:500]})
        return
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        cmd = msg.get("cmd")
        try:
            if cmd == "run":
                t0, c0 = time.perf_counter(), time.process_time()
                info = worker.run() or {}
                wall = time.perf_counter() - t0
                # an adapter may time only the algorithm itself ("timed_s"), excluding set-up;
                # cpu_s: the process's CPU seconds (all its threads), less moved by other users'
                # load than the wall time on a shared machine
                reply({"ok": True, "seconds": info.pop("timed_s", wall), "wall_s": wall, "cpu_s": time.process_time() - c0, **info})
            elif cmd == "extra":
                reply({"ok": True, **worker.extra(msg)})
            elif cmd == "finish":
                info = worker.finish(out_dir) or {}
                reply({"ok": True, "peak_rss_mb": peak_rss_mb(), **info})
                return
            else:
                reply({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as e:
            traceback.print_exc()
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"[:500]})


_IMPORT_S: dict = {}


class timed_import:
    """``with timed_import(): import heavy_lib`` records the import time for the ready reply."""

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        _IMPORT_S["s"] = _IMPORT_S.get("s", 0.0) + time.perf_counter() - self.t0
        _IMPORT_S["rss_mb"] = rss_mb()  # the resident memory of the imported libraries
        return False
