#!/usr/bin/env bash
# Every GPU check in one go, for a machine with CUDA (the device checks no CPU machine can make): the `gpu` tests,
# then each benchmark's --device cuda rows (float16/AMP where the benchmark has it). Figures go to stdout and to
# ${OUT:-benchmarks/gpu-out}/<name>.txt, so they can be copied into benchmarks/README.md.
#   scripts/setup.sh && source .venv/bin/activate && bash benchmarks/gpu.sh
# Each step has its own time limit and a failing step does not stop the others; the exit status says if any failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-benchmarks/gpu-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
failed=0
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*" | tee "$out/$name.txt"
  timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  [[ $rc -eq 0 ]] || { echo "=== $name failed (rc $rc)" | tee -a "$out/$name.txt"; failed=1; }
}
step gpu-tests 300 pytest -q -m gpu -p no:cacheprovider
step models 120 python benchmarks/models.py --device cuda --amp
step embed 180 python benchmarks/embed.py --device cuda
step faces 180 python benchmarks/faces.py --device cuda --tables 1 3
step asr 120 python benchmarks/asr.py --device cuda
step train 300 python benchmarks/train.py --device cuda --amp both --workers 8
exit $failed
