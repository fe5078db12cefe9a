"""The Lobato & Van Dyck (2014) parameters, shipped as package data.

I. Lobato and D. Van Dyck, "An accurate parameterization for scattering factors, electron
densities and electrostatic potentials for neutral atoms that obey all physical constraints",
Acta Cryst. A70 (2014) 636-649, doi:10.1107/S205327331401643X. Five-term fits for Z = 1..103:
f(g) = Σᵢ aᵢ (2 + bᵢ g²) / (1 + bᵢ g²)², g in Å⁻¹ (no 2π), f in Å, aᵢ in Å, bᵢ in Å².
"""

import functools
import json
from importlib import resources

import numpy as np

from ptyro_core import PtyroValueError

__all__ = ["CITATION", "load_parameters", "parameters", "symbol"]

CITATION = "I. Lobato and D. Van Dyck, Acta Cryst. A70 (2014) 636-649, doi:10.1107/S205327331401643X"
MAX_Z = 103


@functools.cache
def load_parameters() -> dict:
    """The raw JSON table: ``{"source", "units", "elements": [{"Z", "symbol", "a", "b"}, ...]}``."""
    text = resources.files("ptyro_lobato").joinpath("data/lobato_parameters.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _arrays() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    elements = sorted(load_parameters()["elements"], key=lambda e: e["Z"])
    if [e["Z"] for e in elements] != list(range(1, MAX_Z + 1)):
        raise PtyroValueError("lobato_parameters.json: expected one entry for each Z = 1..103")
    a = np.array([[0.0] * 5] + [e["a"] for e in elements], np.float64)  # row 0 unused: index by Z
    b = np.array([[1.0] * 5] + [e["b"] for e in elements], np.float64)
    return a, b, ("",) + tuple(e["symbol"] for e in elements)


def parameters(Z: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each of shape (5,), for atomic number ``Z`` (float64 numpy arrays)."""
    z = int(Z)
    if not 1 <= z <= MAX_Z:
        raise PtyroValueError(f"lobato: atomic number {Z!r} is outside the parameterised range 1..{MAX_Z}")
    a, b, _ = _arrays()
    return a[z], b[z]


def table() -> tuple[np.ndarray, np.ndarray]:
    """(a, b) arrays of shape (104, 5) indexed by Z (row 0 is a harmless placeholder)."""
    a, b, _ = _arrays()
    return a, b


def symbol(Z: int) -> str:
    parameters(Z)
    return _arrays()[2][int(Z)]
