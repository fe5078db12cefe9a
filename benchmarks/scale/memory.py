"""Peak memory of `ptyro simulate` against scan size (issue: out-of-core simulation).

Runs `ptyro simulate` under /usr/bin/time -v twice with the same batch size: once with a scan of
exactly one batch, once with a 64x64 scan of 256x256 patterns (1 GiB of float32 output, many
times the batch), and reports the peak RSS of each and their ratio (target: <= 1.5).

    python benchmarks/scale/memory.py [--batch 64] [--out benchmarks/results/scale_memory.json]
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

A = 3.905
CONFIG = """
[specimen]
structure = "SrTiO3"
repeat = [8, 8, 2]

[potential]
gpts = [256, 256]
slice_thickness = 1.9525

[probe]
energy = 200e3
semiangle_cutoff = 20.0

[scan]
start = [{x0}, {x0}]
end = [{x1}, {x1}]
gpts = [{n}, {n}]

[detectors]
pixelated = true
bf = [0, 20]
adf = [40, 68]

[simulation]
batch_size = {batch}
"""


def run(n: int, batch: int, tmp: Path) -> dict:
    x0, x1 = 3.5 * A, 4.5 * A
    cfg = tmp / f"scan{n}.toml"
    cfg.write_text(CONFIG.format(x0=x0, x1=x1, n=n, batch=batch))
    out = tmp / f"scan{n}.h5"
    ptyro = Path(sys.executable).with_name("ptyro")
    cmd = ["/usr/bin/time", "-v", str(ptyro), "simulate", str(cfg), "-o", str(out), "--overwrite", "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ptyro simulate failed for a {n}x{n} scan:\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    out_bytes = n * n * 256 * 256 * 4
    size = out.stat().st_size
    out.unlink()
    return {"scan": [n, n], "positions": n * n, "peak_rss_mib": rss_kb / 1024, "wall_s": wall, "output_4d_mib": out_bytes / 2**20, "file_mib": size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--scan", type=int, default=64, help="side of the large scan (default 64)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "scale_memory.json"))
    args = ap.parse_args()
    one_batch = int(round(args.batch**0.5))
    with tempfile.TemporaryDirectory() as d:
        small = run(one_batch, one_batch * one_batch, Path(d))
        large = run(args.scan, one_batch * one_batch, Path(d))
    batch_bytes = one_batch * one_batch * 256 * 256 * 4
    result = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "batch_size": one_batch * one_batch,
        "batch_patterns_mib": batch_bytes / 2**20,
        "single_batch_run": small,
        "large_run": large,
        "output_over_batch": large["output_4d_mib"] / (batch_bytes / 2**20),
        "peak_rss_ratio": large["peak_rss_mib"] / small["peak_rss_mib"],
        "target": "peak_rss_ratio <= 1.5",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
