"""Root test configuration, shared by every distribution's tests.

- Two fake CPU devices (set before any JAX operation), so the sharded path of every pipeline runs
  on every test run; the 1-vs-8-device equivalence tests start their own subprocesses.
- Rank promotion raises, so a broadcasting slip is a test failure.
- A hypothesis profile with few examples for CI (``HYPOTHESIS_PROFILE=dev`` for more).
- No test writes JAX's compilation cache into the user's cache directory, and none leaves it (or
  our executable cache) switched on for the tests after it in the same process: ``ptyro``
  commands run in-process start with ``PTYRO_JAX_CACHE=0`` (a test of the cache names its own
  directory), and after each test both caches are put back as they were. Without this a test
  of the executable cache failed after an in-process command had pointed JAX at
  ``~/.cache/ptyrodactyl/jax``, where an earlier run had already stored its programs (seen with
  the suite's files in another order under pytest-xdist).
"""

import importlib
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# the executable cache (ptyro_core.exec_cache) patches JAX for the whole process: an in-process
# CLI test would switch it on for every test after it; its own tests switch it on themselves
os.environ.setdefault("PTYRO_EXEC_CACHE", "0")
os.environ.setdefault("PTYRO_JAX_CACHE", "0")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", int(os.environ.get("PTYRO_TEST_DEVICES", "2")))
jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# pytest's importlib mode names test modules after their folders (``ptyro_simul.tests.test_x``)
# and, if the real package is not imported yet, registers the distribution's folder (no
# ``__init__``) as a namespace package under that name, hiding the installed package. Import the
# installed packages first.
for _name in ("ptyro_core", "ptyro_simul", "ptyro_invert", "ptyro_workflows"):
    try:
        importlib.import_module(_name)
    except ImportError:  # a member not installed in this environment
        pass


@pytest.fixture(autouse=True)
def _compilation_caches_put_back():
    """JAX's persistent compilation cache and our executable cache as they were before the test."""
    from ptyro_core import exec_cache
    from ptyro_workflows.cache import point_jax_cache

    where, installed = jax.config.jax_compilation_cache_dir, exec_cache.installed()
    yield
    if exec_cache.installed() != installed:
        exec_cache.uninstall()
        if installed is not None:
            exec_cache.install(installed)
    point_jax_cache(where)
