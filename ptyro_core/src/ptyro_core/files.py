"""Files that must never be lost or half-written, and caches that must never run someone else's code.

* :func:`temporary_path` — the one naming rule of every temporary output (hidden, next to the
  target, tagged with host and process id so that two runs never collide and a dead run's
  leftovers can be recognised); :func:`remove_stale_temporaries` deletes those of processes of
  this host that no longer exist (what SIGKILL, a power cut or an out-of-memory kill leave).
* :func:`same_file` — whether two paths are one file (hard links, symlinks, ``./a`` vs ``a``).
* :func:`check_private` — a cached file loaded as code (a compiled kernel) belongs to this user
  and is not writable by anyone else, nor is any directory above it inside the cache.
"""

import contextlib
import os
import re
import signal
import socket
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ptyro_core.errors import PtyroValueError

__all__ = ["temporary_path", "remove_stale_temporaries", "same_file", "check_private", "deferred_signals", "close_hdf5", "hdf5_writing", "disk_full_error"]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary name next to ``path``: ``.<name>.<host>.<pid>-<random>.tmp``."""
    p = Path(path)
    return p.with_name(f".{p.name}.{_host()}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of ``path`` (see :func:`temporary_path`) left by processes of this
    host that have died; returns what was removed. Those of live processes, and of other hosts
    sharing the file system, are left alone."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    pattern = re.compile(re.escape(f".{p.name}.{_host()}.") + r"(\d+)-[0-9a-f]{8}\.tmp$")
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for e in entries:
        m = pattern.match(e.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                e.unlink()
                removed.append(e)
    return removed


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one existing file (False when either does not exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_private(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Return ``path`` if it and every directory from it up to ``root`` (the cache directory)
    belong to this user and are not writable by group or others; raise otherwise, naming the
    file and its mode: code another user can replace is never loaded."""
    p = Path(path)
    root = Path(root).resolve()
    uid = os.geteuid()
    cur = p.resolve()
    chain = [cur]
    while cur != root and cur.parent != cur:
        cur = cur.parent
        chain.append(cur)
    for item in chain:
        st = item.stat()
        if st.st_uid != uid:
            raise PtyroValueError(f"cache: {str(item)!r} belongs to user id {st.st_uid}, not to this user ({uid}); refusing to load code from it (remove it)")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PtyroValueError(
                f"cache: {str(item)!r} is writable by others (mode {stat.filemode(st.st_mode)}); refusing to load code from it (chmod go-w it, or remove it)"
            )
    return p


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of the block and deliver them (to the
    handlers in place before it) when it ends: an interruption never lands inside the HDF5
    library, where it can leave a file half-closed and the process crashing at exit. (Python
    handlers, not the signal mask: JAX's threads would take a masked signal instead.) Outside the
    main thread the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            sig = signal.Signals(pending[0])
            h = old[sig]
            if callable(h):
                h(sig, None)
            elif h == signal.SIG_DFL:
                signal.raise_signal(sig)


def _full_error(path: Path) -> OSError:
    import errno
    import shutil

    parent = path.parent if str(path.parent) else Path(".")
    free = shutil.disk_usage(parent).free
    err = OSError(f"the disk is full: {str(path)!r} could not be written ({free / 2**20:.1f} MiB free in {str(parent)!r}); nothing was written")
    err.errno = errno.ENOSPC
    return err


def disk_full_error(exc: BaseException, path: str | os.PathLike) -> OSError | None:
    """One clear error line for a write of ``path`` that failed for lack of space (HDF5 words it
    in several lines of driver detail); None for any other error."""
    import errno

    if isinstance(exc, (OSError, RuntimeError)) and (getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)):
        return exc if isinstance(exc, OSError) and str(exc).startswith("the disk is full") else _full_error(Path(path))
    return None


def close_hdf5(f: Any, path: str | os.PathLike, *, discard: bool) -> None:
    """Close an HDF5 file being written at ``path``. ``discard``: the file is to be deleted, so
    its space is given back first (HDF5 writes metadata as it closes, and a close that fails for
    lack of space leaves the library unable to close the file, which crashes the process later).
    Otherwise a close with under 1 MiB free is refused with ENOSPC before HDF5 tries it."""
    import shutil

    with deferred_signals():
        if discard:
            with contextlib.suppress(OSError):
                os.truncate(path, 0)
            with contextlib.suppress(Exception):
                f.close()
        else:
            p = Path(path)
            if shutil.disk_usage(p.parent if str(p.parent) else ".").free < 1 << 20:
                raise _full_error(p)
            f.close()


@contextlib.contextmanager
def hdf5_writing(path: str | os.PathLike) -> Iterator[Any]:
    """``h5py.File(path, "w")`` for a short write (a checkpoint, a reconstruction): SIGINT and
    SIGTERM are held back until the file is closed, no chunk cache (a full disk fails a write,
    not the close), and on failure the file is closed safely (:func:`close_hdf5`), deleted, and
    the error re-raised without the HDF5 frames, so that no h5py object outlives its file."""
    import h5py

    err = None
    with deferred_signals():
        f = h5py.File(path, "w", rdcc_nbytes=0)
        try:
            yield f
            close_hdf5(f, path, discard=False)
        except BaseException as e:  # noqa: BLE001 - re-raised below, without the h5py frames
            err = disk_full_error(e, path) or e.with_traceback(None)
            close_hdf5(f, path, discard=True)
            with contextlib.suppress(OSError):
                os.unlink(path)
    if err is not None:
        raise err
