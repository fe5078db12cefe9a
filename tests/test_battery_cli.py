"""The fault battery of issue 17 (``tests/battery``) as tests: every case a user met that lost
data, gave a wrong result with exit 0, crashed, left debris or named nothing, each run through
``ptyro`` as the user ran it. In this process where it can (fast; plugins are installed on a
private site directory the registry discovers for that run), in a subprocess where the case needs
one (signals, a full disk).

``python3 -m uv run python tests/battery/run_battery.py`` prints the same cases as a table, and
``--tree`` judges another checkout with them (the before/after counts of the issue).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "battery"))

from battery import CASES, make_fixtures, run_case  # noqa: E402


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("battery-fixtures"), inprocess=True)


@pytest.mark.parametrize("name, fn", [(c[0], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_battery_case(name, fn, fixtures, monkeypatch):
    monkeypatch.setenv("BATTERY_INTERRUPTIONS", "3")
    held, note = run_case(fn, fixtures, None, inprocess=True)
    if note.startswith("skipped"):  # a full disk needs a small tmpfs, which only root can mount
        pytest.skip(note)
    assert held, f"{name}: {note}"
