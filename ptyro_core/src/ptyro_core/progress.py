"""Progress bars (tqdm) for the libraries' long loops, one rule for all of them.

On a terminal (and in a notebook) the bar redraws itself in place, as tqdm does. Where stderr is
not a terminal (a batch job's log, ``2> run.log``, a pipe) a redrawn bar would write a frame every
0.1 s into the file, each behind a carriage return: thousands of frames in one unreadable line.
There the bar writes whole lines instead, at most one every :data:`LOG_INTERVAL` seconds
(``PTYRO_PROGRESS_INTERVAL`` changes it), without the bar itself, and its last state stays:

    multislice:   0% 0/200 [00:00<?, ?it/s]
    multislice:  41% 82/200 [00:30<00:43, 2.73it/s, loss=0.003394]
    multislice: 100% 200/200 [01:13<00:00, 2.73it/s, loss=0.003074]
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["progress_bar", "LOG_INTERVAL"]

#: seconds between a log's progress lines (where stderr is not a terminal)
LOG_INTERVAL = 30.0

_LOG_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _Lines:
    """A stream for tqdm that turns each redrawn frame into a line of its own (the frame's text
    after its carriage return, trailing blanks cut); the blank frames that erase a bar write nothing."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._last = ""

    def write(self, s: str) -> None:
        for frame in s.replace("\n", "\r").split("\r"):
            frame = frame.rstrip()
            if frame.strip() and frame != self._last:  # a bar closed right after its last update: one line
                self._stream.write(frame + "\n")
                self._last = frame

    def flush(self) -> None:
        self._stream.flush()


def _log_bar(base: Any) -> Any:
    """``base`` (tqdm's class) whose postfix and description changes wait for the next line
    (tqdm draws at once for them, whatever ``mininterval`` says: a line per pass into a log)."""

    class LogBar(base):  # type: ignore[misc, valid-type]
        def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_description(self, desc: Any = None, refresh: bool = True) -> None:
            super().set_description(desc, refresh=False)

    return LogBar


def _on_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def _interval() -> float:
    raw = os.environ.get("PTYRO_PROGRESS_INTERVAL", "")
    try:
        value = float(raw)
    except ValueError:
        return LOG_INTERVAL
    return value if value >= 0 else LOG_INTERVAL


def progress_bar(iterable: Any = None, *, desc: str = "", total: int | None = None, unit: str = "it", disable: bool = False,
                 leave: bool = False, **kw: Any) -> Any:  # fmt: skip
    """A tqdm bar on stderr (a no-op when ``disable``): redrawn in place on a terminal or in a
    notebook (``leave``: whether it stays when done), a line every :data:`LOG_INTERVAL` seconds
    into a log (its last line always stays)."""
    from tqdm import std
    from tqdm.auto import tqdm

    notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)  # tqdm.auto's choice in a Jupyter kernel
    if disable or notebook or _on_terminal(sys.stderr):
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=leave, dynamic_ncols=True, **kw)
    log = {"file": _Lines(sys.stderr), "mininterval": _interval(), "maxinterval": max(_interval(), 10.0), "bar_format": _LOG_FORMAT, "ascii": True}
    return _log_bar(std.tqdm)(iterable, desc=desc, total=total, unit=unit, leave=True, **{**kw, **log})
