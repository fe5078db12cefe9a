"""Segmented-detector DPC (``dpc``): the segments' response to a deflected disc against its
analytic value, the phase against the truth and against iCoM (which a fine segmentation
approaches), bad input."""

import functools
import math

import numpy as np
import pytest

from ptyro_core import PtyroValueError, get
from ptyro_invert import synthetic as syn
from ptyro_invert.direct import icom as icom_mod

ENERGY = 300e3


@pytest.mark.parametrize("rotation", [0.0, 45.0, 10.0])
def test_quadrant_response_to_a_uniform_disc_is_16_over_3pi2(rotation):
    """A uniform disc of radius R moved by δ: each quadrant gains or loses R·δ at its centroid
    ±4R/3π, so the quadrants' centre of mass moves by 16/(3π²)·δ along any axis."""
    n, dk = 256, 0.01
    k = (np.arange(n) - n // 2) * dk
    kx, ky = np.meshgrid(k, k, indexing="ij")
    disc = (np.hypot(kx, ky) < 0.8).astype(float)
    masks = icom_mod.segment_masks((n, n), (dk, dk), ENERGY, segments=4, rotation=rotation)
    cen, resp = icom_mod.segment_response(disc, masks, (dk, dk))
    assert np.allclose(resp, 16 / (3 * math.pi**2) * np.eye(2), atol=0.01), resp
    assert np.allclose(np.linalg.norm(cen, axis=1), math.sqrt(2) * 4 * 0.8 / (3 * math.pi), rtol=0.01)  # a quarter disc: 4R/3π per axis


@functools.lru_cache(maxsize=None)
def case():
    grid, scan, state = syn.setup(gpts=48, sampling=0.2, scan=(24, 24), step=0.2, energy=ENERGY, semiangle_cutoff=25.0, aberrations={"C10": 0.0})
    ph = syn.hexagonal_phase(tuple(state.object.shape[-2:]), state.sampling, peaks=(0.1, 0.06))
    truth = syn.with_object(state, np.exp(1j * ph))
    return syn.simulate(truth, grid, scan), state, truth


def test_dpc_phase_against_truth_and_icom():
    ds, state, truth = case()
    reg = syn.scanned_region(state)
    out = get("reconstruction", "dpc")(ds, state, iterations=3, seed=0)  # the pipeline's options are ignored
    _, c_quad = syn.phase_metrics(out.object[0], truth.object[0], reg)
    fine = icom_mod.dpc(ds, state, segments=16, rings=(0.0, 8.0, 16.0, 24.0, 32.0, 60.0))
    _, c_fine = syn.phase_metrics(fine.object[0], truth.object[0], reg)
    ref = icom_mod.icom(ds, state)
    _, c_icom = syn.phase_metrics(ref.object[0], truth.object[0], reg)
    # measured: quadrants 0.860, 16 x 5 segments 0.864, iCoM 0.864 (noise-free)
    assert c_quad > 0.83 and c_fine > c_quad
    assert abs(c_fine - c_icom) < 0.02
    # a fine segmentation's phase is iCoM's, to its scale too
    ph_fine, _ = icom_mod.dpc_phase(ds, segments=16, rings=(0.0, 8.0, 16.0, 24.0, 32.0, 60.0))
    ph_icom, _ = icom_mod.icom_phase(ds)
    scale = float(np.sum(np.asarray(ph_fine) * np.asarray(ph_icom)) / np.sum(np.asarray(ph_icom) ** 2))
    assert abs(scale - 1) < 0.02, scale  # measured 1.006 (quadrants: 1.19, their response to a non-uniform disc)


def test_dpc_bad_input():
    ds, state, _ = case()
    with pytest.raises(PtyroValueError, match="expected segments >= 3"):
        icom_mod.dpc(ds, state, segments=2)
    with pytest.raises(PtyroValueError, match="expected rings as increasing semiangles"):
        icom_mod.dpc(ds, state, rings=(10.0, 5.0))
    with pytest.raises(PtyroValueError, match="a segment receives no intensity"):
        icom_mod.dpc(ds, state, rings=(100.0, 200.0))
    with pytest.raises(PtyroValueError, match="expected highpass >= 0"):
        icom_mod.dpc(ds, state, highpass=-1.0)
