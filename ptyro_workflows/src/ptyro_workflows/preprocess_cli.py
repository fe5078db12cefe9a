"""``ptyro preprocess`` and the preprocessing step of ``ptyro reconstruct``.

Kept apart from :mod:`ptyro_workflows.cli` (which only calls in here) and light to import:
numpy, JAX and the readers are imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_preprocess_parser", "load_for_reconstruct", "prepare_for_reconstruction", "nominal_defocus"]

#: [preprocess] keys offered as flags of ``ptyro preprocess`` (``preprocess`` itself is implied)
_FLAG_KEYS = ("bad_pixels", "detector_mask", "dark", "gain", "descan", "recentre", "scan_frame", "estimate_defocus", "crop", "bin", "max_curl")


def add_preprocess_parser(sub: Any, toml_value: Callable[[str], Any], add_common: Callable[[Any], None]) -> None:
    """The ``preprocess`` subcommand."""
    from ptyro_workflows.config import DESCRIPTIONS, SCHEMA

    p = sub.add_parser(
        "preprocess",
        help="raw detector data -> centred, calibrated dataset (bad pixels, descan, scan rotation, defocus)",
        description="Read DATA (EMD 1.0, .npy, or a vendor format with the 'formats' extra: .mib, .dm3/.dm4, EMPAD .xml, "
        "ARINA *_master.h5, .ser, .blo, .hspy, .zspy, Velox .emd), find and repair hot/dead pixels, fit the bright-field "
        "disc, the descan and the scan rotation/transpose (DPC curl, refined by the parallax fit, which also gives the "
        "defocus), re-centre the patterns and write an EMD 1.0 file with everything found in its provenance, a summary "
        "on stdout and a one-page figure. Values with units are accepted: '300 keV', '0.042 nm', '1.6 mrad'.",
    )
    p.add_argument("data", metavar="DATA", help="the raw dataset")
    p.add_argument("-o", "--out", metavar="OUT.h5", default="preprocessed.h5", help="output file (default: preprocessed.h5)")
    p.add_argument("--config", metavar="CONFIG.toml", help="a configuration with a [preprocess] table (and [probe] for the semi-angle and defocus)")
    p.add_argument("--figure", metavar="PNG", help="the one-page figure (default: preprocess.png beside OUT)")
    p.add_argument("--reader", metavar="NAME", help="reader to use (default: by the file's ending; 'ptyro plugins' lists them)")
    c = p.add_argument_group("what you know (override the file's metadata)")
    c.add_argument("--energy", metavar="E", help="beam energy (eV, or with a unit: '300 keV')")
    c.add_argument("--scan-step", metavar="STEP", help="scan step (Å, or '0.042 nm')")
    c.add_argument("--reciprocal-sampling", metavar="DQ", help="detector pixel (Å⁻¹, or '1.6 mrad', '0.8 1/nm')")
    c.add_argument("--sampling", metavar="A", type=toml_value, help="real-space pixel of the probe grid in Å (instead of the detector pixel)")
    c.add_argument("--semiangle-cutoff", metavar="MRAD", type=float, help="probe semi-angle in mrad (checks the detector calibration)")
    c.add_argument("--defocus", metavar="A", type=float, help="nominal defocus in Å (C10 = -defocus); its sign settles the scan's 180° ambiguity")
    c.add_argument("--scan-shape", metavar="RX,RY", help="scan shape of a file that stores its patterns as one stack (Velox, ARINA) and is not square")
    g = p.add_argument_group("[preprocess] table")
    for k in _FLAG_KEYS:
        desc = DESCRIPTIONS["preprocess"][k]
        if SCHEMA["preprocess"][k] is not None:
            desc += f" (default: {SCHEMA['preprocess'][k]})"
        g.add_argument("--" + k.replace("_", "-"), dest=f"pp__{k}", metavar="VALUE", type=toml_value, default=None, help=desc)
    add_common(p)
    p.set_defaults(func=run_preprocess)


def nominal_defocus(probe: dict[str, Any]) -> float | None:
    """Δf in Å from a [probe] table (``defocus``, or −``C10``), None when not given."""
    from ptyro_workflows.reconstruct import _nominal_defocus

    return _nominal_defocus(probe)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _scan_shape(text: str) -> tuple[int, int]:
    from ptyro_core import PtyroValueError

    try:
        rx, ry = (int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise PtyroValueError(f"--scan-shape {text!r}: expected two integers RX,RY (e.g. 256,128)") from None
    return (rx, ry)


def run_preprocess(args: argparse.Namespace) -> int:
    import time

    from ptyro_workflows.config import load_config
    from ptyro_workflows.io import check_output, save_dataset
    from ptyro_workflows.preprocess import plot_preprocess, preprocess, preprocess_options
    from ptyro_workflows.provenance import make_provenance
    from ptyro_workflows.readers import load, parse_quantity

    base = load_config(args.config)
    table = dict(base.get("preprocess") or {})
    table.update({k.split("__", 1)[1]: v for k, v in vars(args).items() if k.startswith("pp__") and v is not None})
    table.pop("preprocess", None)
    opts = preprocess_options(table)
    probe = dict(base.get("probe") or {})
    semi = args.semiangle_cutoff if args.semiangle_cutoff is not None else probe.get("semiangle_cutoff")
    defocus = args.defocus if args.defocus is not None else nominal_defocus(probe)
    out = check_output(args.out, args.overwrite)
    fig = Path(args.figure) if args.figure else out.parent / "preprocess.png"
    check_output(fig, args.overwrite)
    t0 = time.perf_counter()
    reader_options: dict[str, Any] = {"scan_shape": _scan_shape(args.scan_shape)} if args.scan_shape else {}
    ds, src = load(
        args.data,
        reader=args.reader,
        energy=parse_quantity(args.energy, "energy") if args.energy is not None else probe.get("energy"),
        scan_step=parse_quantity(args.scan_step, "length") if args.scan_step is not None else None,
        reciprocal_sampling=parse_quantity(args.reciprocal_sampling, "detector") if args.reciprocal_sampling is not None else None,
        sampling=args.sampling,
        semiangle_cutoff=semi,
        **reader_options,
    )
    out_ds, rep = preprocess(ds, opts, semiangle_cutoff=semi, defocus=defocus)
    rep.values["seconds_with_reading"] = round(time.perf_counter() - t0, 3)
    values = _jsonable(rep.values)
    prov = make_provenance(
        "preprocess",
        {"preprocess": opts},
        [],
        0,
        command=["ptyro", *sys.argv[1:]],
        extra={"input": str(args.data), "calibration_source": _jsonable(src), "preprocess": values},
    )
    save_dataset(out, out_ds, provenance=prov, overwrite=args.overwrite)
    plot_preprocess(fig, rep)
    if not args.quiet:
        print("\n".join(rep.summary()))
        print(f"wrote {out} and {fig}")
        ab = values.get("aberrations")
        if ab:
            print(
                f"reconstruct it with: ptyro reconstruct {out} --C10 {ab['C10']:g} --C12 {ab['C12']:g} --phi12 {ab['phi12']:g} --semiangle-cutoff {semi if semi else '<mrad>'}"
            )
    return 0


def load_for_reconstruct(path: str | Path, **kwargs: Any) -> Any:
    """Our files through :func:`ptyro_workflows.io.load_dataset`, every other format through
    the readers (:func:`ptyro_workflows.readers.load`)."""
    from ptyro_workflows.io import load_dataset
    from ptyro_workflows.readers import is_native, load

    if is_native(path):
        return load_dataset(path, **kwargs)
    kwargs["lazy"] = kwargs.pop("lazy", None)
    return load(path, **kwargs)[0]


def _preprocessed_values(path: str | Path) -> dict[str, Any] | None:
    """What ``ptyro preprocess`` found, from the provenance of the file it wrote (None for
    anything else)."""
    from ptyro_workflows.io import read_file_provenance
    from ptyro_workflows.readers import is_native

    if not is_native(path) or Path(path).suffix.lower() == ".npy":
        return None
    try:
        prov = read_file_provenance(path)
    except Exception:  # noqa: BLE001 - an unreadable provenance only means nothing to refine
        return None
    values = prov.get("preprocess") if prov.get("kind") == "preprocess" else None
    if isinstance(values, str):
        try:
            values = json.loads(values)
        except ValueError:
            return None
    return dict(values) if isinstance(values, dict) else None


def _elsewhere(path: str | Path) -> bool:
    """Data from elsewhere: anything but an EMD file we wrote (our ``/ptyrodactyl`` root group:
    simulations, ``ptyro preprocess`` outputs, ``save_dataset``)."""
    import h5py

    from ptyro_workflows.io import ROOT
    from ptyro_workflows.readers import is_native

    p = Path(path)
    if not is_native(p) or p.suffix.lower() == ".npy":
        return True
    try:
        with h5py.File(p, "r") as f:
            return ROOT not in f
    except OSError:
        return True


def prepare_for_reconstruction(
    path: str | Path, dataset: Any, cfg: dict[str, Any], *, out: str | Path, say: Callable[..., None]
) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """Run ``[preprocess]`` before ``ptyro reconstruct``: the whole preprocessing for data from
    elsewhere (or when switched on; summary printed, figure beside the output, the found
    defocus and astigmatism put into ``[probe]``), else nothing here (the reconstruction's own
    checks refuse uncentred data or a wrong scan frame). Returns (dataset, cfg, found values)."""
    from ptyro_core import PtyroValueError, get
    from ptyro_workflows.preprocess import PreprocessReport, plot_preprocess, preprocess, preprocess_options, refine_found, use_found_optics
    from ptyro_workflows.reconstruct import components_used

    for kind, name in components_used(cfg):  # a typo fails before anything is computed
        get(kind, name)
    opts = preprocess_options(cfg.get("preprocess"))
    on = opts["preprocess"] is True or (opts["preprocess"] == "auto" and _elsewhere(path))
    if not on:
        # a file `ptyro preprocess` wrote: refine what that run estimated, as if it had run here
        found = _preprocessed_values(path)
        line = refine_found(cfg.setdefault("reconstruction", {}), PreprocessReport(values=found), opts) if found else None
        if line:
            say(line)
        return dataset, cfg, None
    from ptyro_workflows.reconstruct import apply_scan_config

    probe = cfg["probe"]
    # the frame given ([scan] step and rotation) is where the search starts; afterwards the
    # positions carry it, so the reconstruction must not apply it again
    dataset = apply_scan_config(dataset, cfg["scan"])
    cfg["scan"] = {**cfg["scan"], "step": None, "rotation": 0.0}
    try:
        out_ds, rep = preprocess(dataset, opts, semiangle_cutoff=float(probe["semiangle_cutoff"]), defocus=nominal_defocus(probe))
    except PtyroValueError as e:
        if opts["preprocess"] is True or "bright-field disc" not in str(e):
            raise
        say(f"preprocessing skipped ({' '.join(str(e).split())}); set --preprocess true to make this an error")
        cfg["preprocess"] = {**opts, "preprocess": False}
        return dataset, cfg, None
    say(*rep.summary())
    fig = Path(out).with_name(Path(out).stem + "_preprocess.png")
    plot_preprocess(fig, rep)
    say(f"  figure: {fig}")
    for line in (use_found_optics(probe, rep), refine_found(cfg.setdefault("reconstruction", {}), rep, opts)):
        if line:
            say(line)
    cfg["preprocess"] = {**opts, "preprocess": False}
    return out_ds, cfg, _jsonable(rep.values)
