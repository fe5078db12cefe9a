"""The live session: frames counted end to end, a bounded buffer that drops and says so, an
interrupted session that still writes what it has (marked incomplete), exact virtual images
whatever the batches, the calibration measured on the first frames, and ``ptyro live``."""

import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from live_case import CONFIG, GPTS, SAMPLING, make_case  # noqa: E402
from ptyro_core import PtyroValueError  # noqa: E402
from ptyro_workflows.cli import main  # noqa: E402
from ptyro_workflows.live import Geometry, LiveSession, VirtualDetectors, live_config, make_geometry, virtual_images  # noqa: E402
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart  # noqa: E402


class Memory:
    """An in-memory stream of (n, qx, qy) patterns for a (rx, ry) scan."""

    def __init__(self, pats, scan, end=True):
        self.pats, self.scan, self.end = pats, scan, end

    def __iter__(self):
        yield SeriesStart(len(self.pats), self.pats.shape[1:], str(self.pats.dtype), 1, {})
        for k, p in enumerate(self.pats):
            yield Frame(k, p)
        if self.end:
            yield SeriesEnd(1)

    def close(self):
        pass


class Slow(VirtualDetectors):
    def __init__(self, delay=0.0, interrupt_after=None):
        self.delay, self.interrupt_after, self.seen = delay, interrupt_after, 0

    def update(self, indices, patterns):
        time.sleep(self.delay)
        super().update(indices, patterns)
        self.seen += len(indices)
        if self.interrupt_after is not None and self.seen >= self.interrupt_after:
            raise KeyboardInterrupt


def _geom(scan=(8, 8), q=(16, 16)):
    return lambda start, first: Geometry(scan, q, 200e3, (0.05, 0.05), (0.5, 0.5), 20.0)


def _pats(n=64, q=16, seed=0):
    return np.random.default_rng(seed).poisson(5.0, (n, q, q)).astype(np.uint16)


def test_a_full_buffer_drops_counts_and_marks_when_asked(tmp_path):
    proc = Slow(delay=0.05)
    s = LiveSession(Memory(_pats(), (8, 8)), [proc], _geom(), output=tmp_path / "o.h5", buffer_frames=4, batch=4, overflow="drop")
    res = s.run()
    st_ = res.stats
    assert st_["dropped"] > 0 and st_["received"] == 64 == st_["processed"] + st_["dropped"] and st_["spilled"] == 0
    assert not res.complete
    with h5py.File(tmp_path / "o.h5") as f:
        assert int(f.attrs["dropped"]) == st_["dropped"] and int(f.attrs["missing"]) == st_["dropped"]
        assert int(f["dropped_mask"][()].sum()) == st_["dropped"]
        assert not np.any(f["dropped_mask"][()] & f["processed_mask"][()])


def test_a_full_buffer_spills_to_disk_and_loses_nothing(tmp_path):
    """Processing far slower than the stream: the frames beyond the 4-frame buffer go to a
    temporary file beside the output, come back in order, and the result equals the offline one;
    the spill file is gone afterwards and the count is in the output."""
    pats = _pats()
    seen_spill = []

    class Watch(Slow):
        def update(self, indices, patterns):
            seen_spill.extend(p.name for p in tmp_path.iterdir() if p.suffix == ".spill")
            super().update(indices, patterns)

    s = LiveSession(Memory(pats, (8, 8)), [Watch(delay=0.02)], _geom(), output=tmp_path / "o.h5", buffer_frames=4, batch=4)
    res = s.run()
    st_ = res.stats
    assert res.complete and st_["dropped"] == 0 and st_["processed"] == 64 and st_["spilled"] > 0
    assert seen_spill, "the spill file was never beside the output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5"]  # spill file and temporary removed
    with h5py.File(tmp_path / "o.h5") as f:
        assert int(f.attrs["spilled"]) == st_["spilled"] and f.attrs["overflow"] == "spill" and int(f.attrs["missing"]) == 0
        ref = virtual_images(pats.reshape(8, 8, 16, 16), _geom()(None, None))
        assert np.array_equal(f["images/bf"][()], ref["bf"]) and np.array_equal(f["images/com_x"][()], ref["com_x"])


def test_a_failing_spill_drops_counts_and_says_why(tmp_path, monkeypatch):
    from ptyro_workflows.live import session as sess

    def full(self, a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sess._Spill, "write", full)
    s = LiveSession(Memory(_pats(), (8, 8)), [Slow(delay=0.05)], _geom(), output=tmp_path / "o.h5", buffer_frames=4, batch=4)
    res = s.run()
    assert res.stats["dropped"] > 0 and res.stats["spilled"] == 0 and not res.complete
    assert any("No space left" in n and "frames dropped" in n for n in res.stats["notes"])


def test_interrupted_session_writes_what_it_has(tmp_path):
    s = LiveSession(Memory(_pats(), (8, 8)), [Slow(interrupt_after=16)], _geom(), output=tmp_path / "o.h5", batch=8)
    with pytest.raises(KeyboardInterrupt):
        s.run()
    with h5py.File(tmp_path / "o.h5") as f:
        assert not bool(f.attrs["complete"]) and "KeyboardInterrupt" in f.attrs["notes"]
        assert f["images/bf"].shape == (8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5"]  # no temporary file left


def test_a_missing_output_directory_fails_before_anything(tmp_path):
    with pytest.raises(PtyroValueError, match="does not exist"):
        LiveSession(Memory(_pats(), (8, 8)), [VirtualDetectors()], _geom(), output=tmp_path / "no" / "o.h5")


def test_a_scan_that_does_not_match_the_series_is_refused(tmp_path):
    s = LiveSession(Memory(_pats(60), (8, 8)), [VirtualDetectors()], _geom(), output=tmp_path / "o.h5")
    with pytest.raises(PtyroValueError, match="60 images but the scan"):
        s.run()


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 63), max_size=6), bright=st.lists(st.integers(0, 63), max_size=3), seed=st.integers(0, 100))
def test_virtual_images_are_exact_whatever_the_batches(cuts, bright, seed):
    pats = _pats(seed=seed).astype(np.uint32)
    pats[bright] = 60000  # beyond float32's exact range: those batches take the float64 path
    g = _geom()(None, None)
    v = VirtualDetectors()
    v.start(g)
    bounds = sorted({0, 64, *cuts})
    order = np.random.default_rng(seed).permutation(64)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        v.update(order[lo:hi], pats[order[lo:hi]])
    live = v.snapshot()
    off = virtual_images(pats.reshape(8, 8, 16, 16), g)
    for k in off:
        np.testing.assert_array_equal(live[k], off[k], err_msg=k)
    # against exact integer arithmetic
    x = np.arange(16) - 8
    sx = (pats.astype(np.int64) * x[:, None]).sum(axis=(1, 2))
    tot = pats.astype(np.int64).sum(axis=(1, 2))
    np.testing.assert_array_equal(live["com_x"].ravel(), (sx / tot) * g.mrad_per_pixel[0])


def test_the_detector_pixel_is_measured_on_the_first_frames():
    _, _, _, counts = make_case()
    cfg = live_config({k: v for k, v in CONFIG.items() if k != "live"})
    first = [Frame(k, counts[0, k]) for k in range(8)]
    g = make_geometry(cfg, SeriesStart(64, (GPTS, GPTS)), first)
    assert g.reciprocal_sampling[0] == pytest.approx(1 / (GPTS * SAMPLING), rel=0.05)
    assert g.calibration.startswith("measured on the bright-field disc of the first 8 frames")
    with pytest.raises(PtyroValueError, match=r"scan shape is unknown.*\[scan\] gpts"):
        make_geometry(live_config({"scan": {"step": 1.0}}), SeriesStart(64, (GPTS, GPTS)), first)


def test_ptyro_live_replays_a_file(tmp_path, capsys):
    from ptyro_core import Dataset4D, Grid
    from ptyro_workflows.io import save_dataset

    _, _, ds, counts = make_case()
    save_dataset(tmp_path / "d.h5", Dataset4D(counts.astype(np.float32), ds.positions, grid=ds.grid, energy=ds.energy))
    out = tmp_path / "live.h5"
    rc = main(["live", "--source", f"replay:{tmp_path / 'd.h5'}", "--fps", "2000", "--no-view", "--final-passes", "2",
               "--config", str(_toml(tmp_path)), "-o", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "received 64, processed 64, dropped 0" in text and "latency" in text
    with h5py.File(out) as f:
        assert bool(f.attrs["complete"]) and f["reconstruction/loss"].shape[0] >= 2
        np.testing.assert_allclose(f.attrs["reciprocal_sampling"], ds.grid.reciprocal_sampling, rtol=1e-6)
        assert f.attrs["calibration"] == "the source's metadata"
    # bad input: one line, exit status 2, nothing written
    bad = tmp_path / "bad.toml"
    bad.write_text("[live]\nbuffer = 3\n")
    rc = main(["live", "--source", f"replay:{tmp_path / 'd.h5'}", "--no-view", "--config", str(bad), "-o", str(tmp_path / "x.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "'buffer': unknown key" in err
    assert not (tmp_path / "x.h5").exists()


def _toml(tmp_path):
    p = tmp_path / "live.toml"
    p.write_text("[probe]\nsemiangle_cutoff = 25.0\nC10 = 60.0\n[reconstruction]\nbatch_size = 8\nlearning_rate = 0.05\nprobe_learning_rate = 0.005\n")
    return p
