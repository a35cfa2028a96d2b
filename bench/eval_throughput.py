"""Evaluation throughput, measured side by side in one run on the same clips.

Compares, on the first N clips of a manifest (default: 100 kids-test clips), with whisper-base, English,
greedy, no timestamps:
  - kidwhisper: ``kidwhisper.evaluate`` (batched generate, PyTorch);
  - hf-pipeline: ``transformers.pipeline("automatic-speech-recognition")`` one clip at a time, as the usual recipe;
  - faster-whisper float32 and int8 (``WhisperModel.transcribe`` per clip, beam 1, no VAD, no previous text).
Each system's normalized WER is computed the same way (kidwhisper.metrics on Whisper-normalized text).

    python bench/eval_throughput.py --data data/kids-test --n 100 --out bench/results/eval_throughput.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from kidwhisper.audio import load_audio
from kidwhisper.config import package_versions
from kidwhisper.data.manifest import audio_path, read_manifest, resolve_manifest_path
from kidwhisper.evaluate import EvalConfig, evaluate
from kidwhisper.metrics import sum_counts, word_errors
from kidwhisper.models.builtin import builtin_ct2_dir, builtin_path
from kidwhisper.text import normalize

log = logging.getLogger("bench")


def wer_of(refs: list[str], hyps: list[str]) -> float:
    counts = [word_errors(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True) if normalize(r)]
    return sum_counts(counts).wer


def bench_kidwhisper(model: str, manifest: Path, n: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s = evaluate(EvalConfig(model=model, data=str(manifest), out=tmp, limit=n, batch_size=batch_size,
                                progress=False))
        total = time.perf_counter() - t
    return {"system": f"kidwhisper evaluate (PyTorch, batch {batch_size})", "decode_seconds": s["wall_seconds"],
            "total_seconds": round(total, 2), "wer": s["wer"]["whisper"]["wer"]}


def bench_hf_pipeline(model: str, audios, refs) -> dict:
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(builtin_path(model)), device="cpu")
    t = time.perf_counter()
    hyps = [asr(a.copy(), generate_kwargs={"language": "en", "task": "transcribe"})["text"] for a in audios]
    return {"system": "transformers ASR pipeline (one clip at a time)", "decode_seconds": round(time.perf_counter() - t, 2),
            "wer": wer_of(refs, hyps)}


def bench_faster_whisper(model: str, audios, refs, compute_type: str) -> dict:
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(builtin_ct2_dir(model)), device="cpu", compute_type=compute_type,
                      cpu_threads=torch.get_num_threads())
    t = time.perf_counter()
    hyps = []
    for a in audios:
        segments, _ = fw.transcribe(a, language="en", beam_size=1, without_timestamps=True,
                                    condition_on_previous_text=False, vad_filter=False, temperature=0.0)
        hyps.append(" ".join(s.text.strip() for s in segments))
    return {"system": f"faster-whisper {compute_type}", "decode_seconds": round(time.perf_counter() - t, 2),
            "wer": wer_of(refs, hyps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/kids-test")
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="bench/results/eval_throughput.json")
    p.add_argument("--skip", nargs="*", default=[], help="systems to skip: hf-pipeline fw-float32 fw-int8")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    manifest = resolve_manifest_path(args.data)
    clips = read_manifest(manifest)[: args.n]
    audios = [load_audio(audio_path(c, manifest)) for c in clips]
    refs = [c.text for c in clips]
    audio_seconds = sum(len(a) for a in audios) / 16000
    rows = [bench_kidwhisper(args.model, manifest, args.n, args.batch_size)]
    if "hf-pipeline" not in args.skip:
        rows.append(bench_hf_pipeline(args.model, audios, refs))
    for ct in ("float32", "int8"):
        if f"fw-{ct}" not in args.skip:
            rows.append(bench_faster_whisper(args.model, audios, refs, ct))
    for r in rows:
        r["rtf"] = round(r["decode_seconds"] / audio_seconds, 4)
        r["clips_per_second"] = round(len(clips) / r["decode_seconds"], 3)
        r["wer"] = round(r["wer"], 4)
    result = {"model": args.model, "n_clips": len(clips), "audio_seconds": round(audio_seconds, 1),
              "manifest": str(manifest), "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "versions": package_versions(), "command": " ".join(sys.argv), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'system':<48}{'decode s':>9}{'RTF':>8}{'clips/s':>9}{'WER %':>8}")
    for r in rows:
        print(f"{r['system']:<48}{r['decode_seconds']:>9.1f}{r['rtf']:>8.3f}{r['clips_per_second']:>9.2f}{100 * r['wer']:>8.1f}")


if __name__ == "__main__":
    main()
