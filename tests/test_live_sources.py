"""Sources: Stream V2 decoding (typed arrays, MultiDimArray, DECTRIS compressions) against
messages built from the specification by the sender, the SPEC syntax, the registry, replay."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("cbor2")

import cbor2  # noqa: E402
import ptyro_core  # noqa: E402
from ptyro_core import PtyroValueError  # noqa: E402
from ptyro_workflows.live.dectris import decode_message  # noqa: E402
from ptyro_workflows.live.sender import compress, encode_image  # noqa: E402
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart, open_source, parse_spec  # noqa: E402


def _msg(image, compression=None):
    return cbor2.dumps(cbor2.CBORTag(55799, {"type": "image", "image_id": 3, "data": {"t1": encode_image(image, compression)}}))


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(["uint8", "uint16", "uint32", "float32"]),
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    compression=st.sampled_from([None, "bslz4", "lz4"]),
    seed=st.integers(0, 2**16),
)
def test_stream_v2_image_round_trip(dtype, shape, compression, seed):
    rng = np.random.default_rng(seed)
    img = (rng.integers(0, 5000, shape) * rng.random(shape) ** 4).astype(dtype)  # sparse-ish, compressible counts
    msg = decode_message(_msg(img, compression))
    assert msg["type"] == "image" and msg["image_id"] == 3
    out = msg["data"]["t1"]
    assert out.shape == shape and out.dtype == img.dtype  # row-major [y, x] as sent
    np.testing.assert_array_equal(out, img)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 3000), elem=st.sampled_from([1, 2, 4, 8]), block=st.sampled_from([64, 256, 8192]), seed=st.integers(0, 2**16))
def test_bslz4_block_decoder_equals_bitshuffles_own(n, elem, block, seed):
    """Our block-by-block bslz4 decoder (no OpenMP team per frame) against bitshuffle's whole-buffer
    decompress_lz4, over several blocks, a short last block and the n % 8 uncompressed tail."""
    import bitshuffle

    from ptyro_workflows.live.dectris import _bslz4_hdf5

    a = (np.random.default_rng(seed).poisson(3.0, n)).astype(f"u{elem}")
    data = compress(a.tobytes(), "bslz4", elem, block_bytes=block)
    ref = bitshuffle.decompress_lz4(np.frombuffer(data[12:], np.uint8), (n,), a.dtype, block // elem)
    out = np.frombuffer(_bslz4_hdf5(data, elem), a.dtype)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out, a)


def test_bslz4_truncated_is_a_one_line_error():
    from ptyro_workflows.live.dectris import _bslz4_hdf5

    data = compress(np.arange(4096, dtype=np.uint16).tobytes(), "bslz4", 2, block_bytes=1024)
    for cut in (len(data) // 2, 14, len(data) - 1):
        with pytest.raises(PtyroValueError, match="bslz4: the data ends after"):
            _bslz4_hdf5(data[:cut], 2)


def test_lz4_blocks_stored_uncompressed_when_they_do_not_shrink():
    raw = np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes()  # incompressible: blocks stored raw
    img = np.frombuffer(raw, np.uint8).reshape(100, 200)
    np.testing.assert_array_equal(decode_message(_msg(img, "lz4"))["data"]["t1"], img)
    assert len(compress(raw, "lz4", 1)) == 12 + 3 * 4 + 20000


def test_bad_messages_are_one_line_errors():
    with pytest.raises(PtyroValueError, match="expected a CBOR map"):
        decode_message(cbor2.dumps([1, 2]))
    bad = cbor2.dumps({"type": "image", "data": {"t": cbor2.CBORTag(40, [[2, 2], cbor2.CBORTag(69, cbor2.CBORTag(56500, ["zstd", 0, b"x"]))])}})
    with pytest.raises(PtyroValueError, match="'zstd'.*expected 'bslz4' or 'lz4'"):
        decode_message(bad)


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("dectris://10.0.0.5:31001", ("dectris", "10.0.0.5:31001")), ("replay:data/x.h5", ("replay", "data/x.h5")), ("replay:C:/x.h5", ("replay", "C:/x.h5"))],
)
def test_parse_spec(spec, parsed):
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["data.h5", ":x", "dectris://", 42])
def test_parse_spec_rejects(spec):
    with pytest.raises(PtyroValueError, match="expected NAME:ADDRESS"):
        parse_spec(spec)


def test_sources_are_registered_through_ptyro_register_sources():
    names = {c.name for c in ptyro_core.get_registry().components("source")}
    assert {"dectris", "replay"} <= names
    with pytest.raises(ptyro_core.UnknownComponentError, match="replay"):
        open_source("replai:x.h5")


def test_replay_streams_a_file_in_scan_order(tmp_path):
    from ptyro_core import Dataset4D, Grid
    from ptyro_workflows.io import save_dataset

    arr = np.random.default_rng(1).poisson(3.0, (3, 4, 8, 6)).astype(np.float32)
    pos = np.stack(np.meshgrid(np.arange(3) * 0.5, np.arange(4) * 0.25, indexing="ij"), -1).reshape(-1, 2)
    save_dataset(tmp_path / "d.h5", Dataset4D(arr, pos.astype(np.float32), grid=Grid((8, 6), (0.2, 0.2)), energy=80e3))
    events = list(open_source(f"replay:{tmp_path / 'd.h5'}", fps=1000))
    assert isinstance(events[0], SeriesStart) and isinstance(events[-1], SeriesEnd)
    start = events[0]
    assert start.number_of_images == 12 and start.pattern_shape == (8, 6)
    assert start.metadata["scan_shape"] == (3, 4) and np.allclose(start.metadata["scan_step"], (0.5, 0.25))
    frames = [e for e in events if isinstance(e, Frame)]
    assert [f.index for f in frames] == list(range(12))
    for f in frames:
        np.testing.assert_array_equal(f.pattern, arr[divmod(f.index, 4)])
    with pytest.raises(PtyroValueError, match="fps"):
        open_source(f"replay:{tmp_path / 'd.h5'}", fps=-1)


def test_dectris_stream_waits_for_a_start_and_stops_at_the_next_series():
    from ptyro_workflows.live.dectris import DectrisStream
    from ptyro_workflows.live.sender import StreamV2Sender

    pats = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    sender = StreamV2Sender("tcp://127.0.0.1:0")
    stream = DectrisStream(sender.endpoint, timeout=5)
    # the tail of an earlier series (no start seen), then a series without its end, then the next
    # series: all queued before the stream reads (ten messages, far below the high-water mark).
    # Sent from a thread while the stream read, the sends after the stream had stopped and closed
    # its socket waited for a peer for ever: the test hung when the stream read the faster.
    sender._send({"type": "image", "image_id": 9, "data": {"t": encode_image(pats[0].T)}})
    sender.send_series(pats, 3, end=False)
    sender.send_series(pats, 3, series_id=2)
    events = list(stream)
    sender.close()
    assert stream.skipped_before_start == 1
    assert isinstance(events[0], SeriesStart) and events[0].series_id == 1 and events[0].pattern_shape == (4, 5)
    frames = [e for e in events if isinstance(e, Frame)]
    assert [f.index for f in frames] == [0, 1, 2] and not any(isinstance(e, SeriesEnd) for e in events)
    for f in frames:
        np.testing.assert_array_equal(f.pattern, pats[f.index])  # pattern (Qx, Qy) = image transposed
