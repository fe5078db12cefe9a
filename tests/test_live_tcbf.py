"""Live tilt-corrected bright field: the bright-field windows kept as the frames arrive; at the
end of the scan the result equals the offline ``ptyro_invert.direct.parallax`` of the whole
dataset; on part of the scan it runs (positions not yet received carry no contrast)."""

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("ptyro_invert.direct")

sys.path.insert(0, str(Path(__file__).parent))
from live_case import CONFIG, make_case  # noqa: E402

from ptyro_core import Dataset4D  # noqa: E402
from ptyro_invert.direct.parallax import parallax  # noqa: E402
from ptyro_workflows.live import LiveSession  # noqa: E402
from ptyro_workflows.live.app import live_config, make_geometry, processors  # noqa: E402
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart  # noqa: E402

CFG = {**CONFIG, "live": {**CONFIG["live"], "direct": ["tcbf"], "ptychography": False}}


class Stream:
    def __init__(self, flat):
        self.flat = flat

    def __iter__(self):
        yield SeriesStart(len(self.flat), self.flat.shape[1:], "uint16", 1, {})
        for k in np.random.default_rng(3).permutation(len(self.flat)):
            yield Frame(int(k), self.flat[k])
        yield SeriesEnd(1)

    def close(self):
        pass


def test_live_tcbf_at_the_end_equals_offline_parallax(tmp_path):
    _, _, ds, counts = make_case()
    flat = counts.reshape(64, *counts.shape[2:])
    c = live_config(CFG)
    c["_energy_given"] = True
    procs = processors(c)
    tcbf = procs[1]
    session = LiveSession(Stream(flat), procs, lambda s, f: make_geometry(c, s, f), output=tmp_path / "t.h5", batch=8)
    assert session.run().complete
    assert tcbf._win[0].stop - tcbf._win[0].start < 32  # a window of the detector, not all of it
    offline = parallax(Dataset4D(counts.astype(np.float32), tcbf._positions, grid=tcbf._grid, energy=ds.energy), tcbf.state, update_probe=False)
    ref = np.angle(np.asarray(offline.object[0]))
    with h5py.File(tmp_path / "t.h5") as f:
        got = f["direct/tcbf_phase"][()]
        assert float(f["direct/tcbf_defocus"][()]) == pytest.approx(offline_defocus(ds, tcbf), rel=1e-4)
    assert np.abs(ref).max() > 0.01  # an image, not two empty ones agreeing
    # not bit-equal: the live processor keeps only a window of the detector, whose sums round
    # differently (8.9e-8 rad of a 0.24 rad range, measured)
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())


def offline_defocus(ds, tcbf):
    """The offline fit with its defaults (the exact-transfer refinement and the search included),
    as the live processor makes it at the end of the scan."""
    from ptyro_invert.direct.parallax import fit_aberrations

    _, _, _, counts = make_case()
    return fit_aberrations(Dataset4D(counts.astype(np.float32), tcbf._positions, grid=tcbf._grid, energy=ds.energy)).defocus


def test_live_tcbf_on_part_of_the_scan():
    _, _, _, counts = make_case()
    flat = counts.reshape(64, *counts.shape[2:])
    c = live_config(CFG)
    c["_energy_given"] = True
    tcbf = processors(c)[1]
    tcbf.start(make_geometry(c, SeriesStart(64, flat.shape[1:], "uint16"), []))
    try:
        assert tcbf.snapshot() == {}
        tcbf.update(np.arange(40), flat[:40])
        tcbf._run()
        img = tcbf.snapshot()["tcbf_phase"]
        assert img.shape == tuple(tcbf.state.object.shape[-2:]) and np.isfinite(img).all() and img.std() > 0
    finally:
        tcbf._end.set()
        tcbf._thread.join()
