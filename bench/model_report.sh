#!/usr/bin/env bash
# Everything the shipped model's card reports, on held-out people, with one fixed protocol and seed:
#   bash bench/model_report.sh [CHECKPOINT] [FACES] [OUT]
# 1. the held-out dataset: every video of the people kept out of training (obama, andrew, mead_w009),
#    preprocessed at 128 px (evaluate resizes other sizes to the model's);
# 2. self-reenactment (the paper's protocol): FF and FT at T = 1 and 8 against copy and warp, 4 target
#    frames per video, seed 0 -> OUT/eval/{metrics.json,report.md,*.png};
# 3. cross-identity (photo of one held-out person, video of another): dlib distance to the photo,
#    mouth-opening correlation, shimmer, contact sheet -> OUT/cross_identity.{jsonl,png} (the model as
#    animate runs it: fine-tuned on the photo; with the warp), and OUT/cross_identity_ff.jsonl (feed-forward);
# 4. does the model use the embedding -> OUT/embedding_probe.jsonl.
set -euo pipefail
CKPT=${1:-weights/demo}
FACES=${2:-../shared/data/faces}
OUT=${3:-report/model}
HELD="edt_uncrop_obama 3ddfa_obama stt_obama_c1 stt_obama_c2 stt_obama_c3 stt_andrew_c1 stt_andrew_c2 dtk_w009_neutral dtk_w009_happy"
mkdir -p "$OUT"
videos=()
for v in $HELD; do videos+=("$FACES/videos/$v.mp4"); done
headpuppet preprocess "${videos[@]}" --out "$OUT/heldout" --size 128 --workers 2
headpuppet evaluate "$CKPT" "$OUT/heldout" --shots 1,8 --mode ff,ft --baseline copy --baseline warp \
  --frames-per-video 4 --seed 0 --out "$OUT/eval"
python bench/cross_identity.py "$CKPT" --faces "$FACES" --frames 40 --sheet "$OUT/cross_identity.png" \
  | tee "$OUT/cross_identity.jsonl"
python bench/cross_identity.py "$CKPT" --faces "$FACES" --frames 40 --finetune-steps 0 --methods model \
  | tee "$OUT/cross_identity_ff.jsonl"
python bench/embedding_probe.py "$CKPT" "$OUT/heldout" --k 4 | tee "$OUT/embedding_probe.jsonl"
