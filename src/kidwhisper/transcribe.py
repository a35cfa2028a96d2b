"""``kidwhisper transcribe``: audio files of any length -> text, JSON, SRT or WebVTT.

Input: any file :func:`kidwhisper.audio.stream_audio` reads (WAV/FLAC/OGG/MP3 via libsndfile, M4A/... via
PyAV), any sample rate, any number of channels; it becomes 16 kHz mono float32. Every file's header is
checked before the model loads.

Long files are streamed: Whisper sees at most 30 s at a time, and a file is read in blocks of
``READ_BLOCK_SECONDS`` and cut into windows of at most 30 s as it is read (:class:`WindowReader`), so
a file of any length holds at most one window plus one block of samples in memory, and the decoder at
most ``batch_size`` windows. Each cut is placed where :func:`chunk_bounds` places it for the whole file:
at the quietest moment of the last ``CUT_SEARCH_SECONDS`` (5 s) of the window (the frame energy, RMS of
20 ms frames smoothed over 100 ms, is computed there and the window ends in the middle of its minimum),
so a pause between words is preferred over a cut through a word. The next window starts where the
previous one ended; no audio is dropped or decoded twice. Every window is decoded independently with
:func:`kidwhisper.decode.decode_batch` (greedy, no timestamp tokens, no previous-text prompt), exactly
as ``kidwhisper evaluate`` decodes; windows of consecutive files share batches, and each file's result
is yielded (or written) as soon as its last window is decoded. With ``pack``, the files of a batch that
are one window of at most ``PACK_SECONDS`` share one encoder pass, decoded as ``evaluate --pack`` decodes
(:mod:`kidwhisper.decode_packed`); the windows of longer files are decoded as without it.

Timestamps: the decoded text of each window is aligned to its audio (:mod:`kidwhisper.timestamps`:
Whisper's cross-attention alignment heads + dynamic time warping, word edges moved out of pauses) and
grouped into phrase **segments** (cues) of at most ``MAX_CUE_SECONDS`` (7 s), split at pauses and
sentence ends; with ``word_timestamps`` each segment lists its words with start and end times. The
alignment never changes the text. Without ``timestamps`` (plain text output) no alignment runs and each
segment is one window. A window that is digital silence (peak below ``SILENCE_PEAK``) is not decoded
(Whisper invents text for silence) and has no text; SRT and WebVTT leave empty segments out.

Options: :class:`TranscribeConfig` (the flags of ``kidwhisper transcribe``); :func:`transcribe` and
:func:`transcribe_iter` take it with the audio files.

Output: ``--output-dir`` writes one ``<stem>.<ext>`` (``.txt``, ``.json``, ``.srt``, ``.vtt``) per input,
atomically, and refuses to overwrite an input or to write two inputs to the same name; the resolved
options go beside them as ``transcribe_config.yaml``.

Language: English is forced by default, as the models were tuned for it. ``language="auto"`` lets a
multilingual model detect the language per window; another ISO code forces that language (multilingual
models only). Task is always ``transcribe``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from kidwhisper.audio import N_SAMPLES, SAMPLE_RATE, AudioError, audio_duration, stream_audio
from kidwhisper.config import ConfigError, save_config
from kidwhisper.decode import (
    MAX_NEW_TOKENS,
    Decoded,
    check_device_precision,
    check_precision,
    decode_batch,
    precision_context,
    resolve_precision,
)
from kidwhisper.decode_packed import PACK_SECONDS, SilenceCache, decode_clips
from kidwhisper.files import atomic_write_text, check_output_dir
from kidwhisper.models.load import check_language, check_language_of, is_multilingual, load_model
from kidwhisper.timestamps import (
    Word,
    cue_dict,
    group_cues,
    prompt_ids,
    speech_frames,
    token_alignment,
    trim_to_speech,
    words_from_tokens,
)

log = logging.getLogger(__name__)

OutputFormat = Literal["text", "json", "srt", "vtt"]
OUTPUT_FORMATS: tuple[str, ...] = ("text", "json", "srt", "vtt")
EXTENSIONS = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}

CUT_SEARCH_SECONDS = 5.0  # look for the quietest point in the last 5 s of each 30 s window
CUT_SEARCH = int(CUT_SEARCH_SECONDS * SAMPLE_RATE)  # 80000 samples
ENERGY_FRAME = SAMPLE_RATE // 50  # 320 samples = 20 ms frames for the energy curve
ENERGY_SMOOTH_FRAMES = 5  # moving average over 5 frames = 100 ms, so a gap inside a word does not win
SILENCE_PEAK = 1e-3  # a window whose |sample| never exceeds -60 dBFS is silence and is not decoded
READ_BLOCK_SECONDS = 10.0  # a long file is read 10 s at a time
CONFIG_FILE = "transcribe_config.yaml"  # the resolved TranscribeConfig, written into --output-dir


@dataclass
class TranscribeConfig:
    """Options of ``kidwhisper transcribe`` (each field is the flag of the same name)."""

    model: str = "whisper-base"  # built-in name (whisper-base, whisper-tiny.en), HF/CTranslate2 directory or Hub id
    adapter: str | None = None  # LoRA adapter directory (RUN_DIR/adapter)
    language: str = "en"  # force this language, or 'auto' to let a multilingual model detect it per window
    format: OutputFormat = "text"  # text, JSON (with phrase segments), SubRip or WebVTT subtitles (cues of <= 7 s)
    word_timestamps: bool = False  # add word start/end times (JSON 'words', WebVTT word tags)
    timestamps: bool | None = None  # split the text into phrase cues aligned to the audio (None = yes, except
    # for --format text without --word-timestamps); off, each <= 30 s window is one segment
    output_dir: str | None = None  # write one OUTPUT_DIR/<stem>.<ext> per input (txt/json/srt/vtt) instead of printing
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto = CUDA, then Apple MPS, then CPU
    batch_size: int = 8  # windows decoded together
    beam_size: int = 1  # 1 = greedy; more: beam search, a window whose beam output runs away decoded again greedily
    pack: bool = False  # the short files (one window of <= 25 s) of a batch in one encoder pass, as evaluate --pack
    precision: Literal["float32", "bf16", "fp16", "auto"] = "float32"  # matrix products in float32, or bf16/fp16 autocast (auto = bf16 where native)
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise ConfigError(f"--format {self.format}: choose one of {', '.join(OUTPUT_FORMATS)}")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
        if self.beam_size < 1:
            raise ConfigError("--beam-size must be >= 1")
        check_precision(self.precision)
        if self.timestamps is None:
            self.timestamps = self.format != "text" or self.word_timestamps
        elif self.word_timestamps and not self.timestamps:
            raise ConfigError("--word-timestamps needs the alignment: drop --no-timestamps")


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
    multilingual = is_multilingual(model)
    if auto:
        return None if multilingual else "en"
    known = getattr(model.generation_config, "lang_to_id", None) or {}
    check_language_of(name, language, multilingual, {k[2:-2] for k in known})
    return language


def check_files(files: Sequence[str | Path]) -> list[float | None]:
    """The duration of every file from its header (None where the container does not say), before any
    model is loaded. Raises AudioError naming each file that cannot be read or holds no audio."""
    durations, problems = [], []
    for f in files:
        try:
            durations.append(audio_duration(f))
        except AudioError as e:
            problems.append(str(e))
    if problems:
        raise AudioError("; ".join(problems) if len(problems) > 1 else problems[0])
    return durations


class WindowReader:
    """The windows of one file, read as it streams: ``(start, end, samples)`` with the bounds that
    :func:`chunk_bounds` gives for the whole file, holding at most one window plus one read block.

    ``peak`` is the largest number of samples held at once (for tests and logs).
    """

    def __init__(self, source: str | Path | np.ndarray, window: int = N_SAMPLES, search: int = CUT_SEARCH,
                 block_seconds: float = READ_BLOCK_SECONDS):
        self.source, self.window, self.search, self.block_seconds = source, window, search, block_seconds
        self.peak = 0

    def _blocks(self) -> Iterator[np.ndarray]:
        if isinstance(self.source, np.ndarray):
            step = max(1, int(self.block_seconds * SAMPLE_RATE))
            return (self.source[i : i + step] for i in range(0, len(self.source), step))
        return stream_audio(self.source, self.block_seconds)

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        buf, start = np.zeros(0, np.float32), 0
        for block in self._blocks():
            buf = np.concatenate([buf, block])
            self.peak = max(self.peak, len(buf))
            while len(buf) > self.window:  # more than one window left: cut in the last `search` samples
                cut = self.window - self.search + _quietest_offset(buf[self.window - self.search : self.window])
                yield start, start + cut, buf[:cut].copy()
                buf, start = buf[cut:], start + cut
        yield start, start + len(buf), buf


@dataclass
class _Window:
    start: int  # samples from the start of the file
    end: int
    decoded: Decoded | None = None  # None: silent, not decoded
    queued: bool = False  # sent to the decoder (False for silence)
    words: list[Word] = field(default_factory=list)


@dataclass
class _Batcher:
    """Windows of all files decoded in batches of ``batch_size`` as they are read."""

    net: object
    processor: object
    language: str | None
    batch_size: int
    max_new_tokens: int
    timestamps: bool
    pack: bool = False  # short files (one window of <= PACK_SECONDS) of a batch share one encoder pass
    precision: str = "float32"  # resolved (kidwhisper.decode.resolve_precision): float32, bf16 or fp16
    num_beams: int = 1  # beam search (with the greedy fallback for runaways) decodes every window alone
    pending: list[tuple[_Window, np.ndarray]] = field(default_factory=list)
    silence: SilenceCache = field(default_factory=SilenceCache)  # the packed encoder's silence, kept across batches

    def add(self, window: _Window, samples: np.ndarray) -> None:
        window.queued = True
        self.pending.append((window, samples))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        windows, audios = (list(x) for x in zip(*self.pending, strict=True))
        self.pending = []
        precision = contextlib.nullcontext() if self.precision == "float32" else \
            precision_context(self.precision, next(self.net.parameters()).device)
        with precision:
            states = self._decode(windows, audios)
        if self.timestamps:  # outside the decoding's precision: the alignment's attention weights in float32
            self._align(windows, audios, torch.stack(states).float())

    def _decode(self, windows: list[_Window], audios: list[np.ndarray]) -> list[torch.Tensor | None]:
        """Decode the windows (short ones packed with ``pack``); their encoder states when ``timestamps``."""
        packed = [i for i, (w, a) in enumerate(zip(windows, audios, strict=True))
                  if self.pack and self.num_beams == 1 and w.start == 0 and len(a) <= PACK_SECONDS * SAMPLE_RATE]
        packed = packed if len(packed) > 1 else []
        alone = [i for i in range(len(windows)) if i not in set(packed)]
        states: list[torch.Tensor | None] = [None] * len(windows)
        if alone:
            with _encoder_output(self.net) as encoded:
                decoded = decode_batch(self.net, self.processor, [audios[i] for i in alone], self.language,
                                       self.max_new_tokens, self.num_beams)
            for k, (i, d) in enumerate(zip(alone, decoded, strict=True)):
                windows[i].decoded = d
                if self.timestamps:
                    states[i] = encoded["out"][k]
        if packed:
            with torch.inference_mode():
                decoded, encoded_packed = decode_clips(self.net, self.processor, [audios[i] for i in packed],
                                                       self.language, [self.max_new_tokens] * len(packed),
                                                       cache=self.silence)
            for i, d, e in zip(packed, decoded, encoded_packed, strict=True):
                windows[i].decoded, states[i] = d, e
        return states

    def _align(self, windows: list[_Window], audios: list[np.ndarray], encoded: torch.Tensor) -> None:
        keep = [i for i, w in enumerate(windows) if w.decoded.tokens]
        if not keep:
            return
        multilingual = is_multilingual(self.net)
        prompts = [prompt_ids(self.processor, windows[i].decoded.language, multilingual) for i in keep]
        texts = [windows[i].decoded.tokens for i in keep]
        eot = self.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        aligned = token_alignment(self.net, encoded[keep], prompts, texts, [len(audios[i]) for i in keep], eot)
        for i, (starts, token_p) in zip(keep, aligned, strict=True):
            words = words_from_tokens(self.processor.tokenizer, windows[i].decoded.tokens, starts, token_p,
                                      len(audios[i]) / SAMPLE_RATE)
            windows[i].words = trim_to_speech(words, speech_frames(audios[i]))


@contextlib.contextmanager
def _encoder_output(net) -> Iterator[dict]:
    """Keep the encoder's output of the next forward pass (decode_batch runs the encoder once), so the
    word alignment does not encode the windows again."""
    store: dict = {}

    def hook(module, inputs, output):
        store["out"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

    handle = net.get_encoder().register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def transcribe(config: TranscribeConfig, files: str | Path | Sequence[str | Path]) -> list[dict]:
    """Transcribe audio files of any length as ``config`` says; the list of :func:`transcribe_iter` results."""
    return list(transcribe_iter(config, files))


def transcribe_iter(config: TranscribeConfig, files: str | Path | Sequence[str | Path]) -> Iterator[dict]:
    """Transcribe audio files of any length with ``config.model`` (+ LoRA ``config.adapter``), yielding each
    file's result as soon as it is decoded.

    A result is a dict: ``file``, ``duration`` (s), ``language`` (of the first decoded window), ``text``,
    ``truncated`` (a window hit the token budget), ``windows`` (the decoded <= 30 s windows: ``start``,
    ``end``, ``text``) and ``segments``: phrase cues (``id``, ``start``, ``end``, ``text``, plus ``words``
    with ``word``, ``start``, ``end``, ``probability`` when ``word_timestamps``), or one segment per window
    when ``timestamps`` is False. With ``output_dir`` each result is also written there as
    ``<stem>.<ext>`` in ``format`` (:func:`write_result`), and the config as ``transcribe_config.yaml``.
    Options, paths and files are checked before the model is loaded.
    """
    c = config
    paths = [files] if isinstance(files, str | Path) else list(files)
    if not paths:
        raise ConfigError("no audio files given; pass one or more AUDIO paths")
    check_language(c.model, c.language)  # from the model's generation config, before audio and weights load
    check_device_precision(c.precision, c.device)
    targets = output_paths(paths, c.output_dir, c.format) if c.output_dir is not None else None
    durations = check_files(paths)
    if c.output_dir is not None:
        save_config(c, Path(c.output_dir) / CONFIG_FILE)
    net, processor = load_model(c.model, c.adapter, c.device, merge=True)  # merged LoRA decodes at base speed
    precision = resolve_precision(c.precision, next(net.parameters()).device)
    results = stream_transcripts(net, processor, paths, paths, c.language, c.batch_size, c.progress,
                                 c.model + (f" + {c.adapter}" if c.adapter else ""), MAX_NEW_TOKENS,
                                 c.timestamps, c.word_timestamps, durations, c.pack, precision, c.beam_size)
    for i, result in enumerate(results):
        if targets is not None:
            write_result(result, targets[i], c.format)
        yield result


def transcribe_loaded(net, processor, paths: Sequence[str | Path], audios: Sequence[np.ndarray],
                      language: str | None = "en", batch_size: int = 8, progress: bool = True,
                      name: str = "the model", max_new_tokens: int = MAX_NEW_TOKENS,
                      timestamps: bool = True, word_timestamps: bool = False, pack: bool = False,
                      precision: str = "float32", num_beams: int = 1) -> list[dict]:
    """:func:`transcribe` with a loaded (model, processor) and loaded 16 kHz audio (one per path) and the
    options as arguments.

    ``max_new_tokens`` bounds the text of each window (Whisper's own 224 by default); ``precision`` is
    float32, bf16 or fp16 (:func:`kidwhisper.decode.precision_context`); ``num_beams`` > 1 is beam search
    with the greedy fallback for runaways (:func:`kidwhisper.decode.decode_batch`).
    """
    return list(stream_transcripts(net, processor, paths, audios, language, batch_size, progress, name,
                                   max_new_tokens, timestamps or word_timestamps, word_timestamps, pack=pack,
                                   precision=precision, num_beams=num_beams))


def stream_transcripts(net, processor, paths: Sequence[str | Path], sources: Sequence[str | Path | np.ndarray],
                       language: str | None, batch_size: int, progress: bool, name: str, max_new_tokens: int,
                       timestamps: bool, word_timestamps: bool,
                       durations: Sequence[float | None] | None = None, pack: bool = False,
                       precision: str = "float32", num_beams: int = 1) -> Iterator[dict]:
    """Read each source (a file path or a 16 kHz array) window by window, decode the windows of all files in
    batches of ``batch_size`` (short files packed with ``pack``), and yield one result per file, in order,
    as soon as its last window is done."""
    forced = _check_language(net, language, name)
    batcher = _Batcher(net, processor, forced, batch_size, max_new_tokens, timestamps, pack, precision, num_beams)
    if durations is None:
        durations = [len(s) / SAMPLE_RATE if isinstance(s, np.ndarray) else None for s in sources]
    known = None if any(d is None for d in durations) else round(sum(durations), 1)
    log.info("transcribing %d file(s) in windows of <= %d s (language=%s)", len(paths), N_SAMPLES // SAMPLE_RATE,
             forced or "auto")
    done: list[tuple[str | Path, list[_Window]]] = []  # read completely, not yet yielded
    with tqdm(total=known, desc="transcribing", unit=" s audio", disable=not progress) as bar:
        for path, source in zip(paths, sources, strict=True):
            windows = []
            for s, e, samples in WindowReader(source):
                windows.append(_Window(s, e))
                if len(samples) and float(np.max(np.abs(samples))) >= SILENCE_PEAK:
                    batcher.add(windows[-1], samples)
                bar.update(round((e - s) / SAMPLE_RATE, 1))
                while done and _decoded(done[0][1]):
                    yield _result(*done.pop(0), forced, timestamps, word_timestamps)
            done.append((path, windows))
        batcher.flush()
    for path, windows in done:
        yield _result(path, windows, forced, timestamps, word_timestamps)


def _decoded(windows: list[_Window]) -> bool:
    """True when no window of the file still waits in a batch."""
    return all(not w.queued or w.decoded is not None for w in windows)


def _result(path: str | Path, windows: list[_Window], forced: str | None, timestamps: bool,
            word_timestamps: bool) -> dict:
    segments, langs, truncated = [], [], False
    for w in windows:
        d = w.decoded
        if d is not None:
            langs.append(d.language)
            truncated |= d.truncated
            if d.truncated:
                log.warning("%s: window %.1f-%.1f s hit the token budget; its text may be cut or looping",
                            path, w.start / SAMPLE_RATE, w.end / SAMPLE_RATE)
    window_rows = [{"start": round(w.start / SAMPLE_RATE, 3), "end": round(w.end / SAMPLE_RATE, 3),
                    "text": w.decoded.text if w.decoded else ""} for w in windows]
    if timestamps:
        for w in windows:
            segments += [cue_dict(cue, w.start / SAMPLE_RATE, word_timestamps) for cue in group_cues(w.words)]
    else:
        segments = [dict(row) for row in window_rows]
    return {
        "file": str(path),
        "duration": round((windows[-1].end if windows else 0) / SAMPLE_RATE, 3),
        "language": next((lang for lang in langs if lang), forced),
        "text": " ".join(row["text"] for row in window_rows if row["text"]),
        "truncated": truncated,
        "windows": window_rows,
        "segments": [{"id": i, **seg} for i, seg in enumerate(segments)],
    }


# ----------------------------------------------------------------------------------------- formatting
def srt_time(seconds: float, sep: str = ",") -> str:
    """Seconds -> ``HH:MM:SS,mmm`` (SubRip; ``sep="."`` gives WebVTT's ``HH:MM:SS.mmm``)."""
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(result: dict) -> list[dict]:
    return [s for s in result["segments"] if s["text"]]


def to_srt(result: dict) -> str:
    """One file's segments as SubRip: numbered from 1, empty (silent) segments left out."""
    blocks = []
    for seg in _cues(result):
        times = f"{srt_time(seg['start'])} --> {srt_time(seg['end'])}"
        blocks.append(f"{len(blocks) + 1}\n{times}\n{seg['text']}\n")
    return "\n".join(blocks)


def to_vtt(result: dict) -> str:
    """One file's segments as WebVTT: the ``WEBVTT`` header, then one cue per non-empty segment. With word
    times, each word carries a ``<HH:MM:SS.mmm>`` timestamp tag (karaoke-style)."""
    blocks = ["WEBVTT\n"]
    for seg in _cues(result):
        times = f"{srt_time(seg['start'], '.')} --> {srt_time(seg['end'], '.')}"
        words = seg.get("words")
        text = seg["text"] if not words else " ".join(
            w["word"] if i == 0 else f"<{srt_time(w['start'], '.')}>{w['word']}" for i, w in enumerate(words))
        blocks.append(f"{times}\n{text}\n")
    return "\n".join(blocks)


def render(result: dict, output_format: OutputFormat) -> str:
    """One file's result as the content of its ``<stem>.<ext>`` file."""
    if output_format == "json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if output_format == "text":
        return result["text"] + "\n"
    return (to_srt if output_format == "srt" else to_vtt)(result)


def format_transcripts(results: list[dict], output_format: OutputFormat = "text") -> str:
    """Render :func:`transcribe` results for printing.

    ``json``: the list of result dicts. One file: its transcript, or its SubRip / WebVTT document. Several
    files: :func:`format_listed` of each, one after the other; ``--output-dir`` writes one file per input
    instead.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"--format {output_format}: choose one of {', '.join(OUTPUT_FORMATS)}")
    if output_format == "json":
        return json.dumps(results, indent=2, ensure_ascii=False)
    if len(results) == 1:
        return results[0]["text"] if output_format == "text" else render(results[0], output_format)
    return "\n".join(format_listed(r, output_format) for r in results)


def format_listed(result: dict, output_format: OutputFormat) -> str:
    """One file's part of a listing of several: ``FILE<TAB>transcript`` for text; for srt/vtt its document
    after a ``==> FILE <==`` line (as ``head`` does)."""
    if output_format == "text":
        return f"{result['file']}\t{result['text']}"
    if output_format == "json":
        return json.dumps(result, ensure_ascii=False)
    return f"==> {result['file']} <==\n{render(result, output_format)}"


def output_paths(paths: Sequence[str | Path], output_dir: str | Path, output_format: OutputFormat) -> list[Path]:
    """``output_dir/<stem>.<ext>`` for each input, checked before any work: the directory must be writable,
    no two inputs may share a stem, and no output may be one of the inputs."""
    out = check_output_dir(output_dir, "--output-dir")
    ext = EXTENSIONS[output_format]
    targets = [out / f"{Path(p).stem}{ext}" for p in paths]
    seen: dict[Path, str | Path] = {}
    for p, t in zip(paths, targets, strict=True):
        if t in seen:
            raise ConfigError(f"--output-dir {output_dir}: {seen[t]} and {p} would both be written to {t.name}; "
                              f"transcribe them in separate calls or rename one")
        seen[t] = p
    inputs = {Path(p).resolve() for p in paths}
    for t in targets:
        if t.resolve() in inputs:
            raise ConfigError(f"--output-dir {output_dir}: {t} is one of the input files and would be overwritten; "
                              f"choose another --output-dir or --format")
    return targets


def write_result(result: dict, path: Path, output_format: OutputFormat) -> None:
    """Write one file's result to ``path`` atomically."""
    atomic_write_text(path, render(result, output_format))
    log.info("written: %s", path)
