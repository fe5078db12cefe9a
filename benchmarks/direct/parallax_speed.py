"""Parallax (tilt-corrected bright field) speed against py4DSTEM and quantem, like for like, and
how our time grows with the scan.

    .venv/bin/python benchmarks/direct/parallax_speed.py [--py4dstem PY] [--quantem PY] [--quick] [--skip PARTS] [--out PATH]

Two comparisons, on compare.py's amorphous and SrTiO3 cases (``compare.amorphous_case``,
``compare.crystal_case``) and on a small-defocus amorphous case (−20 Å, 0.4 Å steps), where
the default refines the optics by the exact transfer:

- **aligning**: our ``parallax`` (shifts measured, optics fitted, refined by the exact transfer
  where :func:`~ptyro_invert.direct.parallax.transfer_wanted` says so, image; also timed with
  ``transfer=False``, interleaved, for the refinement's cost) against py4DSTEM
  0.14.18's ``Parallax`` (preprocess, reconstruct, aberration_fit: ``ref_py4dstem.parallax``).
- **given optics**: our ``parallax(..., aberrations=..., rotation=0, transpose=False)`` (nothing
  measured) against quantem 0.1.10's ``prlx`` kernel with the same optics
  (``ref_quantem.py``; its set-up, the virtual bright-field stack, timed apart: our time
  includes our binning, so the like-for-like ratio is against set-up + prlx).

PY: the python of a venv with that reference (``compare.py`` says how to make them); a reference
left out is skipped. Times are wall seconds of warm calls (compilation and imports excluded),
the median of 3, interleaved (ours, py4DSTEM, quantem, three times), with the load average
printed beside them (the machine may be shared: prefer the ratios). The reference workers are
run as they are (each a fresh process that times its second call). Then our times at three scan
sizes (24², 48², 96², 48² patterns) for the complexity. Writes ``parallax_speed.json`` beside
this file and prints Markdown tables.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def load() -> str:
    return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg())


def warm(fn, *a, **k) -> float:
    """One warm call's wall seconds (the caller has made the first)."""
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn(*a, **k).object)
    return time.perf_counter() - t


def ours_pair(ds, state, ab):
    """(aligning, given-optics) callables of our parallax, compiled."""
    import jax

    from ptyro_invert.direct import parallax as px

    def aligning():
        return px.parallax(ds, state)

    def given():
        return px.parallax(ds, state, aberrations=ab, rotation=0.0, transpose=False)

    def no_transfer():
        return px.parallax(ds, state, transfer=False)

    for fn in (aligning, given, no_transfer):
        jax.block_until_ready(fn().object)
    return aligning, given, no_transfer


def compare_case(label, case, args):
    from compare import reference

    from ptyro_invert.direct import parallax as px

    ds, state, _, ab, alpha = case
    aligning, given, no_transfer = ours_pair(ds, state, ab)
    measured, fit = px.measure_and_fit(ds)
    wanted = px.transfer_wanted(fit, measured[3])
    times = {"ours aligning": [], "ours given optics": [], "ours aligning, transfer=False": [], "py4DSTEM aligning": [], "quantem prlx": [],
             "quantem set-up": []}  # fmt: skip
    errors = {}
    for _ in range(3):
        times["ours aligning"].append(warm(aligning))
        times["ours given optics"].append(warm(given))
        times["ours aligning, transfer=False"].append(warm(no_transfer))
        if args.py4dstem:
            r = reference(args.py4dstem, "ref_py4dstem.py", ds, state, ab, alpha, ["parallax"])
            if "parallax_time" in r:
                times["py4DSTEM aligning"].append(float(r["parallax_time"]))
            else:
                errors["py4DSTEM"] = str(r.get("parallax_error", r.get("error", "not run")))[:200]
        if args.quantem:
            r = reference(args.quantem, "ref_quantem.py", ds, state, ab, alpha, ["parallax"])
            if "parallax_time" in r:
                times["quantem prlx"].append(float(r["parallax_time"]))
                times["quantem set-up"].append(float(r["setup_time"]))
            else:
                errors["quantem"] = str(r.get("parallax_error", r.get("setup_error", r.get("error", "not run"))))[:200]
    med = {k: statistics.median(v) for k, v in times.items() if v}
    if "quantem prlx" in med:
        med["quantem set-up + prlx"] = med["quantem set-up"] + med["quantem prlx"]
    ratios = {}
    if "py4DSTEM aligning" in med:
        ratios["ours aligning / py4DSTEM aligning"] = med["ours aligning"] / med["py4DSTEM aligning"]
    if "quantem prlx" in med:
        ratios["ours given optics / quantem set-up + prlx"] = med["ours given optics"] / med["quantem set-up + prlx"]
        ratios["ours aligning / quantem set-up + prlx (different jobs: quantem is given the optics)"] = med["ours aligning"] / med["quantem set-up + prlx"]
        ratios["ours given optics / quantem prlx alone"] = med["ours given optics"] / med["quantem prlx"]
    print(
        f"\n## {label}: scan {ds.scan_shape}, patterns {tuple(ds.grid.gpts)} ({load()}; the default, transfer=True, refines; transfer=None would here: {wanted})"
    )
    print("| what | median s | the three |\n|---|---|---|")
    for k, v in times.items():
        if v:
            print(f"| {k} | {statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |")
    if "quantem set-up + prlx" in med:
        print(f"| quantem set-up + prlx | {med['quantem set-up + prlx']:.3f} | |")
    for k, v in ratios.items():
        print(f"- {k}: **{v:.2f}**")
    for k, v in errors.items():
        print(f"- {k} failed: {v}")
    return {"times_s": times, "median_s": med, "ratios": ratios, "errors": errors, "load_average": os.getloadavg(), "transfer_by_default": wanted}


def scaling(args):
    """Our aligning and given-optics times at three scan sizes (48² patterns)."""
    from compare import amorphous_case

    sizes = (16, 32, 64) if args.quick else (24, 48, 96)
    print(f"\n## scaling with the scan (ours, 48² patterns, median of 3 warm calls; {load()})")
    print("| scan | aligning s | given optics s |\n|---|---|---|")
    out = {}
    for n in sizes:
        ds, state, _, ab, _ = amorphous_case(scan=n)
        aligning, given, _ = ours_pair(ds, state, ab)
        a = statistics.median(warm(aligning) for _ in range(3))
        g = statistics.median(warm(given) for _ in range(3))
        out[f"{n}x{n}"] = {"aligning_s": a, "given_optics_s": g}
        print(f"| {n}² | {a:.3f} | {g:.3f} |", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--py4dstem", help="python of a venv with py4DSTEM 0.14.18")
    ap.add_argument("--quantem", help="python of a venv with quantem 0.1.10")
    ap.add_argument("--quick", action="store_true", help="the amorphous case only, smaller scaling sizes")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: amorphous, crystal, small-defocus, scaling")
    ap.add_argument("--out", default=str(HERE / "parallax_speed.json"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    from compare import amorphous_case, crystal_case

    parts = {
        "amorphous": lambda: compare_case("amorphous (weak phase, C10 -100 Å, C12 10 Å)", amorphous_case(), args),
        "crystal": lambda: compare_case("crystal (SrTiO3 [001], 11.7 Å, multislice, C10 -20 Å)", crystal_case(), args),
        "small-defocus": lambda: compare_case(
            "amorphous, C10 -20 Å, C12 5 Å, 0.4 Å steps (parallax_accuracy's amorphous-20-a5)",
            amorphous_case(ab={"C10": -20.0, "C12": 5.0, "phi12": 2.0}, step=0.4),
            args,
        ),
        "scaling": lambda: scaling(args),
    }
    res = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": [os.getloadavg()]}
    res.update({name: part() for name, part in parts.items() if not (args.quick and name in ("crystal", "small-defocus")) and name not in skip})
    res["load_average"].append(os.getloadavg())
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1, default=float)
    print(f"\nwrote {args.out} ({load()})")


if __name__ == "__main__":
    main()
