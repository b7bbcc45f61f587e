#!/usr/bin/env bash
# clipbench GPU check (issue 19): one prepared script for a CUDA machine, under 10 minutes,
# installing nothing beyond the README's install. Usage:
#
#   bash tests/gpu/check.sh [OUT_DIR]            # OUT_DIR defaults to $OUT, else ./gpu-check
#   bash tests/gpu/check.sh --cpu-dry [OUT_DIR]  # the same entry points, tiny, on the CPU (tested)
#
# Parts, each under its own time limit (a failed part is recorded and the script goes on):
#   1. the device (torch, CUDA, GPU names, bf16, NCCL);
#   2. bf16 CleanCLIP fine-tuning steps of RN50 and ViT-B-32 at 224 px on synthetic in-memory
#      data and on paper_smoke's JPEG CSV through the real loader (images/s, peak GPU memory);
#   3. a torchrun DDP run of the same on all visible GPUs (NCCL);
#   4. the embedded full matrix (clipbench run --attack all --defense all) on the GPU, wall time;
# and writes every figure into OUT_DIR/gpu_check.json (parts in OUT_DIR/parts/).
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--cpu-dry" ]]; then DRY=1; shift; fi
OUT_DIR="${1:-${OUT:-gpu-check}}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python}"
mkdir -p "$OUT_DIR/parts"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PARTS="$OUT_DIR/parts"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/clipbench-gpu-check-XXXXXX")"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 CLIPBENCH_CACHE="$WORK/cache"
cd "$WORK"
START=$(date +%s)

if [[ $DRY == 1 ]]; then
  DEVICE=cpu; ARCHES="clipbench-micro-rn"; BATCH=4; STEPS=1; WARM=1; LBATCH=4; LSTEPS=1; WORKERS=1
  NPROC=2; WORDNET=subset; LIMIT=200
  MATRIX=(--attack badnet --defense none --set data.fraction=0.03 --set poison_train.epochs=1)
else
  DEVICE=cuda; ARCHES="RN50 ViT-B-32"; BATCH=256; STEPS=20; WARM=3; LBATCH=128; LSTEPS=6; WORKERS=$(nproc); WORDNET=auto
  NPROC=$("$PY" -c "import torch; print(max(1, torch.cuda.device_count()))"); LIMIT=240
  MATRIX=(--attack all --defense all)
fi

part() {  # part NAME LIMIT_S COMMAND...: run, time, record the exit status
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tail -n 25
  local rc=${PIPESTATUS[0]}
  echo "{\"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" > "$PARTS/$name.status.json"
  [[ $rc == 0 ]] || echo "!! $name failed (exit $rc)"
}

command -v nvidia-smi >/dev/null && nvidia-smi -L
part device 60 "$PY" "$HERE/gpu_check.py" device "$PARTS/device.json"
for ARCH in $ARCHES; do
  part "memory_$ARCH" "$LIMIT" "$PY" "$HERE/gpu_check.py" train "$PARTS/memory_$ARCH.json" --arch "$ARCH" --data memory \
    --batch "$BATCH" --steps "$STEPS" --warmup "$WARM" --device "$DEVICE" --wordnet "$WORDNET" --work "$WORK"
  part "loader_$ARCH" "$LIMIT" "$PY" "$HERE/gpu_check.py" train "$PARTS/loader_$ARCH.json" --arch "$ARCH" --data loader \
    --batch "$LBATCH" --steps "$LSTEPS" --warmup 1 --workers "$WORKERS" --device "$DEVICE" --wordnet "$WORDNET" --work "$WORK"
done
FIRST=${ARCHES%% *}
part ddp "$LIMIT" "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" "$HERE/gpu_check.py" train \
  "$PARTS/ddp.json" --arch "$FIRST" --data memory --batch "$BATCH" --steps "$STEPS" --warmup "$WARM" --device "$DEVICE" \
  --wordnet "$WORDNET" --work "$WORK"

T0=$(date +%s)
part matrix "$LIMIT" "$PY" -m benchmark.cli run "${MATRIX[@]}" --set device="$DEVICE" --results-dir "$WORK/results" \
  --cache-dir "$WORK/cache" --quiet --no-leaderboard
RC=$("$PY" -c "import json; print(json.load(open('$PARTS/matrix.status.json'))['rc'])")
CELLS=$(find "$WORK/results" -name 'seed-*.json' 2>/dev/null | wc -l)
echo "{\"device\": \"$DEVICE\", \"args\": \"${MATRIX[*]}\", \"wall_s\": $(( $(date +%s) - T0 )), \"rc\": $RC, \"cells\": $CELLS}" \
  > "$PARTS/matrix.json"

"$PY" "$HERE/gpu_check.py" merge "$OUT_DIR/gpu_check.json" "$PARTS"/*.json > /dev/null
echo "== total $(( $(date +%s) - START )) s; figures in $OUT_DIR/gpu_check.json"
"$PY" - "$OUT_DIR/gpu_check.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for k, v in sorted(d.items()):
    if isinstance(v, dict) and "images_per_s" in v:
        mem = v.get("peak_gpu_memory_gib")
        print(f"{k:24s} {v['images_per_s']:8.1f} img/s  world {v['world_size']}  "
              f"peak {mem if mem is None else round(mem, 1)} GiB")
    elif k == "matrix":
        print(f"{k:24s} {v['wall_s']} s, {v['cells']} cells, rc {v['rc']}")
failed = [k for k, v in d.items() if k.endswith(".status") and v.get("rc") != 0]
print("failed parts:", ", ".join(failed) or "none")
sys.exit(1 if failed else 0)
EOF
RC_ALL=$?
rm -rf "$WORK"
exit $RC_ALL
