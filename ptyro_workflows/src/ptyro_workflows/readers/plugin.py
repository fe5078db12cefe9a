"""ptyro-workflows' plugin module: registers the readers (hook ``ptyro_register_readers``)."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_readers(register):  # noqa: ANN001, ANN201
    from ptyro_workflows.readers.native import emd, npy
    from ptyro_workflows.readers.vendor import FORMATS, arina, make_reader, tia

    register("emd", emd, description="EMD 1.0 (.h5/.hdf5/.emd: ours, py4DSTEM's, emdfile's)")
    register("npy", npy, description=".npy 4D array (Rx, Ry, Qx, Qy), memory-mapped, no calibrations")
    for name, (_, _, description) in FORMATS.items():
        register(name, make_reader(name), description=f"{description} (through RosettaSciIO, extra 'formats')")
    register("arina", arina, description="DECTRIS ARINA *_master.h5, read lazily (hdf5plugin, extra 'formats')")
    register("tia", tia, description="FEI/Thermo Fisher TIA .ser, memory-mapped")
