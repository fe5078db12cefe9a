"""A DECTRIS Stream V2 *sender*, written from DECTRIS's public specification (not from our
receiver): a ZeroMQ PUSH socket sending CBOR messages ``start``, ``image`` x N, ``end``, each a
self-described (tag 55799) map with text keys. Images are MultiDimArrays (RFC 8746 tag 40:
``[[image_size_y, image_size_x], typed array]``, row-major) of little-endian typed arrays
(RFC 8746 tags 64, 69, 70, 85), optionally compressed with DECTRIS tag 56500 (``bslz4``: bitshuffle
+ LZ4 in HDF5 framing; ``lz4``: LZ4 blocks in HDF5 framing).

For tests, benchmarks and demos without a detector: ``StreamV2Sender("tcp://127.0.0.1:31001")``
binds (as the detector's DCU does) and :meth:`send_series` pushes one series of patterns
(pattern (Qx, Qy) = image transposed).
"""

import datetime
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["StreamV2Sender", "MerlinSender", "encode_image", "compress"]

_TAGS = {np.dtype("uint8"): 64, np.dtype("<u2"): 69, np.dtype("<u4"): 70, np.dtype("<f4"): 85}


def compress(raw: bytes, algorithm: str, elem_size: int, block_bytes: int = 8192) -> bytes:
    """``raw`` compressed as DECTRIS tag 56500 content expects: a big-endian uint64 size and
    uint32 block size, then per block a big-endian uint32 length and the block."""
    head = struct.pack(">QI", len(raw), block_bytes)
    if algorithm == "bslz4":
        import bitshuffle

        arr = np.frombuffer(raw, f"u{elem_size}")
        return head + bitshuffle.compress_lz4(arr, block_bytes // elem_size).tobytes()
    if algorithm == "lz4":
        import lz4.block

        parts = [head]
        for lo in range(0, len(raw), block_bytes):
            blk = raw[lo : lo + block_bytes]
            c = lz4.block.compress(blk, store_size=False)
            if len(c) >= len(blk):
                c = blk
            parts += [struct.pack(">I", len(c)), c]
        return b"".join(parts)
    raise ValueError(f"compression {algorithm!r}: expected 'bslz4', 'lz4' or None")


def encode_image(image: np.ndarray, compression: str | None = None) -> Any:
    """A row-major detector image as a Stream V2 MultiDimArray (cbor2 tags)."""
    import cbor2

    a = np.ascontiguousarray(image)
    dt = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    a = a.astype(dt, copy=False)
    raw = a.tobytes()
    payload: Any = (
        raw
        if compression is None
        else cbor2.CBORTag(56500, [compression, a.dtype.itemsize if compression == "bslz4" else 0, compress(raw, compression, a.dtype.itemsize)])
    )
    return cbor2.CBORTag(40, [list(a.shape), cbor2.CBORTag(_TAGS[np.dtype(dt)], payload)])


class StreamV2Sender:
    """PUSH socket bound at ``endpoint`` (``tcp://*:31001`` on a detector)."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:31001", *, hwm: int = 1000) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 5000)
        if endpoint.endswith(":0"):
            self.sock.bind(endpoint[:-2] + ":*")
        else:
            self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _send(self, msg: dict) -> None:
        import cbor2

        self.sock.send(cbor2.dumps(cbor2.CBORTag(55799, msg)), copy=False)

    def messages(self, patterns: Iterable[np.ndarray], number_of_images: int, *, series_id: int = 1, compression: str | None = None,
                 energy: float = 200e3, channel: str = "threshold_1", end: bool = True, skip: Iterable[int] = ()) -> Iterator[bytes]:  # fmt: skip
        """The series' encoded messages (start, image per pattern not in ``skip``, end), lazily:
        pattern (Qx, Qy) is sent as image = pattern.T."""
        import cbor2

        now = datetime.datetime.now(datetime.UTC)
        uid = f"ptyro-sender-{series_id}"
        skip = set(skip)

        def enc(msg: dict) -> bytes:
            return cbor2.dumps(cbor2.CBORTag(55799, msg))

        first = None
        for k, p in enumerate(patterns):
            p = np.asarray(p)
            if first is None:
                first = p.shape
                yield enc({
                    "type": "start", "series_id": series_id, "series_unique_id": uid, "arm_date": cbor2_datetime(now),
                    "channels": [channel], "number_of_images": int(number_of_images), "image_size_x": int(p.shape[0]),
                    "image_size_y": int(p.shape[1]), "incident_energy": float(energy), "count_time": 1e-4, "frame_time": 1e-4,
                    "beam_center_x": p.shape[0] / 2, "beam_center_y": p.shape[1] / 2, "detector_description": "ptyro StreamV2Sender",
                    "saturation_value": int(np.iinfo(p.dtype).max) if p.dtype.kind == "u" else 0,
                })  # fmt: skip
            if k in skip:
                continue
            yield enc({
                "type": "image", "series_id": series_id, "series_unique_id": uid, "image_id": k,
                "real_time": [1, 10000], "start_time": [k, 10000], "stop_time": [k + 1, 10000], "series_date": cbor2_datetime(now),
                "data": {channel: encode_image(p.T, compression)},
            })  # fmt: skip
        if end:
            yield enc({"type": "end", "series_id": series_id, "series_unique_id": uid})

    def send(self, messages: Iterable[bytes], *, fps: float = 0.0) -> int:
        """Send encoded messages (from :meth:`messages`, possibly encoded ahead of time, as a
        detector's hardware does), message j ≥ 1 at ``(j - 1) / fps`` seconds after the first
        (the start message; 0: as fast as the socket takes them). Returns the messages sent."""
        t0 = time.perf_counter()
        sent = 0
        for m in messages:
            if fps > 0 and sent > 1:
                wait = t0 + (sent - 1) / fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            self.sock.send(m, copy=False)
            if sent == 0:
                t0 = time.perf_counter()
            sent += 1
        return sent

    def send_series(self, patterns: Iterable[np.ndarray], number_of_images: int, *, series_id: int = 1, compression: str | None = None,
                    fps: float = 0.0, energy: float = 200e3, channel: str = "threshold_1", end: bool = True,
                    skip: Iterable[int] = ()) -> int:  # fmt: skip
        """Send one series (patterns (Qx, Qy), sent as images = pattern.T) at ``fps`` frames per
        second (0: as fast as the socket takes them), encoding as it goes; frames in ``skip``
        are not sent (a lossy link), ``end=False`` leaves out the end message (a dying
        stream). Returns frames sent."""
        msgs = self.messages(patterns, number_of_images, series_id=series_id, compression=compression, energy=energy, channel=channel,
                             end=end, skip=skip)  # fmt: skip
        sent = self.send(msgs, fps=fps)
        return max(sent - 1 - int(end), 0)  # the images among them

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def cbor2_datetime(t: datetime.datetime) -> Any:
    import cbor2

    return cbor2.CBORTag(0, t.isoformat())


class MerlinSender:
    """A Quantum Detectors Merlin data port, written from the documented TCP format (not from our
    receiver): a TCP server (``HOST:PORT``; port 0: any free one, see ``port``) that, to the
    client that connects, sends ``MPX,<10-digit length>,`` framed messages, the length counting
    the payload plus one: the acquisition header (``HDR,`` then tab-separated ``Key:\\tvalue``
    lines, ``End``), then per frame an ``MQ1`` header (frame number from 1, data offset, chips,
    width, height, depth ``U08``/``U16``/``U32``, sensor layout, chip select, time stamp, shutter
    times, counter, colour mode, gain mode, thresholds) padded to the data offset and the pixels,
    big-endian, row-major ``[height, width]`` (pattern (Qx, Qy) sent as image = pattern.T)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket

        self._srv = socket.create_server((host, port))
        self.host, self.port = host, self._srv.getsockname()[1]

    @staticmethod
    def _framed(payload: bytes) -> bytes:
        return b"MPX,%010d," % (len(payload) + 1) + payload

    def messages(self, patterns: Iterable[np.ndarray], number_of_images: int, *, frames_per_trigger: int = 1) -> Iterator[bytes]:
        """The acquisition's framed messages."""
        hdr = (
            "HDR,\t\n"
            f"Time and Date Stamp (day, mnth, yr, hr, min, s):\t{time.strftime('%d/%m/%Y %H:%M:%S')}\n"
            "Chip ID:\tW000_X00,-,-,-\nChip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX):\tMedipix 3RX\nAssembly Size (NX1, 2X2):\t1x1\n"
            f"Frames in Acquisition (Number):\t{int(number_of_images)}\nFrames per Trigger (Number):\t{int(frames_per_trigger)}\n"
            "Counter Depth (number):\t12\nEnd\t"
        )  # fmt: skip
        yield self._framed(hdr.encode("latin-1"))
        depths = {1: "U08", 2: "U16", 4: "U32"}
        for k, p in enumerate(patterns):
            img = np.ascontiguousarray(np.asarray(p).T)
            if img.dtype.kind != "u" or img.dtype.itemsize not in depths:
                raise ValueError(f"MerlinSender: dtype {img.dtype}: expected uint8, uint16 or uint32 counts")
            offset = 384  # 256 + 128 per chip
            stamp = time.strftime("%Y-%m-%d %H:%M:%S") + ".000000"
            head = (f"MQ1,{k + 1:06d},{offset:05d},01,{img.shape[1]:04d},{img.shape[0]:04d},{depths[img.dtype.itemsize]},   1x1,01,"
                    f"{stamp},0.001000,0,0,0,1.000000E+1,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,"
                    "0.000000E+0,3RX").encode("latin-1")  # fmt: skip
            yield self._framed(head.ljust(offset, b"\x00") + img.astype(img.dtype.newbyteorder(">")).tobytes())

    def serve(self, messages: Iterable[bytes], *, fps: float = 0.0, stop_after: int | None = None, timeout: float = 30.0) -> int:
        """Wait for one client, send it ``messages`` (the frames paced at ``fps``; with
        ``stop_after`` the connection is closed after that many frames, a detector that died),
        close. Returns the frames sent."""
        self._srv.settimeout(timeout)
        conn, _ = self._srv.accept()
        sent = 0
        t0 = time.perf_counter()
        with conn:
            for j, m in enumerate(messages):
                if j and stop_after is not None and sent >= stop_after:
                    break
                if fps > 0 and j > 1:
                    wait = t0 + (j - 1) / fps - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                conn.sendall(m)
                sent += j > 0
        return sent

    def close(self) -> None:
        self._srv.close()
