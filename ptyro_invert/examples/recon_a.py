"""RECON-A: reconstruct a MoS2-like monolayer phase object with known ground truth.

300 keV, 25 mrad, overfocus 200 Å, 128×128 diffraction patterns (sampling 0.15 Å, window
19.2 Å), 32×32 scan at 0.5 Å step, 20 passes, batch 64, default learning rates.

Sign convention: C10 = −defocus (DESIGN.md); ψ(k) = A(k)·exp(−iχ), χ ∋ π λ C10 k², which is the
in-focus probe propagated by Δz = C10 with the Fresnel propagator exp(−iπλΔz k²). "Overfocus of
200 Å" means the crossover lies 200 Å before (above) the specimen, i.e. C10 = +200 Å
(defocus = −200 Å; Krivanek's C1 > 0 = overfocus).

Run: ``.venv/bin/python ptyro_invert/examples/recon_a.py [case ...]`` with cases among
``noise_free poisson positions mixed multislice`` (default: all). Prints every figure.
Small sizes for a quick look: ``--quick`` (64×64 patterns, 12×12 scan).
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Dataset4D, Grid, ScanPositions, replace
from ptyro_invert import initial_state, occupancies, predict_patterns, reconstruct
from ptyro_invert.synthetic import hexagonal_phase, partially_coherent_modes, phase_metrics, scanned_region

ENERGY = 300e3
SEMIANGLE = 25.0
C10 = 200.0  # overfocus 200 Å (see the module docstring)


def make_case(*, q=128, sampling=0.15, scan=(32, 32), step=0.5, num_slices=1, slice_thickness=None, padding_px=8):
    grid = Grid((q, q), (sampling, sampling))
    scan_pos = ScanPositions.raster((0.0, 0.0), (scan[0] * step, scan[1] * step), scan)
    dummy = Dataset4D(np.zeros(scan + (q, q), np.float32), scan_pos.positions, grid=grid, energy=ENERGY)
    st0 = initial_state(
        dummy, semiangle_cutoff=SEMIANGLE, aberrations={"C10": C10}, num_slices=num_slices,
        slice_thickness=slice_thickness, padding_px=padding_px,
    )  # fmt: skip
    return grid, scan_pos, st0


def dataset_from(true_state, grid, scan_pos, positions=None, *, dose=None, seed=1):
    pats = np.asarray(predict_patterns(true_state, positions))
    if dose is not None:
        pats = np.random.default_rng(seed).poisson(pats * dose).astype(np.float32)
    rx, ry = scan_pos.shape
    return Dataset4D(pats.reshape(rx, ry, *pats.shape[-2:]), scan_pos.positions, grid=grid, energy=ENERGY)


def run(dataset, state, algorithm, **kw):
    t = time.perf_counter()
    out = reconstruct(dataset, state, algorithm=algorithm, progress=False, **kw)
    jax.block_until_ready(out.object)
    dt = time.perf_counter() - t
    return out, dt


def case_single(args, dose=None):
    grid, scan_pos, st0 = make_case(q=args.q, scan=args.scan)
    true_obj = np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(1.0, 1.3)))[None].astype(np.complex64)
    true = replace(st0, object=jnp.asarray(true_obj))
    ds = dataset_from(true, grid, scan_pos, dose=dose)
    loss = args.loss if dose is not None else "amplitude"
    out, dt = run(ds, st0, "single_slice", iterations=args.passes, batch_size=64, loss=loss)
    region = scanned_region(st0)
    rmse, corr = phase_metrics(out.object[0], true_obj[0], region)
    label = "noise-free" if dose is None else f"Poisson {dose:.0e} e/pattern, loss={loss}"
    print(f"single_slice {label}: passes={args.passes} phase RMSE={rmse:.4f} rad corr={corr:.5f} "
          f"time={dt:.1f}s ({dt / args.passes:.2f} s/pass incl. compile) final loss={float(out.loss[-1]):.4g}")  # fmt: skip
    return rmse, corr


def case_positions(args):
    grid, scan_pos, st0 = make_case(q=args.q, scan=args.scan, padding_px=12)
    true_obj = np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(1.0, 1.3)))[None].astype(np.complex64)
    true = replace(st0, object=jnp.asarray(true_obj))
    rng = np.random.default_rng(7)
    err = rng.normal(0.0, 0.3 / np.sqrt(2), st0.positions.shape).astype(np.float32)  # 0.3 Å rms (vector)
    true_pos = np.asarray(st0.positions) + err
    ds = dataset_from(true, grid, scan_pos, positions=true_pos)
    lrs = None if args.position_lr is None else {"object": 2e-2, "probe": 2e-3, "positions": args.position_lr, "affine": 1e-3}
    report = []
    out, dt = run(ds, st0, "position_corrected", iterations=args.passes, batch_size=64, learning_rates=lrs, report=report, scan_scale=args.scan_scale)
    rec = np.asarray(out.positions)
    resid = rec - true_pos
    shift = resid.mean(0)
    rms_before = float(np.sqrt(np.mean(np.sum((err - err.mean(0)) ** 2, -1))))
    rms_after = float(np.sqrt(np.mean(np.sum((resid - shift) ** 2, -1))))
    # positions are known up to a global shift, which the object follows: compare with the true
    # object regenerated with its lattice moved by the same (sub-pixel) shift
    shifted_true = np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(1.0 + shift[0], 1.3 + shift[1])))
    region = scanned_region(st0)
    rmse, corr = phase_metrics(out.object[0], shifted_true, region)
    print(f"position_corrected: passes={args.passes} position error rms {rms_before:.3f} Å -> {rms_after:.4f} Å "
          f"(mean shift {shift.round(3)} Å removed); phase RMSE={rmse:.4f} rad corr={corr:.5f} time={dt:.1f}s; "
          f"scan scale change {100 * report[-1]['scan']['scale_change']:+.3f} % (scan_scale={args.scan_scale}), rotation {report[-1]['scan']['rotation'] * 1e3:+.3f} mrad")  # fmt: skip
    return rms_after, rmse, corr


def case_mixed(args):
    grid, scan_pos, st0 = make_case(q=args.q, scan=args.scan)
    true_obj = np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(1.0, 1.3)))[None].astype(np.complex64)
    modes = partially_coherent_modes(st0.probe, st0.sampling, source_sigma=args.source_sigma, num_modes=args.modes)
    true = replace(st0, object=jnp.asarray(true_obj), probe=jnp.asarray(modes))
    occ_true = np.asarray(occupancies(true))
    ds = dataset_from(true, grid, scan_pos)
    region = scanned_region(st0)
    single, dt1 = run(ds, st0, "single_slice", iterations=args.passes, batch_size=64)
    mixed, dt2 = run(ds, st0, "mixed_state", iterations=args.passes, batch_size=64, num_modes=len(modes))
    r1, c1 = phase_metrics(single.object[0], true_obj[0], region)
    r2, c2 = phase_metrics(mixed.object[0], true_obj[0], region)
    occ = np.asarray(occupancies(mixed))
    print(f"mixed_state ({len(modes)} modes): passes={args.passes} phase RMSE={r2:.4f} rad corr={c2:.5f} "
          f"vs single_slice RMSE={r1:.4f} corr={c1:.5f}; occupancies true={occ_true.round(3)} recon={occ.round(3)} "
          f"max diff={100 * np.max(np.abs(occ - occ_true)):.1f} points; time={dt2:.1f}s")  # fmt: skip
    return r1, r2, occ_true, occ


def case_multislice(args, thickness=50.0):
    grid, scan_pos, st0 = make_case(q=args.q, scan=args.scan, num_slices=2, slice_thickness=thickness)
    shape = st0.object.shape[-2:]
    ph1 = hexagonal_phase(shape, st0.sampling, origin=(1.0, 1.3), peaks=(0.6, 0.35))
    ph2 = hexagonal_phase(shape, st0.sampling, origin=(0.3, 0.2), a=4.1, peaks=(0.5, 0.5), rotation=0.35)
    true_obj = np.exp(1j * np.stack([ph1, ph2])).astype(np.complex64)
    true = replace(st0, object=jnp.asarray(true_obj))
    ds = dataset_from(true, grid, scan_pos)
    region = scanned_region(st0)
    ms, dt = run(ds, st0, "multislice", iterations=args.passes, batch_size=64)
    ss0 = make_case(q=args.q, scan=args.scan)[2]
    ss, _ = run(ds, ss0, "single_slice", iterations=args.passes, batch_size=64)
    rec = np.asarray(ms.object)
    corr = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            corr[i, j] = np.corrcoef(np.angle(rec[i][region]).ravel(), np.angle(true_obj[j][region]).ravel())[0, 1]
    total_true = np.exp(1j * (ph1 + ph2))
    r_ms, c_ms = phase_metrics(rec[0] * rec[1], total_true, region)
    r_ss, c_ss = phase_metrics(np.asarray(ss.object[0]), total_true, region)
    print(f"multislice (2 slices, {thickness} Å): passes={args.passes} corr(recon slice i, true slice j)={corr.round(3).tolist()}; "
          f"total phase RMSE={r_ms:.4f} corr={c_ms:.4f} vs single_slice RMSE={r_ss:.4f} corr={c_ss:.4f}; time={dt:.1f}s")  # fmt: skip
    return corr, r_ms, r_ss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=["noise_free", "poisson", "positions", "mixed", "multislice"])
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--loss", default="poisson", help="loss for the Poisson case")
    ap.add_argument("--modes", type=int, default=2, help="probe modes of the partially coherent case")
    ap.add_argument("--source-sigma", type=float, default=0.25, help="rms source size (Å) of the partially coherent case")
    ap.add_argument("--position-lr", type=float, default=None, help="learning rate of the position corrections (default: the algorithm's)")
    ap.add_argument("--scan-scale", default="hold", choices=["hold", "fit"], help="positions case: hold the scan's scale or fit it")
    ap.add_argument("--quick", action="store_true", help="64x64 patterns, 12x12 scan")
    args = ap.parse_args(argv)
    args.q, args.scan = (64, (12, 12)) if args.quick else (128, (32, 32))
    print(f"RECON-A: {args.q}x{args.q} patterns, {args.scan} scan, devices={jax.device_count()} ({jax.devices()[0].platform})")
    for c in args.cases:
        {"noise_free": lambda: case_single(args),
         "poisson": lambda: case_single(args, dose=1e5),
         "positions": lambda: case_positions(args),
         "mixed": lambda: case_mixed(args),
         "multislice": lambda: case_multislice(args)}[c]()  # fmt: skip
        sys.stdout.flush()


if __name__ == "__main__":
    main()
