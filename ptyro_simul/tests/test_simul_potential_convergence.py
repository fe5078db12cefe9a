"""The band-limit warning and the automatic grid (ptyro_simul.convergence), and their hook-up in
``ptyro simulate`` / ``ptyro_workflows.simulate``."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptyro_core import Grid, PtyroValueError
from ptyro_simul.constants import energy2wavelength
from ptyro_simul.convergence import (
    SAFE_FRACTION,
    ConvergenceWarning,
    auto_gpts,
    auto_sampling,
    band_limit_mrad,
    check_band_limit,
)
from ptyro_simul.propagator import antialias_cutoff


def test_band_limit_is_the_propagators():
    # 0.122 Å pixels at 200 keV: 68 mrad (the numbers), the propagator's aperture radius
    grid = Grid((128, 128), (15.62 / 128, 15.62 / 128))
    assert band_limit_mrad(grid, 200e3) == pytest.approx(antialias_cutoff(grid) * energy2wavelength(200e3) * 1e3, rel=1e-12)
    assert band_limit_mrad(grid, 200e3) == pytest.approx(68.5, abs=0.1)


def test_warning_names_the_numbers_and_the_fix():
    grid = Grid((128, 128), (0.122, 0.122))
    with pytest.warns(ConvergenceWarning) as rec:
        msg = check_band_limit(grid, 200e3, {"bf": (0, 20), "adf": (40, 65)})
    text = str(rec[0].message)
    assert text == msg
    fix = f"sampling = {math.floor(auto_sampling(65.0, 200e3) * 1000) / 1000:g}"
    for part in ("'adf'", "65 mrad", "68.5 mrad", "0.122 Å", "200 keV", fix, 'gpts = "auto"'):
        assert part in text, part
    # within the safe fraction: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_band_limit(Grid((192, 192), (0.07, 0.07)), 200e3, {"adf": (40, 65)}) is None
        assert check_band_limit(grid, 200e3, {}) is None


@given(angle=st.floats(5.0, 300.0), energy=st.floats(60e3, 300e3), extent=st.floats(5.0, 60.0))
def test_auto_grid_clears_the_angle_by_the_stated_margin(angle, energy, extent):
    gpts = auto_gpts((extent, extent), angle, energy)
    grid = Grid.from_extent((extent, extent), gpts=gpts)
    assert angle <= SAFE_FRACTION * band_limit_mrad(grid, energy) * (1 + 1e-9)
    # and not wastefully fine: within the next FFT-friendly size of the exact need
    need = math.ceil(extent / auto_sampling(angle, energy) - 1e-9)
    assert need <= gpts[0] <= max(need + 8, int(need * 1.15))
    assert all(p in (2, 3, 5, 7) for p in _factors(gpts[0]))


def _factors(n):
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def test_auto_sampling_rejects_bad_angles():
    with pytest.raises(PtyroValueError, match="max_angle: expected a positive angle in mrad, got -1"):
        auto_sampling(-1, 200e3)
    with pytest.raises(PtyroValueError, match="fraction"):
        auto_sampling(50, 200e3, fraction=1.5)


def test_simulate_warns_and_auto_grid_fixes_it():
    pw = pytest.importorskip("ptyro_workflows")
    from ptyro_workflows.config import simulation_config
    from ptyro_workflows.simulate import potential_grid

    cfg = {
        "specimen": {"structure": "SrTiO3"},
        "potential": {"gpts": [32, 32], "slice_thickness": 3.905},
        "probe": {"semiangle_cutoff": 20.0},
        "scan": {"gpts": [1, 1]},
        "detectors": {"pixelated": False, "adf": [40, 65]},
    }
    with pytest.warns(ConvergenceWarning, match="detector 'adf' reaches 65 mrad"):
        pw.simulate(cfg, progress=False)
    auto = simulation_config({**cfg, "potential": {"gpts": "auto"}})
    assert auto["potential"]["gpts"] == "auto"
    from ptyro_workflows.simulate import build_specimen

    grid = potential_grid(build_specimen(auto["specimen"]), auto["potential"], max_angle=65.0, energy=200e3)
    assert 65.0 <= SAFE_FRACTION * band_limit_mrad(grid, 200e3) < 65.0 / SAFE_FRACTION * 1.3
    with pytest.raises(PtyroValueError, match=r'\[potential\] gpts: expected \[nx, ny\] or "auto", got \'automatic\''):
        simulation_config({**cfg, "potential": {"gpts": "automatic"}})


def test_frequencies_of_auto_grid_are_numpy_consistent():
    # the chosen sampling is what Grid.from_extent gives back (no silent rounding past the margin)
    gpts = auto_gpts((15.62, 15.62), 65.0, 200e3)
    grid = Grid.from_extent((15.62, 15.62), gpts=gpts)
    assert max(grid.sampling) <= auto_sampling(65.0, 200e3) + 1e-12
    assert np.isclose(grid.sampling[0], 15.62 / gpts[0])
