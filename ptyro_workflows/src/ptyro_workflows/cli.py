"""The ``ptyro`` command: a thin layer over the Python API of :mod:`ptyro_workflows`.

Subcommands: ``demo``, ``simulate``, ``reconstruct``, ``info``, ``show``, ``plugins``. Every
configuration key is also a flag (``--help`` lists them with units). Bad input gives one line
``ptyro: error: ...`` on stderr and exit status 2, and nothing is written.

Start-up is fast: this module and everything ``--help``, ``info`` and ``show`` need import no
JAX; the subcommands live in :data:`COMMANDS`, a table of name -> ``"module:function"`` (the
function adds the subparser; its ``func`` default may itself be a ``"module:function"`` string,
imported only when that subcommand runs). A new subcommand is one line in the table.
"""

import argparse
import contextlib
import gc
import importlib
import json
import os
import re
import sys
import tomllib
import warnings
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from ptyro_core import PtyroError
from ptyro_workflows.config import ABERRATION_KEYS, TABLES

__all__ = ["COMMANDS", "build_parser", "main"]

#: subcommand name -> "module:function" that adds its subparser (in this order in --help).
#: The module must not import JAX at its top; the handler (``set_defaults(func=...)``) may be
#: a "module:function" string, resolved when the subcommand runs.
COMMANDS: dict[str, str] = {
    "demo": "ptyro_workflows.cli:_add_demo",
    "simulate": "ptyro_workflows.cli:_add_simulate",
    "reconstruct": "ptyro_workflows.cli:_add_reconstruct",
    "info": "ptyro_workflows.cli:_add_info",
    "show": "ptyro_workflows.cli:_add_show",
    "preprocess": "ptyro_workflows.cli:_add_preprocess",
    "live": "ptyro_workflows.live.cli:add_live_parser",
    "plugins": "ptyro_core.cli:add_plugins_parser",
}

_SIM_TABLES = ("specimen", "potential", "probe", "scan", "frozen_phonons", "simulation")
_REC_TABLES = ("probe", "scan", "reconstruction", "preprocess")
# keys set by dedicated flags (or free-form tables) instead of the generated ones
_SKIP = {("simulation", "options"), ("reconstruction", "options"), ("detectors", "pixelated")}


class _Error(Exception):
    """A command-line usage error (exit status 2)."""


_NEGATIVE = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class _Parser(argparse.ArgumentParser):
    """One-line usage errors (``ptyro: error: ...``, exit status 2), and negative numbers in
    any notation (``--C10 -50``, ``--energy -2e5``) taken as values, not options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE

    def error(self, message: str) -> None:  # type: ignore[override]
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        where = f"{sub}: " if sub else ""
        self.exit(2, f"ptyro: error: {where}{message} (see '{self.prog} --help')\n")


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if "," in text:
        return [_toml_value(t.strip()) for t in text.split(",")]
    return text


def _flag_names(tables: Sequence[str]) -> dict[tuple[str, str], str]:
    """(table, key) -> flag, ``--key`` when the key is unique among ``tables``, else
    ``--table-key``."""
    count: dict[str, int] = {}
    for t in tables:
        for k in TABLES[t].keys():
            count[k] = count.get(k, 0) + 1
    out = {}
    for t in tables:
        for k in TABLES[t].keys():
            if (t, k) in _SKIP:
                continue
            name = k if count[k] == 1 else f"{t}-{k}"
            if t == "probe" and k == "name":
                name = "probe"
            out[(t, k)] = "--" + name.replace("_", "-") if k not in ABERRATION_KEYS else "--" + k
    return out


def _add_config_flags(p: argparse.ArgumentParser, tables: Sequence[str], *, skip: Collection[str] = frozenset()) -> dict[tuple[str, str], str]:
    flags = _flag_names(tables)
    groups = {t: p.add_argument_group(f"[{t}] table (TOML values: numbers, [x, y] lists, strings)") for t in tables}
    aberr = p.add_argument_group("[probe] aberrations (magnitudes in Å, azimuths in degrees)") if "probe" in tables else None
    used = {}
    for (t, k), flag in flags.items():
        if flag in skip:
            continue
        dest = f"cfg__{t}__{k}"
        key = TABLES[t].keys()[k]  # the schema gives the help text and the default shown
        desc = key.doc
        if key.default is not None and key.default != {}:
            desc += f" (default: {key.default})"
        grp = aberr if (aberr is not None and t == "probe" and k in ABERRATION_KEYS) else groups[t]
        grp.add_argument(flag, dest=dest, metavar="VALUE", type=_toml_value, default=None, help=desc)
        used[(t, k)] = dest
    return used


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output and run control")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse)")
    g.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (implies --no-progress)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--no-jax-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (default: on, in ~/.cache/ptyrodactyl/jax; "
        "PTYRO_JAX_CACHE=0 switches it off, PTYRO_JAX_CACHE=DIR moves it)",
    )
    m = p.add_argument_group("multi-host (jax.distributed)")
    m.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 of a multi-process run")
    m.add_argument("--num-processes", type=int, metavar="N", help="number of processes of the run")
    m.add_argument("--process-id", type=int, metavar="I", help="index of this process (0..N-1)")
    m.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run described by the cluster environment (SLURM, Open MPI, ...): jax.distributed.initialize() with no arguments",
    )


def _add_preflight(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pre-flight")
    g.add_argument("--dry-run", action="store_true", help="print the array sizes, memory, disk needed vs free and a rough time, then stop")
    g.add_argument("--force", action="store_true", help="run even when the output looks too large for the free disk space")


def _collect(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for k, v in vars(args).items():
        if k.startswith("cfg__") and v is not None:
            _, t, key = k.split("__")
            cfg.setdefault(t, {})[key] = v
    return cfg


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), _toml_value(v.strip())


def _resolve(spec: str) -> Any:
    """The object a ``"module:function"`` string names."""
    mod, _, attr = spec.partition(":")
    return getattr(importlib.import_module(mod), attr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ptyro",
        description="Ptyrodactyl: electron microscopy simulation and ptychography in JAX. Units: Å, eV, mrad; azimuths in degrees; array axis 0 = x.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for spec in COMMANDS.values():
        _resolve(spec)(sub)
    return parser


def _add_demo(sub: Any) -> None:
    d = sub.add_parser(
        "demo",
        help="simulate a built-in crystal and reconstruct it (no input needed)",
        description="Simulate a 4D-STEM dataset of SrTiO3 [001] (2 x 2 unit cells scanned), reconstruct it with "
        "single-slice ptychography, and write the dataset, the reconstruction and PNG figures into DIR; print what "
        "was written and the quality reached (phase correlation with the ground truth σ·ΣV).",
    )
    d.add_argument("--out", default="ptyro-demo", metavar="DIR", help="output directory (default: ./ptyro-demo)")
    d.add_argument("--iterations", type=int, default=None, help="reconstruction iterations (default: the demo's)")
    _add_common(d)
    d.set_defaults(func=_run_demo)


def _add_simulate(sub: Any) -> None:
    s = sub.add_parser(
        "simulate",
        help="simulate a 4D-STEM dataset from a TOML configuration",
        description="Simulate a 4D-STEM dataset as CONFIG says (every key also settable as a flag; "
        "flags override the file) and write it as an EMD 1.0 HDF5 file (py4DSTEM reads it as a calibrated "
        "DataCube), batch by batch, with virtual detector images and provenance.",
    )
    s.add_argument("config", nargs="?", metavar="CONFIG.toml", help="simulation configuration (default: all defaults)")
    s.add_argument("-o", "--out", metavar="OUT.h5", default="simulation.h5", help="output file (default: simulation.h5)")
    s.add_argument(
        "--detector",
        action="append",
        type=_kv,
        default=[],
        metavar="NAME=INNER,OUTER",
        help="annular detector in mrad, e.g. haadf=70,200 (repeatable; [detectors] table)",
    )
    s.add_argument("--pixelated", action=argparse.BooleanOptionalAction, default=None, help="store the 4D data ([detectors] pixelated; default: true)")
    s.add_argument("--dose", type=float, metavar="E_PER_A2", help="electron dose in e⁻/Å²: Poisson counts stored as integers ([detectors] dose)")
    s.add_argument("--dose-per-position", type=float, metavar="E", help="electrons per probe position instead ([detectors] dose_per_position)")
    s.add_argument(
        "--simulator-option",
        action="append",
        type=_kv,
        default=[],
        metavar="KEY=VALUE",
        help="option passed to the simulator ([simulation.options]; repeatable)",
    )
    _add_config_flags(s, _SIM_TABLES)
    _add_common(s)
    _add_preflight(s)
    s.set_defaults(func=_run_simulate)


def _add_reconstruct(sub: Any) -> None:
    r = sub.add_parser(
        "reconstruct",
        help="reconstruct a 4D-STEM dataset by ptychography",
        description="Reconstruct DATA (our EMD files, EMD 1.0 files from py4DSTEM, or a .npy 4D array "
        "(Rx, Ry, Qx, Qy) with calibrations given as flags) and write the object, probe, positions and loss "
        "as HDF5 with provenance. The optics (energy, aperture, aberrations) not given by --config or flags "
        "are taken from DATA's provenance when it has one (one line says so).",
    )
    r.add_argument("data", metavar="DATA", help="dataset: .h5/.emd (EMD 1.0) or .npy")
    r.add_argument("--config", metavar="CONFIG.toml", help="reconstruction configuration ([probe], [scan], [reconstruction])")
    r.add_argument("-o", "--out", metavar="OUT.h5", default="reconstruction.h5", help="output file (default: reconstruction.h5)")
    r.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint file")
    r.add_argument(
        "--out-of-core",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the patterns from the file batch by batch instead of loading them (default: only when they would "
        "take more than half of the memory budget; PTYRO_MEMORY_BUDGET sets the budget in bytes)",
    )
    r.add_argument(
        "--algorithm-option",
        action="append",
        type=_kv,
        default=[],
        metavar="KEY=VALUE",
        help="option passed to the algorithm ([reconstruction.options]; repeatable)",
    )
    cal = r.add_argument_group("calibration of files that lack it (.npy, uncalibrated EMD)")
    cal.add_argument("--energy", type=_toml_value, metavar="EV", help="beam energy in eV (also [probe] energy)")
    cal.add_argument("--scan-step", type=_toml_value, metavar="A", help="scan step in Å, scalar or [dx, dy] (also [scan] step)")
    cal.add_argument("--sampling", type=_toml_value, metavar="A", help="real-space pixel of the probe grid in Å")
    cal.add_argument("--reciprocal-sampling", type=_toml_value, metavar="1/A", help="detector pixel in Å⁻¹")
    _add_config_flags(r, _REC_TABLES, skip={"--energy", "--step"})
    _add_common(r)
    _add_preflight(r)
    r.set_defaults(func=_run_reconstruct)


def _add_info(sub: Any) -> None:
    i = sub.add_parser(
        "info",
        help="what a file holds (arrays, shapes, calibrations, provenance)",
        description="Describe a dataset, reconstruction or .npy file: every array with shape, dtype, units and "
        "calibrations, and the provenance (configuration, components, versions, seed).",
    )
    i.add_argument("file", metavar="FILE")
    i.add_argument("--json", action="store_true", help="print a JSON object")
    i.set_defaults(func=_run_info)


def _add_show(sub: Any) -> None:
    w = sub.add_parser(
        "show",
        help="draw the figures of a dataset or reconstruction file (PNG)",
        description="Draw what FILE holds as PNG figures into DIR, without code. A dataset: the mean pattern with "
        "the detector rings and the band limit, virtual images (BF, ABF, ADF/HAADF, iDPC from the 4D data), CBED "
        "patterns at chosen positions. A reconstruction: phase and amplitude per slice, the probe in real and "
        "reciprocal space, the loss; with the ground truth in the source dataset, the truth band-limited to what "
        "the probe transfers, on the same colour scale, and the correlation.",
    )
    w.add_argument("file", metavar="FILE")
    w.add_argument("-o", "--out", metavar="DIR", default=None, help="output directory (default: FILE's name without suffix + '-show')")
    w.add_argument(
        "--position",
        action="append",
        type=_toml_value,
        default=[],
        metavar="IX,IY",
        help="scan index of a CBED pattern to draw (repeatable; default: the brightest and the darkest ADF position)",
    )
    w.add_argument("--truth", metavar="DATASET", help="dataset holding the ground truth of a reconstruction (default: its recorded input)")
    w.add_argument("--overwrite", action="store_true", help="replace existing figures (default: refuse)")
    w.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    w.set_defaults(func="ptyro_workflows.show:run_show")


def _add_preprocess(sub: Any) -> None:
    # issue 21 (experimental data): its parser lives with its code; nothing heavy is imported here
    from ptyro_workflows.preprocess_cli import add_preprocess_parser

    add_preprocess_parser(sub, _toml_value, _add_common)


def _say(args: argparse.Namespace, *lines: str) -> None:
    if not getattr(args, "quiet", False):
        for line in lines:
            print(line)


def _progress(args: argparse.Namespace) -> bool:
    return not (args.quiet or args.no_progress)


def _distributed(args: argparse.Namespace) -> None:
    if args.coordinator or args.num_processes or args.process_id is not None:
        if not (args.coordinator and args.num_processes and args.process_id is not None):
            raise _Error("--coordinator, --num-processes and --process-id go together; expected all three")
        if not 0 <= args.process_id < args.num_processes:
            raise _Error(f"--process-id {args.process_id}: expected 0 <= I < --num-processes {args.num_processes}")
        from ptyro_core.pipeline import initialize_distributed

        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    elif getattr(args, "distributed", False):
        from ptyro_core.pipeline import initialize_distributed

        try:
            initialize_distributed()
        except (ValueError, RuntimeError) as e:
            raise _Error(
                f"--distributed: no cluster environment found ({str(e).splitlines()[0]}); pass --coordinator, --num-processes and --process-id"
            ) from None


# --------------------------------------------------------------------------- commands


def _start_jax(args: argparse.Namespace, what: str) -> None:
    """Switch the persistent compilation cache on (unless --no-jax-cache / PTYRO_JAX_CACHE=0)
    and say that compiling comes first."""
    from ptyro_workflows.cache import enable_compilation_cache

    with _importing_jax():  # JAX is imported here, the cache on or off
        import jax  # noqa: F401

        where = enable_compilation_cache(enabled=not getattr(args, "no_jax_cache", False))
    cached = f"compiled programs cached in {where}" if where != "off" else "compilation cache off"
    _say(args, f"compiling {what} ... (JAX compiles each new array shape once; {cached})")


def _run_simulate(args: argparse.Namespace) -> int:
    from ptyro_workflows.config import load_config, merge, simulation_config
    from ptyro_workflows.io import check_output

    base = load_config(args.config)
    over = _collect(args)
    if args.detector:
        over.setdefault("detectors", {}).update(dict(args.detector))
    if args.pixelated is not None:
        over.setdefault("detectors", {})["pixelated"] = args.pixelated
    for key in ("dose", "dose_per_position"):
        if getattr(args, key) is not None:
            over.setdefault("detectors", {})[key] = getattr(args, key)
            # a flag replaces the file's dose whichever way the file gave it
            other = "dose_per_position" if key == "dose" else "dose"
            if getattr(args, other) is None:
                (base.get("detectors") or {}).pop(other, None)
    if args.simulator_option:
        over.setdefault("simulation", {})["options"] = {**(base.get("simulation", {}).get("options") or {}), **dict(args.simulator_option)}
    cfg = merge(base, over)
    simulation_config(cfg)  # every check before anything is imported or compiled
    check_output(args.out, args.overwrite)
    if args.dry_run:
        from ptyro_workflows.config import simulation_config
        from ptyro_workflows.preflight import format_plan, plan_simulation

        print("\n".join(format_plan(plan_simulation(simulation_config(cfg), args.out, keep=False))))
        return 0
    _distributed(args)
    _start_jax(args, "the potential, the probe and the multislice")
    from ptyro_workflows.simulate import simulate

    res = simulate(cfg, args.out, overwrite=args.overwrite, progress=_progress(args), keep=False, command=["ptyro", *sys.argv[1:]], force=args.force)
    _say(args, f"wrote {res.path}", *(f"  virtual image {k}: mean {v.mean():.4g} (fraction of beam)" for k, v in res.images.items()))
    return 0


def _run_reconstruct(args: argparse.Namespace) -> int:
    from ptyro_workflows.config import load_config, merge, reconstruction_config
    from ptyro_workflows.io import check_outputs, read_file_provenance
    from ptyro_workflows.preprocess_cli import load_for_reconstruct as load_dataset
    from ptyro_workflows.preprocess_cli import prepare_for_reconstruction
    from ptyro_workflows.reconstruct import optics_from_provenance

    base = load_config(args.config)
    over = _collect(args)
    if args.energy is not None:
        over.setdefault("probe", {})["energy"] = args.energy
    if args.scan_step is not None:
        over.setdefault("scan", {})["step"] = args.scan_step
    if args.algorithm_option:
        over.setdefault("reconstruction", {})["options"] = {**(base.get("reconstruction", {}).get("options") or {}), **dict(args.algorithm_option)}
    user = merge(base, over)
    # our own HDF5 files record the optics they were made with; vendor formats and .npy have no provenance
    source = read_file_provenance(args.data) if str(args.data).lower().endswith((".h5", ".hdf5")) else {}
    taken, note = optics_from_provenance(user.get("probe") or {}, source, name=os.path.basename(str(args.data)))
    if taken:
        user["probe"] = {**taken, **(user.get("probe") or {})}
    # a full simulation config is accepted: its other tables are kept (provenance) but not read
    cfg = reconstruction_config(user)
    explicit_energy = (user.get("probe") or {}).get("energy")
    ckpt = cfg["reconstruction"].get("checkpoint")
    # every output checked before anything is read or computed: none may be an input, nor each other
    check_outputs({"output": args.out, "checkpoint": None if args.resume else ckpt}, overwrite=args.overwrite, inputs=[args.data, args.resume])
    if note:
        _say(args, note)
    _distributed(args)
    _start_jax(args, "the reconstruction")  # its algorithm may still change ([preprocess] refine), so it is named once chosen
    ds = load_dataset(
        args.data,
        energy=explicit_energy,
        scan_step=cfg["scan"].get("step"),
        sampling=args.sampling,
        reciprocal_sampling=args.reciprocal_sampling,
        semiangle_cutoff=cfg["probe"]["semiangle_cutoff"] if (args.sampling is None and args.reciprocal_sampling is None) else None,
        lazy=args.out_of_core,
    )
    cfg["probe"]["energy"] = ds.energy
    if args.sampling is None and args.reciprocal_sampling is None and not _has_detector_calibration(args.data):
        from ptyro_simul.constants import energy2wavelength

        dq = 1.0 / (ds.grid.gpts[0] * ds.grid.sampling[0])
        _say(
            args,
            f"detector calibration measured from the bright-field disk ({cfg['probe']['semiangle_cutoff']:g} mrad aperture): "
            f"{dq:.5g} Å⁻¹ = {dq * energy2wavelength(ds.energy) * 1e3:.4g} mrad per pixel (pass --reciprocal-sampling to set it)",
        )
    from ptyro_workflows.preflight import check_calibration, check_plan, format_plan, plan_reconstruction
    from ptyro_workflows.reconstruct import reconstruct

    check_calibration(ds.grid, ds.energy, float(cfg["probe"]["semiangle_cutoff"]), source=str(args.data))
    plan = plan_reconstruction(ds, cfg, args.out, checkpoint=args.resume or ckpt)
    if args.dry_run:
        print("\n".join(format_plan(plan)))
        return 0
    check_plan(plan, force=args.force)
    ds, cfg, found = prepare_for_reconstruction(args.data, ds, cfg, out=args.out, say=lambda *lines: _say(args, *lines))
    _say(args, f"reconstructing: {cfg['reconstruction']['algorithm']}")
    record = {"input": str(args.data), **({"source": source} if source else {}), **({"preprocess": found} if found else {})}
    command = ["ptyro", *sys.argv[1:]]
    state = reconstruct(
        ds, cfg, args.out, resume=args.resume, progress=_progress(args), overwrite=args.overwrite, command=command, record=record, inputs=[args.data]
    )
    import numpy as np

    loss = np.asarray(state.loss)
    _say(args, f"wrote {args.out}", f"  iterations: {int(np.asarray(state.iteration))}, final loss: {loss[-1]:.4g}" if loss.size else "  (no iterations)")
    return 0


def _has_detector_calibration(path: str) -> bool:
    """Whether the file gives the detector pixel (calibrated Q dims), so none was measured."""
    if str(path).lower().endswith(".npy"):
        return False
    from ptyro_workflows.io import file_info

    for a in file_info(path)["arrays"]:
        if len(a["shape"]) == 4:
            return any(d.get("units", "").lower() not in ("", "pixels", "pixel") for d in a.get("dims", [])[2:])
    return False


def _run_info(args: argparse.Namespace) -> int:
    from ptyro_workflows.io import file_info

    info = file_info(args.file)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['path']}: {info.get('format')} {info.get('kind', '')}".rstrip())
    for a in info["arrays"]:
        line = f"  {a['path']}  shape {tuple(a['shape'])}  {a['dtype']}"
        if a.get("units"):
            line += f"  [{a['units']}]"
        if a.get("sampling"):
            line += f"  sampling {tuple(round(v, 6) for v in a['sampling'])} Å"
        print(line)
        for d in a.get("dims", []):
            if d.get("step") is not None:
                print(f"      {d['name']}: origin {d['origin']:.6g}, step {d['step']:.6g} {d['units']}")
        cal = a.get("calibration") or {}
        if "energy" in cal:
            print(f"      energy {cal['energy']:g} eV")
    prov = info.get("provenance") or {}
    if prov:
        print("provenance:")
        for k in ("kind", "created", "command", "seed", "input"):
            if k in prov:
                print(f"  {k}: {prov[k]}")
        for c in prov.get("components", []):
            print(f"  component {c['kind']} {c['name']!r}: {c['distribution']} {c['version']}")
        vers = prov.get("versions") or {}
        if vers:
            print("  versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
        if prov.get("config"):
            print("  configuration:")
            for line in str(prov["config"]).strip().splitlines():
                print("    " + line)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from ptyro_workflows.demo import _Drawing, check_demo, run_demo

    check_demo(args.out, overwrite=args.overwrite, iterations=args.iterations)
    _distributed(args)
    _one_blas_thread()
    figures = _Drawing()  # before JAX is imported: the drawing process's imports run beside JAX's
    try:
        # the collector paused for the whole demo (a job of fixed size), not only JAX's import: the
        # imports of the simulation and reconstruction made during the run set off 112 collections
        # (0.04 s), the run itself 16; about 1,300 objects are garbage at its end (measured)
        with _imports_without_gc():
            _start_jax(args, "the demo's simulation and reconstruction")
            run_demo(args.out, overwrite=args.overwrite, progress=_progress(args), quiet=args.quiet, iterations=args.iterations, figures=figures)
    finally:
        figures.close()
    return 0


def _one_blas_thread() -> None:
    """(The demo, before NumPy is imported) OpenBLAS with one thread unless the caller chose
    (``OPENBLAS_NUM_THREADS``): its second thread spins while NumPy and JAX are imported (0.1 s
    of CPU on 2 cores, taken from the drawing process's imports and the simulation; measured),
    and the demo's NumPy algebra is on matrices too small for threads."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# --------------------------------------------------------------------------- entry point


def _note(message: Any, *_: Any, **__: Any) -> None:
    """A library warning as one line (the rest with PTYRO_DEBUG=1)."""
    text = str(message).strip()
    if not os.environ.get("PTYRO_DEBUG") and "\n" in text:
        text = text.splitlines()[0] + " (PTYRO_DEBUG=1 shows the details)"
    print(f"ptyro: note: {text}", file=sys.stderr)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM's time limit, ``docker stop``, ``kill``): unwinds like Ctrl-C, so every
    temporary output is removed on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _drain() -> None:
    """After an interruption: wait for the computations still in flight (JAX dispatches batches
    ahead), so that none is running while the interpreter shuts down (a crash at exit)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return
    for a in jax.live_arrays():
        try:
            a.block_until_ready()
        except Exception:  # noqa: BLE001 - a failed computation is finished too
            pass


def _interrupted(status: int, message: str, argv: list[str] | None) -> int:
    """The end of an interrupted run, its temporaries already removed on the way out. As the
    ``ptyro`` process itself (``argv`` None) it ends here, without the interpreter's shutdown:
    work JAX still has in flight on its own threads can crash that shutdown (a segfault after
    this message, about one interruption in six)."""
    _drain()
    print(message, file=sys.stderr)
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _failure_line(e: BaseException) -> tuple[str, int] | None:
    """The one line (and exit status) for a failure that is not bad input: a component that
    raised (named with its distribution), or memory exhausted (with the knobs)."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, (PtyroError, _Error)):  # bad input: the caller's one line, exit status 2
        return None
    if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in text:
        return (
            f"out of memory ({text[:200]}); reduce the batch_size, the grid (gpts), the scan or the probe modes, "
            "or set PTYRO_MEMORY_BUDGET (bytes) to what this machine can give (--dry-run prints the sizes)",
            1,
        )
    from ptyro_core import get_registry

    comp, dist = get_registry().blame(e)
    if comp is not None:
        return f"{comp.kind} {comp.name!r} ({comp.distribution} {comp.version}) failed: {type(e).__name__}: {text}", 1
    if dist is not None:
        return f"a component of {dist!r} failed: {type(e).__name__}: {text}", 1
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``ptyro``; returns the exit status (0 ok, 1 a component or the machine failed, 2 bad
    input, 130 interrupted, 143 terminated). As the ``ptyro`` process itself (``argv`` None), a
    run that imported JAX ends without the interpreter's shutdown (:func:`_end`), and JAX is
    imported without the garbage collector (:func:`_imports_without_gc`)."""
    _GC["process"] = argv is None
    status = _main(argv)
    return _end(status) if argv is None else status


_GC = {"process": False}


@contextlib.contextmanager
def _imports_without_gc() -> Iterator[None]:
    """In the ``ptyro`` process, Python's cyclic garbage collector paused while JAX is imported
    (its import alone set off about 300 collections, two of them full: 0.14-0.17 s of the
    0.25-0.33 s the collector took in a warm ``ptyro demo`` on 2 loaded cores; 0.02 s in all with
    this pause, measured), then resumed with what the imports made frozen (out of every later
    collection's way: modules live as long as the process); where it is already paused (the
    demo's whole run), left so. A caller's interpreter (``main(argv)``, a notebook) keeps its
    collector as it is."""
    if not _GC["process"]:
        yield
        return
    paused_here = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused_here:
            gc.freeze()
            gc.enable()


@contextlib.contextmanager
def _importing_jax() -> Iterator[None]:
    """JAX's import in the ``ptyro`` process: without the garbage collector
    (:func:`_imports_without_gc`) and with its ROCm-plugin search narrowed
    (:func:`_rocm_names_only`); a caller's interpreter keeps both as they are."""
    if not _GC["process"]:
        yield
        return
    with _imports_without_gc(), _rocm_names_only():
        yield


#: the JAX module that looks for a ROCm plugin among every installed distribution at its import
_ROCM_SEARCH = "jax._src.numpy.array_constructors"


@contextlib.contextmanager
def _rocm_names_only() -> Iterator[None]:
    """While JAX is imported: its search for a ROCm plugin (``distributions()``, each one's
    ``Name`` read from its metadata and kept if it is ``jax-rocm*-plugin``) is given only the
    distributions whose directory name holds "rocm" (and any whose name is not known without
    reading it), so that it parses no other metadata file: the same plugin found, 0.03 s less
    CPU of a ``ptyro`` start (94 distributions here; measured). Every other caller is given
    them all."""
    import importlib.metadata as md

    original = md.distributions

    def distributions(**kwargs: Any) -> Any:
        found = original(**kwargs)
        if sys._getframe(1).f_globals.get("__name__") != _ROCM_SEARCH:
            return found
        return (d for d in found if "rocm" in str(getattr(d, "_normalized_name", None) or "rocm"))

    md.distributions = distributions  # type: ignore[assignment]
    try:
        yield
    finally:
        md.distributions = original


def _end(status: int) -> int:
    """End the ``ptyro`` process at once when JAX was imported and it is not a distributed run:
    every file is closed by then and stdout/stderr are flushed here; what is skipped is the
    interpreter's teardown of JAX's runtime (about 1 s of a 4 s demo on 2 cores, measured), which
    a warm start would otherwise pay on every run. A distributed run shuts down normally (its
    coordination service must hear that this process ends)."""
    jax_mod = sys.modules.get("jax")
    if jax_mod is None:
        return status
    try:
        from jax._src import distributed

        if distributed.global_state.client is not None:
            return status
    except Exception:  # noqa: BLE001 - an unknown JAX: shut down normally
        return status
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    func = _resolve(args.func) if isinstance(args.func, str) else args.func
    import signal
    import threading

    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with warnings.catch_warnings():
            # library warnings (a cell made orthogonal, ...) as one line each
            warnings.showwarning = _note
            return int(func(args) or 0)
    except _Terminated:
        return _interrupted(143, "ptyro: terminated (SIGTERM); no output written (completed checkpoints are kept)", argv)
    except KeyboardInterrupt:
        return _interrupted(130, "ptyro: interrupted; no output written", argv)
    except Exception as e:  # noqa: BLE001 - one line for what the user can act on, a traceback for our bugs
        if os.environ.get("PTYRO_DEBUG"):
            raise
        failure = _failure_line(e)
        if failure is not None:
            print(f"ptyro: error: {failure[0]}", file=sys.stderr)
            return failure[1]
        if not isinstance(e, (PtyroError, _Error, ValueError, TypeError, LookupError, OSError)):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"ptyro: error: {msg}", file=sys.stderr)
        return 2
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
