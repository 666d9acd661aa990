#!/usr/bin/env bash
# The one prepared device check (see benchmarks/gpu_check.py), for a lent GPU machine.
# That machine has python3 with torch, torchaudio, numpy, scipy, typer, rich, safetensors and matplotlib,
# but not monai, nibabel, pydicom or soundfile, and it cannot download: `make gpu-wheels` fetches
# those here into .gpu_wheels/, and the device call carries them:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_wheels"], timeout_s=540)
set -euo pipefail
if ! ls .gpu_wheels/*.whl >/dev/null 2>&1; then
    echo "no wheels in .gpu_wheels/: run 'make gpu-wheels' first and carry .gpu_wheels" >&2
    exit 2
fi
deps=/tmp/mis_gpu_deps
python3 -m pip install -q --no-index --no-deps --target "$deps" .gpu_wheels/*.whl
export PYTHONPATH="$PWD/src:$deps"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 benchmarks/gpu_check.py --out "${OUT:-.}" "$@"
