"""Direct methods live (``[live] direct``): iCoM from the live centre of mass equals the direct-phase
issue's offline iCoM (``ptyro_invert.direct.icom.icom_phase``, its own centre of mass) once the scan
is complete. Runs where ``ptyro_invert.direct`` is installed (after the merge of issue 16)."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ptyro_invert.direct")

sys.path.insert(0, str(Path(__file__).parent))
from live_case import CONFIG, make_case  # noqa: E402
from ptyro_core import Dataset4D, PtyroValueError  # noqa: E402
from ptyro_invert.direct.icom import icom_phase  # noqa: E402
from ptyro_workflows.live import build_session  # noqa: E402
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart  # noqa: E402


class Memory:
    def __init__(self, counts):
        self.counts = counts

    def __iter__(self):
        rx, ry = self.counts.shape[:2]
        yield SeriesStart(rx * ry, self.counts.shape[2:], "uint16", 1, {})
        for k in range(rx * ry):
            yield Frame(k, self.counts[divmod(k, ry)])
        yield SeriesEnd(1)

    def close(self):
        pass


def test_live_icom_equals_offline_icom(monkeypatch):
    _, _, ds, counts = make_case()
    monkeypatch.setattr("ptyro_workflows.live.app.open_source", lambda spec, **o: Memory(counts))
    cfg = {**CONFIG, "live": {**CONFIG["live"], "ptychography": False, "direct": ["icom"]}}
    res = build_session("memory:x", cfg, None).run()
    assert res.complete
    live = res.results["direct/icom_phase"]
    off, _ = icom_phase(Dataset4D(counts.astype(np.float32), ds.positions, grid=ds.grid, energy=ds.energy))
    off = np.asarray(off)
    assert live.shape == off.shape == (8, 8)
    np.testing.assert_allclose(live - live.mean(), off - off.mean(), atol=1e-4 * np.abs(off).max() + 1e-6)
    assert np.corrcoef(live.ravel(), off.ravel())[0, 1] > 0.999


def test_unknown_direct_method_is_one_clear_error():
    with pytest.raises(PtyroValueError, match="'ssbx': unknown; expected one of icom"):
        build_session("replay:none.h5", {**CONFIG, "live": {"direct": ["ssbx"]}}, None)
