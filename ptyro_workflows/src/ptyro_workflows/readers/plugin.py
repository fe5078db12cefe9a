"""ptyro-workflows' plugin module: registers the readers (hook ``ptyro_register_readers``).

``emd`` and ``npy`` are registered lazily (``"module:attribute"`` references: h5py is imported
when a file is read, not when the readers are listed); the vendor formats' readers are made here,
eagerly (they import nothing until they read).
"""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_readers(register):  # noqa: ANN001, ANN201
    from ptyro_workflows.readers.vendor import FORMATS, make_reader

    register("emd", "ptyro_workflows.readers.native:emd", description="EMD 1.0 (.h5/.hdf5/.emd: ours, py4DSTEM's, emdfile's)")
    register("npy", "ptyro_workflows.readers.native:npy", description=".npy 4D array (Rx, Ry, Qx, Qy), read lazily batch by batch, no calibrations")
    for name, (_, _, description) in FORMATS.items():
        register(name, make_reader(name), description=f"{description} (through RosettaSciIO, extra 'formats')")
    register("arina", "ptyro_workflows.readers.vendor:arina", description="DECTRIS ARINA *_master.h5, read lazily (hdf5plugin, extra 'formats')")
    register("tia", "ptyro_workflows.readers.vendor:tia", description="FEI/Thermo Fisher TIA .ser, memory-mapped")
