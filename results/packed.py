"""Pair packed with one-clip-per-window evaluations (written by results/packed.sh) into packed.json.

For every ``ROOT/<model>/<set>/{unpacked,packed}`` pair: both WERs (Whisper-normalized, speaker-bootstrap
95 % CI), packed minus unpacked with its paired speaker-bootstrap 95 % CI
(:func:`kidwhisper.report.render.paired_eval_difference`), the clips whose normalized transcripts differ,
hallucination and truncation counts, decode wall time, and whether packing is as accurate (the CI of the
difference includes 0 and the difference is within ``TOLERANCE``). With the default ROOT it also takes the
dev-evaluation times of ``results/packed_time.py`` (``dev_eval_time.json``) and replaces the text between
``<!-- packed:start`` and ``<!-- packed:end -->`` in README.md with the table of both.

    python results/packed.py [ROOT]     (default results/packed)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ablation import _replace  # results/ablation.py: the README's generated sections

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


LAYOUTS = {  # evaluation dir -> how it decoded (against "unpacked": one clip per window, float32)
    "packed": "packed: silence continuation",
    "packed-windows": "packed: shared windows (commit b197eea)",  # clips end to end, trailing silence at 25-30 s
    "unpacked-bf16": "unpacked, --precision bf16",
    "packed-bf16": "packed (silence continuation), --precision bf16",
}


def collect(root: Path) -> dict:
    rows = []
    for unpacked in sorted(root.glob("*/*/unpacked")):
        for name, layout in LAYOUTS.items():
            packed = unpacked.parent / name
            if (unpacked / "summary.json").is_file() and (packed / "summary.json").is_file():
                rows.append({"model": unpacked.parent.parent.name, "set": unpacked.parent.name, "layout": layout,
                             **pair(unpacked, packed)})
    return {"rows": rows, "tolerance": TOLERANCE, "command": "bash results/packed.sh"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(result: dict, timing: dict | None) -> str:
    """The README's packed-decoding table (and the dev-evaluation minutes when measured)."""
    lines = ["| model | set (clips) | decoding | WER % unpacked float32 | this decoding | minus unpacked float32, "
             "points (paired 95 % CI) | hallucination flags unpacked / this | transcripts changed |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    names = {"stock": "stock whisper-base", "tuned": "`models/whisper-base-kids` (`lora-isolated-specaug`)",
             "lora-isolated": "`lora-isolated` (the earlier recommended adapter)"}
    models = list(names)  # table order
    order = {"kids-dev": 0, "kids-test": 1, "adults-test": 2}
    layouts = list(LAYOUTS.values())
    for r in sorted(result["rows"], key=lambda r: (models.index(r["model"]) if r["model"] in models else len(models),
                                                    r["model"], order.get(r["set"], 9), r["set"],
                                                    layouts.index(r["layout"]))):
        d = r["packed_minus_unpacked"]
        lines.append(f"| {names.get(r['model'], r['model'])} | {r['set']} ({r['packed']['n_utts']}) | {r['layout']} | "
                     f"{_pct(r['unpacked']['wer'])} | {_pct(r['packed']['wer'])} | {100 * d['wer']:+.1f} "
                     f"({100 * d['ci'][0]:+.1f} to {100 * d['ci'][1]:+.1f}) | {r['unpacked']['hallucinations']} / "
                     f"{r['packed']['hallucinations']} | {r['n_changed_transcripts']} |")
    if timing:
        u = timing["unpacked"]
        labels = {"packed": "packed", "unpacked_bf16": "unpacked bf16", "packed_bf16": "packed bf16"}
        variants = [k for k in labels if k in timing]
        loads = ", ".join(str(timing[k]["load_average_before"]) for k in ["unpacked", *variants])
        each = ", ".join(f"{timing[k]['minutes']:.1f} min {labels[k]} "
                         f"({round(u['wall_seconds'] / timing[k]['wall_seconds'], 2)}x, WER "
                         f"{_pct(timing[k]['wer'])} %)" for k in variants)
        lines += ["", f"Dev evaluation of `models/whisper-base-kids` on kids dev ({u['n_utts']} clips, "
                  f"`{timing['command'].strip()}`, one run each on {timing['cores']} cores, load average "
                  f"{loads} before the runs): {u['minutes']:.1f} min unpacked float32 (WER {_pct(u['wer'])} %), "
                  f"{each}."]
    return "\n".join(lines)


def main() -> None:
    default = ROOT / "results" / "packed"
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    result = collect(root)
    (root / "packed.json").write_text(json.dumps(result, indent=2) + "\n")
    if root.resolve() == default:
        timing_file = root / "dev_eval_time.json"
        timing = json.loads(timing_file.read_text()) if timing_file.is_file() else None
        readme = ROOT / "README.md"
        readme.write_text(_replace(readme.read_text(), "packed", table(result, timing)))
    for r in result["rows"]:
        d = r["packed_minus_unpacked"]
        print(f"{r['model']:>6} {r['set']:<12} {r['layout'][:24]:<24} unpacked {100 * r['unpacked']['wer']:5.1f} %  packed "
              f"{100 * r['packed']['wer']:5.1f} %  diff {100 * d['wer']:+.2f} ({100 * d['ci'][0]:+.2f} to "
              f"{100 * d['ci'][1]:+.2f})  {r['n_changed_transcripts']} changed  x{r['speedup']} faster  "
              f"as accurate: {r['as_accurate']}")


if __name__ == "__main__":
    main()
