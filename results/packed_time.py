"""Minutes of the recommended model's dev evaluation, unpacked and packed, each in float32 and bf16
(results/packed/dev_eval_time.json).

Training evaluates dev WER once per epoch (``kidwhisper train``; ``--eval-pack`` for packed decoding,
``--eval-precision bf16`` for bf16); this times the same decoding with ``kidwhisper evaluate`` on kids dev
(``--pack``, ``--precision bf16``), one run each, one after the other, under
``nice -n 5``: the decode wall time of each (``summary.json``'s ``wall_seconds``, model loading excluded) and
the 1-minute load average before each run, since the 2 cores are shared with other jobs.

    python results/packed_time.py [--data data/kids-dev] [--adapter models/whisper-base-kids] [--keep DIR]

``--keep DIR`` keeps the evaluations in DIR/<variant> (else they go to a temporary directory). bf16 is
measured only where the CPU runs it natively (AVX512-BF16 or AMX).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "packed" / "dev_eval_time.json"
VARIANTS = {"packed": ["--pack"], "unpacked": [], "packed_bf16": ["--pack", "--precision", "bf16"],
            "unpacked_bf16": ["--precision", "bf16"]}  # result key -> evaluate flags


def run(args: list[str], out: Path) -> dict:
    command = ["nice", "-n", "5", sys.executable, "-m", "kidwhisper", "evaluate", *args, "--out", str(out), "-q"]
    load = os.getloadavg()[0]
    subprocess.run(command, check=True, cwd=ROOT)
    s = json.loads((out / "summary.json").read_text())
    return {"wall_seconds": s["wall_seconds"], "minutes": round(s["wall_seconds"] / 60, 2), "n_utts": s["n_utts"],
            "wer": s["wer"]["whisper"]["wer"], "hallucinations": s["flags"]["hallucination"],
            "load_average_before": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/kids-dev")
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--adapter", default="models/whisper-base-kids")
    ap.add_argument("--keep", help="keep the evaluations in KEEP/<variant>")
    a = ap.parse_args()
    args = ["--model", a.model, "--adapter", a.adapter, "--data", a.data]
    import torch

    from kidwhisper.models.load import native_bf16

    variants = {k: v for k, v in VARIANTS.items() if "bf16" not in k or native_bf16(torch.device("cpu"))}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.keep or tmp)
        runs = {name: run([*args, *flags], out / name) for name, flags in variants.items()}
    result = {"command": "python results/packed_time.py " + shlex.join(sys.argv[1:]),
              "evaluate": "nice -n 5 kidwhisper evaluate " + shlex.join(args) + " [--pack] [--precision bf16]",
              "cores": os.cpu_count(), **runs,
              "speedup": round(runs["unpacked"]["wall_seconds"] / runs["packed"]["wall_seconds"], 2),
              "speedup_vs_unpacked": {k: round(runs["unpacked"]["wall_seconds"] / r["wall_seconds"], 2)
                                      for k, r in runs.items() if k != "unpacked"},
              "note": "one run each, one after the other; the 1-minute load average before each run shows whether "
                      "other jobs shared the cores (a run just before lifts it too)"}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
