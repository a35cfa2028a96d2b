"""``kidwhisper prepare``: any supported corpus layout -> 16 kHz mono clips + a JSONL manifest + a report.

Layouts: Kaldi data directories, manifests, sidecar trees, recordings with time-aligned transcripts,
Hugging Face datasets and lhotse manifests (:mod:`kidwhisper.data.readers`).

Steps: read the layout (:mod:`kidwhisper.data.readers`) once to check ids and transcripts and claim the
clip names, then again to convert the audio in worker processes (``--jobs``) and write::

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

prepare streams: readers yield one utterance at a time, chunks of them are converted a bounded number at a
time (:mod:`kidwhisper.data.convert`), finished chunks are appended to the manifest's temp file in input
order, and the report's counts are added up as they pass. Memory therefore holds a bounded number of
utterances, and audio only in the workers, whatever the corpus size; what grows with it are short strings
per utterance (its id, to find duplicates, and its clip's file name, for the clean-up list) and the text
tables of a Kaldi directory. Hugging Face datasets and lhotse manifests are still read into a list of
utterances first (their audio is written to disk, not held).

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

import functools
import json
import logging
import os
import re
import shutil
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from kidwhisper.config import ConfigError
from kidwhisper.data import readers, readers_lhotse, segment
from kidwhisper.data.convert import (  # noqa: F401 - the audio reasons and fixes are part of prepare's vocabulary
    CHUNK_ITEMS,
    FIX_DOWNMIXED,
    FIX_PEAKS_CLIPPED,
    FIX_RESAMPLED,
    IN_FLIGHT_PER_WORKER,
    REASON_SILENT,
    REASON_TOO_SHORT,
    REASON_UNREADABLE,
    REASON_ZERO_LENGTH,
    SILENCE_PEAK,
    Outcome,
    Settings,
    chunk_size,
    converted,
    max_items_in_memory,
    n_workers,
)
from kidwhisper.data.manifest import MANIFEST_NAME, Clip, ManifestError, iter_manifest, manifest_line
from kidwhisper.data.readers import FORMATS, Entry, InputError, RawItem, ReadOptions, Skip, open_input
from kidwhisper.data.segment import MAX_CLIP_SECONDS
from kidwhisper.files import AppendThenRename, atomic_write_text, writing
from kidwhisper.files import check_output_dir as check_writable_dir

log = logging.getLogger(__name__)

REPORT_NAME = "prepare_report.json"
CONFIG_NAME = "prepare_config.json"
WRITTEN_NAME = "prepare_files.json"
CLIPS_DIR = "clips"
STAGING_DIR = ".staging"  # audio embedded in the input, as files; removed when prepare ends
LIST_LIMIT = 1000  # ids/files listed per reason or fix in the report (the counts are always complete)

REASON_DUPLICATE = "duplicate id"
REASON_EMPTY_TEXT = "empty transcript"
REASON_UNREPRESENTABLE = "transcript has only unrepresentable characters"
REASON_MISSING_AUDIO = "audio file not found"

FIX_NFC = "text NFC-normalized"
FIX_TEXT_CLEANED = "text cleaned (unrepresentable characters removed)"
FIX_ID_SAFE = "id made file-name safe"

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


# --------------------------------------------------------------------------- checks, as the items stream by


class _Skips:
    """Skips (or warnings) as they stream by: every reason's count, and its first LIST_LIMIT in arrival order."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.listed: list[Skip] = []

    def add(self, skip: Skip) -> None:
        self.counts[skip.reason] += 1
        if self.counts[skip.reason] <= LIST_LIMIT:
            self.listed.append(skip)


@dataclass
class _Tally:
    """What the report counts besides the kept clips, gathered as the entries stream by."""

    n_input: int = 0  # utterances the reader yielded, usable or not
    read: _Skips = field(default_factory=_Skips)  # skipped by the reader
    checked: _Skips = field(default_factory=_Skips)  # skipped by the id/text/file checks
    converted: _Skips = field(default_factory=_Skips)  # skipped by the audio checks
    warnings: _Skips = field(default_factory=_Skips)
    fixes: Counter[str] = field(default_factory=Counter)
    fixed_ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # first LIST_LIMIT per kind

    def fix(self, kind: str, utt: str) -> None:
        self.fixes[kind] += 1
        if self.fixes[kind] <= LIST_LIMIT:
            self.fixed_ids[kind].append(utt)

    def skips(self) -> list[_Skips]:
        """In the order the report and the log list them: reader, checks, audio."""
        return [self.read, self.checked, self.converted]


def _usable(entries: Iterable[Entry], tally: _Tally) -> Iterator[RawItem]:
    """Ids, transcripts and audio existence, checked in this process as the entries stream by; yields the
    usable items (id made safe, text cleaned) and records everything else in ``tally``."""
    first: dict[str, str] = {}  # id -> where it was first used: grows with the corpus (short strings), as
    # finding a duplicate id anywhere in the input needs every id seen so far
    exists = functools.lru_cache(maxsize=4096)(Path.is_file)  # segments of one recording check it once
    for item in entries:
        tally.n_input += 1
        if isinstance(item, Skip):
            tally.read.add(item)
            continue
        for kind, detail in item.warnings:
            tally.warnings.add(Skip(kind, item.origin, detail, item.id))
        utt = safe_id(item.id)
        if utt != item.id:
            tally.fix(FIX_ID_SAFE, item.id)
        if utt in first:
            tally.checked.add(Skip(REASON_DUPLICATE, item.origin, f"first used at {first[utt]}", utt))
            continue
        first[utt] = item.origin
        text, text_fixes = clean_transcript(item.text)
        if not text:
            reason = REASON_UNREPRESENTABLE if item.text.strip() else REASON_EMPTY_TEXT
            tally.checked.add(Skip(reason, item.origin, f"{item.text[:40]!r}", utt))
            continue
        for kind in text_fixes:
            tally.fix(kind, utt)
        if not exists(item.audio):
            tally.checked.add(Skip(REASON_MISSING_AUDIO, str(item.audio), f"listed at {item.origin}", utt))
            continue
        yield replace(item, id=utt, text=text)  # a copy: a reader may yield the same objects on every pass


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_no_overlap(input_path: Path, out: Path, held: Iterable[Path] = ()) -> None:
    """Refuse an OUTPUT_DIR that overlaps the input: is it, is inside it, contains it, or holds one of the
    input's audio files ``held`` (paths compared after resolving symlinks). Raises PrepareError naming both."""
    src, dst = Path(os.path.realpath(input_path)), Path(os.path.realpath(out))
    if src == dst:
        relation = f"is the input {input_path}"
    elif _inside(dst, src):
        relation = f"is inside the input {input_path}"
    elif _inside(src, dst):
        relation = f"contains the input {input_path}"
    else:
        inside = sorted({a for a in (Path(os.path.realpath(p)) for p in held) if _inside(a, dst)})
        if not inside:
            return
        relation = f"holds {len(inside)} audio file(s) of the input {input_path} (e.g. {inside[0]})"
    suggestion = src.parent / f"{src.stem if src.is_file() else src.name}-prepared"
    raise PrepareError(f"OUTPUT_DIR {out} {relation}; prepare writes and cleans up OUTPUT_DIR, so it must not "
                       f"overlap the input: pass a new directory outside the input, e.g. {suggestion}")


@dataclass
class _Plan:
    """What prepare learns from a first pass over the input, before it writes anything."""

    usable: int  # items that pass the checks: the progress bar's total
    recordings: int  # distinct audio files the reader listed
    names: set[str]  # clip file names to write: the clean-up list must name them before they are written


def _plan(entries: Iterable[Entry], input_path: Path, out: Path, staging: Path, audio_format: str,
          progress: bool) -> _Plan:
    """Read the input once without converting: refuse an overlapping OUTPUT_DIR, count, and name the clips.

    Per item it keeps the clip's file name and its audio file's path (O(corpus) short strings, which the
    clean-up list and the report's recording count need); the items themselves are dropped.
    """
    check_no_overlap(input_path, out)
    dst, staged = Path(os.path.realpath(out)), Path(os.path.realpath(staging))
    recordings: set[str] = set()
    held: set[Path] = set()  # audio files of the input inside OUTPUT_DIR (a refusal)

    def seen(entries: Iterable[Entry]) -> Iterator[Entry]:
        for entry in entries:
            if isinstance(entry, RawItem):
                if str(entry.audio) not in recordings:
                    recordings.add(str(entry.audio))
                    real = Path(os.path.realpath(entry.audio))
                    if _inside(real, dst) and not _inside(real, staged):  # staged audio is this run's own
                        held.add(real)
            yield entry

    tally = _Tally()
    with tqdm(entries, unit="utt", desc="checking", disable=not progress) as bar:
        names = {f"{item.id}.{audio_format}" for item in _usable(seen(bar), tally)}
    check_no_overlap(input_path, out, held)
    log.info("%s: %d utterances, %d to convert", input_path, tally.n_input, len(names))
    return _Plan(len(names), len(recordings), names)


# --------------------------------------------------------------------------- output files


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
        old = [c.audio for c in iter_manifest(out / MANIFEST_NAME)] if (out / MANIFEST_NAME).is_file() else []
    except ManifestError:
        old = []
    return True, {Path(a).name for a in old if Path(a).parent == Path(CLIPS_DIR)}


def _claim_outputs(out: Path, names: set[str]) -> tuple[set[str], list[Path]]:
    """Check that writing OUTPUT_DIR's files and the clips ``names`` overwrites only files prepare wrote,
    record ``names`` as written, and return every clip name prepare has written there (earlier or now) and
    the temp files a killed run left for them."""
    ours, written = _written_before(out)
    clips_dir = out / CLIPS_DIR
    foreign = [] if ours else [out / n for n in (MANIFEST_NAME, REPORT_NAME, CONFIG_NAME) if (out / n).exists()]
    foreign += [clips_dir / n for n in sorted(names - written) if (clips_dir / n).exists()]
    if foreign:
        raise PrepareError(f"{foreign[0]} exists and was not written by kidwhisper prepare ({len(foreign)} such "
                           f"file(s)); prepare never overwrites other files: move them away or pass a new "
                           f"OUTPUT_DIR")
    if ours:  # a manifest temp file of a killed run (``.manifest.jsonl.<random>.tmp``)
        for leftover in out.glob(f".{MANIFEST_NAME}.*.tmp"):
            leftover.unlink()
    temps = _temp_files(clips_dir, written)
    written = {n for n in written if (clips_dir / n).exists() or n in temps} | names
    _write_ledger(out, written)
    return written, [path for paths in temps.values() for path in paths]


def _write_ledger(out: Path, names: set[str]) -> None:
    atomic_write_text(out / WRITTEN_NAME, _json({"clips": sorted(names)}))


def _temp_files(clips_dir: Path, names: set[str]) -> dict[str, list[Path]]:
    """The temp files a killed run left in ``clips_dir`` for the clips ``names`` (``.<clip>.<random>.tmp``, or
    ``.<clip>.tmp`` from older versions), by clip name, from one directory listing."""
    found: dict[str, list[Path]] = {}
    if not clips_dir.is_dir():
        return found
    with os.scandir(clips_dir) as entries:
        for e in entries:
            if e.name.startswith(".") and e.name.endswith(".tmp") and e.is_file(follow_symlinks=False):
                stem = e.name[1:-4]
                name = stem if stem in names else stem.rsplit(".", 1)[0]
                if name in names:
                    found.setdefault(name, []).append(Path(e.path))
    return found


def _remove_stale(clips_dir: Path, written: set[str], keep: set[str], temps: list[Path]) -> int:
    """Delete the clips prepare wrote (``written``) that the new manifest does not list (``keep``), and the
    temp files a killed run left (``temps``, from :func:`_claim_outputs`); nothing else in ``clips_dir`` is
    touched."""
    removed = 0
    for path in [clips_dir / name for name in sorted(written - keep)] + temps:
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


# --------------------------------------------------------------------------- report


@dataclass
class _Kept:
    """Statistics of the kept clips, added up as they are written (per speaker, age and gender)."""

    count: int = 0
    seconds: float = 0.0
    speakers: set[str] = field(default_factory=set)
    clips: Counter[str] = field(default_factory=Counter)  # per speaker ("unknown" for None)
    minutes: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # per speaker
    ages: Counter[str] = field(default_factory=Counter)
    genders: Counter[str] = field(default_factory=Counter)

    def add(self, clip: Clip) -> None:
        speaker = clip.speaker if clip.speaker is not None else "unknown"
        self.count += 1
        self.seconds += clip.duration
        if clip.speaker is not None:
            self.speakers.add(clip.speaker)
        self.clips[speaker] += 1
        self.minutes[speaker] += clip.duration / 60
        self.ages["unknown" if clip.age is None else f"{clip.age:g}"] += 1
        self.genders["unknown" if clip.gender is None else clip.gender] += 1


def _by_reason(parts: list[_Skips]) -> dict[str, dict]:
    """{reason: {count, fix, items (the first LIST_LIMIT: id, file, detail)}}, sorted by reason."""
    by_reason: dict[str, dict] = {}
    for part in parts:
        for reason, count in part.counts.items():
            entry = by_reason.setdefault(reason, {"count": 0, "fix": HINTS.get(reason, TOO_LONG_HINT if
                                                  reason.startswith("longer than") else ""), "items": []})
            entry["count"] += count
    for skip in (s for part in parts for s in part.listed):
        items = by_reason[skip.reason]["items"]
        if len(items) < LIST_LIMIT:
            items.append({"id": skip.id, "file": skip.file, "detail": skip.detail})
    return dict(sorted(by_reason.items()))


def _report(input_path: str, fmt: str, plan: _Plan, tally: _Tally, kept: _Kept, config: PrepareConfig,
            workers: int, out: Path) -> dict:
    return {
        "input": {"path": input_path, "format": fmt, "utterances": tally.n_input, "recordings": plan.recordings},
        "kept": kept.count,
        "skipped": {"total": sum(sum(p.counts.values()) for p in tally.skips()), "by_reason": _by_reason(tally.skips())},
        "fixes": {k: {"count": n, "ids": tally.fixed_ids[k]} for k, n in sorted(tally.fixes.items())},
        "warnings": {"total": sum(tally.warnings.counts.values()), "by_kind": _by_reason([tally.warnings])},
        "duration": {"hours": round(kept.seconds / 3600, 4), "minutes": round(kept.seconds / 60, 2),
                     "seconds": round(kept.seconds, 3)},
        "speakers": {"count": len(kept.speakers), "clips": dict(sorted(kept.clips.items())),
                     "minutes": {k: round(v, 2) for k, v in sorted(kept.minutes.items())}},
        "ages": dict(sorted(kept.ages.items())),
        "genders": dict(sorted(kept.genders.items())),
        "config": asdict(config),
        "workers": workers,
        "outputs": {"manifest": str(out / MANIFEST_NAME), "clips": str(out / CLIPS_DIR),
                    "report": str(out / REPORT_NAME), "config": str(out / CONFIG_NAME),
                    "written": str(out / WRITTEN_NAME)},
    }


def _log_skips(skips: Iterable[Skip], verb: str = "skipped") -> None:
    shown: Counter[str] = Counter()
    for skip in skips:
        shown[skip.reason] += 1
        if shown[skip.reason] <= 5:
            log.warning("%s %s (%s): %s; %s", verb, skip.id or "-", skip.file, skip.reason, skip.detail)
        elif shown[skip.reason] == 6:
            log.warning("more %s for %r; all are listed in %s", verb, skip.reason, REPORT_NAME)


# --------------------------------------------------------------------------- prepare


def prepare(input: str | Path, output_dir: str | Path, config: PrepareConfig | None = None) -> dict:
    """Convert a corpus (Kaldi dir, manifest, sidecar tree or recordings with segments) into OUTPUT_DIR.

    Two passes over the input: the first checks ids and transcripts, refuses an OUTPUT_DIR that overlaps
    the input and claims the clip names; the second converts the audio in ``config.jobs`` worker processes,
    a bounded number of chunks at a time (:func:`max_items_in_memory`), and appends each finished chunk to
    the manifest's temp file in input order, so serial and parallel runs write the same bytes.

    Returns the report (also written to ``OUTPUT_DIR/prepare_report.json``). Raises PrepareError when the
    input is missing/unreadable/of unknown layout, or when no clip survives the checks.
    """
    config = config or PrepareConfig()
    out = check_writable_dir(output_dir, "OUTPUT_DIR")
    staging = out / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)  # left over by a killed run
    options = ReadOptions(config.split, config.text_column, staging, config.progress)
    clips_dir = out / CLIPS_DIR
    tally, kept = _Tally(), _Kept()
    not_kept: set[str] = set()  # clip names of usable items whose audio was skipped
    try:
        try:
            fmt, entries = open_input(input, config.format, options)
            plan = _plan(entries(), Path(input).expanduser(), out, staging, config.audio_format, config.progress)
        except InputError as e:
            raise PrepareError(str(e)) from e
        except OSError as e:
            raise PrepareError(f"{input}: cannot read the input ({e}); check that it exists and is readable") from e
        written, temps = _claim_outputs(out, plan.names)
        with writing(clips_dir):
            clips_dir.mkdir(parents=True, exist_ok=True)
        settings = Settings(str(clips_dir), config.audio_format, config.min_duration, config.max_duration)
        workers = n_workers(config.jobs, plan.usable)
        chunk = chunk_size(workers, plan.usable)
        with AppendThenRename(out / MANIFEST_NAME) as manifest:
            with tqdm(total=plan.usable, unit="clip", desc="prepare", disable=not config.progress) as bar, \
                    closing(converted(_claimed(_usable(entries(), tally), plan, config.audio_format, input),
                                      settings, workers, chunk)) as chunks:
                for items, outcomes in chunks:
                    _write_chunk(items, outcomes, manifest, tally, kept, not_kept, config.audio_format)
                    bar.update(len(items))
            keep = plan.names - not_kept
            _remove_stale(clips_dir, written, keep, temps)
            _write_ledger(out, keep)
            return _finish(input, out, fmt, plan, tally, kept, config, workers, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _claimed(items: Iterable[RawItem], plan: _Plan, audio_format: str, input: str | Path) -> Iterator[RawItem]:
    """The second pass's items, each checked to be one the first pass claimed (else the input changed in
    between, and its clip could overwrite a file prepare did not write)."""
    for item in items:
        if f"{item.id}.{audio_format}" not in plan.names:
            raise PrepareError(f"{input} changed while prepare read it ({item.id!r} appeared); run prepare again")
        yield item


def _write_chunk(items: list[RawItem], outcomes: list[Outcome], manifest: AppendThenRename, tally: _Tally,
                 kept: _Kept, not_kept: set[str], audio_format: str) -> None:
    """Append a converted chunk's clips to the manifest, in input order, and count its skips and fixes."""
    by_id = {o.id: o for o in outcomes}
    lines = []
    for item in items:
        o = by_id[item.id]
        if o.reason is not None:
            tally.converted.add(Skip(o.reason, str(item.audio), o.detail, item.id))
            not_kept.add(f"{item.id}.{audio_format}")
            continue
        for kind in o.fixes:
            tally.fix(kind, item.id)
        clip = Clip(item.id, f"{CLIPS_DIR}/{item.id}.{audio_format}", o.duration, item.text, item.speaker, item.age,
                    item.gender, {"path": item.source or str(item.audio), "start": o.start, "end": o.end})
        kept.add(clip)
        lines.append(manifest_line(clip))
    manifest.append("".join(lines))


def _finish(input: str | Path, out: Path, fmt: str, plan: _Plan, tally: _Tally, kept: _Kept, config: PrepareConfig,
            workers: int, manifest: AppendThenRename) -> dict:
    """Write the report and the config, then put the manifest in place (validated) and return the report;
    raise PrepareError when no clip was kept."""
    resolved = replace(config, format=fmt)  # type: ignore[arg-type]
    report = _report(_input_name(input), fmt, plan, tally, kept, resolved, workers, out)
    _log_skips(tally.warnings.listed, "kept with a warning")
    _log_skips(s for part in tally.skips() for s in part.listed)
    reasons = ", ".join(f"{r}: {e['count']}" for r, e in report["skipped"]["by_reason"].items()) or "none"
    atomic_write_text(out / REPORT_NAME, _json(report))
    atomic_write_text(out / CONFIG_NAME, _json(asdict(resolved)))
    if not kept.count:
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        first = next((s for part in tally.skips() for s in part.listed), None)
        example = f"; e.g. {first.file}: {first.reason} ({first.detail})" if first else ""
        raise PrepareError(f"{input}: no usable clips among {tally.n_input} utterances (skipped: {reasons})"
                           f"{example}; see {out / REPORT_NAME} for every file and its fix")
    for _ in iter_manifest(manifest.tmp):  # validate what was written (parses, unique ids)
        pass
    manifest.commit()
    noted = ", ".join(f"{k}: {e['count']}" for k, e in report["warnings"]["by_kind"].items()) or "none"
    log.info("prepare: kept %d of %d utterances (%.1f min, %d speakers) -> %s; skipped: %s; warnings: %s",
             kept.count, tally.n_input, report["duration"]["minutes"], report["speakers"]["count"],
             out / MANIFEST_NAME, reasons, noted)
    return report


def _input_name(input: str | Path) -> str:
    """The input as the report records it: an absolute path, or a Hub id as given."""
    path = Path(input).expanduser().resolve()
    return str(path) if path.exists() else str(input)


def _json(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
