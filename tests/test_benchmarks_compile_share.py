"""benchmarks/recon.compile_share: the compilation share of our first reconstruction call that
RESULTS.md reports, and no share where a disturbed steady round would make it negative."""

import importlib
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")


@pytest.fixture(scope="module")
def compile_share():
    """benchmarks/recon.py's function, imported with benchmarks/ on the path only meanwhile (its
    modules' names, e.g. ``cases`` and ``runner``, stay out of the other tests' way; ``runner``
    puts benchmarks/ on the path itself, so the whole path is restored)."""
    saved = list(sys.path)
    sys.path.insert(0, BENCH)
    try:
        mod = importlib.import_module("recon")
    finally:
        sys.path[:] = saved
        for name in ("recon", "cases", "runner"):
            sys.modules.pop(name, None)
    return mod.compile_share


def test_the_benchmarks_leave_the_path(compile_share):
    here = os.path.realpath(BENCH)
    assert not any(os.path.realpath(p) == here for p in sys.path if p)


def test_share_of_the_first_call(compile_share):
    c = compile_share({"first_call_s": 4.0, "median_s": 3.0})
    assert c["compile share of the first call"] == 0.25
    assert c["compile s (first - steady)"] == 1.0
    assert "note" not in c


@pytest.mark.parametrize("first, steady", [(7.819, 9.945), (4.0, 4.0)])
def test_disturbed_round_reports_no_share(compile_share, first, steady):
    # a steady call as slow as the first call, which also compiled, measures a disturbance
    # (RECON-L, session 13: first call 7.819 s, steady 9.945 s, a share of -0.272 reported)
    c = compile_share({"first_call_s": first, "median_s": steady})
    assert c["compile share of the first call"] is None
    assert "disturbed" in c["note"]


def test_nothing_measured(compile_share):
    assert compile_share({"first_call_s": None, "median_s": 3.0}) is None
    assert compile_share({"first_call_s": 4.0}) is None
