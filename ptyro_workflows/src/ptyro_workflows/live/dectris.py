"""DECTRIS Stream V2 receiver (ARINA, QUADRO, EIGER2 ...): a ZeroMQ PULL socket receiving one CBOR
message per ZeroMQ message, ``start``, then one ``image`` per exposure, then ``end``.

Decoding follows DECTRIS's public specification: top-level maps with text keys and a ``type``;
images as ``data: {channel: MultiDimArray}`` (RFC 8746 tag 40, ``[[rows, cols], typed array]``,
row-major ``[image_size_y, image_size_x]``); typed arrays as RFC 8746 tags 64-87; compressed byte
strings as DECTRIS tag 56500 ``[algorithm, modifier, bytes]`` with ``bslz4`` (bitshuffle + LZ4,
HDF5 framing; decoded by the ``bitshuffle`` package) and ``lz4`` (LZ4 blocks, HDF5 framing;
decoded by the ``lz4`` package). Messages carry the self-described CBOR tag 55799.

The start message has no scan shape or calibration: they come from the configuration. Frame k
is scan position divmod(k, Ry); the pattern is the image transposed (Qx = image x, its columns).
"""

import struct
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart

__all__ = ["decode_message", "DectrisStream", "dectris", "TYPED_ARRAY_DTYPES"]

SELF_DESCRIBED = 55799
MULTI_DIM_ROW_MAJOR = 40
DECTRIS_COMPRESSION = 56500

#: RFC 8746 section 2.1: tag -> numpy dtype
TYPED_ARRAY_DTYPES: dict[int, str] = {
    64: "u1", 65: ">u2", 66: ">u4", 67: ">u8", 68: "u1", 69: "<u2", 70: "<u4", 71: "<u8",
    72: "i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4", 79: "<i8",
    80: ">f2", 81: ">f4", 82: ">f8", 84: "<f2", 85: "<f4", 86: "<f8",
}  # fmt: skip


def _hdf5_framed(data: bytes) -> tuple[int, int, memoryview]:
    """(uncompressed bytes, block bytes, payload) of the HDF5 LZ4 / bitshuffle framing: an
    8-byte big-endian total size and a 4-byte big-endian block size."""
    if len(data) < 12:
        raise PtyroValueError(f"DECTRIS compressed data of {len(data)} bytes: expected at least the 12-byte HDF5 framing header")
    total, block = struct.unpack(">QI", bytes(data[:12]))
    return total, block, memoryview(data)[12:]


def _lz4_hdf5(data: bytes) -> bytes:
    import lz4.block

    total, block, payload = _hdf5_framed(data)
    out = bytearray()
    pos = 0
    while len(out) < total:
        if pos + 4 > len(payload):
            raise PtyroValueError(f"lz4: the data ends after {len(out)} of {total} bytes")
        (csize,) = struct.unpack(">I", payload[pos : pos + 4])
        pos += 4
        want = min(block, total - len(out))
        chunk = payload[pos : pos + csize]
        pos += csize
        out += bytes(chunk) if csize == want else lz4.block.decompress(bytes(chunk), uncompressed_size=want)
    return bytes(out)


def _bslz4_hdf5(data: bytes, elem_size: int) -> memoryview:
    """bitshuffle + LZ4 in the HDF5 framing, block by block in this thread: each block's LZ4 by
    ``lz4``, its bit transpose undone by ``bitshuffle``'s single-block kernel (the whole-buffer
    ``bitshuffle.decompress_lz4`` runs an OpenMP team per call, which on a busy machine costs
    milliseconds a frame). Blocks hold a multiple of 8 elements; the last ``n % 8`` elements
    follow the blocks uncompressed (bitshuffle's layout)."""
    import lz4.block
    from bitshuffle.ext import untrans_bit_elem

    total, block, payload = _hdf5_framed(data)
    if elem_size not in (1, 2, 4, 8) or total % elem_size or block % elem_size:
        raise PtyroValueError(f"bslz4: element size {elem_size} for {total} bytes in blocks of {block}; expected 1, 2, 4 or 8 dividing both")
    dtype = np.dtype(f"u{elem_size}")
    n, per = total // elem_size, max(block // elem_size, 8)
    out = np.empty(total, np.uint8)
    pos = done = 0
    while n - done >= 8:
        m = min(per, n - done)
        m -= m % 8
        (csize,) = struct.unpack_from(">I", payload, pos) if pos + 4 <= len(payload) else (len(payload),)
        if pos + 4 + csize > len(payload):
            raise PtyroValueError(f"bslz4: the data ends after {done * elem_size} of {total} bytes")
        raw = lz4.block.decompress(payload[pos + 4 : pos + 4 + csize], uncompressed_size=m * elem_size)
        pos += 4 + csize
        out[done * elem_size : (done + m) * elem_size] = untrans_bit_elem(np.frombuffer(raw, dtype)).view(np.uint8)
        done += m
    rest = total - done * elem_size
    if len(payload) - pos < rest:
        raise PtyroValueError(f"bslz4: the data ends after {done * elem_size} of {total} bytes")
    out[done * elem_size :] = np.frombuffer(payload[pos : pos + rest], np.uint8)
    return out.data


def _decompress(value: Any) -> bytes | memoryview:
    algorithm, modifier, data = value
    if algorithm == "bslz4":
        return _bslz4_hdf5(data, int(modifier))
    if algorithm == "lz4":
        return _lz4_hdf5(data)
    raise PtyroValueError(f"DECTRIS compression {algorithm!r}: expected 'bslz4' or 'lz4' (or an uncompressed stream)")


def _tag_hook(a: Any, b: Any) -> Any:
    # cbor2 < 6 calls tag_hook(decoder, tag); cbor2 6 calls it (tag, immutable)
    tag = a if hasattr(a, "tag") and hasattr(a, "value") else b
    t = tag.tag
    if t == DECTRIS_COMPRESSION:
        return _decompress(tag.value)
    if t in TYPED_ARRAY_DTYPES:
        return np.frombuffer(tag.value, TYPED_ARRAY_DTYPES[t])
    if t == MULTI_DIM_ROW_MAJOR:
        dims, flat = tag.value
        return np.asarray(flat).reshape(tuple(int(d) for d in dims))
    return tag


_cbor2: Any = None  # imported on the first message


def decode_message(raw: bytes) -> dict[str, Any]:
    """A Stream V2 message as a dict (typed arrays as numpy arrays, decompressed)."""
    global _cbor2
    if _cbor2 is None:
        import cbor2 as _cbor2
    cbor2 = _cbor2
    try:
        msg = cbor2.loads(raw, tag_hook=_tag_hook)
    except cbor2.CBORDecodeError as e:  # a fault in our tag decoding travels as the cause
        cause = e.__cause__
        if isinstance(cause, PtyroValueError):
            raise cause from None
        raise PtyroValueError(f"Stream V2 message of {len(raw)} bytes is not valid CBOR ({e}{': ' + str(cause) if cause else ''})") from None
    if hasattr(msg, "tag") and msg.tag == SELF_DESCRIBED:
        msg = msg.value
    if type(msg) is dict and "type" in msg:  # the usual case, without the ABC check's cost
        return msg
    if not isinstance(msg, Mapping) or "type" not in msg:
        raise PtyroValueError(f"Stream V2 message: expected a CBOR map with a 'type' key, got {type(msg).__name__}")
    return dict(msg)


class DectrisStream:
    """One series from a DECTRIS Stream V2 endpoint (``tcp://HOST:PORT``; PULL, connecting).

    Options: ``channel`` (default: the first of the start message's ``channels``),
    ``timeout`` (seconds without a message before the stream is declared dead; default 10; the
    first message may take ``start_timeout`` seconds, default: wait for ever), ``hwm`` (ZeroMQ
    receive high-water mark, messages), ``first_image_id`` (the image_id of frame 0; default 0).
    One series per stream: images before its start message (a receiver started mid-series) are
    skipped and counted (``skipped_before_start``); a second start message ends the stream."""

    def __init__(self, endpoint: str, *, channel: str | None = None, timeout: float = 10.0, start_timeout: float | None = None,
                 hwm: int = 10000, first_image_id: int = 0, bind: bool = False) -> None:  # fmt: skip
        import zmq

        self.endpoint = endpoint if "://" in endpoint else f"tcp://{endpoint}"
        self.channel = channel
        self.timeout = float(timeout)
        self.start_timeout = start_timeout
        self.first_image_id = int(first_image_id)
        self._ctx: Any = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, int(hwm))
        self._sock.setsockopt(zmq.LINGER, 0)
        (self._sock.bind if bind else self._sock.connect)(self.endpoint)
        self._closed = False
        self.poll_s = 0.05
        self.skipped_before_start = 0

    def _recv(self) -> Any:
        """The next message's bytes (zero-copy), or None after ``poll_s`` seconds without one."""
        import zmq

        try:
            return self._sock.recv(zmq.NOBLOCK, copy=False).buffer
        except zmq.Again:
            if self._sock.poll(int(self.poll_s * 1000), zmq.POLLIN):
                return self._sock.recv(copy=False).buffer
        return None

    def __iter__(self) -> Iterator[SeriesStart | Frame | SeriesEnd | None]:
        started = False
        channel = self.channel
        idle = 0.0
        try:
            while not self._closed:
                raw = self._recv()
                if raw is None:  # nothing for poll_s seconds: the session may flush; for too long: the stream died
                    idle += self.poll_s
                    limit = self.timeout if started else self.start_timeout
                    if limit is not None and idle >= limit:
                        return  # no SeriesEnd
                    yield None
                    continue
                idle = 0.0
                msg = decode_message(raw)
                kind = msg["type"]
                if kind == "start":
                    if started:  # the next series began before this one's end message: this one is over (incomplete)
                        return
                    started = True
                    channels = list(msg.get("channels") or [])
                    if channel is None:
                        channel = channels[0] if channels else None
                    elif channels and channel not in channels:
                        raise PtyroValueError(f"channel {channel!r}: the series has channels {channels}")
                    nx, ny = msg.get("image_size_x"), msg.get("image_size_y")
                    meta: dict[str, Any] = {k: msg[k] for k in ("incident_energy", "beam_center_x", "beam_center_y", "count_time", "frame_time",
                                                "detector_description", "series_unique_id", "saturation_value") if k in msg}  # fmt: skip
                    yield SeriesStart(msg.get("number_of_images"), (int(nx), int(ny)) if nx and ny else None, None, msg.get("series_id"), meta)
                elif kind == "image":
                    if not started:  # joined in the middle of a series: wait for the next start
                        self.skipped_before_start += 1
                        continue
                    data = msg["data"]
                    key = channel if channel is not None else next(iter(data))
                    if key not in data:
                        raise PtyroValueError(f"image {msg.get('image_id')}: no channel {key!r}; it has {list(data)}")
                    img = np.asarray(data[key])
                    yield Frame(int(msg["image_id"]) - self.first_image_id, img.T)
                elif kind == "end" and started:
                    yield SeriesEnd(msg.get("series_id"))
                    return
        finally:
            self._closed = True
            self._sock.close(0)  # by the thread that used it (ZeroMQ sockets are not thread-safe)

    def close(self) -> None:
        """Stop the iteration (from any thread) within 0.05 s; the socket is closed by it."""
        self._closed = True


def dectris(address: str, **options: Any) -> DectrisStream:
    """Source ``dectris://HOST:PORT``: a DECTRIS Stream V2 series over ZeroMQ."""
    return DectrisStream(address, **options)
