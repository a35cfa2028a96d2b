#!/usr/bin/env bash
# The accuracy ablation: train every configs/ablation/<row>.yaml (skipped when its run already finished),
# copy its log/summary/config/curve to results/ablation/<row>/, evaluate its best-dev weights on kids dev
# (every row; greedy; a run trained with --average-best also its average/ and best-checkpoint/ weights) and,
# for the rows given with --final, on kids test and adults test, then write
# results/ablation/ablation.json and the README's ablation table (results/ablation.py).
# Run results/baselines.sh first (it prepares data/).
# A row whose kids-dev results are committed and whose run directory is gone is not retrained (a row whose
# weights are committed, lora-isolated-specaug: models/whisper-base-kids, is still evaluated with them).
# --beams ROW (or whisper-base, the stock model): also 5-beam decoding on kids dev, plain and with the greedy
# fallback for runaways; with BEAM_TEST=1 in the environment also on kids test and adults test, with the fallback.
# Usage: [BEAM_TEST=1] bash results/ablation.sh [--final ROW ...] [--beams ROW ...]
set -euo pipefail
cd "$(dirname "$0")/.."
final=(); beams=(); mode=""; BEAM_TEST=${BEAM_TEST:-0}
for a in "$@"; do
  case "$a" in --final) mode=final ;; --beams) mode=beams ;; *) [ "$mode" = final ] && final+=("$a"); [ "$mode" = beams ] && beams+=("$a") ;; esac
done
evaluate() {  # OUT_DIR [extra evaluate flags]; model in ARGS, set in SET
  local out=$1; shift
  [ -f "$out/summary.json" ] || kidwhisper evaluate "${ARGS[@]}" --data "data/$SET" --out "$out" -q "$@"
}
beam_search() {  # DIR: 5 beams on kids dev as transformers decodes (--no-fallback) and with the greedy fallback
  SET=kids-dev; evaluate "$1/kids-dev-beam5" --beam-size 5 --no-fallback; evaluate "$1/kids-dev-beam5-fallback" --beam-size 5
  if [ "$BEAM_TEST" = 1 ]; then
    for SET in kids-test adults-test; do evaluate "$1/$SET-beam5-fallback" --beam-size 5; done
  fi
}
ARGS=(--model whisper-base)  # beam search for the stock model too, when asked for row "whisper-base"
for f in "${beams[@]}"; do
  if [ "$f" = whisper-base ]; then beam_search results/baseline/whisper-base-en; fi
done
for cfg in configs/ablation/*.yaml; do
  row=$(basename "$cfg" .yaml)
  RUN=runs/ablation/$row
  OUT=results/ablation/$row
  case "$row" in lora-isolated-specaug) KEPT=models/whisper-base-kids ;; *) KEPT="" ;; esac  # committed weights
  if [ -z "$KEPT" ] && [ -f "$OUT/kids-dev/summary.json" ] && [ ! -d "$RUN" ]; then
    echo "ablation: $row is measured and committed (results/ablation/$row) and its run is gone: not retrained" >&2
    continue
  fi
  if [ -n "$KEPT" ] && [ -f "$OUT/summary.json" ] && [ ! -d "$RUN" ]; then
    ARGS=(--model whisper-base --adapter "$KEPT")  # trained and copied before; its run dir is not kept
  else
    if [ ! -f "$RUN/summary.json" ]; then
      if [ -d "$RUN/checkpoints" ]; then kidwhisper train --config "$cfg" -q --resume; else kidwhisper train --config "$cfg" -q; fi
    fi
    mkdir -p "$OUT"
    cp "$RUN"/summary.json "$RUN"/log.jsonl "$RUN"/train_config.yaml "$RUN"/learning_curve.png "$OUT/"
    if [ -d "$RUN/adapter" ]; then ARGS=(--model whisper-base --adapter "$RUN/adapter"); else ARGS=(--model "$RUN/model"); fi
  fi
  SET=kids-dev; evaluate "$OUT/kids-dev"
  if [ -d "$RUN/average" ]; then  # --average-best: both candidates of the run, whichever adapter/ holds
    for cand in average best-checkpoint; do
      ARGS_KEPT=("${ARGS[@]}")
      if [ -f "$RUN/$cand/adapter_config.json" ]; then ARGS=(--model whisper-base --adapter "$RUN/$cand"); else ARGS=(--model "$RUN/$cand"); fi
      evaluate "$OUT/kids-dev-$cand"
      ARGS=("${ARGS_KEPT[@]}")
    done
  fi
  for f in "${final[@]}"; do
    if [ "$f" = "$row" ]; then for SET in kids-test adults-test; do evaluate "$OUT/$SET"; done; fi
  done
  for f in "${beams[@]}"; do
    if [ "$f" = "$row" ]; then beam_search "$OUT"; fi
  done
done
python results/strip_references.py results  # the corpus transcripts stay out of the repository
python results/ablation.py
# The committed adapter's model card (README.md) from the results above; tests/test_model_card.py checks it.
kidwhisper model-card models/whisper-base-kids results/ablation/lora-isolated-specaug results/baseline/whisper-base-en -q
