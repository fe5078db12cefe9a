"""Seconds per pass of a RECON case for chunk sizes and stream counts, in one process, variants
interleaved round by round (what chose ``recon.CHUNK_WAVES``, ``CHUNK_MIN_POSITIONS`` and
``STREAM_MIN_WORK``; about 15 s per variant and round on RECON-A, 2 idle cores):

    .venv/bin/python benchmarks/chunk_streams.py recon-a 8:1,8:2 [--rounds 5] [--passes 4]
    .venv/bin/python benchmarks/chunk_streams.py recon-b-mixed 2:2,4:2,8:2 --rounds 3

Each variant is ``CHUNK:STREAMS`` (``auto`` for the library's chunk). A run is the case's
reconstruction (``adapters/ours_recon.py``'s settings) with ``--passes`` passes; its time per
pass is taken between the callbacks after the first pass and the last (the first compiles).
Prints the fastest round's wall and CPU (this process's threads) milliseconds per pass.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "adapters"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("case")
    p.add_argument("variants", help="CHUNK:STREAMS,... e.g. 8:1,8:2")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--passes", type=int, default=4)
    a = p.parse_args(argv)
    from ours_recon import Worker

    variants = [tuple(v.split(":")) for v in a.variants.split(",")]
    w = Worker(os.path.join(HERE, ".work", "cases", a.case), "/tmp")
    w.meta["iterations"] = max(a.passes, 2)
    res: dict = {v: [] for v in variants}
    for _ in range(a.rounds):
        for v in variants:
            marks: list[tuple[float, float]] = []

            def cb(state: object) -> bool:
                marks.append((time.perf_counter(), time.process_time()))
                return True

            w._reconstruct(chunk_size=None if v[0] == "auto" else int(v[0]), streams=int(v[1]), callback=cb)
            n = len(marks) - 1
            res[v].append(((marks[-1][0] - marks[0][0]) / n, (marks[-1][1] - marks[0][1]) / n))
    print(os.popen("uptime").read().strip())
    for v, xs in res.items():
        print(f"chunk {v[0]}, streams {v[1]}: {min(x[0] for x in xs) * 1e3:.1f} ms wall per pass, {min(x[1] for x in xs) * 1e3:.1f} ms CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
