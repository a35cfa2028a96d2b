"""``kidwhisper transcribe``: audio files of any length -> text, JSON or SRT.

Input: any file :func:`kidwhisper.audio.load_audio` reads (WAV/FLAC/OGG via libsndfile, MP3/M4A/... via
PyAV), any sample rate, any number of channels; it becomes 16 kHz mono float32.

Long files: Whisper sees at most 30 s at a time. A file longer than that is cut into windows of at most
30 s (:func:`chunk_bounds`). Each cut is placed at the quietest moment of the last
``CUT_SEARCH_SECONDS`` (5 s) of the window: the frame energy (RMS of 20 ms frames, smoothed over
100 ms) is computed there and the window ends in the middle of its minimum, so a pause between words is
preferred over a cut through a word. The next window starts where the previous one ended; no audio is
dropped or decoded twice. Every window is decoded independently with
:func:`kidwhisper.decode.transcribe_arrays` (greedy, no timestamps, no previous-text prompt), exactly as
``kidwhisper evaluate`` decodes; windows of all files are batched together.

Timestamps are **chunk-level**: each segment is one window, with its start and end in the file.
Word-level timestamps are not provided. A window that is digital silence (peak below
``SILENCE_PEAK``) is not decoded (Whisper invents text for silence) and yields an empty segment, which
the SRT output leaves out.

Language: English is forced by default, as the models were tuned for it. ``language="auto"`` lets a
multilingual model detect the language per window; another ISO code forces that language (multilingual
models only). Task is always ``transcribe``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from kidwhisper.audio import N_SAMPLES, SAMPLE_RATE, AudioError, load_audio
from kidwhisper.config import ConfigError
from kidwhisper.decode import MAX_NEW_TOKENS, is_multilingual, transcribe_arrays
from kidwhisper.models.load import check_language, load_model

log = logging.getLogger(__name__)

OutputFormat = Literal["text", "json", "srt"]
OUTPUT_FORMATS: tuple[str, ...] = ("text", "json", "srt")

CUT_SEARCH_SECONDS = 5.0  # look for the quietest point in the last 5 s of each 30 s window
CUT_SEARCH = int(CUT_SEARCH_SECONDS * SAMPLE_RATE)  # 80000 samples
ENERGY_FRAME = SAMPLE_RATE // 50  # 320 samples = 20 ms frames for the energy curve
ENERGY_SMOOTH_FRAMES = 5  # moving average over 5 frames = 100 ms, so a gap inside a word does not win
SILENCE_PEAK = 1e-3  # a window whose |sample| never exceeds -60 dBFS is silence and is not decoded


def chunk_bounds(audio: np.ndarray, window: int = N_SAMPLES,
                 search: int = CUT_SEARCH) -> list[tuple[int, int]]:
    """Split ``audio`` (16 kHz mono) into ``[(start, end), ...]`` sample ranges of at most ``window``.

    The ranges are contiguous and cover the whole array. Audio that fits one window is one range. Each
    cut except the last lies in the final ``search`` samples of its window, at the frame of least
    smoothed energy (the latest such frame on ties, to keep windows long).
    """
    n = len(audio)
    bounds: list[tuple[int, int]] = []
    start = 0
    while n - start > window:
        end = start + window
        cut = end - search + _quietest_offset(audio[end - search : end])
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


def _quietest_offset(region: np.ndarray) -> int:
    """Sample offset inside ``region`` of the middle of its quietest (smoothed) 20 ms frame."""
    n_frames = len(region) // ENERGY_FRAME
    if n_frames == 0:
        return len(region)
    frames = region[: n_frames * ENERGY_FRAME].reshape(n_frames, ENERGY_FRAME).astype(np.float64)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    k = min(ENERGY_SMOOTH_FRAMES, n_frames)
    smooth = np.convolve(energy, np.ones(k) / k, mode="valid")  # smooth[j] averages frames j .. j+k-1
    j = len(smooth) - 1 - int(np.argmin(smooth[::-1]))  # argmin of the reversed curve: the latest minimum
    return (j + k // 2) * ENERGY_FRAME + ENERGY_FRAME // 2


def _check_language(model, language: str | None, name: str) -> str | None:
    """The language to pass to the decoder: an ISO code, or None for detection (multilingual only)."""
    auto = not language or language == "auto"
    if not is_multilingual(model):
        if not auto and language != "en":
            raise ConfigError(f"--language {language}: {name} is an English-only model; use --language en "
                              f"(or a multilingual model such as whisper-base)")
        return "en"
    if auto:
        return None
    known = getattr(model.generation_config, "lang_to_id", None) or {}
    if known and f"<|{language}|>" not in known:
        codes = sorted(k[2:-2] for k in known)
        raise ConfigError(f"--language {language}: not a language {name} knows; use one of {', '.join(codes)} "
                          f"or auto")
    return language


def load_files(files: Sequence[str | Path]) -> list[np.ndarray]:
    """Read every file as 16 kHz mono, before any model is loaded.

    Raises AudioError naming each file that cannot be read or holds no audio.
    """
    audios, problems = [], []
    for f in files:
        try:
            audio = load_audio(f)
        except AudioError as e:
            problems.append(str(e))
            continue
        if len(audio) == 0:
            problems.append(f"{f}: contains no audio samples")
        audios.append(audio)
    if problems:
        raise AudioError("; ".join(problems) if len(problems) > 1 else problems[0])
    return audios


def transcribe(files: str | Path | Sequence[str | Path], model: str, adapter: str | None = None,
               language: str = "en", output_format: OutputFormat = "text", device: str = "auto",
               batch_size: int = 8, progress: bool = True) -> list[dict]:
    """Transcribe audio files of any length with ``model`` (+ LoRA ``adapter``).

    Returns one dict per file, in order: ``file``, ``duration`` (s), ``language`` (of the first decoded
    window), ``text``, ``truncated`` (a window hit the token budget) and ``segments`` (one per window:
    ``id``, ``start``, ``end`` in seconds, ``text``). Render them with :func:`format_transcripts`;
    ``output_format`` and ``language`` are checked here, before the audio and the model are loaded.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"--format {output_format}: choose one of {', '.join(OUTPUT_FORMATS)}")
    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    paths = [files] if isinstance(files, str | Path) else list(files)
    if not paths:
        raise ConfigError("no audio files given; pass one or more AUDIO paths")
    check_language(model, language)  # from the model's generation config, before audio and weights load
    audios = load_files(paths)
    net, processor = load_model(model, adapter, device, merge=True)  # merged LoRA decodes at base speed
    return transcribe_loaded(net, processor, paths, audios, language, batch_size, progress,
                             name=model + (f" + {adapter}" if adapter else ""))


def transcribe_loaded(net, processor, paths: Sequence[str | Path], audios: Sequence[np.ndarray],
                      language: str | None = "en", batch_size: int = 8, progress: bool = True,
                      name: str = "the model", max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict]:
    """:func:`transcribe` with a loaded (model, processor) and loaded 16 kHz audio (one per path).

    ``max_new_tokens`` bounds the text of each window (Whisper's own 224 by default).
    """
    forced = _check_language(net, language, name)
    windows: list[np.ndarray] = []
    plan: list[list[tuple[int, int, int | None]]] = []  # per file: (start, end, index into windows or None)
    for audio in audios:
        rows = []
        for s, e in chunk_bounds(audio):
            piece = audio[s:e]
            if len(piece) and float(np.max(np.abs(piece))) >= SILENCE_PEAK:
                rows.append((s, e, len(windows)))
                windows.append(piece)
            else:
                rows.append((s, e, None))
        plan.append(rows)
    log.info("transcribing %d file(s) as %d window(s) of <= %d s (language=%s)", len(audios), len(windows),
             N_SAMPLES // SAMPLE_RATE, forced or "auto")
    decoded = transcribe_arrays(net, processor, windows, forced, batch_size, max_new_tokens,
                                progress=progress) if windows else []

    results = []
    for path, audio, rows in zip(paths, audios, plan, strict=True):
        segments, langs, truncated = [], [], False
        for i, (s, e, w) in enumerate(rows):
            d = decoded[w] if w is not None else None
            if d is not None:
                langs.append(d.language)
                truncated |= d.truncated
                if d.truncated:
                    log.warning("%s: window %.1f-%.1f s hit the token budget; its text may be cut or looping",
                                path, s / SAMPLE_RATE, e / SAMPLE_RATE)
            segments.append({"id": i, "start": round(s / SAMPLE_RATE, 3), "end": round(e / SAMPLE_RATE, 3),
                             "text": d.text if d else ""})
        results.append({
            "file": str(path),
            "duration": round(len(audio) / SAMPLE_RATE, 3),
            "language": next((lang for lang in langs if lang), forced),
            "text": " ".join(seg["text"] for seg in segments if seg["text"]),
            "truncated": truncated,
            "segments": segments,
        })
    return results


# ----------------------------------------------------------------------------------------- formatting
def srt_time(seconds: float) -> str:
    """Seconds -> ``HH:MM:SS,mmm`` (SubRip)."""
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def to_srt(result: dict) -> str:
    """One file's segments as SubRip: numbered from 1, empty (silent) windows left out."""
    blocks = []
    for seg in (s for s in result["segments"] if s["text"]):
        times = f"{srt_time(seg['start'])} --> {srt_time(seg['end'])}"
        blocks.append(f"{len(blocks) + 1}\n{times}\n{seg['text']}\n")
    return "\n".join(blocks)


def format_transcripts(results: list[dict], output_format: OutputFormat = "text") -> str:
    """Render :func:`transcribe` results for printing.

    ``text``: the transcript (one file) or ``FILE<TAB>transcript`` lines. ``json``: the list of result
    dicts. ``srt``: the SubRip document (one file); for several files each document is preceded by a
    ``==> FILE <==`` line (as ``head`` does), so split it or transcribe one file per call to get .srt files.
    """
    if output_format == "json":
        return json.dumps(results, indent=2, ensure_ascii=False)
    if output_format == "text":
        if len(results) == 1:
            return results[0]["text"]
        return "\n".join(f"{r['file']}\t{r['text']}" for r in results)
    if output_format == "srt":
        if len(results) == 1:
            return to_srt(results[0])
        return "\n".join(f"==> {r['file']} <==\n{to_srt(r)}" for r in results)
    raise ConfigError(f"--format {output_format}: choose one of {', '.join(OUTPUT_FORMATS)}")
