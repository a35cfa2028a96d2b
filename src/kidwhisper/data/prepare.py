"""``kidwhisper prepare``: any supported corpus layout -> 16 kHz mono clips + a JSONL manifest + a report.

Layouts: Kaldi data directories, manifests, sidecar trees, recordings with time-aligned transcripts,
Hugging Face datasets and lhotse manifests (:mod:`kidwhisper.data.readers`).

Steps: read the layout (:mod:`kidwhisper.data.readers`), check ids and transcripts in this process, then
convert audio in worker processes (one task per clip, or per recording for segmented layouts, so a long
recording is opened once), and write::

    OUTPUT_DIR/manifest.jsonl        one line per kept clip (see kidwhisper.data.manifest)
    OUTPUT_DIR/clips/<id>.flac       16 kHz mono 16-bit (or .wav with audio_format="wav")
    OUTPUT_DIR/prepare_report.json   counts, skips by reason (with files/ids), fixes by kind, hours, speakers, ages
    OUTPUT_DIR/prepare_config.json   the resolved PrepareConfig
    OUTPUT_DIR/prepare_files.json    the clip files prepare wrote into OUTPUT_DIR/clips (its clean-up list)

prepare never deletes or overwrites a file it did not write. OUTPUT_DIR must not overlap the input (be
it, inside it, contain it, or hold any audio file the input refers to; symlinks resolved): such a run is
refused before anything is written. A clip file already in OUTPUT_DIR/clips that an earlier prepare did
not write (it is not in ``prepare_files.json``, nor, for outputs of versions without that file, in the
old manifest) is never removed, and one with the name of a clip to write stops the run. Likewise
``manifest.jsonl``, ``prepare_report.json`` and ``prepare_config.json`` are only replaced in a directory
an earlier prepare wrote.

Audio held inside the input (a Hugging Face dataset's embedded bytes, lhotse recordings that lhotse must
decode) is first written to ``OUTPUT_DIR/.staging/``, which is deleted when prepare ends.

Every bad utterance is either fixed and counted (``fixes``) or skipped with its reason (``skipped``),
never silently dropped; one kept despite a doubt (segments that overlap) is listed under ``warnings``. Policies:

* duplicate ids: the first occurrence is kept, later ones are skipped ("duplicate id"); ids are first made
  file-name safe (characters other than letters, digits, ``._-`` become ``_``, counted as a fix);
* transcripts are NFC-normalised and whitespace is collapsed; control, zero-width/format, private-use and
  U+FFFD characters cannot be meant as speech and are removed (a fix) - an empty result is a skip;
* stereo is averaged to mono and other rates are resampled (fixes); silent (peak < 1e-4), zero-length,
  too short or too long clips are skipped;
* re-running into the same OUTPUT_DIR overwrites its clips and deletes the clips it wrote earlier that the
  new manifest does not list (and its own leftover ``.tmp`` files), nothing else.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from kidwhisper.audio import SAMPLE_RATE, AudioError, read_audio, to_mono_16k
from kidwhisper.config import ConfigError
from kidwhisper.data import readers, readers_lhotse, segment
from kidwhisper.data.manifest import MANIFEST_NAME, Clip, ManifestError, read_manifest, write_manifest
from kidwhisper.data.readers import FORMATS, InputError, RawItem, ReadOptions, Skip, read_input
from kidwhisper.data.segment import MAX_CLIP_SECONDS, Segment, segment_recording, to_samples, too_long_reason
from kidwhisper.files import atomic_write_bytes, atomic_write_text, writing
from kidwhisper.files import check_output_dir as check_writable_dir

log = logging.getLogger(__name__)

REPORT_NAME = "prepare_report.json"
CONFIG_NAME = "prepare_config.json"
WRITTEN_NAME = "prepare_files.json"
CLIPS_DIR = "clips"
STAGING_DIR = ".staging"  # audio embedded in the input, as files; removed when prepare ends
SILENCE_PEAK = 1e-4  # full scale = 1.0; below this peak (about 3 LSB of 16-bit audio) a clip is silent
LIST_LIMIT = 1000  # ids/files listed per reason or fix in the report (the counts are always complete)

REASON_DUPLICATE = "duplicate id"
REASON_EMPTY_TEXT = "empty transcript"
REASON_UNREPRESENTABLE = "transcript has only unrepresentable characters"
REASON_MISSING_AUDIO = "audio file not found"
REASON_UNREADABLE = "unreadable or corrupt audio"
REASON_ZERO_LENGTH = "zero-length audio"
REASON_SILENT = "silent audio"
REASON_TOO_SHORT = "too short"

FIX_NFC = "text NFC-normalized"
FIX_TEXT_CLEANED = "text cleaned (unrepresentable characters removed)"
FIX_ID_SAFE = "id made file-name safe"
FIX_RESAMPLED = "resampled"
FIX_DOWNMIXED = "downmixed"
FIX_PEAKS_CLIPPED = "peaks clipped to full scale"

HINTS = {  # the fix to suggest for each skip reason (in the report)
    REASON_DUPLICATE: "give every utterance a unique id",
    REASON_EMPTY_TEXT: "write the transcript, or remove the utterance",
    REASON_UNREPRESENTABLE: "write the transcript in plain text",
    REASON_MISSING_AUDIO: "fix the path (relative paths are resolved against the data dir / manifest)",
    REASON_UNREADABLE: "re-export the file as WAV/FLAC (e.g. `ffmpeg -i in out.wav`)",
    REASON_ZERO_LENGTH: "the file holds no audio: re-record or re-export it, or remove the utterance "
                        "(for a segment, fix its times)",
    REASON_SILENT: "check the recording (all zeros or near silence)",
    REASON_TOO_SHORT: "lower --min-duration if such short clips are wanted",
    readers.REASON_NOT_UTF8: "re-save the transcript as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
    readers.REASON_NO_AUDIO_ENTRY: "add the audio (file or wav.scp/segments entry) or remove the transcript",
    readers.REASON_NO_TRANSCRIPT: "add the transcript or remove the audio",
    readers.REASON_PIPED: "run the command once and list the resulting audio file in wav.scp",
    readers.REASON_BAD_LINE: "fix the line (see detail)",
    readers.REASON_BAD_TRANSCRIPT_FILE: "fix the time-aligned transcript (see detail)",
    readers_lhotse.REASON_UNSUPPORTED_SOURCE: "make the recording's source an audio file (see detail)",
    readers_lhotse.REASON_MIXED_CUT: "pass the cuts before mixing/padding (e.g. from CutSet.from_manifests)",
    readers_lhotse.REASON_LHOTSE_LOAD: "check the recording with lhotse (see detail), or convert it to a file",
    segment.REASON_BAD_SPAN: "fix the segment times",
    segment.REASON_BEYOND_END: "check that the transcript belongs to this recording",
    readers.WARN_OVERLAP: "fix the segment times unless the speech really overlaps (both clips hold that audio)",
}
TOO_LONG_HINT = "split long recordings with a segments/TextGrid file; for segment layouts shorten the segment"


class PrepareError(ValueError):
    """The input cannot be read, or nothing usable remains; the message names the file and the fix."""


@dataclass
class PrepareConfig:
    """Options of ``kidwhisper prepare`` (each field is the flag of the same name)."""

    format: Literal["auto", "kaldi", "manifest", "sidecar", "segments", "hf", "lhotse"] = "auto"  # corpus layout
    split: str | None = None  # split of a Hugging Face dataset / lhotse manifest dir; None = the only one
    text_column: str | None = None  # transcript column of a Hugging Face dataset or manifest; None = by name
    min_duration: float = 0.3  # seconds; shorter clips are skipped ("too short")
    max_duration: float = MAX_CLIP_SECONDS  # seconds; longer clips are skipped; at most Whisper's 30 s window
    jobs: int = 0  # worker processes for audio conversion, 0 = all available cores
    audio_format: Literal["flac", "wav"] = "flac"  # clip files, both 16 kHz mono 16-bit
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self) -> None:
        if self.format not in ("auto", *FORMATS):
            raise ConfigError(f"`--format` must be one of auto, {', '.join(FORMATS)}; got {self.format!r}")
        if not 0 < self.max_duration <= MAX_CLIP_SECONDS:
            raise ConfigError(f"`--max-duration` must be in (0, {MAX_CLIP_SECONDS:g}] seconds (Whisper's window is "
                              f"{MAX_CLIP_SECONDS:g} s); got {self.max_duration}")
        if not 0 <= self.min_duration < self.max_duration:
            raise ConfigError(f"`--min-duration` must be >= 0 and below `--max-duration` ({self.max_duration:g} s); "
                              f"got {self.min_duration}")
        if self.jobs < 0:
            raise ConfigError(f"`--jobs` must be >= 0 (0 = all cores); got {self.jobs}")
        if self.audio_format not in ("flac", "wav"):
            raise ConfigError(f"`--audio-format` must be flac or wav; got {self.audio_format!r}")


# --------------------------------------------------------------------------- transcripts and ids


def _unrepresentable(ch: str) -> bool:
    """Control, format (zero-width, BOM, bidi marks), private-use, surrogate, unassigned, or U+FFFD."""
    return ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Cn")


def clean_transcript(text: str) -> tuple[str, list[str]]:
    """NFC-normalise, drop characters no speaker says (see :func:`_unrepresentable`), collapse whitespace.

    Returns (clean text, fixes applied). Whitespace collapsing alone is not counted as a fix.
    """
    fixes = []
    normal = unicodedata.normalize("NFC", text)
    if normal != text:
        fixes.append(FIX_NFC)
    kept = "".join(" " if ch.isspace() else ch for ch in normal if ch.isspace() or not _unrepresentable(ch))
    if len(kept) != len(normal):
        fixes.append(FIX_TEXT_CLEANED)
    return " ".join(kept.split()), fixes


_UNSAFE_ID = re.compile(r"[^\w.-]+")


def safe_id(utt: str) -> str:
    """An id usable as a file name: runs of other characters -> "_", no leading dot."""
    safe = _UNSAFE_ID.sub("_", utt)
    return "_" + safe[1:] if safe.startswith(".") else safe or "_"


# --------------------------------------------------------------------------- audio (worker processes)


@dataclass
class _Job:
    id: str
    start: float | None
    end: float | None
    text: str


@dataclass
class _Task:
    audio: str
    segmented: bool  # cut start..end from a recording (checked with segment_recording)
    jobs: list[_Job]


@dataclass(frozen=True)
class _Settings:
    clips_dir: str
    audio_format: str
    min_duration: float
    max_duration: float


@dataclass
class _Outcome:
    id: str
    reason: str | None = None  # None = written
    detail: str = ""
    duration: float = 0.0
    start: float = 0.0  # in the source recording, seconds
    end: float = 0.0
    fixes: list[str] = field(default_factory=list)


class _Source:
    """An audio file opened once: soundfile reads regions on demand; other formats are decoded whole."""

    def __init__(self, path: Path):
        import soundfile as sf

        self.path, self.data = path, None
        try:
            info = sf.info(str(path))
            self.rate, self.frames, self.channels = info.samplerate, info.frames, info.channels
        except Exception:  # noqa: BLE001 - not for libsndfile: PyAV decodes it (or raises AudioError)
            self.data, self.rate = read_audio(path)
            self.frames, self.channels = self.data.shape
        self.duration = self.frames / self.rate if self.rate else 0.0

    def read(self, start: float, end: float | None) -> np.ndarray:
        if self.data is None:
            return read_audio(self.path, start, end)[0]
        last = None if end is None else to_samples(end, self.rate)
        return self.data[to_samples(start, self.rate):last]


def _cut(source: _Source, cid: str, start: float, end: float | None, fixes: list[str], s: _Settings,
         segmented: bool) -> _Outcome:
    src_end = source.duration if end is None else end
    if source.frames == 0:
        return _Outcome(cid, REASON_ZERO_LENGTH, f"{source.path} is an audio file with no samples")
    if src_end - start <= 0:
        return _Outcome(cid, REASON_ZERO_LENGTH, f"{source.path} has no samples in {start:.3f}-{src_end:.3f} s")
    if not segmented and src_end - start > s.max_duration + 1.0 / SAMPLE_RATE:  # decide before decoding
        return _Outcome(cid, too_long_reason(s.max_duration),
                        f"{src_end - start:.1f} s; split it with a segments/TextGrid file")
    try:
        data = source.read(start, end)
    except AudioError as e:
        return _Outcome(cid, REASON_UNREADABLE, str(e))
    audio = to_mono_16k(data, source.rate)
    if source.rate != SAMPLE_RATE:
        fixes.append(FIX_RESAMPLED)
    if data.ndim == 2 and data.shape[1] > 1:
        fixes.append(FIX_DOWNMIXED)
    duration = len(audio) / SAMPLE_RATE
    if len(audio) == 0:
        if segmented:
            return _Outcome(cid, REASON_ZERO_LENGTH, f"{source.path} has no samples in {start:.3f}-{src_end:.3f} s")
        return _Outcome(cid, REASON_UNREADABLE, f"{source.path}: its header announces {source.frames} frames but "
                                                f"none decode; the file is corrupt")
    if duration < s.min_duration:
        return _Outcome(cid, REASON_TOO_SHORT, f"{duration:.3f} s < --min-duration {s.min_duration:g} s")
    if len(audio) > to_samples(s.max_duration, SAMPLE_RATE):
        hint = "shorten or split the segment" if segmented else "split it with a segments/TextGrid file"
        return _Outcome(cid, too_long_reason(s.max_duration), f"{duration:.1f} s; {hint}")
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        return _Outcome(cid, REASON_SILENT, f"peak {peak:.2g} < {SILENCE_PEAK:g} of full scale")
    if peak > 1.0:
        fixes.append(FIX_PEAKS_CLIPPED)
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)  # exact for 16-bit input
    _write_clip(Path(s.clips_dir) / f"{cid}.{s.audio_format}", pcm, s.audio_format)
    return _Outcome(cid, None, "", round(duration, 6), round(start, 6), round(start + duration, 6), fixes)


def _write_clip(path: Path, pcm: np.ndarray, audio_format: str) -> None:
    """Encode in memory, then write atomically (a full disk is a DiskFullError naming the clip)."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format=audio_format.upper(), subtype="PCM_16")
    atomic_write_bytes(path, buf.getbuffer(), fsync=False)


def _convert_task(task: _Task, settings: _Settings) -> list[_Outcome]:
    """One source file -> one outcome per job (runs in a worker process)."""
    try:
        source = _Source(Path(task.audio))
    except AudioError as e:
        return [_Outcome(job.id, REASON_UNREADABLE, str(e)) for job in task.jobs]
    if not task.segmented:
        return [_cut(source, job.id, 0.0, None, [], settings, False) for job in task.jobs]
    segments = [Segment(job.start or 0.0, source.duration if job.end is None else job.end, job.text, id=job.id)
                for job in task.jobs]
    specs, seg_skips = segment_recording(Path(task.audio).stem, source.duration, segments, settings.max_duration)
    outcomes = [_Outcome(k.id, k.reason, k.detail) for k in seg_skips]
    outcomes += [_cut(source, spec.id, spec.start, spec.end, list(spec.fixes), settings, True) for spec in specs]
    return outcomes


def _workers(jobs: int, n_tasks: int) -> int:
    if jobs == 0:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(jobs, n_tasks))


def _run(tasks: list[_Task], settings: _Settings, config: PrepareConfig) -> tuple[list[_Outcome], int]:
    workers = _workers(config.jobs, len(tasks))
    convert = partial(_convert_task, settings=settings)
    outcomes: list[_Outcome] = []
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=sum(len(t.jobs) for t in tasks), unit="clip", desc="prepare",
                                       disable=not config.progress))
        if workers == 1:
            results = map(convert, tasks)
        else:
            pool = ProcessPoolExecutor(workers)
            stack.callback(pool.shutdown, cancel_futures=True)
            results = pool.map(convert, tasks, chunksize=max(1, min(16, len(tasks) // (workers * 8))))
        for result in results:
            outcomes += result
            bar.update(len(result))
    return outcomes, workers


# --------------------------------------------------------------------------- prepare


def _check_items(items: list[RawItem], skips: list[Skip], fixes: dict[str, list[str]]) -> list[RawItem]:
    """Ids, transcripts and audio existence, checked in this process; returns the usable items."""
    first: dict[str, str] = {}
    exists: dict[Path, bool] = {}
    usable = []
    for item in items:
        utt = safe_id(item.id)
        if utt != item.id:
            fixes[FIX_ID_SAFE].append(item.id)
            item.id = utt
        if utt in first:
            skips.append(Skip(REASON_DUPLICATE, item.origin, f"first used at {first[utt]}", utt))
            continue
        first[utt] = item.origin
        text, text_fixes = clean_transcript(item.text)
        if not text:
            reason = REASON_UNREPRESENTABLE if item.text.strip() else REASON_EMPTY_TEXT
            skips.append(Skip(reason, item.origin, f"{item.text[:40]!r}", utt))
            continue
        for kind in text_fixes:
            fixes[kind].append(utt)
        item.text = text
        if item.audio not in exists:
            exists[item.audio] = item.audio.is_file()
        if not exists[item.audio]:
            skips.append(Skip(REASON_MISSING_AUDIO, str(item.audio), f"listed at {item.origin}", utt))
            continue
        usable.append(item)
    return usable


def _tasks(items: list[RawItem]) -> list[_Task]:
    """Whole-file items -> one task each; items with start/end -> one task per recording."""
    tasks: list[_Task] = []
    recordings: dict[Path, _Task] = {}
    for item in items:
        job = _Job(item.id, item.start, item.end, item.text)
        if item.start is None and item.end is None:
            tasks.append(_Task(str(item.audio), False, [job]))
        elif item.audio in recordings:
            recordings[item.audio].jobs.append(job)
        else:
            recordings[item.audio] = _Task(str(item.audio), True, [job])
            tasks.append(recordings[item.audio])
    return tasks


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_no_overlap(input_path: Path, out: Path, items: list[RawItem]) -> None:
    """Refuse an OUTPUT_DIR that overlaps the input: is it, is inside it, contains it, or holds an audio
    file an item refers to (paths compared after resolving symlinks). Raises PrepareError naming both."""
    src, dst = Path(os.path.realpath(input_path)), Path(os.path.realpath(out))
    if src == dst:
        relation = f"is the input {input_path}"
    elif _inside(dst, src):
        relation = f"is inside the input {input_path}"
    elif _inside(src, dst):
        relation = f"contains the input {input_path}"
    else:
        held = sorted({a for a in (Path(os.path.realpath(p)) for p in {i.audio for i in items}) if _inside(a, dst)})
        if not held:
            return
        relation = f"holds {len(held)} audio file(s) of the input {input_path} (e.g. {held[0]})"
    suggestion = src.parent / f"{src.stem if src.is_file() else src.name}-prepared"
    raise PrepareError(f"OUTPUT_DIR {out} {relation}; prepare writes and cleans up OUTPUT_DIR, so it must not "
                       f"overlap the input: pass a new directory outside the input, e.g. {suggestion}")


def _written_before(out: Path) -> tuple[bool, set[str]]:
    """(OUTPUT_DIR holds an earlier prepare's output, names of the clip files that prepare wrote).

    The names come from ``prepare_files.json``, or, for outputs of versions without it, from the old
    manifest's ``clips/<name>`` entries.
    """
    import json

    ledger, config = out / WRITTEN_NAME, out / CONFIG_NAME
    if ledger.is_file():
        try:
            return True, set(json.loads(ledger.read_text(encoding="utf-8"))["clips"])
        except (ValueError, KeyError, TypeError) as e:
            raise PrepareError(f"{ledger}: unreadable ({e!r}); it lists the clips prepare wrote. Prepare into a "
                               f"new OUTPUT_DIR (or delete {out} yourself if it holds nothing else)") from e
    if not config.is_file():
        return False, set()
    try:
        old = read_manifest(out / MANIFEST_NAME) if (out / MANIFEST_NAME).is_file() else []
    except ManifestError:
        old = []
    return True, {Path(c.audio).name for c in old if Path(c.audio).parent == Path(CLIPS_DIR)}


def _claim_outputs(out: Path, names: set[str]) -> set[str]:
    """Check that writing OUTPUT_DIR's files and the clips ``names`` overwrites only files prepare wrote,
    record ``names`` as written, and return every clip name prepare has written there (earlier or now)."""
    ours, written = _written_before(out)
    clips_dir = out / CLIPS_DIR
    foreign = [] if ours else [out / n for n in (MANIFEST_NAME, REPORT_NAME, CONFIG_NAME) if (out / n).exists()]
    foreign += [clips_dir / n for n in sorted(names - written) if (clips_dir / n).exists()]
    if foreign:
        raise PrepareError(f"{foreign[0]} exists and was not written by kidwhisper prepare ({len(foreign)} such "
                           f"file(s)); prepare never overwrites other files: move them away or pass a new "
                           f"OUTPUT_DIR")
    written = {n for n in written if (clips_dir / n).exists() or (clips_dir / f".{n}.tmp").exists()} | names
    _write_ledger(out, written)
    return written


def _write_ledger(out: Path, names: set[str]) -> None:
    atomic_write_text(out / WRITTEN_NAME, _json({"clips": sorted(names)}))


def _remove_stale(clips_dir: Path, written: set[str], keep: set[str]) -> int:
    """Delete the clips prepare wrote (``written``) that the new manifest does not list (``keep``), and
    prepare's own leftover temp files; nothing else in ``clips_dir`` is touched."""
    removed = 0
    for name in sorted(written):
        for path in ([] if name in keep else [clips_dir / name]) + [clips_dir / f".{name}.tmp"]:
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


def _count(values: list[str], durations: list[float] | None = None) -> dict[str, float]:
    if durations is None:
        return dict(sorted(Counter(values).items()))
    totals: dict[str, float] = defaultdict(float)
    for value, seconds in zip(values, durations, strict=True):
        totals[value] += seconds / 60
    return {k: round(v, 2) for k, v in sorted(totals.items())}


def _by_reason(entries: list[Skip]) -> dict[str, dict]:
    """{reason: {count, fix, items (the first LIST_LIMIT: id, file, detail)}}, sorted by reason."""
    by_reason: dict[str, dict] = {}
    for skip in entries:
        entry = by_reason.setdefault(skip.reason, {"count": 0, "fix": HINTS.get(skip.reason, TOO_LONG_HINT
                                                   if skip.reason.startswith("longer than") else ""), "items": []})
        entry["count"] += 1
        if len(entry["items"]) < LIST_LIMIT:
            entry["items"].append({"id": skip.id, "file": skip.file, "detail": skip.detail})
    return dict(sorted(by_reason.items()))


def _report(input_path: str, fmt: str, n_input: int, items: list[RawItem], clips: list[Clip], skips: list[Skip],
            fixes: dict[str, list[str]], warnings: list[Skip], config: PrepareConfig, workers: int,
            out: Path) -> dict:
    seconds = sum(c.duration for c in clips)
    speakers = [c.speaker if c.speaker is not None else "unknown" for c in clips]
    durations = [c.duration for c in clips]
    return {
        "input": {"path": input_path, "format": fmt, "utterances": n_input,
                  "recordings": len({i.audio for i in items})},
        "kept": len(clips),
        "skipped": {"total": len(skips), "by_reason": _by_reason(skips)},
        "fixes": {k: {"count": len(v), "ids": v[:LIST_LIMIT]} for k, v in sorted(fixes.items())},
        "warnings": {"total": len(warnings), "by_kind": _by_reason(warnings)},
        "duration": {"hours": round(seconds / 3600, 4), "minutes": round(seconds / 60, 2),
                     "seconds": round(seconds, 3)},
        "speakers": {"count": len({c.speaker for c in clips if c.speaker is not None}),
                     "clips": _count(speakers), "minutes": _count(speakers, durations)},
        "ages": _count(["unknown" if c.age is None else f"{c.age:g}" for c in clips]),
        "genders": _count(["unknown" if c.gender is None else c.gender for c in clips]),
        "config": asdict(config),
        "workers": workers,
        "outputs": {"manifest": str(out / MANIFEST_NAME), "clips": str(out / CLIPS_DIR),
                    "report": str(out / REPORT_NAME), "config": str(out / CONFIG_NAME),
                    "written": str(out / WRITTEN_NAME)},
    }


def _log_skips(skips: list[Skip], verb: str = "skipped") -> None:
    shown: Counter[str] = Counter()
    for skip in skips:
        shown[skip.reason] += 1
        if shown[skip.reason] <= 5:
            log.warning("%s %s (%s): %s; %s", verb, skip.id or "-", skip.file, skip.reason, skip.detail)
        elif shown[skip.reason] == 6:
            log.warning("more %s for %r; all are listed in %s", verb, skip.reason, REPORT_NAME)


def prepare(input: str | Path, output_dir: str | Path, config: PrepareConfig | None = None) -> dict:
    """Convert a corpus (Kaldi dir, manifest, sidecar tree or recordings with segments) into OUTPUT_DIR.

    Returns the report (also written to ``OUTPUT_DIR/prepare_report.json``). Raises PrepareError when the
    input is missing/unreadable/of unknown layout, or when no clip survives the checks.
    """
    config = config or PrepareConfig()
    out = check_writable_dir(output_dir, "OUTPUT_DIR")
    staging = out / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)  # left over by a killed run
    options = ReadOptions(config.split, config.text_column, staging, config.progress)
    try:
        try:
            fmt, items, skips = read_input(input, config.format, options)
        except InputError as e:
            raise PrepareError(str(e)) from e
        except OSError as e:
            raise PrepareError(f"{input}: cannot read the input ({e}); check that it exists and is readable") from e
        staged = Path(os.path.realpath(staging))  # audio this run extracted from the input, not the user's
        check_no_overlap(Path(input).expanduser(), out,
                         [i for i in items if not _inside(Path(os.path.realpath(i.audio)), staged)])
        warnings = [Skip(kind, item.origin, detail, item.id) for item in items for kind, detail in item.warnings]
        n_input = len(items) + len(skips)
        fixes: dict[str, list[str]] = defaultdict(list)
        usable = _check_items(items, skips, fixes)

        clips_dir = out / CLIPS_DIR
        written = _claim_outputs(out, {f"{item.id}.{config.audio_format}" for item in usable})
        with writing(clips_dir):
            clips_dir.mkdir(parents=True, exist_ok=True)
        settings = _Settings(str(clips_dir), config.audio_format, config.min_duration, config.max_duration)
        outcomes, workers = _run(_tasks(usable), settings, config)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    by_id = {o.id: o for o in outcomes}
    clips: list[Clip] = []
    for item in usable:
        o = by_id[item.id]
        if o.reason is not None:
            skips.append(Skip(o.reason, str(item.audio), o.detail, item.id))
            continue
        for kind in o.fixes:
            fixes[kind].append(item.id)
        clips.append(Clip(item.id, f"{CLIPS_DIR}/{item.id}.{config.audio_format}", o.duration, item.text,
                          item.speaker, item.age, item.gender,
                          {"path": item.source or str(item.audio), "start": o.start, "end": o.end}))
    kept = {Path(c.audio).name for c in clips}
    _remove_stale(clips_dir, written, kept)
    _write_ledger(out, kept)
    resolved = replace(config, format=fmt)  # type: ignore[arg-type]
    report = _report(_input_name(input), fmt, n_input, items, clips, skips, fixes, warnings,
                     resolved, workers, out)
    _log_skips(warnings, "kept with a warning")
    _log_skips(skips)
    reasons = ", ".join(f"{r}: {e['count']}" for r, e in report["skipped"]["by_reason"].items()) or "none"
    atomic_write_text(out / REPORT_NAME, _json(report))
    atomic_write_text(out / CONFIG_NAME, _json(asdict(resolved)))
    if not clips:
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        first = skips[0] if skips else None
        example = f"; e.g. {first.file}: {first.reason} ({first.detail})" if first else ""
        raise PrepareError(f"{input}: no usable clips among {n_input} utterances (skipped: {reasons}){example}; "
                           f"see {out / REPORT_NAME} for every file and its fix")
    write_manifest(clips, out / MANIFEST_NAME)
    read_manifest(out / MANIFEST_NAME)  # validate what was written (parses, unique ids)
    noted = ", ".join(f"{k}: {e['count']}" for k, e in report["warnings"]["by_kind"].items()) or "none"
    log.info("prepare: kept %d of %d utterances (%.1f min, %d speakers) -> %s; skipped: %s; warnings: %s",
             len(clips), n_input, report["duration"]["minutes"], report["speakers"]["count"], out / MANIFEST_NAME,
             reasons, noted)
    return report


def _input_name(input: str | Path) -> str:
    """The input as the report records it: an absolute path, or a Hub id as given."""
    path = Path(input).expanduser().resolve()
    return str(path) if path.exists() else str(input)


def _json(obj: object) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
