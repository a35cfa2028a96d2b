"""Evaluation throughput, measured side by side in one run on the same clips.

Compares, on the first N clips of a manifest (default: 100 kids-test clips), with whisper-base, English,
greedy, no timestamps:
  - kidwhisper: ``kidwhisper.evaluate`` (batched generate, PyTorch), ``--pack`` (the clips of a batch in
    one encoder pass, :mod:`kidwhisper.decode_packed`), both again with ``--precision bf16`` where the CPU runs
    bf16 natively (AVX512-BF16 or AMX), and ``--backend ct2`` in float32 and int8 (the same batched decoding and
    front end on CTranslate2);
  - hf-pipeline: ``transformers.pipeline("automatic-speech-recognition")`` one clip at a time, as the usual recipe
    (greedy: ``num_beams=1``; the pipeline's own default is 5 beams);
  - faster-whisper float32 and int8 (``WhisperModel.transcribe`` per clip, beam 1, no VAD, no previous text;
    CTranslate2 has no bf16 on a CPU).
Every system's transcripts are scored the same way (``kidwhisper.metrics.score_utterance``, Whisper-normalized).

The WER gap between systems running the same weights is broken down per clip: errors in clips flagged as
hallucinations (runaway repetition, implausibly long output), the WER on the clips that no system
hallucinated on, and how many normalized transcripts equal kidwhisper PyTorch's.

With ``--adapter``, every system decodes the tuned model: kidwhisper loads the adapter, the pipeline a
merged copy, faster-whisper a CTranslate2 conversion of the merged model (converted before timing starts).

    python bench/eval_throughput.py --data data/kids-test --n 100 --out bench/results/eval_throughput.json
    python bench/eval_throughput.py --data data/kids-test --n 100 --adapter models/whisper-base-kids \
        --out bench/results/eval_throughput_tuned.json
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from kidwhisper.audio import load_audio
from kidwhisper.config import machine_info, package_versions
from kidwhisper.data.manifest import audio_path, read_manifest, resolve_manifest_path
from kidwhisper.evaluate import EvalConfig, evaluate
from kidwhisper.metrics import HEADLINE, score_utterance, sum_counts
from kidwhisper.models.builtin import builtin_path
from kidwhisper.models.convert import cached_ct2_dir, write_merged
from kidwhisper.models.load import native_bf16

log = logging.getLogger("bench")


def bench_kidwhisper(model: str, adapter: str | None, manifest: Path, n: int, batch_size: int,
                     backend: str = "torch", compute_type: str = "float32", pack: bool = False,
                     precision: str = "float32") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s = evaluate(EvalConfig(model=model, adapter=adapter, data=str(manifest), out=tmp, limit=n, batch_size=batch_size,
                                backend=backend, compute_type=compute_type, pack=pack, precision=precision,
                                progress=False))
        total = time.perf_counter() - t
        hyps = [json.loads(line)["hyp"] for line in (Path(tmp) / "utterances.jsonl").read_text().splitlines()]
    name = ("PyTorch" if precision == "float32" else f"PyTorch {precision}") if backend == "torch" \
        else f"CTranslate2 {compute_type}"
    flag = (" --pack" if pack else "") + (f" --precision {precision}" if precision != "float32" else "")
    return {"system": f"kidwhisper evaluate{flag} ({name}, batch {batch_size})", "decode_seconds": s["wall_seconds"],
            "total_seconds": round(total, 2), "hyps": hyps}


def bench_hf_pipeline(model: str, adapter: str | None, audios) -> dict:
    from transformers import pipeline

    with tempfile.TemporaryDirectory() as tmp:
        if adapter:  # the pipeline loads a plain model: the adapter merged into it
            write_merged(model, adapter, Path(tmp))
        asr = pipeline("automatic-speech-recognition", model=tmp if adapter else str(builtin_path(model)),
                       device="cpu")
    t = time.perf_counter()
    # num_beams=1: transformers 5's ASR pipeline defaults to beam search (5 beams, as openai-whisper's
    # transcribe); every other row here is greedy, so the pipeline is too.
    kw = {"language": "en", "task": "transcribe", "num_beams": 1}
    hyps = [asr(a.copy(), generate_kwargs=kw)["text"] for a in audios]
    return {"system": "transformers ASR pipeline (one clip at a time)", "decode_seconds": round(time.perf_counter() - t, 2),
            "hyps": hyps}


def bench_faster_whisper(model: str, adapter: str | None, audios, compute_type: str) -> dict:
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(cached_ct2_dir(model, adapter)), device="cpu", compute_type=compute_type,
                      cpu_threads=torch.get_num_threads())
    t = time.perf_counter()
    hyps = []
    for a in audios:
        segments, _ = fw.transcribe(a, language="en", beam_size=1, without_timestamps=True,
                                    condition_on_previous_text=False, vad_filter=False, temperature=0.0)
        hyps.append(" ".join(s.text.strip() for s in segments))
    return {"system": f"faster-whisper {compute_type}", "decode_seconds": round(time.perf_counter() - t, 2),
            "hyps": hyps}


def score_systems(rows: list[dict], clips) -> None:
    """Add WER and the per-clip breakdown of the WER gap to every row (the first row is the reference)."""
    scores = [[score_utterance(c.text, h, c.duration) for c, h in zip(clips, r["hyps"], strict=True)] for r in rows]
    flagged = [any(sc[i].hallucination for sc in scores) for i in range(len(clips))]
    first = [s.hyp_norm[HEADLINE] for s in scores[0]]
    for r, sc in zip(rows, scores, strict=True):
        words = [s.words[HEADLINE] for s in sc]
        total = sum_counts(w for w in words if w is not None)
        halluc = [i for i, s in enumerate(sc) if s.hallucination]
        clean = sum_counts(w for w, f in zip(words, flagged, strict=True) if w is not None and not f)
        r.update(wer=round(total.wer, 4), insertions=total.insertions, errors=total.errors,
                 n_hallucinations=len(halluc),
                 errors_in_hallucinations=sum(words[i].errors for i in halluc if words[i] is not None),
                 wer_on_clips_no_system_hallucinated=round(clean.wer, 4),
                 n_clips_no_system_hallucinated=len(clips) - sum(flagged),
                 same_normalized_text_as_first=sum(s.hyp_norm[HEADLINE] == f for s, f in zip(sc, first, strict=True)))
        del r["hyps"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/kids-test")
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--adapter", help="a LoRA adapter of --model: every system decodes the tuned model "
                   "(kidwhisper with --adapter; the pipeline and faster-whisper with it merged/converted)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="bench/results/eval_throughput.json")
    p.add_argument("--skip", nargs="*", default=[],
                   help="systems to skip: pack bf16 pack-bf16 ct2-float32 ct2-int8 hf-pipeline fw-float32 fw-int8 "
                   "(the bf16 rows run only where the CPU has native bf16: AVX512-BF16 or AMX)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    manifest = resolve_manifest_path(args.data)
    clips = read_manifest(manifest)[: args.n]
    audios = [load_audio(audio_path(c, manifest)) for c in clips]
    audio_seconds = sum(len(a) for a in audios) / 16000
    rows = [bench_kidwhisper(args.model, args.adapter, manifest, args.n, args.batch_size)]
    if "pack" not in args.skip:
        rows.append(bench_kidwhisper(args.model, args.adapter, manifest, args.n, args.batch_size, pack=True))
    bf16 = native_bf16(torch.device("cpu"))
    for pack in (False, True):
        if bf16 and ("pack-bf16" if pack else "bf16") not in args.skip:
            rows.append(bench_kidwhisper(args.model, args.adapter, manifest, args.n, args.batch_size, pack=pack,
                                         precision="bf16"))
    for ct in ("float32", "int8"):
        if f"ct2-{ct}" not in args.skip:
            rows.append(bench_kidwhisper(args.model, args.adapter, manifest, args.n, args.batch_size, "ct2", ct))
    if "hf-pipeline" not in args.skip:
        rows.append(bench_hf_pipeline(args.model, args.adapter, audios))
    for ct in ("float32", "int8"):
        if f"fw-{ct}" not in args.skip:
            rows.append(bench_faster_whisper(args.model, args.adapter, audios, ct))
    score_systems(rows, clips)
    for r in rows:
        r["rtf"] = round(r["decode_seconds"] / audio_seconds, 4)
        r["clips_per_second"] = round(len(clips) / r["decode_seconds"], 3)
    result = {"model": args.model, "adapter": args.adapter, "n_clips": len(clips), "audio_seconds": round(audio_seconds, 1),
              "manifest": str(manifest), "torch_threads": torch.get_num_threads(),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "versions": package_versions(), "machine": machine_info(), "command": " ".join(sys.argv), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'system':<52}{'decode s':>9}{'RTF':>7}{'clips/s':>8}{'WER %':>7}{'halluc.':>8}{'their err':>10}"
          f"{'clean WER %':>12}{'same text':>10}")
    for r in rows:
        print(f"{r['system']:<52}{r['decode_seconds']:>9.1f}{r['rtf']:>7.3f}{r['clips_per_second']:>8.2f}"
              f"{100 * r['wer']:>7.1f}{r['n_hallucinations']:>8}{r['errors_in_hallucinations']:>10}"
              f"{100 * r['wer_on_clips_no_system_hallucinated']:>12.1f}{r['same_normalized_text_as_first']:>10}")
    print(f"clean WER: on the {rows[0]['n_clips_no_system_hallucinated']} clips no system hallucinated on; "
          f"same text: normalized transcripts equal to the first row's")


if __name__ == "__main__":
    main()
