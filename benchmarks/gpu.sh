#!/usr/bin/env bash
# Every GPU check in one go, for a machine with CUDA (the device checks no CPU machine can make): the `gpu` tests,
# then each benchmark's --device cuda rows, each writing its figures as JSON, then the Aff-Wild2 projection
# (benchmarks/affwild2.py) from them. Output under ${OUT:-benchmarks/gpu-out}/: <step>.txt, <step>.json,
# affwild2.md.
#   In the project's environment:  scripts/setup.sh && source .venv/bin/activate && bash benchmarks/gpu.sh
#   On a bare GPU node (no venv, no network, no ffmpeg; see ../shared/reference/gpu-node/README.md):
#     WHEELS=/path/to/wheels bash benchmarks/gpu.sh
#   installs those wheels into $OUT/site (no index, no deps), puts src/ on PYTHONPATH and, when the system has no
#   FFmpeg 8 libraries, points torchcodec at the copy inside PyAV's wheel.
# Steps: GPU_STEPS="tests faces embed ..." runs a subset. Each step has its own time limit (seconds, scaled by
# GPU_TIME_SCALE); a failing step is reported and the next one runs; a missing optional wheel skips that row
# (the benchmark says so), never the step; the exit status is 1 when any step failed, and they are listed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-benchmarks/gpu-out}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=$(command -v python || command -v python3)
if [[ -n "${WHEELS:-}" ]]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$out/site" "$WHEELS"/*.whl
  export PYTHONPATH="$out/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  if ! ldconfig -p 2>/dev/null | grep -q 'libavutil.so.60' && [[ -d $out/site/av.libs ]]; then
    mkdir -p "$out/fflibs"  # torchcodec looks FFmpeg up by plain names; PyAV ships it under hashed ones
    for l in avutil.60 avcodec.62 avformat.62 avdevice.62 avfilter.11 swscale.9 swresample.6; do
      n=${l%.*}; v=${l##*.}
      for f in "$out"/site/av.libs/lib"$n"-*.so."$v"*; do [[ -e $f ]] && ln -sf "$f" "$out/fflibs/lib$n.so.$v"; done
    done
    export LD_LIBRARY_PATH="$out/fflibs:$out/site/av.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
scale=${GPU_TIME_SCALE:-1}
failed=()
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$(( $2 * scale ))
  shift 2
  [[ -z "${GPU_STEPS:-}" || " $GPU_STEPS " == *" $name "* ]] || return 0
  echo "=== $name ($limit s): $*" | tee "$out/$name.txt"
  timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  [[ $rc -eq 0 ]] || { echo "=== $name failed (rc $rc)" | tee -a "$out/$name.txt"; failed+=("$name (rc $rc)"); }
}
# the files with gpu tests only: collecting the others needs packages a bare node may lack (snakemake, ...)
step tests 300 "$py" -m pytest -q -m gpu -p no:cacheprovider tests/test_faces.py tests/test_backbones_visual.py \
  tests/test_models.py tests/test_training.py tests/test_device_data.py
step models 120 "$py" benchmarks/models.py --device cuda --amp --json "$out/models.json"
step embed 240 "$py" benchmarks/embed.py --device cuda --frames 4000 --json "$out/embed.json"
step faces 240 "$py" benchmarks/faces.py --device cuda --batch-size 128 --tables 1 3 4 --repeat 2 \
  --json "$out/faces.json"
# a job's start-up (imports, CUDA context, MTCNN) against a shard's, on three short videos the checkout ships
step faces_shards 120 "$py" benchmarks/faces.py --device cuda --batch-size 128 --tables 5 \
  --videos tests/data/pyfeat_videos/{single_face.mp4,no_face.mp4,face_noface.mov} --json "$out/faces_shards.json"
step asr 120 "$py" benchmarks/asr.py --device cuda --json "$out/asr.json"
step train 420 "$py" benchmarks/train.py --device cuda --amp all --workers 8 --frames 600000 --clips 120 \
  --batches 30 --json "$out/train.json"
# fusion.compile: eager against torch.compile, features on the device, float32
step train_compile 300 "$py" benchmarks/train.py --device cuda --data device --compile --frames 600000 --clips 120 \
  --batches 30 --json "$out/train_compile.json"
figures=()
for f in faces faces_shards embed asr train train_compile; do [[ -f $out/$f.json ]] && figures+=("$out/$f.json"); done
if (( ${#figures[@]} )); then
  step affwild2 60 "$py" benchmarks/affwild2.py --gpus "${AFFWILD2_GPUS:-8}" "${figures[@]}"
  cp "$out/affwild2.txt" "$out/affwild2.md" 2>/dev/null
fi
if (( ${#failed[@]} )); then
  printf 'failed steps: %s\n' "${failed[*]}" | tee -a "$out/gpu.txt"
  exit 1
fi
echo "all steps passed; figures in $out"
