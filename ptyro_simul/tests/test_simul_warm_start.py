"""Issue 18, warm starts: the jitted functions of the simulation's path (the potential's build,
the multislice plan, the 4D-STEM batch function) are top-level functions with static settings
that :mod:`ptyro_core.exec_cache` writes out in full, so a second process runs them without
tracing; and making them so changed no value (against values saved before the change)."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from ptyro_core import exec_cache

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import warm_case  # noqa: E402

#: what the second process must not trace (a top-level function of ours, found in the cache)
SIMULATION_FUNCTIONS = {"_build", "_plan_arrays", "_apply_planned", "_coherent_probe"}


def test_simulation_is_bit_for_bit_as_before():
    """The small case's potential, patterns and annular signals equal those the sources before
    the change computed (data/warm_reference.npz, commit 28e0a64), bit for bit on the JAX release
    and back end that wrote them (elsewhere to float32 rounding: XLA's code differs)."""
    ref = np.load(HERE / "data" / "warm_reference.npz")
    got = warm_case.simulate()
    same_build = str(ref["jax_version"]) == jax.__version__ and str(ref["backend"]) == jax.default_backend()
    for name in ("potential", "pixelated", "bf", "adf"):
        assert got[name].dtype == ref[name].dtype and got[name].shape == ref[name].shape, name
        if same_build:
            np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6 * float(np.abs(ref[name]).max()), err_msg=name)
    assert float(ref["pixelated"].sum()) > 0.5  # the reference holds the beam, not zeros


_RUN = """
import runpy, sys
from ptyro_core import exec_cache
exec_cache.install(sys.argv[1])
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(cache: Path) -> tuple[set[str], int]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PTYRO_EXEC_CACHE": "1"}
    r = subprocess.run([sys.executable, "-c", _RUN, str(cache), str(HERE / "warm_case.py")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    names, untraced = r.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    return set(names.split()) - {"-"}, int(untraced)  # '-': nothing traced


def test_second_process_runs_the_simulation_untraced(tmp_path):
    """First process: the simulation's functions are traced and stored; second: none of them is
    traced (each found by its name, code and static settings), and no eager one-operation
    program (each one a program loaded on a warm start) runs on the way."""
    if not exec_cache._untraced_supported():
        import pytest

        pytest.skip(f"the look-up without tracing follows JAX {exec_cache._JAX_RELEASE} only")
    first, n1 = _run(tmp_path)
    assert SIMULATION_FUNCTIONS <= first and n1 == 0
    second, n2 = _run(tmp_path)
    assert not second, second  # nothing traced: neither these functions nor one-operation programs
    assert n2 >= len(SIMULATION_FUNCTIONS)


def test_the_components_settings_are_written_out_in_full():
    """The static arguments the simulation's jitted functions take have a text that says all
    they hold (so they key the look-up without tracing), and records differing in one setting
    differ."""
    from ptyro_core import Grid
    from ptyro_simul.detectors import AnnularDetector
    from ptyro_simul.multislice import Multislice, multislice
    from ptyro_simul.potentials import _Slicing
    from ptyro_simul.propagator import fresnel

    for value in (multislice, fresnel, (("bf", AnnularDetector(0.0, 10.0)),)):
        assert exec_cache._canon(value) is not None, value
    assert Multislice() == multislice and hash(Multislice()) == hash(multislice) and repr(multislice) == "multislice"
    grid = Grid((32, 32), (0.1, 0.1))
    a = _Slicing(((8, (0, 1)),), grid, (0.0, 2.0), "infinite", "float32", "fourier")
    b = _Slicing(((8, (0, 2)),), grid, (0.0, 2.0), "infinite", "float32", "fourier")
    assert exec_cache._canon(a) is not None and exec_cache._canon(a) != exec_cache._canon(b)
