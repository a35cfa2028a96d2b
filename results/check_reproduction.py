"""Does a `kidwhisper run configs/reference-v1.yaml` output reproduce the committed results?

Pairs every evaluation of the run directory with the committed one it should reproduce (baselines
under results/baseline/, the tuned model under results/tuned/whisper-base-lora/), compares WER and the
per-clip transcripts, the training run's dev-WER curve with the committed log, and the adapter's
weights with the committed adapter (models/whisper-base-kids-lora). Writes a JSON record
(default results/reproduction.json) and prints a table.

    python results/check_reproduction.py runs/reference-v1 [--out results/reproduction.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PAIRS = [  # (evaluation inside the run directory, committed evaluation)
    ("eval/baseline-en/kids-test", "baseline/whisper-base-en/kids-test"),
    ("eval/baseline-en/adults-test", "baseline/whisper-base-en/adults-test"),
    ("eval/baseline-auto/kids-test", "baseline/whisper-base-auto/kids-test"),
    ("eval/baseline-auto/adults-test", "baseline/whisper-base-auto/adults-test"),
    ("run/eval/kids-test", "tuned/whisper-base-lora/kids-test"),
    ("run/eval/adults-test", "tuned/whisper-base-lora/adults-test"),
]


def hypotheses(path: Path) -> dict[str, str]:
    return {u["id"]: u["hyp"] for u in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def compare_eval(run_dir: Path, committed_dir: Path) -> dict:
    ran = json.loads((run_dir / "summary.json").read_text())
    ref = json.loads((committed_dir / "summary.json").read_text())
    a, b = hypotheses(run_dir / "utterances.jsonl"), hypotheses(committed_dir / "utterances.jsonl")
    return {"run": str(run_dir), "committed": str(committed_dir.relative_to(ROOT.parent)),
            "n_clips": ran["n_utts"], "wer_run": ran["wer"]["whisper"]["wer"], "wer_committed": ref["wer"]["whisper"]["wer"],
            "same_clips": sorted(a) == sorted(b), "same_transcripts": sum(a[k] == b.get(k) for k in a)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dev_curve(log: Path, key: str = "dev_wer") -> list[tuple[int, float]]:
    rows = (json.loads(line) for line in log.read_text().splitlines())
    return [(r["step"], r[key]) for r in rows if key in r]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="output directory of `kidwhisper run configs/reference-v1.yaml`")
    p.add_argument("--out", default=str(ROOT / "reproduction.json"))
    args = p.parse_args()
    run = Path(args.run)
    missing = [str(run / d / "summary.json") for d, _ in PAIRS if not (run / d / "summary.json").exists()]
    if missing:
        sys.exit(f"check_reproduction: {len(missing)} evaluation(s) missing, e.g. {missing[0]}; "
                 f"finish `kidwhisper run configs/reference-v1.yaml` first")
    evals = [compare_eval(run / d, ROOT / c) for d, c in PAIRS]
    ran, ref = json.loads((run / "run/summary.json").read_text()), json.loads((ROOT / "tuned/whisper-base-lora/summary.json").read_text())
    training = {"best_step_run": ran["best_step"], "best_step_committed": ref["best_step"],
                "best_dev_wer_run": ran["best_dev_wer"], "best_dev_wer_committed": ref["best_dev_wer"],
                "dev_curve_run": dev_curve(run / "run/log.jsonl"),
                "dev_curve_committed": dev_curve(ROOT / "tuned/whisper-base-lora/log.jsonl"),
                # dev clips that hit the token bound at each check (the committed run predates this field)
                "dev_truncated_run": dev_curve(run / "run/log.jsonl", "dev_truncated")}
    training["same_dev_curve"] = training["dev_curve_run"] == training["dev_curve_committed"]
    weights = "adapter_model.safetensors"
    training["adapter_sha256_run"] = sha256(run / "run/adapter" / weights)
    training["adapter_sha256_committed"] = sha256(ROOT.parent / "models/whisper-base-kids-lora" / weights)
    out = {"command": "python results/check_reproduction.py " + " ".join(sys.argv[1:]), "evaluations": evals,
           "training": training}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'evaluation':<32}{'clips':>6}{'WER run %':>11}{'committed %':>13}{'same text':>11}")
    for e in evals:
        print(f"{e['run'].removeprefix(str(run) + '/'):<32}{e['n_clips']:>6}{100 * e['wer_run']:>11.2f}"
              f"{100 * e['wer_committed']:>13.2f}{e['same_transcripts']:>7}/{e['n_clips']}")
    print(f"training: best dev WER {100 * ran['best_dev_wer']:.2f} % at step {ran['best_step']} "
          f"(committed {100 * ref['best_dev_wer']:.2f} % at step {ref['best_step']}); "
          f"dev curve identical: {training['same_dev_curve']}; adapter weights identical: "
          f"{training['adapter_sha256_run'] == training['adapter_sha256_committed']}")


if __name__ == "__main__":
    main()
