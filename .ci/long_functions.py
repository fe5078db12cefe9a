#!/usr/bin/env python3
"""Long functions in the library code (the src/ trees of the packages and plugins).

Prints the longest functions (name, lines from ``def`` to the last line of the body) and fails
(exit 1) when a function is longer than the limit (100 lines) without a reason written beside
it: a comment ``# long: <reason>`` on its ``def`` line or on the line above (above its
decorators, if it has any). Run by .ci/lint; ``--top N`` sets the length of the table,
``--root DIR`` checks another checkout.

    python3 .ci/long_functions.py [--top 15] [--limit 100] [--root .]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

PATTERNS = ("ptyro_*/src/**/*.py", "plugins/*/src/**/*.py")
REASON = re.compile(r"#\s*long:\s*\S")


def functions(path: Path, root: Path) -> list[tuple[int, str, int, bool]]:
    """(lines, qualified name, first line, has a reason) of every function in ``path``."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out: list[tuple[int, str, int, bool]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                n = (child.end_lineno or child.lineno) - child.lineno + 1
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                marked = any(REASON.search(lines[i - 1]) for i in {child.lineno, first - 1} if 1 <= i <= len(lines))
                out.append((n, f"{path.relative_to(root)}:{name}", child.lineno, marked))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(text, str(path)), "")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="checkout to check (default: this one)")
    ap.add_argument("--limit", type=int, default=100, help="longest function allowed without a reason (lines)")
    ap.add_argument("--top", type=int, default=15, help="rows of the table of the longest functions")
    a = ap.parse_args(argv)
    root = Path(a.root).resolve()
    found = sorted((f for pattern in PATTERNS for p in sorted(root.glob(pattern)) for f in functions(p, root)), reverse=True)
    print(f"longest library functions ({len(found)} functions; limit {a.limit} lines without a '# long: <reason>' comment):")
    print(f"{'lines':>5}  {'reason':6}  function")
    for n, name, line, marked in found[: a.top]:
        print(f"{n:5d}  {'yes' if marked else '':6}  {name} (line {line})")
    bad = [(n, name, line) for n, name, line, marked in found if n > a.limit and not marked]
    if bad:
        print(f"{len(bad)} function(s) over {a.limit} lines without a reason; add '# long: <reason>' on the def line or above, or split:")
        for n, name, line in bad:
            print(f"  {name} (line {line}): {n} lines")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
