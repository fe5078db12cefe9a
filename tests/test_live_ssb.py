"""Live single-sideband ptychography: each frame's share added to the object spectrum as it
arrives (any order, any blocks), equal at the end of the scan to the offline ``ssb`` of
``ptyro_invert.direct`` on the whole dataset; frames dispatched to several devices give the same
result as one device (fake CPU devices, in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("ptyro_invert.direct")

sys.path.insert(0, str(Path(__file__).parent))
from live_case import CONFIG, SCAN, make_case  # noqa: E402

from ptyro_core import Dataset4D, PtyroValueError  # noqa: E402
from ptyro_invert.direct.ssb import ssb, ssb_phase  # noqa: E402
from ptyro_workflows.live import LiveSession  # noqa: E402
from ptyro_workflows.live.app import live_config, make_geometry, processors  # noqa: E402
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart  # noqa: E402

CFG = {**CONFIG, "live": {**CONFIG["live"], "direct": ["ssb"], "ptychography": False, "batch": 8}}


@pytest.fixture(scope="module")
def case():
    return make_case()


class Shuffled:
    """The series in a random order (a detector's frames may arrive out of order)."""

    def __init__(self, counts, seed=0):
        self.flat = counts.reshape(-1, *counts.shape[2:])
        self.order = np.random.default_rng(seed).permutation(len(self.flat))

    def __iter__(self):
        yield SeriesStart(len(self.flat), self.flat.shape[1:], "uint16", 1, {})
        for k in self.order:
            yield Frame(int(k), self.flat[k])
        yield SeriesEnd(1)

    def close(self):
        pass


def _session(counts, out, cfg=CFG):
    c = live_config(cfg)
    c["_energy_given"] = True
    procs = processors(c)
    return LiveSession(Shuffled(counts), procs, lambda s, f: make_geometry(c, s, f), output=out, batch=5), procs


def test_live_ssb_at_the_end_equals_offline_ssb(case, tmp_path):
    _, _, ds, counts = case
    session, procs = _session(counts, tmp_path / "live.h5")
    res = session.run()
    assert res.complete
    live = procs[1]
    offline = Dataset4D(counts.astype(np.float32), np.asarray(live.state.positions), grid=ds.grid, energy=ds.energy)
    phase, _ = ssb_phase(offline, live.state)
    obj = ssb(offline, live.state).object
    with h5py.File(tmp_path / "live.h5") as f:
        got, got_obj = f["direct/ssb_phase"][()], f["direct/ssb_object"][()]
    scale = float(np.abs(phase).max())
    assert scale > 0.05  # the specimen's phase is there (not two empty images agreeing)
    np.testing.assert_allclose(got, np.asarray(phase), atol=1e-5 * scale)
    np.testing.assert_allclose(got_obj, np.asarray(obj), atol=1e-5)


def test_live_ssb_is_linear_in_the_frames(case):
    """The spectrum after frames A then B is the sum of A's alone and B's alone (what makes the
    partial result a partial sum, not an approximation)."""
    _, _, _, counts = case
    flat = counts.reshape(64, *counts.shape[2:])
    c = live_config(CFG)
    c["_energy_given"] = True
    g = make_geometry(c, SeriesStart(64, flat.shape[1:], "uint16"), [])
    a, b, both = (processors(c)[1] for _ in range(3))
    for p in (a, b, both):
        p.start(g)
    ia, ib = np.arange(0, 40), np.arange(40, 64)
    a.update(ia, flat[ia])
    b.update(ib, flat[ib])
    both.update(ia, flat[ia])
    both.update(ib, flat[ib])
    s = both.spectrum()
    assert np.abs(s).max() > 0
    np.testing.assert_allclose(s, a.spectrum() + b.spectrum(), atol=1e-4 * np.abs(s).max())


def test_bad_devices_is_a_one_line_error(case):
    c = live_config({**CFG, "live": {**CFG["live"], "devices": 99}})
    c["_energy_given"] = True
    p = processors(c)[1]
    with pytest.raises(PtyroValueError, match=r"devices = 99: expected 1 to \d+"):
        p.start(make_geometry(c, SeriesStart(64, (32, 32), "uint16"), []))


_MULTI = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import jax
from live_case import CONFIG, make_case
from ptyro_workflows.live.app import live_config, make_geometry, processors
from ptyro_workflows.live.sources import SeriesStart
_, _, _, counts = make_case()
flat = counts.reshape(64, *counts.shape[2:])
out = {"devices": len(jax.devices())}
for n in (1, 4):
    c = live_config({**CONFIG, "live": {**CONFIG["live"], "direct": ["ssb"], "ptychography": False, "devices": n, "batch": 8}})
    c["_energy_given"] = True
    p = processors(c)[1]
    p.start(make_geometry(c, SeriesStart(64, flat.shape[1:], "uint16"), []))
    for lo in range(0, 64, 8):
        p.update(np.arange(lo, lo + 8), flat[lo:lo + 8])
    out[str(n)] = p.phase().tolist()
    out[f"used_{n}"] = sorted({str(a.devices().pop()) for a in p._acc if float(np.abs(np.asarray(a)).max()) > 0})
print(json.dumps(out))
"""


def test_frames_dispatched_to_four_devices_give_one_devices_result():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", _MULTI, str(Path(__file__).parent)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert len(out["used_4"]) == 4 and len(out["used_1"]) == 1  # every device accumulated frames
    one, four = np.asarray(out["1"]), np.asarray(out["4"])
    assert one.shape == SCAN and np.abs(one).max() > 0.05
    np.testing.assert_allclose(four, one, atol=1e-6 * np.abs(one).max())
