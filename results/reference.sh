#!/usr/bin/env bash
# Reproduce the committed reference result: train LoRA on whisper-base (configs/train-lora.yaml), then
# evaluate the best-dev checkpoint on kids test, kids dev and adults test, and copy the adapter to
# models/whisper-base-kids-lora. Run results/baselines.sh first (it prepares data/).
# Usage: bash results/reference.sh [--resume]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/whisper-base-kids-lora
if [ ! -f "$RUN/summary.json" ]; then
  kidwhisper train --config configs/train-lora.yaml -q "$@"
fi
for set in kids-test adults-test kids-dev; do
  [ -f "results/tuned/whisper-base-lora/$set/summary.json" ] || \
    kidwhisper evaluate --model whisper-base --adapter "$RUN/adapter" --data "data/$set" \
      --out "results/tuned/whisper-base-lora/$set" -q
done
mkdir -p models/whisper-base-kids-lora results/tuned/whisper-base-lora/run
cp "$RUN"/adapter/adapter_config.json "$RUN"/adapter/adapter_model.safetensors "$RUN"/adapter/kidwhisper_adapter.json \
  models/whisper-base-kids-lora/
cp "$RUN"/summary.json "$RUN"/log.jsonl "$RUN"/train_config.yaml "$RUN"/learning_curve.png results/tuned/whisper-base-lora/run/
