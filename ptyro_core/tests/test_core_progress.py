"""Progress bars (ptyro_core.progress): redrawn in place on a terminal, whole lines into a log."""

import io
import sys
import time

import pytest

from ptyro_core.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(monkeypatch, stream, n=5, pause=0.0, **kw):
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_bar(total=n, desc="multislice", **kw) as bar:
        for _ in range(n):
            time.sleep(pause)
            bar.update(1)
            bar.set_postfix(loss=0.5)  # draws at once on a terminal; waits for the next line in a log
    return stream.getvalue()


def test_a_log_gets_whole_lines_with_the_last_state(monkeypatch):
    monkeypatch.setenv("PTYRO_PROGRESS_INTERVAL", "0")
    out = _run(monkeypatch, io.StringIO(), pause=0.01)
    lines = out.splitlines()
    assert "\r" not in out and out.endswith("\n")
    assert lines[0].startswith("multislice:   0% 0/5") and lines[-1].startswith("multislice: 100% 5/5")
    assert "loss=0.5" in lines[-1] and len(lines) >= 3  # the updates between, each a line
    assert all(line == line.rstrip() and "█" not in line for line in lines)


def test_a_log_is_written_at_most_every_interval(monkeypatch):
    monkeypatch.delenv("PTYRO_PROGRESS_INTERVAL", raising=False)
    lines = _run(monkeypatch, io.StringIO(), n=50, pause=0.001).splitlines()
    assert [line.split("%")[0] for line in lines] == ["multislice:   0", "multislice: 100"]  # start and end only


@pytest.mark.parametrize("interval", ["soon", "-1"])
def test_a_bad_interval_falls_back_to_the_default(monkeypatch, interval):
    monkeypatch.setenv("PTYRO_PROGRESS_INTERVAL", interval)
    assert len(_run(monkeypatch, io.StringIO(), n=20).splitlines()) == 2


def test_a_terminal_gets_the_bar_redrawn_in_place(monkeypatch):
    out = _run(monkeypatch, _Terminal(), pause=0.0)
    assert "\r" in out and "multislice" in out


def test_a_disabled_bar_writes_nothing(monkeypatch):
    assert _run(monkeypatch, io.StringIO(), disable=True) == ""
    assert _run(monkeypatch, _Terminal(), disable=True) == ""
