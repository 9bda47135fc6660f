#!/usr/bin/env bash
# GPU section of docs/PERFORMANCE.md, in one prepared run (a few minutes on an H100/H200-class GPU):
# bf16 and fp32, batch 1 and 32, B/32 and B/16 at 768 px and OWLv2 B/16 at 960 px, each against transformers on the
# same weights (OWLv2: the same folder, outputs compared in the run). Run it from the repository root on a machine
# with a CUDA GPU and the project installed (`make install`):
#     bash tools/gpu_benchmark.sh            # writes docs/results/benchmark_gpu.json and the "gpu" section
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "tools/gpu_benchmark.sh: no CUDA GPU visible to torch; the GPU section stays 'not measured'" >&2
  exit 2
fi
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
"$PY" -m ovdet.cli.main benchmark --device cuda --models b32,b16,owlv2 --batch 1,32 --queries 5,1203 \
    --precision bf16,fp32 --runs 10 --warmup 3 --slow-call-s 30 --large-batch-models b32,b16,owlv2 \
    --out docs/results/benchmark_gpu.json --markdown docs/PERFORMANCE.md --section gpu
