#!/usr/bin/env bash
# Reproduce the committed baseline results: stock whisper-base and whisper-tiny.en on kids test, kids dev
# and adults test, with the language forced to English and (whisper-base only: tiny.en is English-only)
# left to the model ("auto", the broken setup). Usage: bash results/baselines.sh [SHARED_DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
for set in kids/train kids/dev kids/test adults/test; do
  name=${set/\//-}
  [ -f "data/$name/manifest.jsonl" ] || kidwhisper prepare "$DATA/speechocean762-$set" "data/$name" -q
done
run() {  # model language set
  [ -f "results/baseline/$1-$2/$3/summary.json" ] || \
    kidwhisper evaluate --model "$1" --language "$2" --data "data/$3" --out "results/baseline/$1-$2/$3" -q
}
for set in kids-test kids-dev adults-test; do
  run whisper-base en "$set"
  run whisper-tiny.en en "$set"
  run whisper-base auto "$set"
done
python results/strip_references.py results  # the corpus transcripts stay out of the repository
