"""Run the fault battery of issue 17 and print its table (cases tried / held / failed).

    python3 -m uv run python tests/battery/run_battery.py                 # this checkout
    python3 -m uv run python tests/battery/run_battery.py --tree /path/to/another/checkout
    python3 -m uv run python tests/battery/run_battery.py --only resume_other_model,dry_run

Every case runs ``ptyro`` in a subprocess with the sources of ``--tree`` first on ``sys.path``
(so the same environment can judge an older checkout), in a fresh temporary directory.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from battery import CASES, make_fixtures, run_case, table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[2], help="checkout whose sources are judged")
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    only = {s for s in args.only.split(",") if s}
    results = []
    with tempfile.TemporaryDirectory(prefix="battery-fixtures-") as t:
        fixtures = make_fixtures(Path(t), args.tree)
        for name, sev, what, fn in CASES:
            if only and name not in only:
                continue
            t0 = time.time()
            held, note = run_case(fn, fixtures, args.tree, inprocess=False)
            results.append((name, sev, held, note))
            print(f"{'held  ' if held else 'FAILED'} {name} ({time.time() - t0:.0f} s): {note}", file=sys.stderr, flush=True)
    print(f"battery of issue 17 on {args.tree}")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
