"""Warm timing shared by compare.py and the reference workers (each runs in its own venv; this
module needs only the standard library)."""

import statistics
import time


def warm_runs(fn, repeats=3):
    """(the last result, the median wall time, every time) of ``repeats`` calls of ``fn()``
    after one untimed call (compilation, imports, caches)."""
    fn()
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times), times
