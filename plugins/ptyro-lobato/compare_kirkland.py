"""Lobato vs Kirkland: relative L2 differences of projected potentials (the figures in the README).

    .venv/bin/python plugins/ptyro-lobato/compare_kirkland.py [--sampling 0.05]

Single atoms: one atom in the middle of a 12 Å × 12 Å cell, projected potential (infinite
projection) on a grid of the given sampling, ‖v_L − v_K‖₂ / ‖v_K‖₂ over the grid, and the same over
pixels farther than 0.5 Å from the nucleus (where the log singularity does not dominate). SrTiO3
[001]: one 3.905 Å unit cell, two slices (SrO and TiO2 planes), 0.05 Å sampling.
"""

import argparse

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ptyro_core import Atoms, Grid  # noqa: E402
from ptyro_lobato import scattering_factor  # noqa: E402
from ptyro_lobato.potential import lobato  # noqa: E402
from ptyro_simul.potentials import kirkland, kirkland_scattering_factor  # noqa: E402


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.sum((a - b) ** 2) / np.sum(b**2)))


def single_atom(z: int, sampling: float, cell: float = 12.0) -> tuple[float, float]:
    grid = Grid.from_extent((cell, cell), sampling=sampling)
    atoms = Atoms(np.array([[cell / 2, cell / 2, 1.0]]), np.array([z]), cell=(cell, cell, 2.0))
    vl = np.asarray(lobato(atoms, grid, slice_thickness=2.0).array[0])
    vk = np.asarray(kirkland(atoms, grid, slice_thickness=2.0).array[0])
    x, y = (np.asarray(c) for c in grid.coordinates(np.float64))
    far = np.broadcast_to(np.hypot(x - cell / 2, y - cell / 2) > 0.5, vl.shape)
    return rel_l2(vl, vk), rel_l2(vl[far], vk[far])


def srtio3(sampling: float) -> float:
    a = 3.905
    pos = np.array([[0, 0, 0], [a / 2, a / 2, 0], [a / 2, a / 2, a / 2], [a / 2, 0, a / 2], [0, a / 2, a / 2]]) + np.array([0.0, 0.0, a / 4])
    atoms = Atoms(pos, np.array([38, 8, 22, 8, 8]), cell=(a, a, a))
    grid = Grid.from_extent((a, a), sampling=sampling)
    vl = np.asarray(lobato(atoms, grid, slice_thickness=a / 2).array)
    vk = np.asarray(kirkland(atoms, grid, slice_thickness=a / 2).array)
    return rel_l2(vl, vk)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sampling", type=float, default=0.05)
    args = p.parse_args()
    g = np.linspace(0.0, 4.0, 401)
    print(f"sampling {args.sampling} Å")
    print(" Z  f(g) rel L2 (0..4/Å)  v_z rel L2 (whole grid)  v_z rel L2 (r > 0.5 Å)")
    for z in (1, 6, 8, 14, 22, 38, 79, 92):
        fl, fk = np.asarray(scattering_factor(g, z)), kirkland_scattering_factor(g, z)
        whole, far = single_atom(z, args.sampling)
        print(f"{z:2d}  {rel_l2(fl, fk):20.4f}  {whole:23.4f}  {far:22.4f}")
    print(f"SrTiO3 [001], 2 slices: v_z rel L2 = {srtio3(args.sampling):.4f}")


if __name__ == "__main__":
    main()
