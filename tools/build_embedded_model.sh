#!/usr/bin/env bash
# Reproduce the embedded default model (ovdet/assets/default_model) end to end from fixed seeds:
#   1. pretrain ShapeWorld's CLIP from scratch (contrastive, captions + crops; novel shapes included)
#   2. generate ShapeWorld detection data: train json with base boxes only, held-out validation (all boxes)
#   3. train the detection head on base shapes (frozen CLIP)
#   4. evaluate on the held-out seed with all 16 names in the vocabulary (AP50 novel / base / all),
#      scoring/template ablations and AP per colour phrase
#   5. export the detector in fp16 into ovdet/assets/default_model
# Usage: make embedded-model   (or: BIN=.venv/bin WORK=artifacts/embedded bash tools/build_embedded_model.sh)
# Each stage is skipped when its output exists, so a failed run resumes where it stopped.
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-artifacts/embedded}
TRAIN_IMAGES=${TRAIN_IMAGES:-8000}
VAL_IMAGES=${VAL_IMAGES:-500}
DET_EPOCHS=${DET_EPOCHS:-3}
RESULTS=${RESULTS:-docs/results/shapeworld}
MODEL_OUT=${MODEL_OUT:-ovdet/assets/default_model}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
start=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }

stage "1/5 pretrain the ShapeWorld CLIP -> $WORK/clip"
if [ ! -f "$WORK/clip/open_clip_config.json" ]; then
  "$BIN/python" tools/pretrain_clip.py experiment=shapeworld_clip out_dir="$WORK/clip" hydra.run.dir="$WORK/runs/clip"
fi

stage "2/5 ShapeWorld detection data -> $WORK/data/shapeworld"
if [ ! -f "$WORK/data/shapeworld/val/instances.json" ]; then
  "$BIN/ovdet" shapeworld --out "$WORK/data/shapeworld/val" --num-images "$VAL_IMAGES" --seed 1000 --quiet
fi
if [ ! -f "$WORK/data/shapeworld/train/instances.json" ]; then
  "$BIN/ovdet" shapeworld --out "$WORK/data/shapeworld/train" --num-images "$TRAIN_IMAGES" --seed 0 --annotate base --workers 2 --quiet
fi

stage "3/5 train the detection head on base shapes -> $WORK/runs/detector/detector"
if [ ! -f "$WORK/runs/detector/detector/config.json" ]; then
  OVDET_SHAPEWORLD_CLIP="$WORK/clip" "$BIN/ovdet" train experiment=shapeworld_ovd \
    paths.data_dir="$WORK/data" hydra.run.dir="$WORK/runs/detector" trainer.max_epochs="$DET_EPOCHS"
fi

stage "4/5 evaluate on the held-out seed (all 16 names; head alone vs CLIP crop re-scoring) -> $RESULTS"
"$BIN/ovdet" eval --model "$WORK/runs/detector/detector" --annotations "$WORK/data/shapeworld/val/instances.json" \
  --images "$WORK/data/shapeworld/val/images" --out "$RESULTS/metrics.json" --predictions "$WORK/val_predictions.json" \
  --report "$RESULTS"
"$BIN/python" tools/shapeworld_ablations.py "$WORK/runs/detector/detector" "$WORK/data/shapeworld/val" --out "$RESULTS/ablations.json"
"$BIN/python" tools/attribute_ap.py "$WORK/runs/detector/detector" "$WORK/data/shapeworld/val" --out "$RESULTS/attributes.json"

stage "5/5 export fp16 -> $MODEL_OUT"
"$BIN/python" - "$WORK/runs/detector/detector" "$MODEL_OUT" <<'PY'
import sys, torch
from ovdet.models.detector import Detector
Detector.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2], dtype=torch.float16)
PY
du -sh "$MODEL_OUT"
stage "done"
