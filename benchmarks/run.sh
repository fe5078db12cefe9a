#!/usr/bin/env sh
# One command for the whole benchmark (see benchmarks/README.md):
#   benchmarks/run.sh [--quick] [--only sim-a,recon-a] [--rounds N] [--skip-install]
set -e
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || uv sync -q
exec .venv/bin/python benchmarks/runner.py "$@"
