"""``ptyro plugins``: the listing of registered components (shared by the ``ptyro`` command)."""

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the registry (and JAX) is imported when the listing runs, not for --help
    from ptyro_core.registry import Registry


def add_plugins_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plugins",
        help="list the registered components and any broken plugins",
        description="List every component registered through the 'ptyrodactyl' entry points "
        "(kind, name, description, distribution, version), and the plugins that failed to load "
        "with their errors. Broken plugins never hide healthy ones. Exit status 0, or 1 with "
        "--strict when any plugin is broken.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object {components: [...], broken: [...]}")
    p.add_argument("--kind", help="only components of this kind")
    p.add_argument(
        "--strict",
        action="store_true",
        help="import and check every component first (a listing alone imports none), and exit with status 1 if any plugin is broken",
    )
    p.set_defaults(func=run_plugins)
    return p


def run_plugins(args: argparse.Namespace, registry: "Registry | None" = None, out: TextIO | None = None) -> int:
    from ptyro_core.registry import get_registry

    reg = registry or get_registry()
    out = out or sys.stdout
    if args.strict:
        reg.resolve_all()
    data = reg.as_json()
    if args.kind:
        data["components"] = [c for c in data["components"] if c["kind"] == args.kind]
    if args.json:
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        rows = [(c["kind"], c["name"], c["distribution"], c["version"], c["description"]) for c in data["components"]]
        header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "DESCRIPTION")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
        for r in [header, *rows]:
            out.write("  ".join(str(v).ljust(w) for v, w in zip(r[:4], widths)) + "  " + r[4] + "\n")
        if not rows:
            out.write("(no components registered)\n")
        if data["broken"]:
            out.write(f"\n{len(data['broken'])} broken plugin(s) or component(s), left out:\n")
            for b in data["broken"]:
                what = f" [{b['kind']} {b['name']!r}]" if b.get("name") else ""
                out.write(f"  {b['plugin']} ({b['distribution']} {b['version']}){what}: {b['error']}\n")
    return 1 if (args.strict and data["broken"]) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ptyro_core", description="Ptyrodactyl core tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_plugins_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)
