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

The package, by what each part does: :mod:`~ptyro_workflows.io.reading` (datasets in, held
in memory or read through a pattern source), :mod:`~ptyro_workflows.io.writing` (datasets out),
:mod:`~ptyro_workflows.io.results` (reconstructions in and out), :mod:`~ptyro_workflows.io.calibration`
(the calibrations and checks every reader shares), :mod:`~ptyro_workflows.io.safety` (output
paths and atomic writes), :mod:`~ptyro_workflows.io.info` (what a file holds, its provenance,
the execution record) and :mod:`~ptyro_workflows.io.emd` (the EMD 1.0 nodes).

>>> import os, tempfile, numpy as np, ptyro_core as pc
>>> ds = pc.Dataset4D(np.arange(4 * 64, dtype=np.uint16).reshape(2, 2, 8, 8),
...                   pc.ScanPositions.raster((0, 0), (1, 1), (2, 2)).positions,
...                   grid=pc.Grid((8, 8), (0.2, 0.2)), energy=200e3)
>>> p = save_dataset(os.path.join(tempfile.mkdtemp(), "ds.h5"), ds)
>>> load_dataset(p).array.dtype  # counts stay counts
dtype('uint16')
>>> with load_dataset(p, lazy=True).array as source:  # out of core: the source owns the file
...     source.read([3, 0]).shape
(2, 8, 8)
"""

from __future__ import annotations

from ptyro_workflows.io.calibration import (
    _check_dtype,
    _check_values,
    _estimate_reciprocal_sampling,
    _pos_pair,
    decide_lazy,
    detector_grid,
    in_memory,
    raster,
)
from ptyro_workflows.io.emd import DATACUBE, Q_UNITS, R_UNITS, ROOT, _dim_step, _find_4d, _open_h5, _read_metadata, _units, write_emd_array
from ptyro_workflows.io.info import execution_record, file_info, read_file_provenance
from ptyro_workflows.io.reading import load_array, load_dataset, load_images
from ptyro_workflows.io.results import load_reconstruction, save_reconstruction
from ptyro_workflows.io.safety import atomic_output, check_output, check_outputs
from ptyro_workflows.io.writing import DatasetWriter, save_dataset

_decide_lazy = decide_lazy  # the names other modules used before the split

__all__ = [
    "ROOT",
    "DATACUBE",
    "R_UNITS",
    "Q_UNITS",
    "check_output",
    "check_outputs",
    "atomic_output",
    "DatasetWriter",
    "save_dataset",
    "write_emd_array",
    "load_dataset",
    "load_images",
    "load_array",
    "save_reconstruction",
    "load_reconstruction",
    "read_file_provenance",
    "file_info",
    "execution_record",
    "decide_lazy",
    "in_memory",
    "detector_grid",
    "raster",
]

# private helpers other modules import from here
_PRIVATE = (_check_dtype, _check_values, _estimate_reciprocal_sampling, _pos_pair, _dim_step, _find_4d, _open_h5, _read_metadata, _units)
