"""``ptyro live``: the subcommand's parser and its run function (imports nothing heavy until it
runs)."""

import argparse
from typing import Any

__all__ = ["add_live_parser"]


def add_live_parser(sub: Any, add_common: Any = None) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "live", help="reconstruct live from a detector stream, with a web view",
        description="Receive one series from a detector stream (SPEC dectris://HOST:PORT for DECTRIS Stream V2, "
        "replay:PATH for a dataset file) and process it as it arrives: virtual BF/ADF images, centre of mass, DPC and "
        "an iterative ptychographic reconstruction refined while the scan fills in. Every frame is counted "
        "(received / processed / dropped); OUT.h5 is written atomically at the end, marked incomplete when the "
        "session was interrupted or the stream died. The configuration's [scan] gives the scan shape and step, "
        "[probe] the optics, [reconstruction] the algorithm, [live] the buffer and detectors (docs/live.md).",
    )  # fmt: skip
    p.add_argument("--source", required=True, metavar="SPEC", help="dectris://HOST:PORT, merlin://HOST:PORT or replay:PATH (or a plugin's NAME:ADDRESS)")
    p.add_argument("--config", metavar="CONFIG.toml", help="[scan], [probe], [reconstruction] and [live] tables")
    p.add_argument("-o", "--out", metavar="OUT.h5", default="live.h5", help="output file (default: live.h5)")
    p.add_argument("--fps", type=float, default=0.0, metavar="N", help="replay: frames per second (default 0: as fast as possible)")
    p.add_argument("--scan-gpts", type=int, nargs=2, metavar=("RX", "RY"), help="scan shape ([scan] gpts)")
    p.add_argument("--step", type=float, nargs="+", metavar="A", help="scan step in Å, one or two values ([scan] step)")
    p.add_argument("--energy", type=float, metavar="EV", help="beam energy in eV ([probe] energy)")
    p.add_argument("--buffer-frames", type=int, metavar="N", help="frames buffered between receiver and processing ([live] buffer_frames)")
    p.add_argument(
        "--overflow",
        choices=("spill", "drop"),
        help="when the buffer is full: spill frames to a temporary file beside OUT.h5 (default; nothing lost) or drop them (counted) ([live] overflow)",
    )
    p.add_argument("--final-passes", type=int, metavar="N", help="reconstruction passes after the last frame ([live] final_passes)")
    p.add_argument("--no-ptychography", action="store_true", help="virtual detectors only")
    p.add_argument("--save-frames", action="store_true", help="store the raw frames in the output too ([live] save_frames)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="dectris: seconds without a message before the stream counts as dead (default 10)")
    v = p.add_argument_group("live view")
    v.add_argument("--view", action=argparse.BooleanOptionalAction, default=True, help="serve the live web page (default: on)")
    v.add_argument("--host", default="127.0.0.1", help="address the view binds to (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    v.add_argument("--port", type=int, default=5006, help="port of the view (default 5006)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no status line")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ptyro_workflows.config import load_config
    from ptyro_workflows.live.app import run_live
    from ptyro_workflows.live.sources import parse_spec

    cfg = load_config(args.config)
    if args.scan_gpts:
        cfg.setdefault("scan", {})["gpts"] = list(args.scan_gpts)
    if args.step:
        cfg.setdefault("scan", {})["step"] = args.step * 2 if len(args.step) == 1 else args.step[:2]
    if args.energy is not None:
        cfg.setdefault("probe", {})["energy"] = args.energy
    live = cfg.setdefault("live", {})
    if args.buffer_frames is not None:
        live["buffer_frames"] = args.buffer_frames
    if args.overflow is not None:
        live["overflow"] = args.overflow
    if args.final_passes is not None:
        live["final_passes"] = args.final_passes
    if args.no_ptychography:
        live["ptychography"] = False
    if args.save_frames:
        live["save_frames"] = True
    name, _ = parse_spec(args.source)
    opts = {"fps": args.fps} if name == "replay" else ({"timeout": args.timeout} if name in ("dectris", "merlin") else {})
    try:
        res = run_live(args.source, cfg, args.out, overwrite=args.overwrite, source_options=opts, view=args.view, host=args.host,
                       port=args.port, progress=not args.quiet, energy_given=args.energy is not None or "energy" in (cfg.get("probe") or {}))  # fmt: skip
    except KeyboardInterrupt:
        import sys

        print(f"ptyro: interrupted; wrote what was received to {args.out}, marked incomplete", file=sys.stderr)
        return 130
    s = res.stats
    if not args.quiet:
        print(f"wrote {res.path}{'' if res.complete else ' (INCOMPLETE)'}")
        print(
            f"  frames: expected {s['expected']}, received {s['received']}, processed {s['processed']}, dropped {s['dropped']}, "
            f"spilled to disk {s['spilled']}, rejected {s['rejected']}"
        )
        print(f"  latency from the last frame to the written file: {res.latency:.2f} s")
        for n in s.get("notes", []):
            print(f"  note: {n}")
    return 0 if res.complete else 3
