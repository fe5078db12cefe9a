"""PRISM vs multislice on a SIM-A-like case: speed-up and error at interpolation 2 and 4.

    .venv/bin/python plugins/ptyro-prism/bench_prism.py [--gpts 128] [--cells 4] [--thickness 5] [--scan 16]

SrTiO3 [001], 200 keV, 20 mrad aperture, no aberrations; a cells × cells × thickness supercell
(Kirkland potential, two slices per unit cell), a gpts × gpts grid, a scan × scan raster over
one unit cell. For each interpolation factor f: wall time of the whole simulation (S-matrix
build included, after one warm-up run that compiles everything), the speed-up over multislice,
and the errors against multislice:

- 4D data: relative L2 error ‖P − M‖/‖M‖ of PRISM's native patterns (nx/f × ny/f, f/L Å⁻¹)
  against the multislice patterns binned f × f onto the same reciprocal lattice;
- virtual images: bright field (0–20 mrad) and ADF (40–60 mrad... up to the band limit) from the
  full-size outputs, relative L2 error of each image against multislice's.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import ptyro_core
from ptyro_core import Grid
from ptyro_core.conventions import energy2wavelength
from ptyro_simul.structures import build_crystal

ENERGY = 200e3
SEMIANGLE = 20.0


def _bin(patterns: np.ndarray, f: int) -> np.ndarray:
    """Sum f × f blocks of centred fine patterns onto the coarse lattice PRISM samples: coarse
    pixel j ↔ fine pixels n//2 + (j − m//2) f + (−f//2 .. f − 1 − f//2)."""
    if f == 1:
        return patterns
    b, nx, ny = patterns.shape
    rolled = np.roll(patterns, (f // 2, f // 2), axis=(1, 2))
    return rolled.reshape(b, nx // f, f, ny // f, f).sum(axis=(2, 4))


def _angles(shape: tuple[int, int], grid: Grid, f: int) -> np.ndarray:
    lam = energy2wavelength(ENERGY)
    nx, ny = shape
    kx = (np.arange(nx) - nx // 2) * f / grid.extent[0]
    ky = (np.arange(ny) - ny // 2) * f / grid.extent[1]
    return np.hypot(kx[:, None], ky[None, :]) * lam * 1e3  # mrad


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpts", type=int, default=128)
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--thickness", type=int, default=5, help="unit cells along the beam")
    p.add_argument("--scan", type=int, default=16, help="scan positions per direction over one unit cell")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--interpolations", type=int, nargs="+", default=[1, 2, 4])
    args = p.parse_args()

    atoms = build_crystal("SrTiO3", repeat=(args.cells, args.cells, args.thickness))
    a = atoms.cell[0] / args.cells
    grid = Grid((args.gpts, args.gpts), (atoms.cell[0] / args.gpts, atoms.cell[1] / args.gpts))
    potential = ptyro_core.get("potential", "kirkland")(atoms, grid, slice_thickness=a / 2)
    probe = ptyro_core.get("probe", "aberrated")(grid, ENERGY, semiangle_cutoff=SEMIANGLE)
    s = (np.arange(args.scan) + 0.5) * a / args.scan + a * (args.cells // 2)
    positions = jnp.asarray(np.stack(np.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2), jnp.float32)
    nb = int(positions.shape[0])
    print(
        f"SrTiO3 [001] {args.cells}x{args.cells}x{args.thickness} cells ({atoms.cell[0]:.2f} Å, {potential.num_slices} slices), "
        f"{args.gpts}x{args.gpts} grid ({grid.sampling[0]:.3f} Å), 200 keV, {SEMIANGLE} mrad, {nb} positions, "
        f"devices: {jax.devices()[0].platform} x{jax.device_count()}"
    )

    def run(make):
        sim = make()
        outs = [sim(positions[i : i + args.batch]) for i in range(0, nb, args.batch)]
        return jnp.concatenate(outs)

    ms_sim = ptyro_core.get("simulator", "multislice")
    with jax.numpy_rank_promotion("allow"):
        ms_apply = jax.jit(lambda pot, pr, pos: ms_sim(pot, pr)(pos))  # compiled once, like PRISM's parts
        make_ms = lambda: lambda pos: ms_apply(potential, probe, pos)  # noqa: E731
        ms = run(make_ms)  # warm-up (compiles)
        ms, t_ms = _timed(run, make_ms)
    ms = np.asarray(ms, np.float64)
    print(f"multislice: {t_ms:.2f} s")

    ang = _angles((args.gpts, args.gpts), grid, 1)
    cutoff = 2.0 / 3.0 * 0.5 / grid.sampling[0] * energy2wavelength(ENERGY) * 1e3
    adf = (ang >= 40.0) & (ang < min(60.0, cutoff))
    bf = ang <= SEMIANGLE

    def images(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return patterns[:, bf].sum(1), patterns[:, adf].sum(1)

    bf_ms, adf_ms = images(ms)
    rel = lambda x, y: float(np.linalg.norm(x - y) / np.linalg.norm(y))  # noqa: E731
    prism = ptyro_core.get("simulator", "prism")
    print(" f  beams  time (s)  speed-up  4D rel. err (native)  BF rel. err  ADF rel. err")
    for f in args.interpolations:
        make_full = lambda: prism(potential, probe, interpolation=f)  # noqa: E731
        run(make_full)  # warm-up
        full, t = _timed(run, make_full)
        beams = make_full().num_beams
        native = np.asarray(run(lambda: prism(potential, probe, interpolation=f, output="cropped")), np.float64)
        full = np.asarray(full, np.float64)
        b_img, a_img = images(full)
        print(f"{f:2d}  {beams:5d}  {t:8.2f}  {t_ms / t:8.1f}  {rel(native, _bin(ms, f)):20.4f}  {rel(b_img, bf_ms):11.4f}  {rel(a_img, adf_ms):12.4f}")


if __name__ == "__main__":
    main()
