"""Fallback potential builder (used when ptyro_simul's "kirkland" potential is not available, and
always as a cross-check of ours): abTEM's Kirkland potential, infinite projection, for the atoms
in ``case_dir/atoms_<k>.npz``; writes ``abtem_potential_<k>.npy`` (slices, nx, ny) in V·Å.

    python abtem_potential.py <case_dir> <n_configs>
"""

import os
import sys

import numpy as np
from ase import Atoms

import abtem

case_dir, n = sys.argv[1], int(sys.argv[2])
import json

meta = json.load(open(os.path.join(case_dir, "meta.json")))
for k in range(n):
    z = np.load(os.path.join(case_dir, f"atoms_{k}.npz"))
    atoms = Atoms(numbers=z["numbers"], positions=z["positions"], cell=z["cell"], pbc=True)
    pot = abtem.Potential(
        atoms,
        gpts=tuple(meta["gpts"]),
        slice_thickness=meta["slice_thickness"],
        parametrization="kirkland",
        projection="infinite",
    )
    arr = np.asarray(pot.build().compute().array, dtype=np.float32)
    np.save(os.path.join(case_dir, f"abtem_potential_{k}.npy"), arr)
    print(k, arr.shape, float(arr.mean()))
