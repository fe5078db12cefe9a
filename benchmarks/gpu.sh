#!/usr/bin/env bash
# The GPU benchmark, one prepared command (see benchmarks/README.md, "On a GPU"):
#   benchmarks/gpu.sh             on the GPU machine: SIM-A, RECON-A, RECON-L 6 slices / 12 modes at
#                                 batch 16, 64, 256 (3 passes each), ours and PtyRAD 1.0.0, one JSON
#                                 (benchmarks/results/gpu.json); about 8 minutes on one H100/H200
#   benchmarks/gpu.sh --dry-run   here, on the CPU: the same code path on a tiny case
# The GPU machine's python3 already has JAX (CUDA) and PyTorch; what it lacks (our distributions,
# PtyRAD and the few packages they need that it does not have) travels as wheels in .whl/, made
# here by benchmarks/gpu_prepare.sh, because that machine reaches no package index.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ "${1:-}" = "--dry-run" ]; then
    if [ ! -x .venv/bin/python ]; then python3 -m pip install -q uv && python3 -m uv sync -q; fi
    exec .venv/bin/python benchmarks/gpu_bench.py "$@"
fi
if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu.sh: no wheels in .whl/: run benchmarks/gpu_prepare.sh on a machine with a package index first" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
exec python3 benchmarks/gpu_bench.py "$@"
