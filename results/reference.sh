#!/usr/bin/env bash
# Reproduce the committed reference result: train LoRA on whisper-base (configs/train-lora.yaml), copy the
# best-dev adapter to models/whisper-base-kids-lora and the run's log/summary/config/curve to
# results/tuned/whisper-base-lora/, then evaluate the committed adapter on kids test, adults test and
# kids dev. Run results/baselines.sh first (it prepares data/). Usage: bash results/reference.sh [--resume]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/whisper-base-kids-lora
OUT=results/tuned/whisper-base-lora
ADAPTER=models/whisper-base-kids-lora
if [ ! -f "$RUN/summary.json" ]; then
  kidwhisper train --config configs/train-lora.yaml -q "$@"
fi
mkdir -p "$ADAPTER" "$OUT"
cp "$RUN"/adapter/adapter_config.json "$RUN"/adapter/adapter_model.safetensors "$RUN"/adapter/kidwhisper_adapter.json "$ADAPTER"/
cp "$RUN"/summary.json "$RUN"/log.jsonl "$RUN"/train_config.yaml "$RUN"/learning_curve.png "$OUT"/
for set in kids-test adults-test kids-dev; do
  [ -f "$OUT/$set/summary.json" ] || \
    kidwhisper evaluate --model whisper-base --adapter "$ADAPTER" --data "data/$set" --out "$OUT/$set" -q
done
python results/strip_references.py results  # the corpus transcripts stay out of the repository
