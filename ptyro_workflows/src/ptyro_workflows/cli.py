"""The ``ptyro`` command: a thin layer over the Python API of :mod:`ptyro_workflows`.

Subcommands: ``demo``, ``simulate``, ``reconstruct``, ``info``, ``plugins``. Every configuration
key is also a flag (``--help`` lists them with units). Bad input gives one line
``ptyro: error: ...`` on stderr and exit status 2, and nothing is written.
"""

import argparse
import json
import os
import re
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

from ptyro_core import PtyroError
from ptyro_core.cli import add_plugins_parser
from ptyro_workflows.config import ABERRATION_KEYS, DESCRIPTIONS, SCHEMA

__all__ = ["build_parser", "main"]

_SIM_TABLES = ("specimen", "potential", "probe", "scan", "frozen_phonons", "simulation")
_REC_TABLES = ("probe", "scan", "reconstruction")
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
        for k in SCHEMA[t]:
            count[k] = count.get(k, 0) + 1
    out = {}
    for t in tables:
        for k in SCHEMA[t]:
            if (t, k) in _SKIP:
                continue
            name = k if count[k] == 1 else f"{t}-{k}"
            if t == "probe" and k == "name":
                name = "probe"
            out[(t, k)] = "--" + name.replace("_", "-") if k not in ABERRATION_KEYS else "--" + k
    return out


def _add_config_flags(p: argparse.ArgumentParser, tables: Sequence[str], *, skip: set[str] = frozenset()) -> dict[tuple[str, str], str]:
    flags = _flag_names(tables)
    groups = {t: p.add_argument_group(f"[{t}] table (TOML values: numbers, [x, y] lists, strings)") for t in tables}
    aberr = p.add_argument_group("[probe] aberrations (magnitudes in Å, azimuths in degrees)") if "probe" in tables else None
    used = {}
    for (t, k), flag in flags.items():
        if flag in skip:
            continue
        dest = f"cfg__{t}__{k}"
        default = SCHEMA[t][k]
        desc = DESCRIPTIONS.get(t, {}).get(k, "")
        if default is not None and default != {}:
            desc += f" (default: {default})"
        grp = aberr if (t == "probe" and k in ABERRATION_KEYS) else groups[t]
        grp.add_argument(flag, dest=dest, metavar="VALUE", type=_toml_value, default=None, help=desc)
        used[(t, k)] = dest
    return used


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output and run control")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse)")
    g.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (implies --no-progress)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    m = p.add_argument_group("multi-host (jax.distributed)")
    m.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 of a multi-process run")
    m.add_argument("--num-processes", type=int, metavar="N", help="number of processes of the run")
    m.add_argument("--process-id", type=int, metavar="I", help="index of this process (0..N-1)")
    m.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run described by the cluster environment (SLURM, Open MPI, ...): "
        "jax.distributed.initialize() with no arguments",
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ptyro",
        description="Ptyrodactyl: electron microscopy simulation and ptychography in JAX. "
        "Units: Å, eV, mrad; azimuths in degrees; array axis 0 = x.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    add_plugins_parser(sub)

    # demo
    d = sub.add_parser("demo", help="simulate a built-in crystal and reconstruct it (no input needed)",
                       description="Simulate a 4D-STEM dataset of SrTiO3 [001], reconstruct it with single-slice "
                       "ptychography, and write the dataset, the reconstruction and PNG figures into DIR; print what "
                       "was written and the quality reached (phase correlation with the ground truth σ·ΣV).")
    d.add_argument("--out", default="ptyro-demo", metavar="DIR", help="output directory (default: ./ptyro-demo)")
    d.add_argument("--iterations", type=int, default=None, help="reconstruction iterations (default: the demo's)")
    _add_common(d)
    d.set_defaults(func=_run_demo)

    # simulate
    s = sub.add_parser("simulate", help="simulate a 4D-STEM dataset from a TOML configuration",
                       description="Simulate a 4D-STEM dataset as CONFIG says (every key also settable as a flag; "
                       "flags override the file) and write it as an EMD 1.0 HDF5 file (py4DSTEM reads it), "
                       "batch by batch, with virtual detector images and provenance.")
    s.add_argument("config", nargs="?", metavar="CONFIG.toml", help="simulation configuration (default: all defaults)")
    s.add_argument("-o", "--out", metavar="OUT.h5", default="simulation.h5", help="output file (default: simulation.h5)")
    s.add_argument("--detector", action="append", type=_kv, default=[], metavar="NAME=INNER,OUTER",
                   help="annular detector in mrad, e.g. haadf=70,200 (repeatable; [detectors] table)")
    s.add_argument("--pixelated", action=argparse.BooleanOptionalAction, default=None, help="store the 4D data ([detectors] pixelated; default: true)")
    s.add_argument("--simulator-option", action="append", type=_kv, default=[], metavar="KEY=VALUE", help="option passed to the simulator ([simulation.options]; repeatable)")
    _add_config_flags(s, _SIM_TABLES)
    _add_common(s)
    _add_preflight(s)
    s.set_defaults(func=_run_simulate)

    # reconstruct
    r = sub.add_parser("reconstruct", help="reconstruct a 4D-STEM dataset by ptychography",
                       description="Reconstruct DATA (our EMD files, EMD 1.0 files from py4DSTEM, or a .npy 4D array "
                       "(Rx, Ry, Qx, Qy) with calibrations given as flags) and write the object, probe, positions and loss "
                       "as HDF5 with provenance.")
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
    r.add_argument("--algorithm-option", action="append", type=_kv, default=[], metavar="KEY=VALUE", help="option passed to the algorithm ([reconstruction.options]; repeatable)")
    cal = r.add_argument_group("calibration of files that lack it (.npy, uncalibrated EMD)")
    cal.add_argument("--energy", type=float, metavar="EV", help="beam energy in eV (also [probe] energy)")
    cal.add_argument("--scan-step", type=_toml_value, metavar="A", help="scan step in Å, scalar or [dx, dy] (also [scan] step)")
    cal.add_argument("--sampling", type=_toml_value, metavar="A", help="real-space pixel of the probe grid in Å")
    cal.add_argument("--reciprocal-sampling", type=_toml_value, metavar="1/A", help="detector pixel in Å⁻¹")
    _add_config_flags(r, _REC_TABLES, skip={"--energy", "--step"})
    _add_common(r)
    _add_preflight(r)
    r.set_defaults(func=_run_reconstruct)

    # info
    i = sub.add_parser("info", help="what a file holds (arrays, shapes, calibrations, provenance)",
                       description="Describe a dataset, reconstruction or .npy file: every array with shape, dtype, units and "
                       "calibrations, and the provenance (configuration, components, versions, seed).")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--json", action="store_true", help="print a JSON object")
    i.set_defaults(func=_run_info)
    return parser


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
            raise _Error(f"--distributed: no cluster environment found ({str(e).splitlines()[0]}); pass --coordinator, --num-processes and --process-id") from None


# --------------------------------------------------------------------------- commands


def _run_simulate(args: argparse.Namespace) -> int:
    from ptyro_workflows.config import load_config, merge
    from ptyro_workflows.io import check_output
    from ptyro_workflows.simulate import simulate

    base = load_config(args.config)
    over = _collect(args)
    if args.detector:
        over.setdefault("detectors", {}).update(dict(args.detector))
    if args.pixelated is not None:
        over.setdefault("detectors", {})["pixelated"] = args.pixelated
    if args.simulator_option:
        over.setdefault("simulation", {})["options"] = {**(base.get("simulation", {}).get("options") or {}), **dict(args.simulator_option)}
    cfg = merge(base, over)
    check_output(args.out, args.overwrite)
    if args.dry_run:
        from ptyro_workflows.config import simulation_config
        from ptyro_workflows.preflight import format_plan, plan_simulation

        print("\n".join(format_plan(plan_simulation(simulation_config(cfg), args.out, keep=False))))
        return 0
    _distributed(args)
    res = simulate(cfg, args.out, overwrite=args.overwrite, progress=_progress(args), keep=False, command=["ptyro", *sys.argv[1:]], force=args.force)
    _say(args, f"wrote {res.path}", *(f"  virtual image {k}: mean {v.mean():.4g} (fraction of beam)" for k, v in res.images.items()))
    return 0


def _run_reconstruct(args: argparse.Namespace) -> int:
    from ptyro_workflows.config import load_config, merge, reconstruction_config
    from ptyro_workflows.io import check_outputs, load_dataset, read_file_provenance, save_reconstruction
    from ptyro_workflows.provenance import make_provenance
    from ptyro_workflows.reconstruct import components_used, reconstruct

    base = load_config(args.config)
    over = _collect(args)
    if args.energy is not None:
        over.setdefault("probe", {})["energy"] = args.energy
    if args.scan_step is not None:
        over.setdefault("scan", {})["step"] = args.scan_step
    if args.algorithm_option:
        over.setdefault("reconstruction", {})["options"] = {**(base.get("reconstruction", {}).get("options") or {}), **dict(args.algorithm_option)}
    explicit_energy = (base.get("probe") or {}).get("energy") if args.energy is None else args.energy
    # a full simulation config is accepted: its other tables are kept (provenance) but not read
    cfg = reconstruction_config(merge(base, over))
    ckpt = cfg["reconstruction"].get("checkpoint")
    # every output checked before anything is read or computed: none may be an input, nor each other
    check_outputs({"output": args.out, "checkpoint": None if args.resume else ckpt}, overwrite=args.overwrite, inputs=[args.data, args.resume])
    _distributed(args)
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
    from ptyro_workflows.preflight import check_calibration, check_plan, format_plan, plan_reconstruction

    check_calibration(ds.grid, ds.energy, float(cfg["probe"]["semiangle_cutoff"]), source=str(args.data))
    plan = plan_reconstruction(ds, cfg, args.out, checkpoint=args.resume or ckpt)
    if args.dry_run:
        print("\n".join(format_plan(plan)))
        return 0
    check_plan(plan, force=args.force)
    state = reconstruct(ds, cfg, resume=args.resume, progress=_progress(args), overwrite=args.overwrite)
    source = {}
    if not str(args.data).lower().endswith(".npy"):
        source = read_file_provenance(args.data)
    prov = make_provenance("reconstruction", cfg, components_used(cfg), int(cfg["reconstruction"]["seed"]), command=["ptyro", *sys.argv[1:]], extra={"input": str(args.data), **({"source": source} if source else {})})
    from ptyro_core.pipeline import is_writer

    if is_writer():
        save_reconstruction(args.out, state, provenance=prov, overwrite=args.overwrite)
    import numpy as np

    loss = np.asarray(state.loss)
    _say(args, f"wrote {args.out}", f"  iterations: {int(np.asarray(state.iteration))}, final loss: {loss[-1]:.4g}" if loss.size else "  (no iterations)")
    return 0


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
    from ptyro_workflows.demo import run_demo

    _distributed(args)
    run_demo(args.out, overwrite=args.overwrite, progress=_progress(args), quiet=args.quiet, iterations=args.iterations)
    return 0


# --------------------------------------------------------------------------- entry point


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
    if isinstance(e, PtyroError):
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
    input, 130 interrupted, 143 terminated)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    import signal
    import threading

    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
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
