#!/usr/bin/env bash
# Strategy comparison on the same data as the reference: decoder and lora-decoder (configs/train-*.yaml),
# each evaluated on kids test and adults test. Run results/baselines.sh first (it prepares data/).
set -euo pipefail
cd "$(dirname "$0")/.."
for s in "$@"; do
  RUN=runs/whisper-base-kids-$s
  [ -f "$RUN/summary.json" ] || kidwhisper train --config "configs/train-$s.yaml" -q
  mkdir -p "results/tuned/whisper-base-$s"
  cp "$RUN"/summary.json "$RUN"/log.jsonl "$RUN"/train_config.yaml "$RUN"/learning_curve.png "results/tuned/whisper-base-$s/"
  if [ -d "$RUN/adapter" ]; then args=(--model whisper-base --adapter "$RUN/adapter"); else args=(--model "$RUN/model"); fi
  for set in kids-test adults-test kids-dev; do
    [ -f "results/tuned/whisper-base-$s/$set/summary.json" ] || \
      kidwhisper evaluate "${args[@]}" --data "data/$set" --out "results/tuned/whisper-base-$s/$set" -q
  done
done
python results/strip_references.py results  # the corpus transcripts stay out of the repository
