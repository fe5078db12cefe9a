"""Pattern sources: where a dataset's diffraction patterns live, and who owns the file handle.

Every source follows :class:`ptyro_core.protocols.PatternSource`: ``shape`` (the stored array's,
(Rx, Ry, Qx, Qy) or (N, Qx, Qy)), ``dtype`` (the stored one: counted data stay integers until
a batch needs floats), ``len()`` (patterns), ``read(indices)`` (the patterns at flat scan
indices, (k, Qx, Qy), in the stored dtype), basic indexing (``source[ix]``, ``source[ix, iy]``)
and the context-manager protocol: a file is opened on first use (or by ``with``) and closed
by :meth:`close` / the end of the ``with`` block. A closed source reopens on its next read, so
a :class:`~ptyro_core.Dataset4D` holds a description of where its patterns are (a path and a
name), never an open handle.

- :class:`ArraySource`: patterns in memory (NumPy or a JAX array on the CPU, viewed, not copied);
- :class:`MemmapSource`: a ``.npy`` file, its batches read with ``preadv`` (memory-mapped for basic indexing);
- :class:`HDF5Source`: one dataset of an HDF5 file, opened while in use;
- :class:`LazySource`: any array-like with basic indexing the caller owns (an open
  ``h5py.Dataset``, a ``numpy.memmap``, a dask array; a read-only, C-ordered memory map's
  batches read from its file with ``preadv``, as :class:`MemmapSource` reads).

``check(block, where)``, given to any source, is called on every block read (the readers' one
rule for NaN/inf and negative values, in memory and out of core alike).

NumPy only: reading a file's description imports no JAX.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ptyro_core.errors import PtyroValueError

__all__ = ["ArraySource", "LazySource", "MemmapSource", "HDF5Source", "Check", "XLA_ALIGN", "aligned_empty", "read_into"]

#: ``check(block, where)``: raise on bad values in ``block``; ``where`` names the scan indices
Check = Callable[[np.ndarray, str], None]


class _Source:
    """What every source shares: shape bookkeeping, gathering by flat index, basic indexing and
    the context-manager protocol. Subclasses give ``_open() -> array-like`` and ``close()``."""

    _any_order = False  # True: ``_gather`` takes indices in any order, repeated ones too

    def __init__(self, shape: tuple[int, ...], dtype: Any, name: str, check: Check | None = None) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (3, 4):
            raise PtyroValueError(f"{name}: expected a 3D or 4D array of patterns, got shape {shape}")
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)
        self.name = name
        self._check = check
        self._scan_shape = shape[:-2]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return int(np.prod(self._scan_shape))

    def _open(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file handle (nothing for memory); the next read reopens it."""

    def __enter__(self) -> Any:
        self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _checked(self, block: np.ndarray, where: Any) -> np.ndarray:
        if self._check is not None:
            self._check(block, f" at scan index {where}")
        return block

    def read(self, indices: Any, out: np.ndarray | None = None) -> np.ndarray:
        """The patterns at flat (row-major) scan ``indices``: (k, Qx, Qy) in the stored dtype, or
        written into ``out`` (k, Qx, Qy) (converted to its dtype) and returned: a memory-backed
        source gathers straight into it (e.g. :func:`aligned_empty`'s memory), others copy."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if out is not None and tuple(out.shape) != (idx.size,) + self.shape[-2:]:
            raise PtyroValueError(f"{self.name}: out has shape {tuple(out.shape)}; expected {(idx.size,) + self.shape[-2:]} for {idx.size} indices")
        if idx.size == 0:
            return np.zeros((0,) + self.shape[-2:], self.dtype) if out is None else out
        if idx.min() < 0 or idx.max() >= len(self):
            raise PtyroValueError(f"{self.name}: scan indices must lie in [0, {len(self)}), got {int(idx.min())}..{int(idx.max())}")
        if self._any_order:  # one fancy-indexing gather, in the order asked for
            into = out is not None and out.dtype == self.dtype
            block = self._gather(self._open(), idx, out if into else None)
            self._release()
            self._checked(block, sorted(set(idx.tolist()))[:8] if idx.size > 1 else int(idx[0]))
            return block if out is None or into else _copied(block, out)
        uniq, inverse = np.unique(idx, return_inverse=True)
        block = self._gather(self._open(), uniq)
        self._release()
        self._checked(block, sorted(set(uniq.tolist()))[:8] if uniq.size > 1 else int(uniq[0]))
        block = block if uniq.size == idx.size and np.array_equal(uniq, idx) else block[inverse]
        return block if out is None else _copied(block, out)

    def _release(self) -> None:
        """After a read: give back what it brought into this process's memory (memory maps)."""

    def _gather(self, array: Any, uniq: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``uniq`` (sorted, unique) of ``array``, one basic read per pattern (what
        h5py and dask index fastest); memory-backed sources gather in one go instead (any order,
        into ``out`` where given)."""
        if len(self._scan_shape) == 2:
            ry = self._scan_shape[1]
            return np.stack([np.asarray(array[i // ry, i % ry]) for i in uniq.tolist()]).astype(self.dtype, copy=False)
        return np.asarray(array[uniq]).astype(self.dtype, copy=False)

    def __getitem__(self, index: Any) -> np.ndarray:
        block = np.asarray(self._open()[index])
        if isinstance(block, np.memmap):  # a copy, not a view of the map
            block = np.array(block)
        self._release()
        where = tuple(int(i) if isinstance(i, (int, np.integer)) else i for i in (index if isinstance(index, tuple) else (index,)))
        return self._checked(block, where if len(where) > 1 else where[0])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole array, read into memory (what ``np.asarray(source)`` gives)."""
        a = self[...]
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.dtype.name}{list(self.shape)})"


def _take(flat: np.ndarray, idx: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """Rows ``idx`` (checked in range) of ``flat`` (N, Qx, Qy), into ``out`` where given (mode
    "clip": NumPy's default, "raise", writes into a buffer of its own first)."""
    return np.asarray(np.take(flat, idx, axis=0, out=out, mode="clip"))


def _copied(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.copyto(out, block, casting="same_kind")
    return out


#: bytes: XLA's CPU client reads a host (NumPy) buffer in place, without copying it, only where
#: its data start on such a boundary, which NumPy does not promise (its own are 16-byte aligned)
XLA_ALIGN = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-ordered array whose data start on an :data:`XLA_ALIGN` boundary: JAX
    takes it as it is on the CPU (no copy), e.g. a batch of patterns read into it reaches a
    jitted step without a copy (RECON-A: a 2 MiB copy per step part, 0.5-1 ms, at the dispatch)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(n + XLA_ALIGN, np.uint8)
    off = (-raw.ctypes.data) % XLA_ALIGN
    return raw[off : off + n].view(dt).reshape(shape)


def read_into(source: Any, indices: Any, out: np.ndarray) -> np.ndarray:
    """The patterns of any :class:`~ptyro_core.protocols.PatternSource` at ``indices`` written into
    ``out`` (k, Qx, Qy) (converted to its dtype): our sources gather straight into it, another
    source's block is copied in."""
    if isinstance(source, _Source):
        return source.read(indices, out=out)
    return _copied(np.asarray(source.read(indices)), out)


def _drop_pages(array: Any) -> None:
    """The pages a read of a memory map touched stay mapped (and counted in this process's
    resident memory) until told otherwise: drop them, so that reading a file larger than memory
    through a map costs a batch, not the file (they stay in the page cache for the next pass)."""
    # read-only maps only: on a copy-on-write map ("c") this would discard the caller's changes
    mm = getattr(array, "_mmap", None) if isinstance(array, np.memmap) and getattr(array, "mode", None) in ("r", "readonly") else None
    if mm is not None and hasattr(mm, "madvise"):
        import mmap

        mm.madvise(mmap.MADV_DONTNEED)


class ArraySource(_Source):
    """Patterns held in memory: a host view of ``array`` (zero-copy for NumPy arrays and JAX
    arrays on the CPU), so each batch is a NumPy gather in the stored dtype."""

    def __init__(self, array: Any, check: Check | None = None) -> None:
        self._data = np.asarray(array)
        super().__init__(self._data.shape, self._data.dtype, "patterns in memory", check)
        self._flat = self._data.reshape((-1,) + self.shape[-2:])

    _any_order = True

    def _open(self) -> Any:
        return self._data

    def _gather(self, array: Any, uniq: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return _take(self._flat, uniq, out)


class _RowFile:
    """A file whose C-ordered patterns a source reads with ``preadv`` (:func:`_pread_rows`): its
    descriptor opened on the first read, closed by :meth:`_close_file` (or with the source).
    What is read through the file's memory map instead (basic indexing; layouts ``preadv``
    cannot read in rows) sets ``_mapped``, and the read's release drops the map's pages
    (:func:`_drop_pages`; the map: :meth:`_memory_map`)."""

    _fd: int | None = None
    _fd_finalizer: Any = None
    _mapped = False  # pages of the memory map touched since the last release

    def _memory_map(self) -> Any:
        raise NotImplementedError

    def __getitem__(self, index: Any) -> np.ndarray:
        self._mapped = True
        return super().__getitem__(index)  # type: ignore[misc]

    def _release(self) -> None:
        if self._mapped:
            self._mapped = False
            _drop_pages(self._memory_map())

    def _file(self, path: str | Path) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                raise PtyroValueError(f"cannot read {str(path)!r} ({e.strerror})") from None
            self._fd_finalizer = weakref.finalize(self, os.close, self._fd)
        return self._fd

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._fd_finalizer.detach()
            os.close(fd)


def _map_position(array: Any) -> tuple[str, int] | None:
    """(file, byte offset of the first element) of a read-only, C-contiguous ``numpy.memmap``
    (a reshape or slice of one too: its offset counted from the map's own array, whose
    ``offset`` NumPy copies unchanged into views), or None where its rows cannot be read
    from the file directly."""
    if not (_PREADV and isinstance(array, np.memmap) and getattr(array, "mode", None) in ("r", "readonly") and array.flags.c_contiguous):
        return None
    root: Any = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not (isinstance(root, np.memmap) and isinstance(getattr(root, "offset", None), int) and getattr(root, "filename", None)):
        return None
    return str(root.filename), int(root.offset) + (array.ctypes.data - root.ctypes.data)


class LazySource(_RowFile, _Source):
    """Patterns read row by row from a 4D (Rx, Ry, Qx, Qy) or 3D (N, Qx, Qy) array-like with
    basic indexing that the caller owns (and closes): only the rows asked for are read. A
    read-only ``numpy.memmap`` (``np.load(path, mmap_mode="r")``) is read like
    :class:`MemmapSource`'s file, one ``preadv`` per run of consecutive patterns into the batch
    (a descriptor of our own, closed by :meth:`close`), nothing of it brought into the map;
    through the map, every pass faulted the whole file in again once its pages were dropped."""

    def __init__(self, array: Any, name: str = "array", check: Check | None = None) -> None:
        self._array = array
        self._at = _map_position(array)
        super().__init__(tuple(getattr(array, "shape", ())), getattr(array, "dtype", np.float32), name, check)
        self._any_order = self._at is not None

    def _open(self) -> Any:
        return self._array

    def _gather(self, array: Any, uniq: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if self._at is None:
            self._mapped = True
            return super()._gather(array, uniq, out)
        return _pread_into(self, self._file(self._at[0]), self._at[1], uniq, out)

    def _memory_map(self) -> Any:
        return self._array  # a caller's numpy.memmap (anything else: nothing dropped)

    def close(self) -> None:
        self._close_file()


class MemmapSource(_RowFile, _Source):
    """A ``.npy`` file of patterns. A batch is read with one ``preadv`` per run of consecutive
    patterns, straight into the batch's buffer: nothing of the file is mapped into this process
    (its pages stay in the page cache for the next pass, not in this process's resident memory).
    Reading through the memory map instead and dropping its pages after each batch made every
    pass fault the whole file in again: RECON-L (1 GiB, 256 batches of 64) 0.25-0.40 s a pass
    against 0.12 s with ``preadv`` (measured). The map serves basic indexing (``source[ix]``) and
    files ``preadv`` cannot read in rows (Fortran order; no ``os.preadv``)."""

    def __init__(self, path: str | Path, check: Check | None = None) -> None:
        self.path = Path(path)
        self._map: np.memmap | None = None
        self._map = self._load()
        try:
            super().__init__(self._map.shape, self._map.dtype, repr(str(self.path)), check)
        finally:
            self.close()

    def _load(self) -> np.memmap:
        if not self.path.exists():
            raise PtyroValueError(f"file {str(self.path)!r} not found")
        try:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise PtyroValueError(f"cannot read {str(self.path)!r} as a .npy array ({e})") from None

    _any_order = True

    @property
    def closed(self) -> bool:
        return self._map is None

    def _open(self) -> np.memmap:
        if self._map is None:
            self._map = self._load()
        return self._map

    def _gather(self, array: Any, uniq: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if not (_PREADV and array.flags.c_contiguous and isinstance(getattr(array, "offset", None), int)):
            self._mapped = True
            return _take(array.reshape((-1,) + self.shape[-2:]), uniq, out)
        return _pread_into(self, self._file(self.path), array.offset, uniq, out)

    def _memory_map(self) -> Any:
        return self._map

    def close(self) -> None:
        self._close_file()
        m, self._map = self._map, None
        mm = getattr(m, "_mmap", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view of it is still alive: the mapping goes with the view
                pass


_PREADV = hasattr(os, "preadv")

#: buffers one ``preadv`` takes at most (POSIX's IOV_MAX is at least 16; Linux's is 1,024)
_IOV_MAX = 1024


def _pread_into(source: _Source, fd: int, offset: int, idx: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """:func:`_pread_rows` into ``out`` where it is C-contiguous, else into a block of the stored
    dtype (copied into ``out`` where given)."""
    block = out if out is not None and out.flags.c_contiguous else np.empty((idx.size,) + source.shape[-2:], source.dtype)
    _pread_rows(fd, source, offset, idx, block)
    return block if out is None or block is out else _copied(block, out)


def _pread_rows(fd: int, source: _Source, offset: int, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Patterns ``idx`` (any order, repeats allowed) of the C-ordered array stored from byte
    ``offset`` of file ``fd``, read into the rows of ``out`` (C-contiguous, the stored dtype):
    one ``preadv`` per run of consecutive indices (in the file's order, up to :data:`_IOV_MAX`
    rows). A file shorter than its header says is refused, naming it."""
    rows = out.reshape(idx.size, -1).view(np.uint8)
    row = rows.shape[1]
    order = np.argsort(idx, kind="stable")
    first = idx[order]
    breaks = np.flatnonzero((np.diff(first) != 1) | (np.arange(1, first.size) % _IOV_MAX == 0)) + 1
    for lo, hi in zip(np.concatenate([[0], breaks]).tolist(), np.concatenate([breaks, [first.size]]).tolist(), strict=True):
        want = (hi - lo) * row
        got = os.preadv(fd, [rows[k] for k in order[lo:hi].tolist()], offset + int(first[lo]) * row)
        if got != want:
            what = f"the file ends before pattern {int(first[lo])}'s data ({got} of {want} bytes read)"
            raise PtyroValueError(f"{source.name}: {what}; it is shorter than its header says")
    return out


def _close_file(f: Any) -> None:
    try:
        f.close()
    except Exception:  # noqa: BLE001 - closing at garbage collection: nothing to report to
        pass


class HDF5Source(_Source):
    """Patterns read lazily from the dataset ``dataset`` of the HDF5 file ``path`` (4D
    (Rx, Ry, Qx, Qy) or 3D (N, Qx, Qy)). The file is open only while the source is used: from
    the first read (or ``with``) to :meth:`close`; a source dropped while open closes its file."""

    def __init__(self, path: str | Path, dataset: str, check: Check | None = None) -> None:
        self.path, self.dataset = str(path), str(dataset)
        self._file: Any = None
        self._node: Any = None
        node = self._open()
        try:
            super().__init__(tuple(node.shape), node.dtype, f"{self.path}:{self.dataset}", check)
        finally:
            self.close()

    @property
    def closed(self) -> bool:
        return self._file is None

    def _open(self) -> Any:
        if self._file is None:
            import h5py

            if not Path(self.path).exists():
                raise PtyroValueError(f"file {self.path!r} not found")
            try:
                f = h5py.File(self.path, "r")
            except OSError as e:
                raise PtyroValueError(f"cannot read {self.path!r} as HDF5 ({str(e).splitlines()[0]})") from None
            node = f.get(self.dataset)
            if node is None or not hasattr(node, "shape"):
                f.close()
                raise PtyroValueError(f"{self.path!r} has no dataset {self.dataset!r}; expected the 4D patterns there")
            self._file, self._node = f, node
            self._finalizer = weakref.finalize(self, _close_file, f)
        return self._node

    def close(self) -> None:
        f, self._file, self._node = self._file, None, None
        if f is not None:
            self._finalizer.detach()
            f.close()
