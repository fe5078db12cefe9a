"""``ptyro demo``: the whole job on an embedded default, no input needed.

Simulates a 4D-STEM dataset of SrTiO3 [001] (3 x 3 x 2 unit cells, 64 x 64 patterns, 16 x 16
scan over the central unit cell, 200 keV, 20 mrad), reconstructs it with single-slice
ptychography, and writes into the output directory the dataset, the reconstruction, the two
configurations (so each step can be rerun with ``ptyro simulate`` / ``ptyro reconstruct``) and
PNG figures; prints what it wrote and the phase correlation with the ground truth σ·ΣV.
"""

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_workflows.config import annular_detectors, to_toml

__all__ = ["DEMO_SIMULATION", "DEMO_RECONSTRUCTION", "DEMO_FILES", "run_demo"]

_A = 3.905  # SrTiO3 lattice parameter, Å

DEMO_SIMULATION: dict[str, Any] = {
    "specimen": {"structure": "SrTiO3", "repeat": [3, 3, 2], "zone_axis": [0, 0, 1]},
    "potential": {"parametrization": "kirkland", "gpts": [64, 64], "slice_thickness": _A / 2, "projection": "infinite"},
    "probe": {"energy": 200e3, "semiangle_cutoff": 20.0, "C10": -30.0},
    "scan": {"start": [_A, _A], "end": [2 * _A, 2 * _A], "gpts": [16, 16]},
    "frozen_phonons": {"configurations": 1, "sigmas": 0.0, "seed": 0},
    "detectors": {"pixelated": True, "bf": [0.0, 20.0], "adf": [25.0, 45.0]},
    "simulation": {"simulator": "multislice", "propagator": "fresnel", "batch_size": 64},
}

DEMO_RECONSTRUCTION: dict[str, Any] = {
    "probe": {"semiangle_cutoff": 20.0, "C10": -30.0},
    "reconstruction": {"algorithm": "single_slice", "loss": "amplitude", "optimizer": "adam", "iterations": 20, "batch_size": 32, "seed": 0},
}

#: file name -> what it shows
DEMO_FILES: dict[str, str] = {
    "dataset.h5": "simulated 4D-STEM dataset (EMD 1.0) with virtual images and provenance",
    "reconstruction.h5": "reconstructed object, probe, positions, loss (HDF5) with provenance",
    "simulation.toml": "configuration of the simulation (ptyro simulate simulation.toml)",
    "reconstruction.toml": "configuration of the reconstruction (ptyro reconstruct dataset.h5 --config reconstruction.toml)",
    "projected_potential.png": "ground-truth projected potential ΣV (V·Å) with the scanned area",
    "mean_diffraction.png": "mean diffraction pattern (log scale, mrad) with the detector ranges",
    "virtual_images.png": "virtual bright-field and annular dark-field images",
    "phase.png": "reconstructed phase beside the ground truth σ·ΣV over the scanned area",
    "probe.png": "reconstructed probe: intensity and phase",
    "loss.png": "loss per iteration",
}


def run_demo(out: str | Path = "ptyro-demo", *, overwrite: bool = False, progress: bool = True, quiet: bool = False, iterations: int | None = None) -> dict[str, Any]:
    """Run the demo into directory ``out``; returns a summary (files, timings, quality)."""
    from ptyro_simul.constants import energy2sigma

    from ptyro_workflows import figures
    from ptyro_workflows.io import save_reconstruction
    from ptyro_workflows.provenance import make_provenance
    from ptyro_workflows.reconstruct import components_used, phase_correlation, reconstruct
    from ptyro_workflows.config import reconstruction_config
    from ptyro_workflows.simulate import simulate

    def say(*a: Any) -> None:
        if not quiet:
            print(*a, flush=True)

    outdir = Path(out)
    if outdir.exists() and not outdir.is_dir():
        raise PtyroValueError(f"--out {str(outdir)!r} is a file; expected a directory")
    existing = [n for n in DEMO_FILES if (outdir / n).exists()]
    if existing and not overwrite:
        raise PtyroValueError(f"{str(outdir)!r} already holds demo outputs ({', '.join(existing)}); pass --overwrite to replace them")
    outdir.mkdir(parents=True, exist_ok=True)

    sim_cfg = copy.deepcopy(DEMO_SIMULATION)
    rec_cfg = copy.deepcopy(DEMO_RECONSTRUCTION)
    if iterations is not None:
        if int(iterations) < 1:
            raise PtyroValueError(f"--iterations: expected a positive integer, got {iterations}")
        rec_cfg["reconstruction"]["iterations"] = int(iterations)
    t0 = time.perf_counter()
    say(f"ptyro demo: SrTiO3 [001], {sim_cfg['specimen']['repeat']} cells, {sim_cfg['potential']['gpts']} patterns, "
        f"{sim_cfg['scan']['gpts']} scan, {sim_cfg['probe']['energy'] / 1e3:g} keV, {sim_cfg['probe']['semiangle_cutoff']:g} mrad")
    sim = simulate(sim_cfg, outdir / "dataset.h5", overwrite=True, progress=progress, keep=True, command=["ptyro", "demo"])
    t_sim = time.perf_counter() - t0
    ds = sim.dataset
    assert ds is not None
    (outdir / "simulation.toml").write_text(to_toml(sim.config))

    t1 = time.perf_counter()
    state = reconstruct(ds, rec_cfg, progress=progress)
    t_rec = time.perf_counter() - t1
    cfg_r = reconstruction_config(rec_cfg)
    cfg_r["probe"]["energy"] = ds.energy
    prov = make_provenance("reconstruction", cfg_r, components_used(cfg_r), int(cfg_r["reconstruction"]["seed"]), command=["ptyro", "demo"], extra={"input": str(outdir / "dataset.h5"), "source": sim.provenance})
    save_reconstruction(outdir / "reconstruction.h5", state, provenance=prov, overwrite=True)
    (outdir / "reconstruction.toml").write_text(to_toml(cfg_r))

    # quality: phase correlation over the scanned area
    grid = ds.grid
    sigma = energy2sigma(ds.energy)
    truth = sigma * sim.projected_potential
    corr = phase_correlation(state, ds.positions, truth, grid.sampling)
    # the phase maps over the scanned area, for the figure
    pos = np.asarray(ds.positions, np.float64)
    offset = np.mean(np.asarray(state.positions, np.float64) - pos, axis=0)
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    d = state.sampling
    i0 = np.round((lo + offset) / d).astype(int)
    i1 = np.round((hi + offset) / d).astype(int) + 1
    rec_phase = np.sum(np.angle(np.asarray(state.object)), axis=0)[i0[0] : i1[0], i0[1] : i1[1]]
    j0 = np.round(lo / grid.sampling).astype(int)
    tx = np.arange(j0[0], j0[0] + rec_phase.shape[0]) % truth.shape[0]
    ty = np.arange(j0[1], j0[1] + rec_phase.shape[1]) % truth.shape[1]
    truth_area = truth[np.ix_(tx, ty)]

    # figures
    dets = annular_detectors(sim.config["detectors"])
    from ptyro_simul.constants import energy2wavelength

    lam = energy2wavelength(ds.energy)
    mrad = (grid.reciprocal_sampling[0] * lam * 1e3, grid.reciprocal_sampling[1] * lam * 1e3)
    step = (float(pos[ds.scan_shape[1], 0] - pos[0, 0]), float(pos[1, 1] - pos[0, 1]))
    written = [
        figures.plot_projected_potential(outdir / "projected_potential.png", sim.projected_potential, grid.sampling, scan_box=(tuple(lo), tuple(hi + np.asarray(step)))),
        figures.plot_mean_diffraction(outdir / "mean_diffraction.png", np.asarray(ds.array).mean(axis=(0, 1)), mrad, semiangle_cutoff=sim.config["probe"]["semiangle_cutoff"], detectors=dets),
        figures.plot_virtual_images(outdir / "virtual_images.png", sim.images, step, (float(lo[0]), float(lo[1])), detectors=dets),
        figures.plot_phase_comparison(outdir / "phase.png", rec_phase, truth_area, d, correlation=corr, origin=(float(lo[0]), float(lo[1]))),
        figures.plot_probe(outdir / "probe.png", np.asarray(state.probe), d),
        figures.plot_loss(outdir / "loss.png", np.asarray(state.loss), name=cfg_r["reconstruction"]["loss"]),
    ]
    total = time.perf_counter() - t0
    loss = np.asarray(state.loss)
    say(f"simulated {len(pos)} patterns in {t_sim:.1f} s; reconstructed ({cfg_r['reconstruction']['algorithm']}, "
        f"{int(np.asarray(state.iteration))} iterations) in {t_rec:.1f} s")
    say(f"wrote into {outdir}/:")
    for name, what in DEMO_FILES.items():
        say(f"  {name:<24} {what}")
    say(f"quality: phase correlation with the ground truth σ·ΣV over the scanned area: {corr:.3f}")
    if loss.size:
        say(f"         loss {loss[0]:.3g} -> {loss[-1]:.3g} ({cfg_r['reconstruction']['loss']})")
    say(f"total {total:.1f} s")
    return {
        "out": outdir,
        "files": [outdir / n for n in DEMO_FILES],
        "figures": written,
        "correlation": corr,
        "loss": loss,
        "time_simulation": t_sim,
        "time_reconstruction": t_rec,
        "time_total": total,
    }
