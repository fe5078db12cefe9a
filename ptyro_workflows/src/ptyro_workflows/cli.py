"""The ``ptyro`` command."""

import argparse
import sys

from ptyro_core.cli import add_plugins_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptyro", description="Ptyrodactyl: electron microscopy simulation and ptychography in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_plugins_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
