"""Every ```python block of docs/plugins.md runs, in order, in one namespace."""

import re
import sys
from pathlib import Path

import pytest

import ptyro_core

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def test_guide_has_code():
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 6


def test_guide_code_blocks_run_in_order(capsys):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    namespace: dict = {"__name__": "docs_plugins"}
    path_before, modules_before = list(sys.path), set(sys.modules)
    try:
        for i, code in enumerate(blocks):
            try:
                exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
            except Exception as e:  # name the failing block
                pytest.fail(f"docs/plugins.md python block {i} failed: {type(e).__name__}: {e}\n{code}")
    finally:
        sys.path[:] = path_before
        for name in set(sys.modules) - modules_before:
            if name.startswith("ptyro_msa") or name == "ptyro_broken":
                sys.modules.pop(name, None)
        ptyro_core.reset_registry()
    out = capsys.readouterr().out
    assert "caught: loss: expected a scalar" in out
    assert "registered by several distributions" in out
    # a plugin's reconstruction algorithm on the engine, run end to end by `ptyro reconstruct --algorithm`
    assert "ptyro reconstruct ran phase_object from ptyro-phase-object" in out
