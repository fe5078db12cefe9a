#!/usr/bin/env bash
# Makes .whl/ for benchmarks/gpu.sh: wheels of every workspace member (pure Python) and of what
# the GPU machine's image lacks for them and for PtyRAD 1.0.0 (CPython 3.12, manylinux x86-64).
# The image already holds jax (CUDA), torch, numpy, scipy, h5py, matplotlib, pluggy, attrs,
# jaxtyping, tqdm, pyyaml, scikit-learn, tifffile, accelerate (device tool's package list).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip install -q uv
for m in ptyro_core ptyro_simul ptyro_invert ptyro_workflows plugins/ptyro-lobato plugins/ptyro-prism plugins/ptyro-robust-losses; do
    python3 -m uv build -q --wheel -o .whl "$m"
done
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl \
    ptyrad==1.0.0 beartype pydantic pydantic-core annotated-types typing-inspection
ls -1 .whl
