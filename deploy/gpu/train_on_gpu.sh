#!/usr/bin/env bash
# Train the `tiny` EarthGPT-X model on a GPU host within a hard wall-clock budget, evaluate it on the held-out
# set, and copy the checkpoint into $OUT/model/.
#
#   bash deploy/gpu/train_on_gpu.sh --time-budget-s 480            # from the repository root
#   bash deploy/gpu/train_on_gpu.sh --smoke --time-budget-s 240    # tiny settings, any host (CPU is fine)
#   bash deploy/gpu/train_on_gpu.sh --config configs/tiny.yaml --init-from models/earthgptx-tiny \
#       --train-seed 7 --time-budget-s 480       # continue the shipped model, all tasks, on scenes it never saw
#
# The budget covers everything this script does: installing the wheels in .whl/ (rasterio, shapely, pyproj,
# affine, jsonschema ... for hosts without them), generating the training and held-out data with every core,
# pre-encoding, training (the cosine schedule spans the steps that fit, estimated from a timing warm-up; the run
# stops and saves at its deadline), and evaluation (cut short by `timeout` if it would overrun; the model is
# copied out before it starts). Needs python3 with torch, transformers, tokenizers, safetensors, numpy, tqdm,
# pyyaml, sacrebleu; pycocoevalcap is optional (CIDEr is then reported as NaN).
#
# Output (at most 8 files, each well under 16 MB): $OUT/model/{model.safetensors (fp16 weights, fp32 config),
# config.json, tokenizer.json, tokenizer_config.json, processor_config.json, training_log.json,
# eval_report.json, eval_report.md}.
set -euo pipefail
export PYTHONUNBUFFERED=1

START=$(date +%s)
BUDGET=480
SMOKE=0
N_SCENES=4000
N_EVAL_SCENES=300
BATCH=128
LR=4e-4
WARMUP=300
EVAL_RESERVE=75
EVAL_BATCH=256
PY=${PYTHON:-python3}
WORK=${EGX_GPU_WORK:-/tmp/egx-gpu}
CONFIG=configs/tiny-stage1.yaml   # from scratch: vision pre-training + one-stage training (no stage-1 folder needed)
INIT_FROM=""                      # --init-from DIR: start from a saved model (its config and tokenizer)
TRAIN_SEED=""                     # --train-seed N: training scenes of another seed (default: the config's)

while [[ $# -gt 0 ]]; do
  case "$1" in
    --time-budget-s) BUDGET=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --n-scenes) N_SCENES=$2; shift 2 ;;
    --n-eval-scenes) N_EVAL_SCENES=$2; shift 2 ;;
    --batch-size) BATCH=$2; shift 2 ;;
    --lr) LR=$2; shift 2 ;;
    --warmup-steps) WARMUP=$2; shift 2 ;;
    --eval-reserve-s) EVAL_RESERVE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --init-from) INIT_FROM=$2; shift 2 ;;
    --train-seed) TRAIN_SEED=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [[ $SMOKE == 1 ]]; then
  N_SCENES=24; N_EVAL_SCENES=4; BATCH=8; WARMUP=5; EVAL_RESERVE=40; EVAL_BATCH=32
fi
OUT=${OUT:-$PWD/runs/gpu-out}
mkdir -p "$OUT/model" "$WORK"
log() { echo "[train_on_gpu $(( $(date +%s) - START ))s] $*"; }

# Wheels for what the host lacks go into a private folder; they never touch the host's own environment.
if ! "$PY" -c "import rasterio, shapely, pyproj, affine, jsonschema" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  log "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $WORK/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl
  export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'cores', len(__import__('os').sched_getaffinity(0)))"
# Fail in seconds, not after data generation, if an import is missing on this host.
"$PY" -c "import earthgptx.data, earthgptx.model, earthgptx.training.train, earthgptx.training.evaluate"

END=$(( START + BUDGET ))
TRAIN_DEADLINE=$(( END - EVAL_RESERVE ))
STEPS=1000000
[[ $SMOKE == 1 ]] && STEPS=20
log "budget ${BUDGET}s: training must end by +$(( TRAIN_DEADLINE - START ))s, everything by +${BUDGET}s"

"$PY" -m earthgptx.training.train --config "$CONFIG" --no-progress \
  --deadline "$TRAIN_DEADLINE" --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --warmup-steps "$WARMUP" \
  --n-scenes "$N_SCENES" --workers 0 --train-dir "$WORK/train" --checkpoint-dir "$WORK/checkpoints" \
  --out "$WORK/model" ${INIT_FROM:+--init-from "$INIT_FROM"} ${TRAIN_SEED:+--train-seed "$TRAIN_SEED"}
log "training done"

# The checkpoint comes back even if the evaluation below runs out of time.
cp "$WORK/model/"{model.safetensors,config.json,tokenizer.json,tokenizer_config.json,processor_config.json,training_log.json} "$OUT/model/"

LEFT=$(( END - $(date +%s) - 3 ))
if (( LEFT > 10 )); then
  log "evaluating (at most ${LEFT}s)"
  timeout --signal=TERM "$LEFT" "$PY" -m earthgptx.training.evaluate --config "$CONFIG" --model "$WORK/model" \
    --no-progress --no-fail --workers 0 --n-eval-scenes "$N_EVAL_SCENES" --eval-dir "$WORK/eval-seed" \
    --batch-size "$EVAL_BATCH" \
    || log "evaluation did not finish (exit $?)"
  for f in eval_report.json eval_report.md; do
    [[ -f "$WORK/model/$f" ]] && cp "$WORK/model/$f" "$OUT/model/"
  done
else
  log "no time left for the evaluation"
fi
ls -l "$OUT/model"
log "done"
