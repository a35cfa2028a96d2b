"""Pair packed with one-clip-per-window evaluations (written by results/packed.sh) into packed.json.

For every ``ROOT/<model>/<set>/{unpacked,packed}`` pair: both WERs (Whisper-normalized, speaker-bootstrap
95 % CI), packed minus unpacked with its paired speaker-bootstrap 95 % CI
(:func:`kidwhisper.report.render.paired_eval_difference`), the clips whose normalized transcripts differ,
hallucination and truncation counts, decode wall time, and whether packing is as accurate (the CI of the
difference includes 0 and the difference is within ``TOLERANCE``).

    python results/packed.py [ROOT]     (default results/packed)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kidwhisper.report.render import paired_eval_difference

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.005  # WER points (as a fraction) packing may cost and still count as "as accurate"


def _summary(eval_dir: Path) -> dict:
    s = json.loads((eval_dir / "summary.json").read_text())
    w = s["wer"]["whisper"]
    return {"wer": w["wer"], "ci": [w["ci_low"], w["ci_high"]], "n_utts": s["n_utts"],
            "hallucinations": s["flags"]["hallucination"], "truncated": s.get("n_truncated", 0),
            "wall_seconds": s["wall_seconds"], "rtf": s["rtf"], "pack": s["config"].get("pack", False)}


def _hyps(eval_dir: Path) -> dict[str, str]:
    lines = (eval_dir / "utterances.jsonl").read_text(encoding="utf-8").splitlines()
    return {u["id"]: u["hyp_norm"]["whisper"] for u in map(json.loads, filter(None, lines))}


def pair(unpacked: Path, packed: Path) -> dict:
    diff, low, high = paired_eval_difference(packed, unpacked)
    a, b = _hyps(unpacked), _hyps(packed)
    changed = sorted(i for i in a if a[i] != b[i])
    return {"unpacked": _summary(unpacked), "packed": _summary(packed),
            "packed_minus_unpacked": {"wer": diff, "ci": [low, high]},
            "as_accurate": low <= 0 <= high and diff <= TOLERANCE,
            "speedup": round(_summary(unpacked)["wall_seconds"] / _summary(packed)["wall_seconds"], 2),
            "n_changed_transcripts": len(changed), "changed_ids": changed}


def collect(root: Path) -> dict:
    rows = []
    for unpacked in sorted(root.glob("*/*/unpacked")):
        packed = unpacked.parent / "packed"
        if (unpacked / "summary.json").is_file() and (packed / "summary.json").is_file():
            rows.append({"model": unpacked.parent.parent.name, "set": unpacked.parent.name, **pair(unpacked, packed)})
    return {"rows": rows, "tolerance": TOLERANCE, "command": "bash results/packed.sh"}


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results" / "packed"
    result = collect(root)
    (root / "packed.json").write_text(json.dumps(result, indent=2) + "\n")
    for r in result["rows"]:
        d = r["packed_minus_unpacked"]
        print(f"{r['model']:>6} {r['set']:<12} unpacked {100 * r['unpacked']['wer']:5.1f} %  packed "
              f"{100 * r['packed']['wer']:5.1f} %  diff {100 * d['wer']:+.2f} ({100 * d['ci'][0]:+.2f} to "
              f"{100 * d['ci'][1]:+.2f})  {r['n_changed_transcripts']} changed  x{r['speedup']} faster  "
              f"as accurate: {r['as_accurate']}")


if __name__ == "__main__":
    main()
