#!/usr/bin/env sh
# One command for the whole benchmark (see benchmarks/README.md):
#   benchmarks/run.sh [--quick] [--only sim-a,recon-a] [--rounds N] [--skip-install]
set -e
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    # the workspace venv, as the README's commands make it
    if command -v uv >/dev/null 2>&1; then uv sync -q; else python3 -m pip install -q uv && python3 -m uv sync -q; fi
fi
exec .venv/bin/python benchmarks/runner.py "$@"
