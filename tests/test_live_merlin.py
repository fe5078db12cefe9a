"""The Merlin source (``merlin://HOST:PORT``) through a real TCP socket on localhost, fed by a
sender written from Quantum Detectors' documented data-port format (``MerlinSender``, which
shares no code with the receiver): every frame arrives, the raw frames come back bit for bit,
the live virtual images equal the offline ones; a connection that dies is an incomplete series;
malformed headers are one-line errors."""

import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from live_case import CONFIG, SCAN, make_case  # noqa: E402

from ptyro_core import PtyroValueError  # noqa: E402
from ptyro_workflows.live import build_session, virtual_images  # noqa: E402
from ptyro_workflows.live.merlin import MerlinStream, parse_frame_header  # noqa: E402
from ptyro_workflows.live.sender import MerlinSender  # noqa: E402
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart  # noqa: E402


@pytest.fixture(scope="module")
def case():
    return make_case()


def _serve(pats, **kw):
    sender = MerlinSender()
    msgs = list(sender.messages(pats, len(pats)))
    t = threading.Thread(target=sender.serve, args=(msgs,), kwargs=kw, daemon=True)
    t.start()
    return sender, t


def test_merlin_stream_every_frame_and_exact_virtual_images(case, tmp_path):
    _, _, _, counts = case
    flat = counts.reshape(64, *counts.shape[2:])
    sender, t = _serve(flat)
    cfg = {**CONFIG, "live": {**CONFIG["live"], "ptychography": False, "save_frames": True}}
    session = build_session(f"merlin://127.0.0.1:{sender.port}", cfg, tmp_path / "m.h5", energy_given=True)
    res = session.run()
    t.join(10)
    sender.close()
    assert res.complete and res.stats["received"] == 64 == res.stats["processed"] and res.stats["dropped"] == 0
    ref = virtual_images(counts, session.geometry)
    with h5py.File(tmp_path / "m.h5") as f:
        np.testing.assert_array_equal(f["frames"][()], counts)  # pattern = image transposed, big-endian decoded
        for k in ("bf", "adf", "com_x", "com_y", "dpc_x"):
            assert np.array_equal(f[f"images/{k}"][()], ref[k]), k
        assert f["images/bf"].shape == SCAN and np.ptp(f["images/bf"][()]) > 0


def test_merlin_connection_that_dies_is_an_incomplete_series(case, tmp_path):
    _, _, _, counts = case
    flat = counts.reshape(64, *counts.shape[2:])
    sender, t = _serve(flat, stop_after=40)
    cfg = {**CONFIG, "live": {**CONFIG["live"], "ptychography": False}}
    res = build_session(f"merlin://127.0.0.1:{sender.port}", cfg, tmp_path / "m.h5", energy_given=True).run()
    t.join(10)
    sender.close()
    assert not res.complete and res.stats["processed"] == 40
    with h5py.File(tmp_path / "m.h5") as f:
        assert not bool(f.attrs["complete"]) and int(f.attrs["missing"]) == 24


@settings(max_examples=15, deadline=None)
@given(dtype=st.sampled_from(["uint8", "uint16", "uint32"]), shape=st.tuples(st.integers(1, 24), st.integers(1, 24)), n=st.integers(1, 4))
def test_merlin_round_trip_of_every_depth(dtype, shape, n):
    pats = np.random.default_rng(n).integers(0, np.iinfo(dtype).max, (n, *shape), dtype=dtype)
    sender, t = _serve(pats)
    events = list(MerlinStream(f"127.0.0.1:{sender.port}", timeout=5.0))
    t.join(10)
    sender.close()
    assert isinstance(events[0], SeriesStart) and events[0].number_of_images == n and isinstance(events[-1], SeriesEnd)
    frames = [e for e in events if isinstance(e, Frame)]
    assert [f.index for f in frames] == list(range(n))
    for f, p in zip(frames, pats):
        assert f.pattern.shape == shape and f.pattern.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(f.pattern, p)


def test_malformed_merlin_headers_are_one_line_errors():
    with pytest.raises(PtyroValueError, match=r"pixel depth 'R64'.*raw R64"):
        parse_frame_header(b"MQ1,000001,00384,01,0256,0256,R64,   1x1,01,")
    with pytest.raises(PtyroValueError, match="expected a frame header 'MQ1"):
        parse_frame_header(b"XYZ,1,2")
    with pytest.raises(PtyroValueError, match="expected HOST:PORT"):
        MerlinStream("nohost")
    import socket

    srv = socket.create_server(("127.0.0.1", 0))

    def garbage():
        c, _ = srv.accept()
        with c:
            c.sendall(b"GARBAGEGARBAGE!" * 4)

    t = threading.Thread(target=garbage, daemon=True)
    t.start()
    with pytest.raises(PtyroValueError, match="expected a message header 'MPX,<10 digits>,'"):
        list(MerlinStream(f"127.0.0.1:{srv.getsockname()[1]}", timeout=2.0))
    t.join(5)
    srv.close()
