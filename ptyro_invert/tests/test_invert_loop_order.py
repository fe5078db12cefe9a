"""The passes of ``recon._loop``: each step gets the batches of its pass's seeded order (the next
pass's first batch is read while a pass's last step runs, never one of another pass), and
nothing is read for a pass that does not run."""

import sys

if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import jax
import numpy as np
import pytest

from ptyro_core.pipeline import device_mesh
from ptyro_invert import recon, reconstruct
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object

ONE = device_mesh(jax.devices()[:1])
KW = {"batch_size": 6, "learning_rates": {"object": 0.05, "probe": 0.005}, "progress": False, "mesh": ONE, "seed": 3}


@pytest.fixture(scope="module")
def data():
    grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(4, 4), step=0.6, aberrations={"C10": 40.0}, padding_px=8)
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling))[None])
    return st0, simulate(truth, grid, scan, dose=2e4)


def _expected(passes: range, n: int = 16, b: int = 6) -> list[list[int]]:
    """The batches (scan indices, the last one unpadded) of ``passes`` in their seeded orders."""
    out = []
    for it in passes:
        perm = np.arange(n)[np.random.default_rng([KW["seed"], it]).permutation(n)]
        out += [perm[lo:hi].tolist() for lo, hi in recon.batch_bounds(n, b)]
    return out


def _spied(monkeypatch) -> tuple[list, list]:
    """(the batches prepared, the batches the steps got), each as its scan indices."""
    prepared, stepped = [], []
    real_prepare, real_call = recon._Steps.prepare, recon._Steps.__call__

    def prepare(self, idx):
        batch = real_prepare(self, idx)
        prepared.append((batch, np.asarray(idx).tolist()))
        return batch

    def call(self, params, opt_state, batch, *, first):
        stepped.append(next(i for b, i in prepared if b is batch))
        return real_call(self, params, opt_state, batch, first=first)

    monkeypatch.setattr(recon._Steps, "prepare", prepare)
    monkeypatch.setattr(recon._Steps, "__call__", call)
    return prepared, stepped


def test_each_step_gets_its_pass_batch_in_the_seeded_order(data, monkeypatch):
    st0, ds = data
    prepared, stepped = _spied(monkeypatch)
    reconstruct(ds, st0, "single_slice", iterations=3, **KW)
    assert stepped == _expected(range(3))
    assert [i for _, i in prepared] == stepped  # every batch read was stepped: none for a fourth pass


def test_a_run_stopped_by_its_callback_steps_no_further(data, monkeypatch):
    st0, ds = data
    prepared, stepped = _spied(monkeypatch)
    passes = []
    reconstruct(ds, st0, "single_slice", iterations=4, callback=lambda s: passes.append(s) or len(passes) < 2, **KW)
    assert len(passes) == 2 and stepped == _expected(range(2))
    # the third pass's first batch was read during the second's last step, and never stepped
    assert [i for _, i in prepared] == stepped + _expected(range(2, 3))[:1]
