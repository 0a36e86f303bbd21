#!/usr/bin/env bash
# The GPU checks of the performance issue, in one run (the project never needs a GPU; this is for a
# machine that has one). From the repository root, with the project installed:
#   bash bench/gpu.sh [OUT]            # OUT: where the figures go (default: report/gpu)
# 1. meta-learning throughput of paper-256 in bf16 + channels_last, a few hundred timed steps, with
#    the model FLOPs utilisation against the device's bf16 dense peak (PEAK_TFLOPS, default 989: H100/H200);
# 2. animate at 256 px: G alone in batches of 64 frames (frames/s = 1000 / ms-per-frame) and end to end;
# 3. the tests marked gpu.
# Every figure is one JSON line with its configuration: OUT/train.jsonl, OUT/animate.jsonl (stdout);
# the notes and warnings go to OUT/*.log (stderr, also shown).
set -euo pipefail
OUT=${1:-report/gpu}
PEAK=${PEAK_TFLOPS:-989}
mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to run')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python bench/train.py --preset paper-256 --device cuda --amp bf16 --channels-last --steps 300 --warmup 10 \
  --peak-tflops "$PEAK" 2> >(tee "$OUT/train.log" >&2) | tee "$OUT/train.jsonl"
python bench/animate.py --models paper-256 demo --devices cuda --batch 64 --frames 256 --pairs 10 --no-compile \
  2> >(tee "$OUT/animate.log" >&2) | tee "$OUT/animate.jsonl"
python -m pytest -q -m gpu 2>&1 | tee "$OUT/tests.txt"
