#!/usr/bin/env bash
# A GPU continuation of the shipped model (stage 18) for issue 25: fine-tune it on 3,000 fresh scenes with negatives
# and domain randomisation with effects (configs/tiny-gpu-continuation.yaml), then evaluate it in distribution (ID), out of
# distribution (OOD) and on abstention, and the shipped model's OOD and abstention figures if time is left.
# docs/training.md, "The GPU continuation".
#
# Run from the repository root:   OUT=/some/empty/dir bash tools/gpu_retrain.sh
# Smoke test on a CPU (minutes):  SMOKE=1 OUT=/tmp/x bash tools/gpu_retrain.sh
#
# Everything is written to $OUT as soon as it exists (at most 8 files, each < 16 MB, none deeper than $OUT/a/file):
#   run.log                     this script's log and every command's output (tee'd as it goes)
#   training_log.json           the training run's log (steps, losses, timings, count calibration)
#   tiny-gpu-model.tar.gz       runs/tiny-gpu-model/ (untar in the repository root)
#   eval/eval_report.{json,md}  the new model: ID (acceptance), OOD beside ID, abstention
#   shipped/eval_report.partial.{json,md}  the shipped model: OOD and abstention, when more than 60 s are left (its
#                               ID figures are in models/earthgptx-tiny/eval_report.json)
#   summary.json                the figures side by side, and may_replace_shipped (every ID target met)
#
# The whole script ends within BUDGET_S seconds (default 420): training stops at a deadline (train --deadline), every
# later step runs under a timeout taken from what is left, and each step's files reach $OUT before the next starts.
# Packages the GPU host lacks (rasterio, shapely, pyproj, affine, cligj, click-plugins, jsonschema, referencing, rpds-py,
# jsonschema-specifications; the host has sacrebleu, lxml, attrs, click, certifi) and our venv's transformers (5.24;
# the host has 5.17) come from .whl/: site-cp312.tar.xz and transformers-cp312.tar.xz, the cp312 wheels of our
# venv's versions installed with `pip install --target` and packed with xz (39 MB against 62 MB of wheels; the
# working tree and .whl must stay under 64 MiB together), and any wheels .whl/*.whl, installed after them. If the
# imports fail with the carried transformers, it is dropped for the host's.
# .whl/ is ignored by git; `bash tools/pack_gpu_wheels.sh` rebuilds its two archives (39 MB, about 2 min).
set -uo pipefail

OUT=${OUT:?set OUT to the output folder}
SMOKE=${SMOKE:-0}
BUDGET_S=${BUDGET_S:-$([ "$SMOKE" = 1 ] && echo 900 || echo 420)}
START=$(date +%s)
END=$((START + BUDGET_S))
mkdir -p "$OUT/eval" "$OUT/shipped"
LOG="$OUT/run.log"
export PYTHONUNBUFFERED=1
: >"$LOG"

log() { echo "[gpu_retrain +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
left() { echo $((END - $(date +%s))); }
# run LIMIT_S CMD...: a step under a timeout, its output tee'd to the log; returns its status.
step() {
    local limit=$1
    shift
    if [ "$limit" -le 5 ]; then
        log "SKIPPED (only ${limit}s left): $*"
        return 124
    fi
    log "start (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    log "end (rc $rc): $1 ..."
    return "$rc"
}

PY=${PYTHON:-python3}
if [ "$SMOKE" = 1 ]; then
    # A few scenes and steps on the CPU, the same steps and files; the data and model go to their own folders.
    N_SCENES=${N_SCENES:-12}
    DEVICE=cpu
    TRAIN_ARGS=(--steps 6 --no-progress --threads 2 --workers 2)
    EVAL_ARGS=(--n-eval-scenes 2 --n-ood-scenes 2 --n-abstention-scenes 6 --workers 2 --threads 2 --batch-size 64)
    SHIPPED_EVAL_ARGS=(--n-ood-scenes 2 --n-abstention-scenes 6 --workers 2 --threads 2 --batch-size 64)
    PREFIX=smoke-
    TRAIN_END_S=$((BUDGET_S - 200))
    WORKERS=2
    N_EVAL=2 N_OOD=2 N_ABSTENTION=6
else
    N_SCENES=${N_SCENES:-3000}
    DEVICE=cuda
    TRAIN_ARGS=(--no-progress)
    EVAL_ARGS=(--batch-size 256)
    SHIPPED_EVAL_ARGS=(--batch-size 256)
    PREFIX=
    # Training (with its data encoding) ends this long after the start; then the save and the evaluations.
    TRAIN_END_S=${TRAIN_END_S:-200}
    WORKERS=0
    N_EVAL=300 N_OOD=300 N_ABSTENTION=100  # the recipe's (configs/tiny-common.yaml, recipe defaults)
fi
CONFIG=configs/tiny-gpu-continuation.yaml
TRAIN_DIR=data/generated/${PREFIX}tiny-train-s11-areas
EVAL_DIR=data/generated/${PREFIX}tiny-eval
OOD_DIR=data/generated/${PREFIX}tiny-ood
ABSTENTION_DIR=data/generated/${PREFIX}tiny-abstention
MODEL_DIR=runs/${PREFIX}tiny-gpu-model
CHECKPOINT_DIR=runs/${PREFIX}tiny-gpu
SHIPPED=models/earthgptx-tiny
DIRS=(--eval-dir "$EVAL_DIR" --ood-dir "$OOD_DIR" --abstention-dir "$ABSTENTION_DIR")

log "GPU continuation of the shipped model on $(hostname): SMOKE=$SMOKE, budget ${BUDGET_S}s, $N_SCENES training scenes, device $DEVICE, $(nproc) cores"

# (a) packages --------------------------------------------------------------------------------------------------
SITE=${SITE:-/tmp/site}
if [ "$SMOKE" != 1 ] || [ "${SMOKE_INSTALL:-0}" = 1 ]; then
    mkdir -p "$SITE"
    for packed in .whl/*.tar.xz; do
        [ -f "$packed" ] || continue
        # Python's own tarfile/lzma, so the host needs no xz binary.
        step 120 "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$packed" "$SITE"
    done
    if compgen -G ".whl/*.whl" >/dev/null; then
        step 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    fi
    export PYTHONPATH="$SITE:$PWD"
else
    export PYTHONPATH="$PWD"
fi
if ! step 120 "$PY" tools/gpu_retrain.py imports; then
    # The carried transformers (our venv's 5.24, which ran on this host before) is dropped for the host's own if it
    # is what fails, e.g. on a dependency's version.
    if [ -d "$SITE/transformers" ]; then
        log "retrying the imports with the host's transformers"
        rm -rf "$SITE/transformers" "$SITE"/transformers-*.dist-info
        step 120 "$PY" tools/gpu_retrain.py imports || { log "missing packages: stopping"; exit 1; }
    else
        log "missing packages: stopping"
        exit 1
    fi
fi
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>&1 | tee -a "$LOG"
fi

# (b) data: the training scenes on every core; the held-out sets while nothing else runs ---------------------------
NEG_ARGS=(--negatives --randomise 0.5)
step $(($(left) - 300 > 120 ? 120 : $(left) - 60)) "$PY" -m earthgptx.data.generate --out "$TRAIN_DIR" --scenes "$N_SCENES" \
    --seed 11 "${NEG_ARGS[@]}" --workers "$( [ "$WORKERS" = 0 ] && nproc || echo "$WORKERS")" --no-progress
GEN_RC=$?
[ "$GEN_RC" = 0 ] || log "training data generation failed (rc $GEN_RC); training will try to generate it itself"
EVAL_DATA_LOG=$(mktemp)  # not under $OUT: at most 8 files come back, and the log is appended to run.log
# The three evaluation sets are generated in the background while the GPU trains (the OOD renderer runs in one
# process); the evaluations wait for them and then reuse them (same settings, so ensure_* finds them complete).
(
    "$PY" -m earthgptx.data.ood_render --out "$OOD_DIR" --scenes "$N_OOD" --seed 4242 --no-progress
    "$PY" -m earthgptx.data.generate --out "$EVAL_DIR" --scenes "$N_EVAL" --seed 90210 --workers 4 --no-progress
    "$PY" -m earthgptx.data.generate --out "$ABSTENTION_DIR" --scenes "$N_ABSTENTION" --seed 90211 --negatives \
        --workers 4 --no-progress
) >"$EVAL_DATA_LOG" 2>&1 &
EVAL_DATA_PID=$!

# (c) training on the GPU until the deadline, then save and count calibration ---------------------------------------
DEADLINE=$((START + TRAIN_END_S))
step $(($(left) - 130)) "$PY" -m earthgptx.training.train --config "$CONFIG" --device "$DEVICE" --deadline "$DEADLINE" \
    --train-dir "$TRAIN_DIR" --n-scenes "$N_SCENES" --out "$MODEL_DIR" --checkpoint-dir "$CHECKPOINT_DIR" "${TRAIN_ARGS[@]}"
TRAIN_RC=$?
if [ -f "$MODEL_DIR/training_log.json" ]; then
    cp "$MODEL_DIR/training_log.json" "$OUT/training_log.json"
    tar -czf "$OUT/tiny-gpu-model.tar.gz" --exclude='eval_report*' \
        --transform "s,^${MODEL_DIR#runs/},tiny-gpu-model," -C runs "${MODEL_DIR#runs/}"
    log "model packed: $(du -b "$OUT/tiny-gpu-model.tar.gz" | cut -f1) bytes (train rc $TRAIN_RC)"
else
    log "training wrote no model (rc $TRAIN_RC)"
fi

# (d) evaluation: the new model (ID decides; then OOD beside it and abstention), then the shipped model ---------------
wait "$EVAL_DATA_PID"
log "evaluation data generated in the background (rc $?):"
cat "$EVAL_DATA_LOG" >>"$LOG"
if [ -f "$MODEL_DIR/model.safetensors" ]; then
    step $(($(left) - 75)) "$PY" -m earthgptx.training.evaluate --config "$CONFIG" --model "$MODEL_DIR" --device "$DEVICE" \
        "${DIRS[@]}" "${EVAL_ARGS[@]}" --report-dir "$OUT/eval" --no-progress --no-fail
    # Beside the ID figures just measured when the ID report exists, else beside the shipped model's.
    REFERENCE="$OUT/eval/eval_report.json"
    [ -f "$REFERENCE" ] || REFERENCE="$SHIPPED/eval_report.json"
    step $(($(left) - 45)) "$PY" -m earthgptx.training.evaluate --config "$CONFIG" --model "$MODEL_DIR" --device "$DEVICE" \
        --no-id --ood --abstention --reference-report "$REFERENCE" "${DIRS[@]}" "${EVAL_ARGS[@]}" \
        --report-dir "$OUT/eval/ood" --no-progress --no-fail
    # The OOD and abstention sections join the ID report, so eval/ holds one report (two files).
    "$PY" - "$OUT/eval" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path
from earthgptx.training import scoring
out = Path(sys.argv[1])
full, extra = out / "eval_report.json", out / "ood" / "eval_report.partial.json"
if full.is_file() and extra.is_file():
    report = json.loads(full.read_text())
    more = json.loads(extra.read_text())
    for key in ("ood", "abstention"):
        if key in more:
            report[key] = more[key]
    report["timings_s"]["ood_abstention"] = more.get("timings_s")
    (out / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = (out / "eval_report.md").read_text().rstrip("\n") + "\n\n" + scoring.extra_markdown(report)
    (out / "eval_report.md").write_text(md)
    print("merged the OOD and abstention figures into", full)
elif extra.is_file():
    for name in ("eval_report.partial.json", "eval_report.partial.md"):
        (out / name).write_bytes((out / "ood" / name).read_bytes())
    print("no ID report: the OOD and abstention report is", out / "eval_report.partial.json")
EOF
    rm -rf "$OUT/eval/ood"
else
    log "no new model to evaluate"
fi
if [ "$(left)" -gt 60 ]; then
    step $(($(left) - 12)) "$PY" -m earthgptx.training.evaluate --config "$CONFIG" --model "$SHIPPED" --device "$DEVICE" \
        --no-id --ood --abstention --reference-report "$SHIPPED/eval_report.json" "${DIRS[@]}" "${SHIPPED_EVAL_ARGS[@]}" \
        --report-dir "$OUT/shipped" --no-progress --no-fail
else
    log "no time left for the shipped model's OOD and abstention figures"
fi

# (e) summary ------------------------------------------------------------------------------------------------------
"$PY" tools/gpu_retrain.py summary "$OUT" 2>&1 | tee -a "$LOG"
log "done in $(($(date +%s) - START))s; files in OUT:"
find "$OUT" -type f -printf '%s\t%P\n' | sort -k2 | tee -a "$LOG"
