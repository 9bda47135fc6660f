#!/usr/bin/env bash
# Reproduce the embedded default model (ovdet/assets/default_model) end to end from fixed seeds:
#   1. pretrain ShapeWorld's CLIP from scratch (contrastive, captions + crops; novel shapes included)
#   2. generate ShapeWorld data: train json with base boxes only, a held-out validation set (seed 1000,
#      all boxes) and a tuning set (seed 2000, all boxes) that every choice is made on
#   3. train a first detection head on base shapes (frozen CLIP): its class-agnostic proposals are the
#      boxes of the next stage
#   4. dense distillation (label-free, experiment=dense_distill): the tower's box-pooled features learn
#      its own embedding of each proposal's context crop (NAMES_WEIGHT > 0: and how that crop ranks the
#      12 base names) -> a distilled tower
#   5. train the detection head on base shapes on the distilled tower (one-pass region scoring)
#   6. tune region scoring (weights, threshold) on the tuning set; evaluate on the held-out seed with all
#      16 names (AP50 novel / base / all), scoring ablations, dense zero-shot accuracy before / after
#   7. F-VLM's trained region classifier (tools/train_region_classifier.py) on the base boxes and, label-free,
#      on stage 1's CLIP's embedding of every top region's crop; its base / novel shares and the threshold
#      chosen on the tuning set; evaluated on the held-out seed (about 20 min on a 2-core AMD EPYC)
#   8. export the detector in fp16 into ovdet/assets/default_model, with the tuned scoring
# Usage: make embedded-model   (or: BIN=.venv/bin WORK=artifacts/embedded bash tools/build_embedded_model.sh)
# Each stage is skipped when its output exists, so a failed run resumes where it stopped.
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-artifacts/embedded}
TRAIN_IMAGES=${TRAIN_IMAGES:-8000}
VAL_IMAGES=${VAL_IMAGES:-500}
TUNE_IMAGES=${TUNE_IMAGES:-300}
DET_EPOCHS=${DET_EPOCHS:-3}
DISTILL_SCENES=${DISTILL_SCENES:-4096}
DISTILL_EPOCHS=${DISTILL_EPOCHS:-2}
# the names term of stage 4 (NAMES_WEIGHT=1.0): KL of the teacher crop's ranking over the 12 BASE names (never a
# novel one). Off in the shipped recipe: a model built with it named more boxes right (box-pooled 80.0 % against
# 78.8 %) but scored lower on the tuning seed (AP50 novel 59.9 against 62.5; docs/RESULTS.md §5e)
NAMES_WEIGHT=${NAMES_WEIGHT:-0}
NAMES_ARGS=()
if [ "$NAMES_WEIGHT" != 0 ]; then
  NAMES_ARGS=("module.names=[circle,square,triangle,hexagon,cross,ring,pentagon,diamond,ellipse,trapezoid,octagon,semicircle]"
              "module.names_weight=$NAMES_WEIGHT")
fi
RESULTS=${RESULTS:-docs/results/one_pass}
MODEL_OUT=${MODEL_OUT:-ovdet/assets/default_model}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
start=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }
train_head() {  # CLIP RUN: a head on base shapes on that CLIP into RUN/detector, unless it is there already
  if [ ! -f "$2/detector/config.json" ]; then
    OVDET_SHAPEWORLD_CLIP="$1" "$BIN/ovdet" train experiment=shapeworld_ovd \
      paths.data_dir="$WORK/data" hydra.run.dir="$2" trainer.max_epochs="$DET_EPOCHS"
  fi
}
DATA="$WORK/data/shapeworld"
FIRST="$WORK/runs/detector/detector"
TOWER="$WORK/runs/distill/tower"
MODEL="$WORK/runs/detector_distilled/detector"
FINAL="$WORK/final"

stage "1/8 pretrain the ShapeWorld CLIP -> $WORK/clip"
if [ ! -f "$WORK/clip/open_clip_config.json" ]; then
  "$BIN/python" tools/pretrain_clip.py experiment=shapeworld_clip out_dir="$WORK/clip" hydra.run.dir="$WORK/runs/clip"
fi

stage "2/8 ShapeWorld detection data -> $DATA"
if [ ! -f "$DATA/val/instances.json" ]; then
  "$BIN/ovdet" shapeworld --out "$DATA/val" --num-images "$VAL_IMAGES" --seed 1000 --quiet
fi
if [ ! -f "$DATA/tune/instances.json" ]; then
  "$BIN/ovdet" shapeworld --out "$DATA/tune" --num-images "$TUNE_IMAGES" --seed 2000 --quiet
fi
if [ ! -f "$DATA/train/instances.json" ]; then
  "$BIN/ovdet" shapeworld --out "$DATA/train" --num-images "$TRAIN_IMAGES" --seed 0 --annotate base --workers 2 --quiet
fi

stage "3/8 first detection head on base shapes (its proposals feed the distillation) -> $FIRST"
train_head "$WORK/clip" "$WORK/runs/detector"

stage "4/8 dense distillation on the first head's proposals (no labels) -> $TOWER"
if [ ! -f "$TOWER/ovdet_tower.json" ]; then
  "$BIN/ovdet" train experiment=dense_distill model.clip="$WORK/clip" module.proposals="$FIRST" \
    module.proposal_threshold=0.1 module.max_proposals=12 data.num_scenes="$DISTILL_SCENES" \
    trainer.max_epochs="$DISTILL_EPOCHS" "${NAMES_ARGS[@]}" hydra.run.dir="$WORK/runs/distill"
fi

stage "5/8 detection head on base shapes on the distilled tower -> $MODEL"
train_head "$TOWER" "$WORK/runs/detector_distilled"

stage "6/8 tune on seed 2000; evaluate on the held-out seed 1000 (all 16 names) -> $RESULTS"
if [ ! -f "$WORK/tuning.json" ]; then
  "$BIN/python" tools/tune_region_scoring.py "$MODEL" "$DATA/tune" --out "$WORK/tuning.json"
fi
"$BIN/python" - "$MODEL" "$WORK/tuning.json" "$WORK/tuned" <<'PY'
import json, os, sys
from ovdet.models.detector import Detector
model, tuning, out = sys.argv[1:]
chosen = json.load(open(tuning))
detector = Detector.from_pretrained(model)
detector.set_region_scoring(chosen["region_scoring"])
detector.settings.threshold = chosen["threshold"]
# the recipe names folders relative to the repository, as the user gave them, not this machine's paths
info = json.loads(json.dumps(detector.info).replace(os.getcwd() + os.sep, ""))
info["region_scoring_tuning"] = {"tuning_set": "ovdet shapeworld --num-images 300 --seed 2000 (all 16 names)",
                                 **{k: chosen[k] for k in ("best", "threshold", "f1", "precision", "recall")}}
detector.info = info
detector.save_pretrained(out)
PY
"$BIN/ovdet" eval --model "$WORK/tuned" --annotations "$DATA/val/instances.json" \
  --images "$DATA/val/images" --out "$RESULTS/metrics.json" --predictions "$WORK/val_predictions.json" \
  --report "$RESULTS" --overwrite
"$BIN/python" tools/shapeworld_ablations.py "$WORK/tuned" "$DATA/val" --old-model "$FIRST" --out "$RESULTS/ablations.json" --overwrite
"$BIN/python" tools/attribute_ap.py "$WORK/tuned" "$DATA/val" --out "$RESULTS/attributes.json"
for tower in "$WORK/clip" "$TOWER"; do
  OMP_NUM_THREADS=1 "$BIN/python" tools/dense_zero_shot.py --clip "$tower" --scenes 120 --seed 1000 --no-progress \
    --out "$RESULTS/dense_zero_shot_$(basename "$tower").json" --overwrite
done

# The classifier learns the base names' boxes and, label-free, the stage-1 CLIP's embedding of every top region's
# context crop (--teacher), so it may name novel shapes too; the novel share is chosen on the tuning set. The base
# shares were narrowed to these on 3000 scenes first (docs/RESULTS.md §5g).
stage "7/8 region classifier on the base boxes and the teacher's crops, its shares chosen on the tuning set -> $FINAL"
if [ ! -f "$FINAL/config.json" ]; then
  "$BIN/python" tools/train_region_classifier.py "$WORK/tuned" --annotations "$DATA/train/instances.json" \
    --images "$DATA/train/images" --tune "$DATA/tune" --teacher "$WORK/clip" --crop-weight 3 \
    --classifier-weights 0.5 0.7 --novel-classifier-weight 0.5 0.7 1.0 --out "$FINAL" --quiet
fi
"$BIN/ovdet" eval --model "$FINAL" --annotations "$DATA/val/instances.json" --images "$DATA/val/images" \
  --out "$RESULTS/region_classifier_teacher/metrics.json" --report "$RESULTS/region_classifier_teacher" --overwrite
stage "8/8 export fp16 -> $MODEL_OUT"
"$BIN/python" - "$FINAL" "$MODEL_OUT" <<'PY'
import sys, torch
from ovdet.models.detector import Detector
Detector.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2], dtype=torch.float16)
PY
du -sh "$MODEL_OUT"
stage "done"
