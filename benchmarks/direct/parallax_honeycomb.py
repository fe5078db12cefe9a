"""Parallax on a periodic weak phase: a 3.16 Å honeycomb (``synthetic.hexagonal_phase``, 0.1 /
0.06 rad), 40 x 40 scan at 0.25 Å (a 10 Å field), 32 x 32 patterns at 0.25 Å, 300 kV, 20 mrad,
5,000 e/Å², at several defoci: the fitted C10, coma and rotation (default settings) and the
parallax image's phase correlation with the truth, beside that with the true optics given.

    .venv/bin/python benchmarks/direct/parallax_honeycomb.py [--defoci -30,-60,-100,-200]

Where the bins' shifts pass half the lattice period the shifts alone are aliased (see
README.md, "Crystals at large defocus")."""

import argparse
import time
import warnings

import numpy as np

from ptyro_invert import synthetic as syn
from ptyro_invert.direct import parallax as px


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--defoci", default="-30,-60,-100,-200", help="C10 values (Å), comma-separated")
    args = ap.parse_args()
    print("| C10 true Å | C10 fitted Å | C21 fitted Å | rotation ° | phase corr. (fitted) | (true optics) | fit s |")
    print("|---|---|---|---|---|---|---|")
    for c10 in (float(v) for v in args.defoci.split(",")):
        kw = dict(gpts=32, sampling=0.25, scan=(40, 40), step=0.25, energy=300e3, semiangle_cutoff=20.0)
        grid, scan, state = syn.setup(**kw, aberrations={"C10": c10})
        truth = syn.with_object(state, np.exp(1j * syn.hexagonal_phase(tuple(state.object.shape[-2:]), state.sampling, peaks=(0.1, 0.06))))
        ds = syn.simulate(truth, grid, scan, dose=5000.0)
        blank = syn.setup(**kw, aberrations={})[2]
        region = syn.scanned_region(state, margin=-1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            px.fit_aberrations(ds)  # compiled
            t = time.perf_counter()
            fit = px.fit_aberrations(ds)
            dt = time.perf_counter() - t
            fitted = syn.phase_metrics(px.parallax(ds, blank).object[0], truth.object[0], region)[1]
            given = syn.phase_metrics(px.parallax(ds, blank, aberrations={"C10": c10}).object[0], truth.object[0], region)[1]
        ab = fit.aberrations
        print(f"| {c10:g} | {ab['C10']:.1f} | {ab.get('C21', 0.0):.0f} | {fit.rotation:.1f} | {fitted:.3f} | {given:.3f} | {dt:.2f} |")


if __name__ == "__main__":
    main()
