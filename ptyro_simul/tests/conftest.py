"""Shared fixtures of the ptyro_simul tests."""

import jax
import pytest


@pytest.fixture
def x64():
    """Enable float64 for one test (gradient checks) and restore the previous setting."""
    with jax.enable_x64(True):
        yield
