"""Writing 4D-STEM datasets as EMD 1.0 (readable by py4DSTEM / ``emdfile.read``), batch by
batch (:class:`DatasetWriter`) or at once (:func:`save_dataset`)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ptyro_core import PtyroValueError
from ptyro_core.files import close_hdf5, deferred_signals, disk_full_error
from ptyro_workflows.io.emd import DATACUBE, Q_UNITS, R_UNITS, _emd_file_attrs, _emd_metadata, _emd_root, _q_dims, _raster_calibration, write_emd_array
from ptyro_workflows.io.safety import atomic_output, check_output
from ptyro_workflows.provenance import write_provenance

if TYPE_CHECKING:
    from ptyro_core import Dataset4D, Grid

__all__ = ["DatasetWriter", "save_dataset"]


class DatasetWriter:
    """Write a 4D-STEM dataset batch by batch, so memory is bounded by the batch.

    The file is created with the full (Rx, Ry, Qx, Qy) shape, chunked per pattern, in a
    temporary file; :meth:`write` fills patterns ``start:stop`` (row-major scan index), then
    :meth:`close` adds images and provenance and renames the file into place. Used as a context
    manager, a failure deletes the temporary file.
    """

    # long: every output check and the atomic temporary file are set up before the first pattern is written
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
        self.file: Any = None  # h5py File, root Group and datacube Dataset while writing
        self.root: Any = None
        self.data: Any = None
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
    """Write a :class:`~ptyro_core.Dataset4D` (and optional virtual images) as an EMD 1.0 file,
    64 MiB of patterns at a time (an out-of-core dataset is never loaded whole); counts stay
    integers.

    >>> import numpy as np, ptyro_core as pc
    >>> ds = pc.Dataset4D(np.ones((2, 2, 8, 8), np.float32) / 64,
    ...                   pc.ScanPositions.raster((0, 0), (1, 1), (2, 2)).positions,
    ...                   grid=pc.Grid((8, 8), (0.2, 0.2)), energy=200e3)
    >>> import tempfile, os; d = tempfile.mkdtemp()
    >>> p = save_dataset(os.path.join(d, "ds.h5"), ds)
    >>> from ptyro_workflows.io import load_dataset
    >>> load_dataset(p).array.shape
    (2, 2, 8, 8)
    """
    from ptyro_core.pipeline import pattern_source

    dt = np.dtype(dataset.array.dtype)
    n = dataset.scan_shape[0] * dataset.scan_shape[1]
    with (
        DatasetWriter(
            path,
            scan_shape=dataset.scan_shape,
            positions=dataset.positions,
            grid=dataset.grid,
            energy=dataset.energy,
            provenance=provenance,
            overwrite=overwrite,
            dtype=dt if dt.kind in "iu" else np.float32,  # counts are written as counts
        ) as w,
        pattern_source(dataset) as src,
    ):
        rows = max(1, (64 << 20) // max(src.dtype.itemsize * int(np.prod(src.shape[-2:])), 1))  # 64 MiB at a time
        for lo in range(0, n, rows):
            w.write(lo, min(n, lo + rows), src.read(np.arange(lo, min(n, lo + rows))))
        for name, img in (images or {}).items():
            w.add_image(name, img)
        for name, (a, s, u) in (arrays or {}).items():
            w.add_array(name, a, s, u)
    return Path(path)
