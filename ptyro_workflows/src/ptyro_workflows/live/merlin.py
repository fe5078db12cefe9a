"""Quantum Detectors Merlin (Medipix3) TCP data stream receiver.

The Merlin readout PC serves its data port (6342 by default); a client connects and reads a
byte stream of messages, each framed as ``MPX,<length>,`` (15 bytes: ten ASCII decimal digits;
the length counts the bytes after the second comma plus one) followed by its payload:

- first the acquisition header, text beginning ``HDR,``: tab-separated ``Key:\\tvalue`` lines
  (``Frames in Acquisition (Number)``, ``Frames per Trigger (Number)``, ``Counter Depth
  (number)``, ...), ending with ``End``;
- then one message per frame: a comma-separated ASCII frame header beginning ``MQ1,`` (frame
  number from 1, data offset = header bytes, chips, width x, height y, pixel depth ``U08`` /
  ``U16`` / ``U32``, sensor layout, ...), padded to the data offset, then the pixels, big-endian,
  row-major ``[height, width]``.

The stream has no end message: the series is complete when ``Frames in Acquisition`` frames
arrived; a connection closed before that is a stream that died. As for DECTRIS, the pattern is
the image transposed (Qx = the image's x, its columns) and frame k (header number k + 1) is scan
position divmod(k, Ry). Raw (``R64``) counter modes are refused with a one-line error.
"""

import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart

__all__ = ["MerlinStream", "merlin", "parse_acquisition_header", "parse_frame_header"]

_DEPTHS = {"U08": ">u1", "U16": ">u2", "U32": ">u4", "U64": ">u8"}


def parse_acquisition_header(text: str) -> dict[str, str]:
    """``HDR,`` text -> {key: value} (keys without their ``(unit)`` suffix kept whole)."""
    if not text.startswith("HDR"):
        raise PtyroValueError(f"Merlin: expected the acquisition header ('HDR,...') first, got {text[:20]!r}")
    out = {}
    for line in text.splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_frame_header(head: bytes) -> tuple[int, int, tuple[int, int], np.dtype]:
    """An ``MQ1`` frame header -> (frame number, data offset (header bytes), (height, width), dtype)."""
    parts = head[:160].decode("latin-1").split(",")
    if len(parts) < 8 or parts[0] != "MQ1":
        raise PtyroValueError(f"Merlin: expected a frame header 'MQ1,...', got {head[:24]!r}")
    try:
        number, offset, width, height = int(parts[1]), int(parts[2]), int(parts[4]), int(parts[5])
    except ValueError:
        raise PtyroValueError(f"Merlin: frame header {head[:60]!r}: expected numbers in fields 2, 3, 5 and 6") from None
    depth = parts[6].strip()
    if depth not in _DEPTHS:
        raise PtyroValueError(f"Merlin: pixel depth {depth!r}: expected one of {', '.join(_DEPTHS)} (raw R64 counter modes are not decoded)")
    return number, offset, (height, width), np.dtype(_DEPTHS[depth])


class MerlinStream:
    """One acquisition from a Merlin data port (``HOST:PORT``, TCP, connecting).

    Options: ``timeout`` (seconds without data before the stream counts as dead, default 10),
    ``connect_timeout`` (seconds to keep trying to connect, default 10), ``first_frame_number``
    (the header's number of frame 0, default 1), ``number_of_images`` (when the acquisition
    header does not say)."""

    def __init__(self, address: str, *, timeout: float = 10.0, connect_timeout: float = 10.0, first_frame_number: int = 1,
                 number_of_images: int | None = None) -> None:  # fmt: skip
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise PtyroValueError(f"merlin address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:6342")
        self.host, self.port = host, int(port)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.first_frame_number = int(first_frame_number)
        self.number_of_images = number_of_images
        self.poll_s = 0.05
        self._closed = False
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                s = socket.create_connection((self.host, self.port), timeout=1.0)
                break
            except OSError as e:
                if self._closed or time.monotonic() >= deadline:
                    raise PtyroValueError(f"Merlin: could not connect to {self.host}:{self.port} ({e.strerror or e})") from None
                time.sleep(0.1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.settimeout(self.poll_s)
        return s

    def _read(self, view: memoryview) -> int:
        """Fill ``view``; returns the bytes read (fewer: the connection closed, or ``close()``,
        or ``timeout`` seconds without data)."""
        got, idle = 0, 0.0
        while got < len(view) and not self._closed:
            try:
                n = self._sock.recv_into(view[got:])  # type: ignore[union-attr]
            except TimeoutError:
                idle += self.poll_s
                if idle >= self.timeout:
                    return got
                continue
            if n == 0:
                return got
            got += n
            idle = 0.0
        return got

    def _message(self) -> memoryview | None:
        head = bytearray(15)
        if self._read(memoryview(head)) < 15:
            return None
        if head[:4] != b"MPX," or head[14:15] != b",":
            raise PtyroValueError(f"Merlin: expected a message header 'MPX,<10 digits>,', got {bytes(head)!r}")
        try:
            n = int(head[4:14]) - 1
        except ValueError:
            raise PtyroValueError(f"Merlin: message header {bytes(head)!r}: expected a 10-digit length") from None
        if n < 0:
            raise PtyroValueError(f"Merlin: message header {bytes(head)!r}: expected a length >= 1")
        buf = bytearray(n)
        return memoryview(buf) if self._read(memoryview(buf)) == n else None

    def __iter__(self) -> Iterator[SeriesStart | Frame | SeriesEnd | None]:
        self._sock = self._connect()
        try:
            msg = self._message()
            if msg is None:
                return
            hdr = parse_acquisition_header(bytes(msg).decode("latin-1"))
            n = self.number_of_images
            if n is None and "Frames in Acquisition (Number)" in hdr:
                n = int(hdr["Frames in Acquisition (Number)"])
            meta: dict[str, Any] = {"merlin_header": hdr}
            if "Frames per Trigger (Number)" in hdr:
                meta["frames_per_trigger"] = int(hdr["Frames per Trigger (Number)"])
            yield SeriesStart(n, None, None, hdr.get("Time and Date Stamp (day, mnth, yr, hr, min, s)"), meta)
            got = 0
            while not self._closed:
                msg = self._message()
                if msg is None:
                    return  # died: no SeriesEnd
                number, offset, shape, dtype = parse_frame_header(bytes(msg[:160]))
                size = shape[0] * shape[1] * dtype.itemsize
                if len(msg) < offset + size:
                    raise PtyroValueError(f"Merlin: frame {number} has {len(msg) - offset} pixel bytes; expected {size} for {shape} {dtype.str}")
                img = np.frombuffer(msg, dtype, shape[0] * shape[1], offset).reshape(shape)
                yield Frame(number - self.first_frame_number, img.astype(dtype.newbyteorder("="), copy=False).T)
                got += 1
                if n is not None and got >= n:
                    yield SeriesEnd(None)
                    return
        finally:
            self._closed = True
            self._sock.close()

    def close(self) -> None:
        """Stop the iteration (from any thread) within ``poll_s`` seconds."""
        self._closed = True


def merlin(address: str, **options: Any) -> MerlinStream:
    """Source ``merlin://HOST:PORT``: one acquisition from a Quantum Detectors Merlin data port."""
    return MerlinStream(address, **options)
