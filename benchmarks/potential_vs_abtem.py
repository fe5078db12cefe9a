"""Issue 14, abTEM's side: the case of potential_case.py built and simulated by abTEM 1.0.11 on its
own (its potential from its own parametrisations, not ours), in abTEM's venv:

    python3 -m venv /tmp/venv-abtem && /tmp/venv-abtem/bin/pip install abtem==1.0.11
    /tmp/venv-abtem/bin/python benchmarks/potential_vs_abtem.py /tmp/abtem.npz [--fine] [--taper] [--finer] [--only=NAME,...]

Writes, per variant, the BF and ADF images (8 × 8) and the mean pattern: Kirkland and Lobato
(infinite projection), Kirkland finite projection, Kirkland frozen phonons (σ = 0.1 Å, 8
configurations); ``--fine`` adds the finite projection and the frozen phonons on a 256² grid,
``--finer`` on 384² (the convergence of the high-angle signal); ``--taper`` adds Kirkland with
abTEM's antialias taper switched off (``antialias.taper = 0``: a hard cut at 2/3 Nyquist like
ours; by default abTEM multiplies the last 0.01/dx Å⁻¹ below the cut by a raised cosine);
``--only=NAME,...`` runs just those variants.
Then ``.venv/bin/python benchmarks/potential_accuracy.py compare OURS.npz /tmp/abtem.npz``.
"""

import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import potential_case as case  # noqa: E402

import abtem  # noqa: E402
from ase import Atoms  # noqa: E402


def run(gpts, *, parametrization="kirkland", projection="infinite", configs=1, taper=None, seed=1):
    if taper is not None:
        with abtem.config.set({"antialias.taper": taper}):
            return run(gpts, parametrization=parametrization, projection=projection, configs=configs, seed=seed)
    numbers, pos, cell = case.structure()
    atoms = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
    if configs > 1:
        atoms = abtem.FrozenPhonons(atoms, num_configs=configs, sigmas=case.SIGMA, seed=seed)
    pot = abtem.Potential(atoms, gpts=(gpts, gpts), slice_thickness=case.SLICE, parametrization=parametrization, projection=projection)
    probe = abtem.Probe(energy=case.ENERGY, semiangle_cutoff=case.SEMIANGLE, defocus=0.0)
    probe.grid.match(pot)
    scan = abtem.GridScan(start=(0.0, 0.0), end=case.SCAN_END, gpts=case.SCAN_GPTS, endpoint=False)
    meas = probe.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle="full")).compute()
    data = np.asarray(meas.array, np.float64)
    if data.ndim == 5:  # frozen phonons not reduced
        data = data.mean(axis=0)
    ext = float(cell[0])
    return {"bf": case.annular(data, ext, *case.BF), "adf": case.annular(data, ext, *case.ADF), "mean": data.mean(axis=(0, 1))}


def main():
    path = sys.argv[1]
    abtem.config.set({"diagnostics.progress_bar": False})
    variants = {
        "kirkland": dict(),
        "lobato": dict(parametrization="lobato"),
        "kirkland_finite": dict(projection="finite"),
        "kirkland_phonons": dict(configs=case.CONFIGS),
    }
    if "--taper" in sys.argv:
        variants["kirkland_taper0"] = dict(taper=0.0)
    if "--fine" in sys.argv:
        variants["kirkland_finite_256"] = dict(projection="finite", gpts=256)
        variants["kirkland_phonons_256"] = dict(configs=case.CONFIGS, gpts=256)
    if "--finer" in sys.argv:
        variants["kirkland_finite_384"] = dict(projection="finite", gpts=384)
        variants["kirkland_phonons_384"] = dict(configs=case.CONFIGS, gpts=384)
        for s in (2, 3):  # other sets of 8 configurations: the statistics of the phonon average
            variants[f"kirkland_phonons_256_seed{s}"] = dict(configs=case.CONFIGS, gpts=256, seed=s)
    only = [a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")]
    if only:
        variants = {k: v for k, v in variants.items() if k in only[0]}
    res = {}
    for key, kw in variants.items():
        gpts = kw.pop("gpts", case.GPTS)
        t = time.perf_counter()
        r = run(gpts, **kw)
        print(f"{key}: {gpts}², {time.perf_counter() - t:.1f} s, BF {r['bf'].mean():.5f}, ADF {r['adf'].mean():.6f}", flush=True)
        res.update({f"{key}/{k}": v for k, v in r.items()})
        np.savez(path, abtem_version=abtem.__version__, **res)


if __name__ == "__main__":
    main()
