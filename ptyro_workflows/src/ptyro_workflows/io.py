"""Files: 4D-STEM datasets as EMD 1.0 HDF5 (readable by py4DSTEM / ``emdfile.read``),
reconstructions as HDF5, ``.npy`` 4D arrays, atomic writes and ``ptyro info``.

Dataset layout (EMD 1.0, one root group ``ptyrodactyl``)::

    /                              attrs emd_group_type="file", version_major=1, version_minor=0
    /ptyrodactyl                   emd root (emd_group_type="root")
    /ptyrodactyl                   metadatabundle/calibration: py4DSTEM's Calibration (R/Q pixel
                                   sizes and units, beam_energy eV) linked to the datacube, so
                                   py4DSTEM.read gives a calibrated DataCube
    /ptyrodactyl/datacube          emd Array of python_class DataCube: data (Rx, Ry, Qx, Qy)
                                   float32 (uint32 counts with a dose), chunked per pattern,
                                   dim0..dim3 named Rx, Ry, Qx, Qy with calibrations (units "A"
                                   = Å for R, "A^-1" = Å⁻¹ for Q, as py4DSTEM writes them),
                                   metadatabundle/calibration (energy eV, pixel sizes, ...)
    /ptyrodactyl/scan_positions    emd Array (N, 2): probe positions (x, y) in Å, row-major
    /ptyrodactyl/virtual_<name>    emd Arrays (Rx, Ry): virtual detector images
    /ptyrodactyl/projected_potential  emd Array (x, y) V·Å (simulations: the ground truth)
    /provenance                    configuration (TOML), components, seed, library versions

Reconstruction layout (HDF5)::

    /reconstruction/object         complex (slices, x, y), attr sampling (dx, dy) Å
    /reconstruction/probe          complex (modes, x, y), attr sampling
    /reconstruction/positions      (N, 2) Å, object frame: object pixel [0, 0] at (0, 0) Å
    /reconstruction/loss           (iterations,)
    /reconstruction/slice_thickness (slices,) Å
    /provenance                    as above, with the input dataset's provenance in ``source``

Every writer writes into a temporary file in the target directory and renames it into place at
the end, so an interrupted or failed run leaves no half-written output; an existing output is
replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ptyro_core import PtyroTypeError, PtyroValueError
from ptyro_core.conventions import energy2wavelength
from ptyro_core.files import close_hdf5, deferred_signals, disk_full_error, hdf5_writing, remove_stale_temporaries, same_file, temporary_path

if TYPE_CHECKING:  # imported where used: reading a file's description (ptyro info) imports no JAX
    from ptyro_core import Dataset4D, Grid, ReconState
from ptyro_workflows.provenance import read_provenance, write_provenance

__all__ = [
    "ROOT",
    "check_output",
    "check_outputs",
    "atomic_output",
    "DatasetWriter",
    "save_dataset",
    "load_dataset",
    "load_images",
    "load_array",
    "save_reconstruction",
    "load_reconstruction",
    "read_file_provenance",
    "file_info",
]

ROOT = "ptyrodactyl"
DATACUBE = "datacube"
R_UNITS = "A"  # Å, spelled as py4DSTEM writes it
Q_UNITS = "A^-1"  # Å⁻¹
_R_UNIT_NAMES = {"a", "å", "angstrom", "angstroms", "ang"}
_Q_UNIT_NAMES = {"a^-1", "å^-1", "å⁻¹", "a-1", "1/a", "1/å", "angstrom^-1"}


# --------------------------------------------------------------------------- atomic writes


def check_output(path: str | Path, overwrite: bool = False, *, inputs: Any = (), what: str = "output") -> Path:
    """Raise unless ``path`` can be written: its directory exists, it is not the same file as
    any of ``inputs`` (never, even with ``overwrite``: that would destroy the input), and it does
    not exist already (or ``overwrite``). Temporaries of ``path`` left by dead processes of this
    host (SIGKILL, out-of-memory kills) are removed on the way."""
    p = Path(path)
    for src in inputs:
        if src is not None and (same_file(p, src) or (not p.exists() and Path(os.path.abspath(p)) == Path(os.path.abspath(src)))):
            raise PtyroValueError(f"{what} {str(p)!r} is the same file as the input {str(src)!r}; expected a different path (the input would be destroyed)")
    if p.exists() and p.is_dir():
        raise PtyroValueError(f"{what} {str(p)!r} is a directory; expected a file path")
    if p.exists() and not overwrite:
        hint = f", or --resume {str(p)!r} to continue from it" if what == "checkpoint" else ""
        raise PtyroValueError(f"{what} {str(p)!r} exists; pass --overwrite (overwrite=True) to replace it{hint}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise PtyroValueError(f"{what} directory {str(parent)!r} does not exist; create it first")
    remove_stale_temporaries(p)
    return p


def check_outputs(outputs: Mapping[str, Any], *, overwrite: bool = False, inputs: Any = ()) -> None:
    """:func:`check_output` for every ``{what: path}`` (None skipped), and no two of them the
    same file: every output path goes through here before a run starts."""
    seen: dict[str, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise PtyroValueError(f"{what} {str(path)!r} is the same file as the {seen[key]}; expected different paths")
        seen[key] = what
        check_output(path, overwrite, inputs=inputs, what=what)


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds,
    delete it when the block fails."""
    p = check_output(path, overwrite)
    tmp = temporary_path(p)
    try:
        yield tmp
        if p.exists() and not overwrite:  # appeared meanwhile
            raise PtyroValueError(f"output {str(p)!r} exists; pass --overwrite (overwrite=True) to replace it")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------- EMD helpers


def _emd_file_attrs(f: h5py.File) -> None:
    f.attrs["emd_group_type"] = "file"
    f.attrs["version_major"] = 1
    f.attrs["version_minor"] = 0
    f.attrs["authoring_program"] = "ptyrodactyl"
    f.attrs["authoring_user"] = ""
    f.attrs["UUID"] = str(uuid.uuid4())


def _emd_root(f: h5py.File) -> h5py.Group:
    root = f.create_group(ROOT)
    root.attrs["emd_group_type"] = "root"
    root.attrs["python_class"] = "Root"
    return root


def _emd_array_group(parent: h5py.Group, name: str) -> h5py.Group:
    g = parent.create_group(name)
    g.attrs["emd_group_type"] = "array"
    g.attrs["python_class"] = "Array"
    return g


def _emd_dims(g: h5py.Group, dims: list[tuple[str, str, Any]]) -> None:
    for n, (name, units, vec) in enumerate(dims):
        d = g.create_dataset(f"dim{n}", data=np.asarray(vec))
        d.attrs["name"] = str(name)
        d.attrs["units"] = str(units)


def _emd_metadata(g: h5py.Group, name: str, values: Mapping[str, Any], python_class: str = "Metadata") -> None:
    bundle = g.require_group("metadatabundle")
    bundle.attrs["emd_group_type"] = "metadatabundle"
    m = bundle.create_group(name)
    m.attrs["emd_group_type"] = "metadata"
    m.attrs["python_class"] = python_class
    for k, v in values.items():
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            lst = m.create_group(k)  # emdfile's list of strings
            lst.attrs["type"] = b"list_of_strings"
            lst.attrs["length"] = len(v)
            for i, x in enumerate(v):
                lst.create_dataset(str(i), data=x.encode("utf-8"))
        elif isinstance(v, str):
            d = m.create_dataset(k, data=v.encode("utf-8"))
            d.attrs["type"] = b"string"
        elif isinstance(v, bool):
            d = m.create_dataset(k, data=v, dtype=bool)
            d.attrs["type"] = b"bool"
        elif isinstance(v, (int, float)):
            d = m.create_dataset(k, data=v)
            d.attrs["type"] = b"number"
        else:
            d = m.create_dataset(k, data=np.asarray(v))
            d.attrs["type"] = b"array"


def write_emd_array(
    parent: h5py.Group, name: str, data: Any, dims: list[tuple[str, str, Any]], units: str = "", *, python_class: str = "Array", **create: Any
) -> h5py.Group:
    """An emdfile ``Array`` node ``name`` under ``parent`` (data may be None when ``create``
    gives shape and dtype, to be filled later); ``python_class="DataCube"`` makes it the node
    py4DSTEM reads as a DataCube."""
    g = _emd_array_group(parent, name)
    g.attrs["python_class"] = python_class
    if data is None:
        d = g.create_dataset("data", **create)
    else:
        d = g.create_dataset("data", data=np.asarray(data), **create)
    d.attrs["units"] = units
    _emd_dims(g, dims)
    return g


def _raster_calibration(positions: np.ndarray, scan_shape: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(origin, step) in Å of a row-major raster of positions, (0, 0)/(1, 1) if not a raster."""
    rx, ry = scan_shape
    pos = positions.reshape(rx, ry, 2)
    origin = (float(pos[0, 0, 0]), float(pos[0, 0, 1]))
    sx = float(pos[1, 0, 0] - pos[0, 0, 0]) if rx > 1 else 1.0
    sy = float(pos[0, 1, 1] - pos[0, 0, 1]) if ry > 1 else 1.0
    return origin, (sx if sx > 0 else 1.0, sy if sy > 0 else 1.0)


def _q_dims(grid: Grid) -> list[tuple[str, str, Any]]:
    dq = grid.reciprocal_sampling
    out = []
    for name, n, d in (("Qx", grid.gpts[0], dq[0]), ("Qy", grid.gpts[1], dq[1])):
        out.append((name, Q_UNITS, [-(n // 2) * d, -(n // 2) * d + d]))
    return out


# --------------------------------------------------------------------------- dataset writer


class DatasetWriter:
    """Write a 4D-STEM dataset batch by batch, so memory is bounded by the batch.

    The file is created with the full (Rx, Ry, Qx, Qy) shape, chunked per pattern, in a
    temporary file; :meth:`write` fills patterns ``start:stop`` (row-major scan index), then
    :meth:`close` adds images and provenance and renames the file into place. Used as a context
    manager, a failure deletes the temporary file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        scan_shape: tuple[int, int],
        positions: Any,
        grid: Grid,
        energy: float,
        provenance: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        dtype: Any = np.float32,
        calibration: Mapping[str, Any] | None = None,
        store_patterns: bool = True,
    ) -> None:
        self.store_patterns = bool(store_patterns)
        self.path = check_output(path, overwrite)
        self.overwrite = overwrite
        self._ctx = atomic_output(self.path, overwrite)
        self.tmp = self._ctx.__enter__()
        self.scan_shape = (int(scan_shape[0]), int(scan_shape[1]))
        self.grid = grid
        self.energy = float(energy)
        self.positions = np.asarray(positions, np.float64).reshape(-1, 2)
        if self.positions.shape[0] != self.scan_shape[0] * self.scan_shape[1]:
            raise PtyroValueError(
                f"positions: expected {self.scan_shape[0] * self.scan_shape[1]} positions for scan shape {self.scan_shape}, got {self.positions.shape[0]}"
            )
        self.provenance = dict(provenance or {})
        self._written = 0
        self.file = self.root = self.data = None
        try:
            with deferred_signals():
                # no chunk cache: a full disk fails the write of that batch (recoverable), not
                # the flush at close (which leaves HDF5 unable to close the file)
                self.file = h5py.File(self.tmp, "w", rdcc_nbytes=0)
            _emd_file_attrs(self.file)
            self.root = _emd_root(self.file)
            origin, step = _raster_calibration(self.positions, self.scan_shape)
            nx, ny = grid.gpts
            dims = [
                ("Rx", R_UNITS, [origin[0], origin[0] + step[0]]),
                ("Ry", R_UNITS, [origin[1], origin[1] + step[1]]),
                *_q_dims(grid),
            ]
            if self.store_patterns:
                g = write_emd_array(
                    self.root,
                    DATACUBE,
                    None,
                    dims,
                    units="counts (electrons)" if np.issubdtype(np.dtype(dtype), np.integer) else "intensity (fraction of the incident beam)",
                    python_class="DataCube",
                    shape=(*self.scan_shape, nx, ny),
                    dtype=dtype,
                    chunks=(1, 1, nx, ny),
                )
                self.data = g["data"]
                # py4DSTEM's Calibration, in the root's metadata and linked to the datacube, so
                # that py4DSTEM.read gives a calibrated DataCube (R in Å, Q in Å⁻¹)
                _emd_metadata(
                    self.root,
                    "calibration",
                    {
                        "Q_pixel_size": float(grid.reciprocal_sampling[0]),
                        "R_pixel_size": float(step[0]),
                        "Q_pixel_units": Q_UNITS,
                        "R_pixel_units": R_UNITS,
                        "QR_flip": False,
                        "QR_rotation": 0.0,
                        "QR_rotation_degrees": 0.0,
                        "beam_energy": float(energy),
                        "_root_treepath": "",
                        "_target_paths": [f"/{DATACUBE}"],
                    },
                    python_class="Calibration",
                )
            from ptyro_simul.constants import energy2wavelength

            lam = energy2wavelength(self.energy)
            cal = {
                "energy": self.energy,
                "wavelength": lam,
                "R_pixel_size": step[0],
                "R_pixel_size_y": step[1],
                "R_pixel_units": R_UNITS,
                "Q_pixel_size": grid.reciprocal_sampling[0],
                "Q_pixel_size_y": grid.reciprocal_sampling[1],
                "Q_pixel_units": Q_UNITS,
                "Q_pixel_size_mrad": grid.reciprocal_sampling[0] * lam * 1e3,
                "real_space_sampling": grid.sampling[0],
                "real_space_sampling_y": grid.sampling[1],
                "conventions": "axes (Rx, Ry, Qx, Qy); x = axis 0; patterns centred (zero frequency at n//2); unitary FFT",
                **dict(calibration or {}),
            }
            sp = write_emd_array(self.root, "scan_positions", self.positions, [("index", "pixels", [0, 1]), ("x,y", "pixels", [0, 1])], units="A")
            _emd_metadata(g if self.store_patterns else sp, "calibration", cal)
        except BaseException:
            self._abort()
            raise

    def write(self, start: int, stop: int, intensities: Any) -> None:
        """Store patterns for scan indices ``start:stop`` (row-major over (Rx, Ry))."""
        arr = np.asarray(intensities)
        if arr.shape[0] != stop - start:
            raise PtyroValueError(f"batch {start}:{stop}: expected {stop - start} patterns, got {arr.shape[0]}")
        if not self.store_patterns:
            self._written += stop - start
            return
        ry = self.scan_shape[1]

        def store() -> None:
            i = start
            while i < stop:
                ix, iy = divmod(i, ry)
                j = min(stop, (ix + 1) * ry)
                self.data[ix, iy : iy + (j - i)] = arr[i - start : j - start]
                i = j

        self._guarded(store)
        self._written += stop - start

    def add_image(self, name: str, image: Any, units: str = "intensity") -> None:
        """A 2D (Rx, Ry) image (e.g. a virtual detector) stored as ``/ptyrodactyl/virtual_<name>``."""
        img = np.asarray(image)
        if img.shape != self.scan_shape:
            raise PtyroValueError(f"image {name!r}: expected shape {self.scan_shape}, got {img.shape}")
        origin, step = _raster_calibration(self.positions, self.scan_shape)
        dims = [("Rx", R_UNITS, [origin[0], origin[0] + step[0]]), ("Ry", R_UNITS, [origin[1], origin[1] + step[1]])]
        self._guarded(write_emd_array, self.root, f"virtual_{name}", img.astype(np.float32), dims, units=units)

    def add_array(self, name: str, array: Any, sampling: tuple[float, float], units: str) -> None:
        """A 2D real-space array (e.g. the projected potential) with its sampling in Å."""
        a = np.asarray(array)
        self._guarded(write_emd_array, self.root, name, a, [("x", R_UNITS, [0.0, sampling[0]]), ("y", R_UNITS, [0.0, sampling[1]])], units=units)

    def close(self) -> Path:
        """Finish: write provenance and rename into place. Returns the final path."""
        total = self.scan_shape[0] * self.scan_shape[1]
        try:
            if self._written < total:
                raise PtyroValueError(f"dataset {str(self.path)!r}: only {self._written} of {total} patterns written")
            self._guarded(write_provenance, self.file.create_group("provenance"), self.provenance)
            f, self.file, self.root, self.data = self.file, None, None, None
            close_hdf5(f, self.tmp, discard=False)
            self._ctx.__exit__(None, None, None)
        except BaseException:
            self._abort()
            raise
        return self.path

    def _guarded(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an HDF5 call with SIGINT/SIGTERM held back until it returns; on failure, abort
        (the file closed and removed) and re-raise without the HDF5 frames, so that no h5py
        object outlives its file."""
        with deferred_signals():
            try:
                return fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                err = disk_full_error(e, self.path) or e.with_traceback(None)
        self._abort()
        raise err

    def _abort(self) -> None:
        f, self.file, self.root, self.data = self.file, None, None, None
        with deferred_signals():
            if f is not None:
                close_hdf5(f, self.tmp, discard=True)
            with contextlib.suppress(Exception):
                self._ctx.__exit__(PtyroValueError, PtyroValueError("aborted"), None)
            with contextlib.suppress(Exception):
                self.tmp.unlink()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def save_dataset(
    path: str | Path,
    dataset: Dataset4D,
    *,
    images: Mapping[str, Any] | None = None,
    arrays: Mapping[str, tuple[Any, tuple[float, float], str]] | None = None,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a :class:`~ptyro_core.Dataset4D` (and optional virtual images) as an EMD 1.0 file.

    >>> import numpy as np, ptyro_core as pc
    >>> ds = pc.Dataset4D(np.ones((2, 2, 8, 8), np.float32) / 64,
    ...                   pc.ScanPositions.raster((0, 0), (1, 1), (2, 2)).positions,
    ...                   grid=pc.Grid((8, 8), (0.2, 0.2)), energy=200e3)
    >>> import tempfile, os; d = tempfile.mkdtemp()
    >>> p = save_dataset(os.path.join(d, "ds.h5"), ds)
    >>> load_dataset(p).array.shape
    (2, 2, 8, 8)
    """
    with DatasetWriter(
        path, scan_shape=dataset.scan_shape, positions=dataset.positions, grid=dataset.grid, energy=dataset.energy, provenance=provenance, overwrite=overwrite
    ) as w:
        w.write(0, dataset.scan_shape[0] * dataset.scan_shape[1], np.asarray(dataset.patterns))
        for name, img in (images or {}).items():
            w.add_image(name, img)
        for name, (a, s, u) in (arrays or {}).items():
            w.add_array(name, a, s, u)
    return Path(path)


# --------------------------------------------------------------------------- reading


def _open_h5(path: str | Path) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise PtyroValueError(f"file {str(p)!r} not found")
    if p.is_dir():
        raise PtyroValueError(f"{str(p)!r} is a directory; expected a file")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise PtyroValueError(f"cannot read {str(p)!r} as HDF5 ({str(e).splitlines()[0]}); expected an EMD 1.0 / HDF5 file or a .npy array") from None


def _find_4d(f: h5py.File) -> h5py.Group | h5py.Dataset | None:
    """The 4D datacube of an EMD file (an emd array node whose data is 4D), or a plain 4D dataset."""
    found: list[Any] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and obj.attrs.get("emd_group_type") in ("array", b"array") and "data" in obj:
            if obj["data"].ndim == 4:
                found.append(obj)
        elif isinstance(obj, h5py.Dataset) and obj.ndim == 4 and not found:
            found.append(obj)

    f.visititems(visit)
    groups = [x for x in found if isinstance(x, h5py.Group)]
    return (groups or found or [None])[0]


def _dim_step(dim: h5py.Dataset) -> float | None:
    v = np.asarray(dim[()], dtype=np.float64).ravel()
    if v.size < 2:
        return None
    return float(v[1] - v[0])


def _units(obj: Any) -> str:
    u = obj.attrs.get("units", "")
    return (u.decode() if isinstance(u, bytes) else str(u)).strip()


def _read_metadata(g: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bundle = g.get("metadatabundle")
    if bundle is None:
        return out
    for md in bundle.values():
        if not isinstance(md, h5py.Group):
            continue
        for k, v in md.items():
            if isinstance(v, h5py.Dataset):
                val = v[()]
                out[k] = val.decode() if isinstance(val, bytes) else (val.item() if hasattr(val, "item") and np.ndim(val) == 0 else val)
    return out


def load_array(path: str | Path) -> np.ndarray:
    """A ``.npy`` array, with a clear error for a missing or unreadable file."""
    p = Path(path)
    if not p.exists():
        raise PtyroValueError(f"file {str(p)!r} not found")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise PtyroValueError(f"cannot read {str(p)!r} as a .npy array ({e})") from None


def _estimate_reciprocal_sampling(mean_pattern: np.ndarray, semiangle_cutoff: float, energy: float) -> float:
    """Å⁻¹ per detector pixel from the bright-field disk radius (pixels above half its maximum)."""
    area = float(np.sum(mean_pattern > 0.5 * float(mean_pattern.max())))
    radius_px = math.sqrt(area / math.pi)
    if radius_px < 2:
        raise PtyroValueError(
            f"cannot estimate the detector calibration: the bright-field disk is {radius_px:.1f} pixels across; pass --reciprocal-sampling or --sampling"
        )
    return semiangle_cutoff * 1e-3 / energy2wavelength(energy) / radius_px


# long: one calibration path per file kind (.npy, EMD from us or py4DSTEM, lazy or not) and the docstring of every argument; split with the io.py split
def load_dataset(
    path: str | Path,
    *,
    energy: float | None = None,
    scan_step: Any = None,
    sampling: Any = None,
    reciprocal_sampling: Any = None,
    semiangle_cutoff: float | None = None,
    lazy: bool | None = None,
) -> Dataset4D:
    """Read a 4D-STEM dataset: our EMD files, EMD 1.0 files written by py4DSTEM / emdfile, or a
    ``.npy`` 4D array (Rx, Ry, Qx, Qy).

    ``lazy=True`` leaves the patterns on disk (:meth:`ptyro_core.Dataset4D.lazy`: the file stays
    open and reconstructions read them batch by batch, so datasets larger than memory work);
    ``lazy=None`` (default) does so when the 4D array would take more than half of the memory
    budget (:func:`ptyro_core.pipeline.memory_budget`: ``PTYRO_MEMORY_BUDGET``, or 80% of available memory).

    Calibrations missing from the file (always for ``.npy``) come from the arguments:
    ``energy`` (eV), ``scan_step`` (Å, scalar or (x, y)), and one of ``sampling`` (real-space
    pixel of the probe grid, Å), ``reciprocal_sampling`` (detector pixel, Å⁻¹) or
    ``semiangle_cutoff`` (mrad; the detector pixel is then measured from the bright-field disk).
    Arguments override what the file says.
    """
    from ptyro_core import Dataset4D, Grid

    p = Path(path)
    positions = None
    meta: dict[str, Any] = {}
    if p.suffix.lower() == ".npy":
        raw = load_array(p)
        _check_dtype(p, raw.dtype)
        lazy = _decide_lazy(lazy, raw)
        arr = raw if lazy else np.asarray(raw, dtype=np.float32)
        step = None
        dq = None
    else:
        f = _open_h5(p)
        try:
            node = _find_4d(f)
            if node is None:
                raise PtyroValueError(f"{str(p)!r} holds no 4D array; expected a 4D-STEM dataset (Rx, Ry, Qx, Qy)")
            _check_dtype(p, (node if isinstance(node, h5py.Dataset) else node["data"]).dtype)
            if isinstance(node, h5py.Dataset):
                lazy = _decide_lazy(lazy, node)
                arr = node if lazy else np.asarray(node[()], dtype=np.float32)
                step = dq = None
            else:
                lazy = _decide_lazy(lazy, node["data"])
                arr = node["data"] if lazy else np.asarray(node["data"][()], dtype=np.float32)
                meta = _read_metadata(node)
                step, dq = [None, None], [None, None]
                for n in range(4):
                    d = node.get(f"dim{n}")
                    if d is None:
                        continue
                    u = _units(d).lower()
                    s = _dim_step(d)
                    if n < 2 and u in _R_UNIT_NAMES:
                        step[n] = s
                    elif n < 2 and u == "nm" and s is not None:
                        step[n] = 10 * s
                    elif n >= 2 and u in _Q_UNIT_NAMES:
                        dq[n - 2] = s
                    elif n >= 2 and u in ("nm^-1", "1/nm") and s is not None:
                        dq[n - 2] = s / 10
                    elif n >= 2 and u == "mrad" and s is not None:
                        dq[n - 2] = ("mrad", s)
                root = node.parent
                if "scan_positions" in root and "data" in root["scan_positions"]:
                    positions = np.asarray(root["scan_positions"]["data"][()], np.float32)
                if energy is None and meta.get("energy") is not None:
                    energy = float(meta["energy"])
        except BaseException:
            f.close()
            raise
        if not lazy:
            f.close()
    if arr.ndim != 4:
        raise PtyroValueError(f"{str(p)!r}: expected a 4D array (Rx, Ry, Qx, Qy), got shape {arr.shape} (rank {arr.ndim})")
    if lazy:
        # the patterns stay on disk: check a sample here, and every batch as it is read
        arr = _CheckedPatterns(arr, p)
        arr[0, : min(arr.shape[1], 8)]
    else:
        _check_values(arr, p)
    if energy is None:
        raise PtyroValueError(f"{str(p)!r}: the beam energy is not in the file; pass --energy (eV)")
    energy = float(energy)
    if not (energy > 0 and math.isfinite(energy)):
        raise PtyroValueError(f"energy: expected a positive beam energy in eV, got {energy!r}")
    rx, ry, qx, qy = arr.shape
    # --- detector calibration -> real-space grid
    if sampling is not None:
        s = _pos_pair("sampling", sampling)
        grid = Grid((qx, qy), s)
    else:
        if reciprocal_sampling is not None:
            dq_xy = _pos_pair("reciprocal_sampling", reciprocal_sampling)
        elif dq is not None and all(d is not None for d in dq):
            lam = energy2wavelength(energy)
            dq_xy = tuple((d[1] * 1e-3 / lam if isinstance(d, tuple) else d) for d in dq)
            dq_xy = _pos_pair("reciprocal sampling in the file", [abs(v) for v in dq_xy])
        elif semiangle_cutoff is not None:
            mean = np.asarray(np.mean(np.asarray(arr[0, : min(arr.shape[1], 16)], np.float64), axis=0) if lazy else arr.mean(axis=(0, 1)), np.float64)
            d = _estimate_reciprocal_sampling(mean, float(semiangle_cutoff), energy)
            dq_xy = (d, d)
        else:
            raise PtyroValueError(
                f"{str(p)!r}: the detector calibration is not in the file; pass --sampling (Å), --reciprocal-sampling (Å⁻¹) or --semiangle-cutoff (mrad)"
            )
        grid = Grid((qx, qy), (1.0 / (qx * dq_xy[0]), 1.0 / (qy * dq_xy[1])))
    # --- scan positions
    if scan_step is not None or positions is None:
        if scan_step is not None:
            st = _pos_pair("scan_step", scan_step)
        elif step is not None and all(s is not None for s in step):
            st = _pos_pair("scan step in the file", [abs(v) for v in step])
        else:
            raise PtyroValueError(f"{str(p)!r}: the scan step is not in the file; pass --scan-step (Å)")
        xx, yy = np.meshgrid(np.arange(rx) * st[0], np.arange(ry) * st[1], indexing="ij")
        positions = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
    if lazy:
        return Dataset4D.lazy(arr, positions, grid=grid, energy=energy)
    return Dataset4D(arr, positions, grid=grid, energy=energy)


def _check_dtype(path: Path, dtype: Any) -> None:
    """Only integer and real floating-point intensities are read: complex values (whose
    imaginary part a conversion would drop), booleans, strings and records are refused."""
    dt = np.dtype(dtype)
    if dt.kind not in "iuf":
        raise PtyroTypeError(
            f"{str(path)!r}: the 4D data has dtype {dt} ({'complex' if dt.kind == 'c' else 'not numeric intensities'}); expected integer or real floating-point intensities"
        )


def _check_values(block: Any, path: Path, where: str = "") -> None:
    """One rule in memory and out of core: NaN/inf and negative intensities are refused,
    with how many there are (negative counts are not physical; subtract a smaller background
    or clip them to 0 before reconstructing)."""
    a = np.asarray(block)
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise PtyroValueError(f"{str(path)!r}: the 4D data{where} holds {bad} NaN/inf values; expected finite intensities")
    neg = int(np.count_nonzero(a < 0))
    if neg:
        raise PtyroValueError(
            f"{str(path)!r}: the 4D data{where} holds {neg} negative values (down to {float(a.min()):.4g}); expected intensities >= 0 "
            "(subtract a smaller background, or clip them to 0 before reconstructing)"
        )


class _CheckedPatterns:
    """An on-disk 4D array whose every read is checked like data loaded into memory
    (:func:`_check_values`), so a dataset means the same in memory and out of core."""

    def __init__(self, array: Any, path: Path) -> None:
        self._array, self._path = array, path
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), len(array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        block = np.asarray(self._array[index])
        where = tuple(int(i) if isinstance(i, (int, np.integer)) else i for i in (index if isinstance(index, tuple) else (index,)))
        _check_values(block, self._path, f" at scan index {where if len(where) > 1 else where[0]}")
        return block


def _decide_lazy(lazy: bool | None, array: Any) -> bool:
    if lazy is not None:
        return bool(lazy)
    from ptyro_core.pipeline import memory_budget

    return int(np.prod(array.shape)) * 4 > 0.5 * memory_budget()


def _pos_pair(name: str, v: Any) -> tuple[float, float]:
    if isinstance(v, (int, float, np.floating, np.integer)):
        v = (v, v)
    try:
        t = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise PtyroTypeError(f"{name}: expected a number or a pair (x, y), got {v!r}") from None
    if len(t) != 2 or not all(math.isfinite(x) and x > 0 for x in t):
        raise PtyroValueError(f"{name}: expected positive values (x, y), got {v!r}")
    return t  # type: ignore[return-value]


def load_images(path: str | Path) -> dict[str, np.ndarray]:
    """The virtual detector images and 2D arrays stored in one of our dataset files."""
    out: dict[str, np.ndarray] = {}
    with _open_h5(path) as f:
        root = f.get(ROOT)
        if root is None:
            return out
        for name, g in root.items():
            if isinstance(g, h5py.Group) and "data" in g and g["data"].ndim == 2 and name != "scan_positions":
                out[name.removeprefix("virtual_")] = np.asarray(g["data"][()])
    return out


def read_file_provenance(path: str | Path) -> dict[str, Any]:
    """The ``/provenance`` record of one of our files ({} if none)."""
    with _open_h5(path) as f:
        if "provenance" not in f:
            return {}
        return read_provenance(f["provenance"])


# --------------------------------------------------------------------------- reconstructions


def save_reconstruction(path: str | Path, state: ReconState, *, provenance: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a :class:`~ptyro_core.ReconState` as HDF5 (layout in the module docstring)."""
    from ptyro_core import ReconState

    with atomic_output(path, overwrite) as tmp, hdf5_writing(tmp) as f:
        f.attrs["ptyrodactyl_file"] = "reconstruction"
        g = f.create_group("reconstruction")
        g.attrs["energy"] = float(state.energy)
        g.attrs["iteration"] = int(np.asarray(state.iteration))
        g.attrs["sampling"] = np.asarray(state.sampling, np.float64)
        g.attrs["position_convention"] = ReconState.position_convention
        items = {
            "object": (np.asarray(state.object), "transmission (complex, slices x y)"),
            "probe": (np.asarray(state.probe), "probe modes (complex, modes x y), sum |psi|^2 = 1"),
            "positions": (np.asarray(state.positions), "A"),
            "loss": (np.asarray(state.loss), "loss per iteration"),
            "slice_thickness": (np.asarray(state.slice_thickness), "A"),
        }
        for name, (a, units) in items.items():
            d = g.create_dataset(name, data=a)
            d.attrs["sampling"] = np.asarray(state.sampling, np.float64)
            d.attrs["units"] = units
        if provenance:
            write_provenance(f.create_group("provenance"), provenance)
    return Path(path)


def load_reconstruction(path: str | Path) -> ReconState:
    """Read a reconstruction file written by :func:`save_reconstruction`."""
    from ptyro_core import ReconState

    with _open_h5(path) as f:
        g = f.get("reconstruction")
        if g is None or "object" not in g or "probe" not in g:
            raise PtyroValueError(f"{str(path)!r} holds no /reconstruction/object and /reconstruction/probe; expected a reconstruction file")
        return ReconState(
            np.asarray(g["object"][()]),
            np.asarray(g["probe"][()]),
            np.asarray(g["positions"][()], np.float32),
            sampling=tuple(float(v) for v in g.attrs["sampling"]),
            energy=float(g.attrs["energy"]),
            slice_thickness=np.asarray(g["slice_thickness"][()]) if "slice_thickness" in g else None,
            loss=np.asarray(g["loss"][()]) if "loss" in g else None,
            iteration=int(g.attrs.get("iteration", 0)),
        )


# --------------------------------------------------------------------------- info


def file_info(path: str | Path) -> dict[str, Any]:
    """What a file holds: every array with shape, dtype, units and calibrations, the file's
    kind, and its provenance (``ptyro info``)."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        a = load_array(p)
        return {"path": str(p), "format": "npy", "arrays": [{"path": "/", "shape": list(a.shape), "dtype": str(a.dtype)}], "provenance": {}}
    arrays: list[dict[str, Any]] = []
    with _open_h5(p) as f:
        is_emd = f.attrs.get("emd_group_type") in ("file", b"file")
        kind = "reconstruction" if "reconstruction" in f else ("dataset" if is_emd else "hdf5")

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset) or name.startswith("provenance") or "metadatabundle" in name:
                return
            if name.rsplit("/", 1)[-1].startswith("dim") and obj.parent.attrs.get("emd_group_type") in ("array", b"array"):
                return
            entry: dict[str, Any] = {"path": "/" + name, "shape": list(obj.shape), "dtype": str(obj.dtype)}
            if _units(obj):
                entry["units"] = _units(obj)
            if "sampling" in obj.attrs:
                entry["sampling"] = [float(v) for v in np.ravel(obj.attrs["sampling"])]
            parent = obj.parent
            if obj.name.endswith("/data") and parent.attrs.get("emd_group_type") in ("array", b"array"):
                dims = []
                for n in range(obj.ndim):
                    d = parent.get(f"dim{n}")
                    if d is None:
                        continue
                    v = np.asarray(d[()]).ravel()
                    step = float(v[1] - v[0]) if v.size > 1 and np.issubdtype(v.dtype, np.number) else None
                    origin = float(v[0]) if v.size and np.issubdtype(v.dtype, np.number) else None
                    name_ = d.attrs.get("name", f"dim{n}")
                    dims.append({"name": name_.decode() if isinstance(name_, bytes) else str(name_), "units": _units(d), "origin": origin, "step": step})
                entry["dims"] = dims
                md = _read_metadata(parent)
                if md:
                    entry["calibration"] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in md.items()}
            arrays.append(entry)

        f.visititems(visit)
        prov = read_provenance(f["provenance"]) if "provenance" in f else {}
        attrs = {k: (v.item() if hasattr(v, "item") else (v.decode() if isinstance(v, bytes) else v)) for k, v in f.attrs.items()}
    return {"path": str(p), "format": "emd-1.0" if is_emd else "hdf5", "kind": kind, "attrs": attrs, "arrays": arrays, "provenance": prov}
