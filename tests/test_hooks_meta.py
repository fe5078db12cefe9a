"""Meta-tests in the style of datasette's: every hook in ptyro_core.hookspecs is tested and
documented.

- tested: the hook's name occurs in a test file of the tests/ or */tests/ trees (plugins
  included) other than this one, i.e. some test implements or exercises it;
- documented: docs/plugins.md has a section headed with the hook's name that gives the
  component's call signature, and the hookspec itself has a docstring.
"""

import inspect
import re
from pathlib import Path

import pytest

from ptyro_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"


def _hooks() -> list[str]:
    found = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("ptyro_") and hasattr(f, "ptyrodactyl_spec"))
    return found


def _test_files() -> list[Path]:
    files = list((ROOT / "tests").glob("test_*.py"))
    files += list(ROOT.glob("*/tests/test_*.py")) + list(ROOT.glob("*/tests/**/test_*.py"))
    files += list(ROOT.glob("plugins/*/tests/test_*.py")) + list(ROOT.glob("plugins/*/tests/**/test_*.py"))
    this = Path(__file__).resolve()
    return sorted({f.resolve() for f in files if f.resolve() != this})


HOOKS = _hooks()


def test_the_hook_namespace_is_what_the_registry_calls():
    assert HOOKS, "no hookspecs found"
    assert set(HOOKS) == set(hookspecs.HOOKS.values())


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    users = [f for f in _test_files() if hook in f.read_text(encoding="utf-8", errors="replace")]
    assert users, f"no test under tests/ or */tests/ mentions {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"^#+ `{hook}`\s*$(.*?)(?=^#)", text, re.M | re.S)
    assert m, f"docs/plugins.md has no section headed `{hook}`"
    section = m.group(1)
    assert "component(" in section and "->" in section, f"the `{hook}` section gives no component signature"
    assert inspect.getdoc(getattr(hookspecs, hook)), f"hookspec {hook} has no docstring"


def test_documented_hooks_exist():
    """No stale documentation: every `ptyro_register_*` heading names a real hook."""
    headed = re.findall(r"^#+ `(ptyro_\w+)`", DOC.read_text(encoding="utf-8"), re.M)
    assert set(headed) == set(HOOKS)
