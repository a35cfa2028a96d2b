"""``kidwhisper evaluate``: honest WER of any model on a manifest.

Decoding: English forced (``--language auto`` reproduces the broken setup on purpose), task transcribe,
no timestamps, greedy, at most ``max_new_tokens`` new tokens. Text: Whisper's English normalizer on both
sides (headline), the raw orthographic text (what the broken setup compared), and a digit-aware variant;
see :mod:`kidwhisper.text` and :mod:`kidwhisper.metrics`.

Writes ``OUT/utterances.jsonl`` (one line per clip: reference, hypothesis, normalized texts, error
counts, flags), ``OUT/summary.json`` (WER with a speaker-bootstrap 95 % CI, breakdowns, flags, model,
decoding options, versions, manifest hash, wall time, real-time factor) and ``OUT/eval_config.yaml``;
``summary.json`` is written last, so its presence marks a complete evaluation. ``OUT`` and ``language``
are checked before any model or audio is loaded. When the disk fills up while the results are written,
the finished decode is written to a new directory in the system temp dir instead and DiskFullError says
where (or that it could not be saved anywhere).
A clip whose audio is corrupt or holds no samples is not decoded: it is skipped with a warning and
counted by reason in ``n_skipped`` (ids in ``skipped_ids``), never scored as silence.
A token-budget guard (``GUARD_TOKENS_PER_SECOND`` x duration + ``GUARD_SLACK_TOKENS``) is applied after
the fact and reported separately under ``guarded``; the headline is always WER as decoded.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from kidwhisper.config import ConfigError, OutputError, package_versions, save_config
from kidwhisper.data.manifest import ManifestError, load_usable_audios, manifest_hash, read_manifest
from kidwhisper.decode import MAX_NEW_TOKENS, transcribe_arrays
from kidwhisper.files import atomic_write_text, check_output_dir, writing
from kidwhisper.metrics import score_utterance, summarize
from kidwhisper.models.load import check_language, load_model

log = logging.getLogger(__name__)

GUARD_TOKENS_PER_SECOND = 8.0  # a child reads ~2-3 words/s; "2-6-4-8" is 7 tokens for 4 words
GUARD_SLACK_TOKENS = 16


@dataclass
class EvalConfig:
    """What to evaluate and how to decode.

    model: built-in name, HF or CTranslate2 directory, or Hub id. adapter: a PEFT adapter directory.
    data: a manifest (file or directory from ``kidwhisper prepare``) or a corpus directory ``prepare``
    understands (prepared on the fly into OUT/prepared). language: ISO code to force, or ``auto``.
    """

    model: str  # built-in name (whisper-base, whisper-tiny.en), HF/CTranslate2 directory or Hub id
    data: str  # manifest.jsonl (or its directory) from `kidwhisper prepare`, or a corpus directory
    out: str  # output directory for summary.json and utterances.jsonl
    adapter: str | None = None  # LoRA adapter directory (RUN_DIR/adapter)
    language: str = "en"  # force this language, or 'auto' to let a multilingual model guess
    batch_size: int = 16  # clips decoded together
    beam_size: int = 1  # 1 = greedy
    max_new_tokens: int = MAX_NEW_TOKENS  # token budget per clip (Whisper's own 224)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto = CUDA, then Apple MPS, then CPU
    limit: int | None = None  # evaluate only the first N clips of the manifest
    backend: Literal["torch", "ct2"] = "torch"  # decoding engine: PyTorch generate, or CTranslate2 (same decoding)
    compute_type: str = "float32"  # ct2 only: float32 (greedy: token-identical to torch), int8, int8_float32, ...
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
        if self.beam_size < 1:
            raise ConfigError("--beam-size must be >= 1")
        if not 1 <= self.max_new_tokens <= 444:
            raise ConfigError("--max-new-tokens must be in 1..444 (Whisper's 448-token context minus the prompt)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be >= 1")
        if self.backend not in ("torch", "ct2"):
            raise ConfigError(f"--backend must be torch or ct2; got {self.backend!r}")
        if self.compute_type != "float32" and self.backend != "ct2":
            raise ConfigError("--compute-type applies to --backend ct2 only")


def resolve_data(data: str | Path, work_dir: Path, progress: bool = True) -> Path:
    """A manifest path, or a corpus directory prepared into ``work_dir/prepared``."""
    p = Path(data)
    if p.is_file() or (p / "manifest.jsonl").exists():
        return p if p.is_file() else p / "manifest.jsonl"
    if p.is_dir():
        from kidwhisper.data.prepare import PrepareConfig, prepare

        log.info("%s is not a manifest; preparing it into %s", p, work_dir / "prepared")
        prepare(p, work_dir / "prepared", PrepareConfig(progress=progress))
        return work_dir / "prepared" / "manifest.jsonl"
    raise ManifestError(f"--data {data}: not found; pass a manifest from `kidwhisper prepare` or a corpus directory")


def guard_budget(duration: float) -> int:
    return int(math.ceil(GUARD_TOKENS_PER_SECOND * duration + GUARD_SLACK_TOKENS))


def evaluate(config: EvalConfig) -> dict:
    """Decode ``config.data`` with ``config.model`` and write utterances.jsonl + summary.json."""
    out = check_output_dir(config.out, "--out")
    check_language(config.model, config.language)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    manifest = resolve_data(config.data, out, config.progress)
    clips = read_manifest(manifest)
    if config.limit:
        clips = clips[: config.limit]
    if not clips:
        raise ManifestError(f"{manifest}: no clips to evaluate")
    log.info("evaluating %s%s on %d clips of %s (language=%s)", config.model,
             f" + {config.adapter}" if config.adapter else "", len(clips), manifest, config.language)
    loaded = load_usable_audios(clips, manifest, config.progress)
    clips, audios = loaded.clips, loaded.audios
    if not clips:
        raise ManifestError(f"{manifest}: no clip has usable audio (skipped: {loaded.n_skipped}); re-export "
                            f"the files or prepare the corpus again with `kidwhisper prepare`")
    if config.backend == "ct2":
        from kidwhisper.decode_ct2 import CT2Decoder, ct2_model_dir
        from kidwhisper.models.load import load_processor

        processor = load_processor(config.model)
        if config.adapter:
            load_model(config.model, config.adapter, "cpu")  # fail early and clearly if the adapter does not fit
        decoder = CT2Decoder(ct2_model_dir(config.model, config.adapter), processor, config.compute_type,
                             "cuda" if config.device == "cuda" else "cpu")
        device = f"ctranslate2 {config.compute_type}"
        t0 = time.perf_counter()
        decoded = decoder.transcribe_arrays(audios, config.language, config.batch_size, config.max_new_tokens,
                                            config.beam_size, config.progress)
    else:
        model, processor = load_model(config.model, config.adapter, config.device,
                                      merge=True)  # merged LoRA decodes at base-model speed
        device = str(next(model.parameters()).device)
        t0 = time.perf_counter()
        decoded = transcribe_arrays(model, processor, audios, config.language, config.batch_size,
                                    config.max_new_tokens, config.beam_size, config.progress)
    wall = time.perf_counter() - t0
    audio_seconds = sum(len(a) for a in audios) / 16000

    tok = processor.tokenizer
    items, guarded_items, lines = [], [], []
    for clip, d in zip(clips, decoded, strict=True):
        meta = {"id": clip.id, "speaker": clip.speaker, "age": clip.age, "gender": clip.gender,
                "duration": clip.duration}
        score = score_utterance(clip.text, d.text, clip.duration, d.n_tokens)
        items.append((meta, score))
        budget = guard_budget(clip.duration)
        guarded_hyp = d.text if d.n_tokens <= budget else tok.decode(d.tokens[:budget], skip_special_tokens=True)
        guarded_items.append((meta, score_utterance(clip.text, guarded_hyp, clip.duration, min(d.n_tokens, budget))))
        lines.append(json.dumps({**meta, "ref": clip.text, "hyp": d.text, "language": d.language,
                                 "n_tokens": d.n_tokens, "truncated": d.truncated, **asdict(score)},
                                ensure_ascii=False))
    summary = summarize(items)
    guarded = summarize(guarded_items, breakdown_keys=())
    summary["guarded"] = {
        "rule": f"hypothesis cut to ceil({GUARD_TOKENS_PER_SECOND} tokens/s x duration + {GUARD_SLACK_TOKENS}) tokens",
        "wer": guarded["wer"], "flags": guarded["flags"],
        "n_cut": sum(d.n_tokens > guard_budget(c.duration) for c, d in zip(clips, decoded, strict=True)),
    }
    head, cut = summary["wer"]["whisper"], summary["guarded"]
    log.info("%d clips, %d speakers: WER %s (guarded %s, %d cut), %d hallucinations, %d skipped (empty reference)",
             summary["n_utts"], summary["n_speakers"], _pct(head["wer"]), _pct(cut["wer"]["whisper"]["wer"]),
             cut["n_cut"], summary["flags"]["hallucination"], head.get("n_skipped_empty_ref", 0))
    summary["languages"] = _count([d.language or "none" for d in decoded])
    summary["n_truncated"] = sum(d.truncated for d in decoded)
    summary["n_skipped"] = loaded.n_skipped  # clips not decoded: {reason: count}, ids under skipped_ids
    summary["skipped_ids"] = loaded.skipped
    summary.update({
        "model": config.model,
        "adapter": config.adapter,
        "data": str(manifest),
        "manifest_sha256": manifest_hash(manifest),
        "decoding": {"language": config.language, "task": "transcribe", "timestamps": False,
                     "beam_size": config.beam_size, "greedy": config.beam_size == 1,
                     "max_new_tokens": config.max_new_tokens, "batch_size": config.batch_size,
                     "backend": config.backend, "compute_type": config.compute_type,
                     "front_end": "transformers WhisperFeatureExtractor (audio padded to 30 s, then log-mel)"},
        "backend": config.backend,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
        "wall_seconds": round(wall, 2),
        "audio_seconds_decoded": round(audio_seconds, 2),
        "rtf": round(wall / audio_seconds, 4),
        "config": asdict(config),
    })
    write_results(out, lines, summary, config)
    return summary


def write_results(out: Path, lines: list[str], summary: dict, config: EvalConfig) -> None:
    """utterances.jsonl, eval_config.yaml, then summary.json into ``out``. An earlier summary.json is
    removed first, so ``out`` never pairs an old summary with new utterances. When ``out`` cannot be
    written (a full disk), the three files go to a new directory in the system temp dir and the
    OutputError names it."""
    files = {"utterances.jsonl": "\n".join(lines) + "\n",
             "summary.json": json.dumps(summary, indent=2, ensure_ascii=False) + "\n"}
    try:
        with writing(out / "summary.json"):
            (out / "summary.json").unlink(missing_ok=True)
        atomic_write_text(out / "utterances.jsonl", files["utterances.jsonl"])
        save_config(config, out / "eval_config.yaml")
        atomic_write_text(out / "summary.json", files["summary.json"])
    except OutputError as e:
        try:
            kept = Path(tempfile.mkdtemp(prefix="kidwhisper-evaluate-"))
            atomic_write_text(kept / "utterances.jsonl", files["utterances.jsonl"])
            save_config(config, kept / "eval_config.yaml")
            atomic_write_text(kept / "summary.json", files["summary.json"])
        except (OSError, OutputError) as e2:
            raise type(e)(f"{e}. The finished decode of {len(lines)} clips could not be saved elsewhere either "
                          f"({e2})") from e
        raise type(e)(f"{e}. The finished decode of {len(lines)} clips is saved in {kept} (utterances.jsonl, "
                      f"summary.json, eval_config.yaml): move it to {out} once there is space") from e


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _count(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def format_summary(summary: dict) -> str:
    """A short plain-text table for the terminal."""
    rows = [("metric", "value", "95% CI")]
    for name, label in (("whisper", "WER (Whisper-normalized)"), ("digits", "WER (digit-aware)"),
                        ("orthographic", "WER (orthographic, raw)")):
        w = summary["wer"].get(name)
        if w and w["wer"] is not None:
            rows.append((label, f"{100 * w['wer']:.1f} %", f"{100 * w['ci_low']:.1f}-{100 * w['ci_high']:.1f}"))
    c = summary["cer"]
    if c.get("cer") is not None:
        rows.append(("CER", f"{100 * c['cer']:.1f} %", f"{100 * c['ci_low']:.1f}-{100 * c['ci_high']:.1f}"))
    f = summary["flags"]
    rows.append(("hallucinations / empty / non-English", f"{f['hallucination']} / {f['empty']} / {f['non_english']}", ""))
    rows.append(("utterances (speakers)", f"{summary['n_utts']} ({summary['n_speakers']})", ""))
    for reason, n in summary.get("n_skipped", {}).items():
        rows.append((f"clips skipped ({reason})", str(n), ""))
    rows.append(("real-time factor", f"{summary['rtf']:.3f}", ""))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, width, strict=True)) for r in rows)
