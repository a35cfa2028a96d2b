#!/usr/bin/env bash
# Packed against one-clip-per-window decoding (issue 17): evaluate stock whisper-base and the recommended
# adapter (models/whisper-base-kids) on kids dev, kids test and adults test with and without --pack, each also
# with --precision bf16, then pair them clip by clip with unpacked float32 decoding (results/packed.py ->
# results/packed/packed.json and the README table). Evaluations already finished are skipped.
# Run results/baselines.sh first (it prepares data/).
# Usage: bash results/packed.sh
# Overrides (a quick check on a subset): DATA=dir with <set>/manifest.jsonl, OUT=dir, SETS="kids-test ...",
# MODEL=built-in name, ADAPTER=adapter dir ("" = stock model only), LIMIT=N clips per set.
# REUSE=1: take the unpacked evaluations from the committed results of the same decoding (stock:
# results/baseline/whisper-base-en/<set>, tuned: results/ablation/lora-isolated-specaug/<set>, the row committed
# as models/whisper-base-kids) instead of re-running them.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data}
OUT=${OUT:-results/packed}
SETS=${SETS:-"kids-dev kids-test adults-test"}
MODEL=${MODEL:-whisper-base}
ADAPTER=${ADAPTER-models/whisper-base-kids}
LIMIT=${LIMIT:-}
REUSE=${REUSE:-}
reuse() {  # OUT_DIR COMMITTED_DIR
  if [ -n "$REUSE" ] && [ ! -f "$1/summary.json" ] && [ -f "$2/summary.json" ]; then mkdir -p "$1" && cp "$2"/* "$1"/; fi
}
evaluate() {  # OUT_DIR SET [evaluate flags]
  local out=$1 set=$2; shift 2
  [ -f "$out/summary.json" ] || kidwhisper evaluate --data "$DATA/$set/manifest.jsonl" --out "$out" -q \
    ${LIMIT:+--limit "$LIMIT"} "$@"
}
for set in $SETS; do
  reuse "$OUT/stock/$set/unpacked" "results/baseline/whisper-base-en/$set"
  reuse "$OUT/tuned/$set/unpacked" "results/ablation/lora-isolated-specaug/$set"
  evaluate "$OUT/stock/$set/unpacked" "$set" --model "$MODEL"
  evaluate "$OUT/stock/$set/packed" "$set" --model "$MODEL" --pack
  evaluate "$OUT/stock/$set/unpacked-bf16" "$set" --model "$MODEL" --precision bf16
  evaluate "$OUT/stock/$set/packed-bf16" "$set" --model "$MODEL" --pack --precision bf16
  if [ -n "$ADAPTER" ]; then
    evaluate "$OUT/tuned/$set/unpacked" "$set" --model "$MODEL" --adapter "$ADAPTER"
    evaluate "$OUT/tuned/$set/packed" "$set" --model "$MODEL" --adapter "$ADAPTER" --pack
    evaluate "$OUT/tuned/$set/unpacked-bf16" "$set" --model "$MODEL" --adapter "$ADAPTER" --precision bf16
    evaluate "$OUT/tuned/$set/packed-bf16" "$set" --model "$MODEL" --adapter "$ADAPTER" --pack --precision bf16
  fi
done
[ "$OUT" != results/packed ] || python results/strip_references.py "$OUT"  # corpus transcripts stay out of the repo
python results/packed.py "$OUT"
