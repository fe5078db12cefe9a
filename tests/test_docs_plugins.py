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


def test_the_guides_algorithm_installed_runs_through_ptyro_reconstruct(fake_distribution, tmp_path, capsys):
    """The guide's phase_object plugin as an installed distribution (found through its entry
    point, module-level hook): `ptyro reconstruct --algorithm phase_object` runs it end to end."""
    import numpy as np

    from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object
    from ptyro_workflows import load_reconstruction, read_file_provenance, save_dataset
    from ptyro_workflows.cli import main

    block = next(b for b in python_blocks(DOC.read_text(encoding="utf-8")) if "def phase_object" in b)
    hook = "\n\n@hookimpl\ndef ptyro_register_reconstructions(register):\n    PhaseObject().ptyro_register_reconstructions(register)\n"
    fake_distribution("ptyro-phase-object", "import jax.numpy as jnp\nfrom ptyro_core import hookimpl\n" + block + hook, version="0.3.0")
    grid, scan, start = setup(gpts=16, sampling=0.25, scan=(3, 3), step=0.75, aberrations={"C10": 40.0}, padding_px=2)
    truth = with_object(start, np.exp(0.5j * hexagonal_phase(start.object.shape[-2:], start.sampling)))
    save_dataset(tmp_path / "data.h5", simulate(truth, grid, scan))
    args = ["reconstruct", str(tmp_path / "data.h5"), "--algorithm", "phase_object", "--semiangle-cutoff", "25", "--C10", "40"]
    code = main([*args, "--iterations", "2", "--batch-size", "9", "-o", str(tmp_path / "rec.h5"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    out = load_reconstruction(tmp_path / "rec.h5")
    assert float(np.max(np.abs(np.abs(out.object) - 1))) < 1e-5 and np.asarray(out.loss).shape == (2,)
    used = read_file_provenance(tmp_path / "rec.h5")["components"][0]
    assert (used["kind"], used["name"], used["distribution"], used["version"]) == ("reconstruction", "phase_object", "ptyro-phase-object", "0.3.0")
