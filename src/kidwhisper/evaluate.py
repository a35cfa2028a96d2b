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
the decode continues in a new directory in the system temp dir (holding every line written so far) and
DiskFullError says where at the end (or that it could not be saved anywhere).

**Streaming and resuming.** Clips are checked first from their file headers (:func:`kidwhisper.data.
manifest.probe_clips`), then read batch by batch (batches of similar length, as ``transcribe_arrays``
makes them) and freed once decoded; each finished batch is appended to ``utterances.jsonl``, so a killed
evaluation loses at most the batch in flight. Run again into the same ``OUT`` with the same options (or
with ``resume=True`` / ``--resume``, which refuses other options), it decodes only the batches not
finished and ends with the same ``utterances.jsonl`` (rewritten in manifest order) and summary, which is
always computed from that file.
A clip whose audio is corrupt or holds no samples is not decoded: it is skipped with a warning and
counted by reason in ``n_skipped`` (ids in ``skipped_ids``), never scored as silence.
A token-budget guard (``GUARD_TOKENS_PER_SECOND`` x duration + ``GUARD_SLACK_TOKENS``) is applied after
the fact and reported separately under ``guarded`` (a line whose hypothesis was cut holds the cut text
as ``hyp_guarded``); the headline is always WER as decoded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from kidwhisper.audio import SAMPLE_RATE
from kidwhisper.config import (
    ConfigError,
    OutputError,
    machine_info,
    package_versions,
    read_config_file,
    save_config,
)
from kidwhisper.data.manifest import (
    REASON_EMPTY_AUDIO,
    REASON_UNREADABLE_AUDIO,
    Clip,
    ManifestError,
    audio_path,
    manifest_hash,
    probe_clips,
    read_manifest,
)
from kidwhisper.decode import (
    MAX_NEW_TOKENS,
    Decoded,
    check_device_precision,
    check_precision,
    decode_batch,
    precision_context,
    resolve_precision,
)
from kidwhisper.decode_packed import SilenceCache, transcribe_packed
from kidwhisper.files import append_text, atomic_write_text, check_output_dir, writing
from kidwhisper.metrics import UtteranceScore, score_utterance, summarize
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
    fallback: bool = True  # beam search: a clip whose output runs away (no end within the budget, or gzip ratio > 2.4) is decoded again greedily
    max_new_tokens: int = MAX_NEW_TOKENS  # token budget per clip (Whisper's own 224)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto = CUDA, then Apple MPS, then CPU
    limit: int | None = None  # evaluate only the first N clips of the manifest
    backend: Literal["torch", "ct2"] = "torch"  # decoding engine: PyTorch generate, or CTranslate2 (same decoding)
    compute_type: str = "float32"  # ct2 only: float32 (greedy: token-identical to torch), int8, int8_float32, ...
    pack: bool = False  # torch, greedy: the clips of a batch in one encoder pass, each decoded alone (kidwhisper.decode_packed)
    precision: Literal["float32", "bf16", "fp16", "auto"] = "float32"  # torch: matrix products in float32, or bf16/fp16 autocast (auto = bf16 where native)
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
        if self.pack and self.backend != "torch":
            raise ConfigError("--pack applies to --backend torch only; drop --pack or use --backend torch")
        check_precision(self.precision)
        if self.precision != "float32" and self.backend != "torch":
            raise ConfigError("--precision applies to --backend torch only; CTranslate2 takes --compute-type")


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


RESUME_MAY_CHANGE = {"progress", "out"}  # other options must match the interrupted evaluation's
UTTERANCES = "utterances.jsonl"


def evaluate(config: EvalConfig, resume: bool = False) -> dict:
    """Decode ``config.data`` with ``config.model`` and write utterances.jsonl + summary.json.

    Clips are read and decoded batch by batch; each finished batch is appended to utterances.jsonl, so an
    interrupted evaluation continues (``resume``, or simply the same ``out``) without redoing its finished
    clips. The summary is computed from utterances.jsonl at the end.
    """
    out = check_output_dir(config.out, "--out")
    check_language(config.model, config.language)
    if config.backend == "torch":
        check_device_precision(config.precision, config.device)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    manifest = resolve_data(config.data, out, config.progress)
    clips = read_manifest(manifest, config.limit)
    if not clips:
        raise ManifestError(f"{manifest}: no clips to evaluate")
    done = _previous_utterances(out, config, resume)
    log.info("evaluating %s%s on %d clips of %s (language=%s)%s", config.model,
             f" + {config.adapter}" if config.adapter else "", len(clips), manifest, config.language,
             f", continuing after {len(done)} finished clips" if done else "")
    probed = probe_clips([c.id for c in clips], [audio_path(c, manifest) for c in clips], manifest, config.progress)
    _check_done(done, clips, manifest)
    kept = [clips[i] for i in probed.kept]
    if not kept:
        raise ManifestError(f"{manifest}: no clip has usable audio (skipped: {probed.n_skipped}); re-export "
                            f"the files or prepare the corpus again with `kidwhisper prepare`")
    sink = _Sink(out)
    sink.start(config, fresh=not done)
    skipped = {k: list(v) for k, v in probed.skipped.items()}
    run = _decode_remaining(config, kept, probed.samples, manifest, done, sink, skipped)
    order = {c.id: k for k, c in enumerate(kept)}
    lines = sorted((line for i, line in _read_lines(sink.dir / UTTERANCES).items() if i in order),
                   key=lambda line: order[json.loads(line)["id"]])
    skipped_ids = {r: [c.id for c in clips if c.id in ids] for r, ids in ((r, set(v)) for r, v in skipped.items())}
    summary = summarize_lines(lines)
    summary["n_skipped"] = {r: len(ids) for r, ids in skipped_ids.items()}  # not decoded: {reason: count}
    summary["skipped_ids"] = skipped_ids
    audio_seconds = sum(probed.samples[k] for k, c in enumerate(kept) if c.id in order) / SAMPLE_RATE
    summary.update({
        "model": config.model,
        "adapter": config.adapter,
        "data": str(manifest),
        "manifest_sha256": manifest_hash(manifest),
        "decoding": {"language": config.language, "task": "transcribe", "timestamps": False,
                     "beam_size": config.beam_size, "greedy": config.beam_size == 1,
                     "fallback": "greedy" if config.beam_size > 1 and config.fallback else None,
                     "max_new_tokens": config.max_new_tokens, "batch_size": config.batch_size,
                     "backend": config.backend, "compute_type": config.compute_type, "precision": run.precision,
                     "front_end": "transformers WhisperFeatureExtractor (audio padded to 30 s, then log-mel)"},
        "backend": config.backend,
        "device": run.device,
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
        "machine": machine_info(),
        "wall_seconds": round(run.wall, 2),  # decoding in this call (earlier calls' clips not included)
        "audio_seconds_decoded": round(audio_seconds, 2),
        "rtf": round(run.wall / run.audio_seconds, 4) if run.audio_seconds else None,
        "resumed_clips": len(lines) - run.n_decoded,
        "config": asdict(config),
    })
    sink.finish(lines, summary)
    return summary


@dataclass
class _Run:
    """What one call of :func:`evaluate` decoded."""

    device: str = ""
    precision: str = ""  # torch: what the matrix products ran in (``precision`` resolved for the device)
    wall: float = 0.0  # seconds spent decoding
    audio_seconds: float = 0.0
    n_decoded: int = 0


def _decoder(config: EvalConfig):
    """(decode(arrays) -> list[Decoded], tokenizer, device name, precision) for ``config``'s backend."""
    if config.backend == "ct2":
        from kidwhisper.decode_ct2 import CT2Decoder
        from kidwhisper.models.convert import cached_ct2_dir
        from kidwhisper.models.load import load_processor

        processor = load_processor(config.model)
        # An adapter is merged and converted once (cached by its weights): that merge is where an adapter that
        # does not fit the model fails, with the same one-line error as the torch backend.
        decoder = CT2Decoder(cached_ct2_dir(config.model, config.adapter), processor, config.compute_type,
                             "cuda" if config.device == "cuda" else "cpu")
        return (lambda audios: decoder.decode_batch(audios, config.language, config.max_new_tokens,
                                                    config.beam_size, config.fallback)), processor.tokenizer, \
            f"ctranslate2 {config.compute_type}", config.compute_type
    model, processor = load_model(config.model, config.adapter, config.device,
                                  merge=True)  # merged LoRA decodes at base-model speed
    device = next(model.parameters()).device
    precision = resolve_precision(config.precision, device)
    silence = SilenceCache()  # packed: the silence is encoded once for all batches (in this precision)

    def decode(audios):
        with precision_context(precision, device):
            if config.pack:  # the clips of a batch in one encoder pass
                return transcribe_packed(model, processor, audios, config.language, config.batch_size,
                                         config.max_new_tokens, config.beam_size, progress=False, cache=silence,
                                         fallback=config.fallback)
            return decode_batch(model, processor, audios, config.language, config.max_new_tokens,
                                config.beam_size, config.fallback)

    return decode, processor.tokenizer, str(device), precision


def _decode_remaining(config: EvalConfig, kept: list[Clip], samples: list[int], manifest: Path,
                      done: dict[str, str], sink: _Sink, skipped: dict[str, list[str]]) -> _Run:
    """Decode the batches not finished yet (batches of similar length, as :func:`kidwhisper.decode.
    in_length_batches` makes them), reading each batch's audio when it is decoded; append each batch's lines."""
    order = sorted(range(len(kept)), key=lambda i: samples[i])
    batches = [order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)]
    todo = [b for b in batches if not all(kept[i].id in done for i in b)]
    run = _Run(device="not loaded (every clip was decoded before)", precision=config.precision)
    if not todo:
        return run
    decode, tok, run.device, run.precision = _decoder(config)
    with tqdm(total=len(kept), initial=len(kept) - sum(map(len, todo)), desc="decoding", unit="clip",
              disable=not config.progress) as bar:
        for batch in todo:
            clips, audios = _read_batch([kept[i] for i in batch], manifest, skipped)
            t0 = time.perf_counter()
            decoded = decode(audios) if audios else []
            run.wall += time.perf_counter() - t0
            run.audio_seconds += sum(len(a) for a in audios) / SAMPLE_RATE
            run.n_decoded += len(decoded)
            sink.append("".join(utterance_line(c, d, tok) + "\n" for c, d in zip(clips, decoded, strict=True)))
            bar.update(len(batch))
    return run


def _read_batch(clips: list[Clip], manifest: Path, skipped: dict[str, list[str]]) -> tuple[list[Clip], list]:
    """The clips of one batch whose audio decodes to samples, and their audio; the others are counted in
    ``skipped`` (a file that broke after it was checked)."""
    from kidwhisper.audio import AudioError, load_audio

    kept, audios = [], []
    for clip in clips:
        path = audio_path(clip, manifest)
        try:
            audio = load_audio(path)
        except AudioError as e:
            if not path.exists():
                raise
            log.warning("skipped clip %s (%s): %s", clip.id, REASON_UNREADABLE_AUDIO, e)
            skipped.setdefault(REASON_UNREADABLE_AUDIO, []).append(clip.id)
            continue
        if not len(audio):
            log.warning("skipped clip %s (%s): %s holds no samples", clip.id, REASON_EMPTY_AUDIO, path)
            skipped.setdefault(REASON_EMPTY_AUDIO, []).append(clip.id)
            continue
        kept.append(clip)
        audios.append(audio)
    return kept, audios


def utterance_line(clip: Clip, d: Decoded, tokenizer) -> str:
    """One utterances.jsonl line: the clip, its decoded text and scores; ``hyp_guarded`` only for a
    hypothesis longer than its token budget (:func:`guard_budget`)."""
    meta = {"id": clip.id, "speaker": clip.speaker, "age": clip.age, "gender": clip.gender,
            "duration": clip.duration}
    score = score_utterance(clip.text, d.text, clip.duration, d.n_tokens)
    line = {**meta, "ref": clip.text, "hyp": d.text, "language": d.language, "n_tokens": d.n_tokens,
            "truncated": d.truncated, "fallback": d.fallback, **asdict(score)}
    budget = guard_budget(clip.duration)
    if d.n_tokens > budget:
        line["hyp_guarded"] = tokenizer.decode(d.tokens[:budget], skip_special_tokens=True)
    return json.dumps(line, ensure_ascii=False)


def summarize_lines(lines: list[str]) -> dict:
    """The summary of utterances.jsonl lines: WER, CIs, breakdowns, flags, the guarded WER, languages."""
    items, guarded_items, n_cut, languages, n_truncated, n_fallback = [], [], 0, [], 0, 0
    for line in lines:
        u = json.loads(line)
        meta = {k: u[k] for k in ("id", "speaker", "age", "gender", "duration")}
        items.append((meta, UtteranceScore.from_json(u)))
        budget = guard_budget(u["duration"])
        n_cut += u["n_tokens"] > budget
        guarded_items.append((meta, score_utterance(u["ref"], u.get("hyp_guarded", u["hyp"]), u["duration"],
                                                    min(u["n_tokens"], budget))))
        languages.append(u["language"] or "none")
        n_truncated += bool(u["truncated"])
        n_fallback += bool(u.get("fallback"))
    summary = summarize(items)
    guarded = summarize(guarded_items, breakdown_keys=())
    summary["guarded"] = {
        "rule": f"hypothesis cut to ceil({GUARD_TOKENS_PER_SECOND} tokens/s x duration + {GUARD_SLACK_TOKENS}) tokens",
        "wer": guarded["wer"], "flags": guarded["flags"], "n_cut": n_cut,
    }
    head, cut = summary["wer"]["whisper"], summary["guarded"]
    log.info("%d clips, %d speakers: WER %s (guarded %s, %d cut), %d hallucinations, %d skipped (empty reference)",
             summary["n_utts"], summary["n_speakers"], _pct(head["wer"]), _pct(cut["wer"]["whisper"]["wer"]),
             cut["n_cut"], summary["flags"]["hallucination"], head.get("n_skipped_empty_ref", 0))
    summary["languages"] = dict(Counter(languages).most_common())  # most frequent first
    summary["n_truncated"] = n_truncated  # as decoded (after any fallback)
    summary["n_fallback"] = n_fallback  # beam search ran away on these clips; they were decoded greedily
    return summary


# ----------------------------------------------------------------------------------------- resuming
def _read_lines(path: Path) -> dict[str, str]:
    """id -> the last complete line of utterances.jsonl for that clip (a line cut short by a kill is ignored)."""
    lines: dict[str, str] = {}
    if not path.is_file():
        return lines
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                lines[json.loads(line)["id"]] = line.rstrip("\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return lines


def _previous_utterances(out: Path, config: EvalConfig, resume: bool) -> dict[str, str]:
    """The finished lines of an earlier evaluation in ``out`` to continue from: an interrupted one (no
    summary.json) with the same options, or with ``resume`` a finished one too. ``resume`` with other
    options is a ConfigError; without it, other options start over."""
    saved_file = out / "eval_config.yaml"
    if not saved_file.is_file() or not (out / UTTERANCES).is_file():
        if resume:
            log.info("--resume: no earlier evaluation in %s; starting one", out)
        return {}
    saved = read_config_file(saved_file)
    diff = sorted(k for k, v in asdict(config).items() if k not in RESUME_MAY_CHANGE and saved.get(k) != v
                  and not (k == "fallback" and config.beam_size == 1))  # greedy: fallback changes nothing
    if diff and resume:
        raise ConfigError(f"--resume: option(s) {diff} differ from {saved_file}; resume with the evaluation's own "
                          f"options (or choose another --out)")
    if diff:
        log.warning("%s holds an evaluation with other options (%s): starting over", out, diff)
        return {}
    if (out / "summary.json").is_file() and not resume:
        return {}
    return _read_lines(out / UTTERANCES)


def _check_done(done: dict[str, str], clips: list[Clip], manifest: Path) -> None:
    """Finished lines must belong to the manifest's clips as they are now (same reference and duration)."""
    by_id = {c.id: c for c in clips}
    for i, line in done.items():
        u, c = json.loads(line), by_id.get(i)
        if c is None or u["ref"] != c.text or u["duration"] != c.duration:
            raise ConfigError(f"{manifest}: clip {i} is not what the interrupted evaluation decoded (the manifest "
                              f"changed); evaluate into another --out")


def _cut_torn_tail(path: Path) -> None:
    """Cut ``path`` after its last newline: a line a kill left half-written is dropped before appending."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            block = f.read(step)
            if b"\n" in block:
                pos = pos - step + block.rindex(b"\n") + 1
                break
            pos -= step
    if pos < end:
        with writing(path):
            os.truncate(path, pos)


class _Sink:
    """Where the results go: ``out``, or, once a write there fails (a full disk), a new directory in the
    system temp dir that takes every line written so far; :meth:`finish` then raises the first error
    naming that directory."""

    def __init__(self, out: Path):
        self.out = self.dir = out
        self.error: OutputError | None = None
        self.config: EvalConfig | None = None

    def start(self, config: EvalConfig, fresh: bool) -> None:
        """eval_config.yaml, and unless continuing an empty utterances.jsonl; an old summary.json is removed
        first, so ``out`` never pairs an old summary with new utterances."""
        self.config = config
        self._try(lambda d: self._start(d, fresh))

    def _start(self, d: Path, fresh: bool) -> None:
        with writing(d / "summary.json"):
            (d / "summary.json").unlink(missing_ok=True)
        save_config(self.config, d / "eval_config.yaml")
        if fresh or not (d / UTTERANCES).exists():
            atomic_write_text(d / UTTERANCES, "")
        else:
            _cut_torn_tail(d / UTTERANCES)

    def append(self, text: str) -> None:
        self._try(lambda d: append_text(d / UTTERANCES, text))

    def finish(self, lines: list[str], summary: dict) -> None:
        """utterances.jsonl in manifest order, then summary.json (written last: it marks a complete run)."""
        text = "\n".join(lines) + "\n"
        self._try(lambda d: atomic_write_text(d / UTTERANCES, text))
        self._try(lambda d: atomic_write_text(d / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False)
                                              + "\n"))
        if self.error is not None:
            e = self.error
            raise type(e)(f"{e}. The finished decode of {len(lines)} clips is saved in {self.dir} (utterances.jsonl, "
                          f"summary.json, eval_config.yaml): move it to {self.out} once there is space") from e

    def _try(self, write) -> None:
        try:
            write(self.dir)
        except OutputError as e:
            if self.error is not None:
                raise type(self.error)(f"{self.error}. The finished decode could not be saved elsewhere either "
                                       f"({e})") from e
            self.error = e
            self._move()
            write(self.dir)

    def _move(self) -> None:
        """Continue in a new temp directory with the config and the lines written so far."""
        try:
            kept = Path(tempfile.mkdtemp(prefix="kidwhisper-evaluate-"))
            save_config(self.config, kept / "eval_config.yaml")
            old = self.out / UTTERANCES
            atomic_write_text(kept / UTTERANCES, old.read_text(encoding="utf-8") if old.is_file() else "")
        except (OSError, OutputError) as e2:
            raise type(self.error)(f"{self.error}. The finished decode could not be saved elsewhere either ({e2})") \
                from self.error
        self.dir = kept


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


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
    rows.append(("real-time factor", "-" if summary["rtf"] is None else f"{summary['rtf']:.3f}", ""))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, width, strict=True)) for r in rows)
