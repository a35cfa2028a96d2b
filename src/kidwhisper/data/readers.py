"""One reader per corpus layout: a path -> (raw items, skips).

A :class:`RawItem` is one utterance as the corpus describes it (audio file, optional start/end in it,
transcript, speaker metadata); a :class:`Skip` is an utterance already unusable when the text files are
read (no audio entry, transcript not UTF-8, piped command, unparseable transcript file). Readers only
read text files; audio is checked later by :mod:`kidwhisper.data.prepare`. Text is not cleaned here.

Each file layout has a generator (:func:`iter_kaldi`, :func:`iter_manifest_file`, :func:`iter_sidecar`,
:func:`iter_segments`) that reads its files as it goes and yields items and skips one at a time, in input
order; the ``read_*`` function of the same layout collects them into (items, skips). :func:`open_input`
gives prepare a source of entries it can iterate twice without holding them.

Layouts (``--format``): ``kaldi`` (:func:`read_kaldi`), ``manifest`` (:func:`read_manifest_file`),
``sidecar`` (:func:`read_sidecar`), ``segments`` (:func:`read_segments`), ``hf`` (Hugging Face datasets,
:mod:`kidwhisper.data.readers_hf`) and ``lhotse`` (:mod:`kidwhisper.data.readers_lhotse`);
:func:`detect_format` picks one for ``--format auto``. Those two readers may write audio to
``ReadOptions.staging_dir`` (bytes embedded in a dataset, recordings only lhotse can decode) and point the
item there.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kidwhisper.data.segment import PARSERS, SegmentParseError, segment_id

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".aif")
SIDECAR_EXTENSIONS = (".txt", ".lab")  # clip.txt (or HTK/MFA clip.lab) beside clip.wav
SEGMENT_EXTENSIONS = (".textgrid", ".srt", ".vtt", ".csv", ".tsv")  # preference order, lower case
MANIFEST_EXTENSIONS = (".jsonl", ".csv", ".tsv")
FORMATS = ("kaldi", "manifest", "sidecar", "segments", "hf", "lhotse")

REASON_NOT_UTF8 = "transcript is not UTF-8"
REASON_NO_AUDIO_ENTRY = "no audio for transcript"
REASON_NO_TRANSCRIPT = "no transcript for audio"
REASON_PIPED = "piped command in wav.scp (not supported)"
REASON_BAD_LINE = "unparseable line"
REASON_BAD_TRANSCRIPT_FILE = "unparseable transcript file"
WARN_OVERLAP = "segment overlaps an earlier one"  # kept; the two clips share audio
OVERLAP_TOLERANCE = 1e-6  # s; a segment starting where the previous one ends does not overlap it


class InputError(ValueError):
    """The input itself cannot be read (not found, layout unknown, required file missing)."""


@dataclass
class RawItem:
    """One utterance as read from the corpus; ``start``/``end`` (seconds) select part of ``audio``."""

    id: str
    audio: Path
    text: str
    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    age: float | None = None
    gender: str | None = None
    origin: str = ""  # "file:line" the item came from, for messages
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (kind, detail): kept, but reported
    source: str | None = None  # recorded as the clip's source when ``audio`` is a staged copy


@dataclass(frozen=True)
class ReadOptions:
    """What a reader needs besides the input path (``kidwhisper prepare`` flags, and where to stage audio)."""

    split: str | None = None  # dataset split to read (hf, lhotse); None = the only one
    text_column: str | None = None  # transcript column (hf, manifest); None = found by name
    staging_dir: Path | None = None  # where audio embedded in the input is written as files (hf, lhotse)
    progress: bool = False  # tqdm bar while reading rows (hf, lhotse)


@dataclass
class Skip:
    """An utterance (or file) that cannot be used, with the reason and where it came from."""

    reason: str
    file: str
    detail: str = ""
    id: str | None = None


Entry = RawItem | Skip  # what a reader yields: an utterance, or one it already rejects
Reader = Callable[[Path], Iterator[Entry]]


def split_entries(entries: Iterable[Entry]) -> tuple[list[RawItem], list[Skip]]:
    """A reader's entries -> (items, skips), each in input order."""
    items: list[RawItem] = []
    skips: list[Skip] = []
    for entry in entries:
        (skips if isinstance(entry, Skip) else items).append(entry)
    return items, skips


def _decode(raw: bytes) -> tuple[str, bool]:
    """bytes -> (text, is valid UTF-8). Invalid bytes become U+FFFD so ids can still be read."""
    try:
        return raw.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8-sig", errors="replace"), False


def _byte_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) for every line of a file, read one at a time. Lines end at ``\\n``,
    ``\\r\\n`` or ``\\r``, as in ``bytes.splitlines``."""
    lineno = 0
    with open(path, "rb") as f:
        for block in f:  # ends at b"\n"; a lone b"\r" inside it ends a line too
            for line in block.splitlines():
                lineno += 1
                yield lineno, line


def _lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, valid UTF-8) for the non-blank lines of a file; each line decoded on its own."""
    for lineno, line in _byte_lines(path):
        text, ok = _decode(line)
        if text.strip():
            yield lineno, text, ok


def _age(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # "twenties", "", None: unknown


def _opt(value: object) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def _path_id(path: Path, root: Path) -> str:
    """clips/spk1/a.wav under clips -> "spk1-a": unique within a tree, readable in file names."""
    return "-".join(path.relative_to(root).with_suffix("").parts) if path != root else path.stem


def _iter_walk(root: Path, extensions: tuple[str, ...]) -> Iterator[Path]:
    """Files under ``root`` (sorted, hidden entries skipped) whose lower-case suffix is in ``extensions``,
    listed one folder at a time."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield from (Path(dirpath) / f for f in sorted(filenames)
                    if not f.startswith(".") and Path(f).suffix.lower() in extensions)


def _walk(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """:func:`_iter_walk` as a list."""
    return list(_iter_walk(root, extensions))


def _sibling(audio: Path, extensions: tuple[str, ...]) -> Path | None:
    for ext in extensions:
        for candidate in (audio.with_suffix(ext), audio.with_suffix(ext.upper())):
            if candidate.is_file():
                return candidate
    if ".textgrid" in extensions:
        candidate = audio.with_suffix(".TextGrid")
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- kaldi


def _kaldi_table(path: Path) -> dict[str, str]:
    """``key value...`` lines -> {key: value}; missing optional file -> {}."""
    if not path.is_file():
        return {}
    table = {}
    for _, line, _ok in _lines(path):
        key, *value = line.split(maxsplit=1)
        table[key] = value[0].strip() if value else ""
    return table


def read_kaldi(data_dir: Path) -> tuple[list[RawItem], list[Skip]]:
    """:func:`iter_kaldi` collected into (items, skips)."""
    return split_entries(iter_kaldi(data_dir))


def iter_kaldi(data_dir: Path) -> Iterator[Entry]:
    """Kaldi data directory.

    ::

        text        <utt-id> <TRANSCRIPT>
        wav.scp     <utt-id or recording-id> <path>   absolute or relative to the data dir
        utt2spk     <utt-id> <speaker-id>             optional
        spk2age     <speaker-id> <age in years>       optional
        spk2gender  <speaker-id> m|f                  optional
        segments    <utt-id> <recording-id> <start> <end>   optional: cut utterances from recordings

    Piped commands in wav.scp (``sox x.sph -t wav - |``) are skipped with a reason: decode them to files
    first. Transcripts are decoded line by line, so one non-UTF-8 line costs one utterance. ``text`` is
    read as it is yielded; the other files are looked up by key, so they are read into tables first.
    """
    data_dir = Path(data_dir)
    text_path, scp_path = data_dir / "text", data_dir / "wav.scp"
    for required in (text_path, scp_path):
        if not required.is_file():
            raise InputError(f"{data_dir}: not a Kaldi data directory ({required.name} missing); it needs "
                             f"`text` and `wav.scp` (see `kidwhisper prepare --help`), or pass another --format")
    wav_scp = _kaldi_table(scp_path)
    utt2spk = _kaldi_table(data_dir / "utt2spk")
    spk2age = _kaldi_table(data_dir / "spk2age")
    spk2gender = _kaldi_table(data_dir / "spk2gender")
    segments: dict[str, tuple[str, float, float]] = {}
    seg_path = data_dir / "segments"
    if seg_path.is_file():
        for lineno, line, _ok in _lines(seg_path):
            fields = line.split()
            try:
                segments[fields[0]] = (fields[1], float(fields[2]), float(fields[3]))
            except (IndexError, ValueError):
                yield Skip(REASON_BAD_LINE, f"{seg_path}:{lineno}", f"{line.strip()!r}; expected "
                           f"<utt-id> <recording-id> <start> <end>", fields[0] if fields else None)

    def audio_of(key: str, origin: str) -> Path | Skip:
        entry = wav_scp.get(key)
        if entry is None:
            return Skip(REASON_NO_AUDIO_ENTRY, origin, f"{key!r} is not in {scp_path.name}")
        if entry.rstrip().endswith("|"):
            return Skip(REASON_PIPED, f"{scp_path}", f"{entry!r}; run the command once and list the "
                                                     f"resulting file instead")
        path = Path(entry).expanduser()
        return path if path.is_absolute() else data_dir / path

    seen: set[str] = set()  # ids with a transcript, to report the audio entries without one
    for lineno, line, ok in _lines(text_path):
        utt, *rest = line.split(maxsplit=1)
        transcript = rest[0] if rest else ""
        origin = f"{text_path}:{lineno}"
        seen.add(utt)
        if not ok:
            yield Skip(REASON_NOT_UTF8, origin, "re-save the file as UTF-8", utt)
            continue
        start = end = None
        if utt in segments:
            recording, start, end = segments[utt]
            audio = audio_of(recording, origin)
        elif segments:
            audio = Skip(REASON_NO_AUDIO_ENTRY, origin, f"{utt!r} is not in {seg_path.name}")
        else:
            audio = audio_of(utt, origin)
        if isinstance(audio, Skip):
            audio.id = utt
            yield audio
            continue
        speaker = utt2spk.get(utt)
        yield RawItem(utt, audio, transcript, start, end, speaker,
                      _age(spk2age.get(speaker or "")), _opt(spk2gender.get(speaker or "")), origin)
    for utt in segments.keys() if segments else wav_scp.keys():
        if utt not in seen:
            yield Skip(REASON_NO_TRANSCRIPT, str(seg_path if segments else scp_path),
                       f"{utt!r} has no line in {text_path.name}", utt)


# --------------------------------------------------------------------------- manifest

COLUMN_ALIASES = {  # manifest column -> accepted names, in preference order
    "id": ("id", "utt_id", "utterance_id", "uttid", "utt", "key"),
    "audio": ("audio", "path", "file", "wav", "audio_path", "audio_filepath", "file_name", "filename",
              "wav_path", "audio_file", "filepath"),
    "text": ("text", "transcript", "transcription", "sentence", "normalized_text", "label", "utterance",
             "words"),
    "speaker": ("speaker", "speaker_id", "spk", "spk_id", "client_id"),
    "age": ("age", "age_years"),
    "gender": ("gender", "sex"),
    "start": ("start", "start_time", "begin", "offset"),
    "end": ("end", "end_time", "stop"),
}


def match_columns(names: Iterable[str], text_column: str | None = None) -> dict[str, str | None]:
    """{field: the column holding it, or None} for the fields of :data:`COLUMN_ALIASES`, matched by name
    case-insensitively; ``text_column`` (``--text-column``) names the transcript column explicitly."""
    names = list(names)
    keys = {k.lower(): k for k in names}
    columns = {key: next((keys[a] for a in aliases if a in keys), None) for key, aliases in COLUMN_ALIASES.items()}
    if text_column is not None:
        columns["text"] = text_column if text_column in names else keys.get(text_column.lower())
    return columns


def _find_manifest(directory: Path) -> Path:
    candidates = [p for p in sorted(directory.iterdir())
                  if p.is_file() and p.suffix.lower() in MANIFEST_EXTENSIONS and not p.name.startswith(".")]
    if len(candidates) != 1:
        found = [p.name for p in candidates] or "none"
        raise InputError(f"{directory}: expected exactly one manifest (.jsonl/.csv/.tsv) in the directory, "
                         f"found {found}; pass the manifest file itself")
    return candidates[0]


def _rows(path: Path) -> Iterator[tuple[int, dict[str, object] | None, str]]:
    """(line number, row or None if unparseable, raw line) of a JSONL/CSV/TSV manifest, read row by row.
    Bytes that are not UTF-8 are kept as lone surrogates (``surrogateescape``)."""
    if path.suffix.lower() == ".jsonl":
        for lineno, raw in _byte_lines(path):
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8", errors="surrogateescape")
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                yield lineno, row if isinstance(row, dict) else None, line
        return
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        first = f.readline().split("\n", 1)[0]
        f.seek(0)
        tab = path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first)
        reader = csv.DictReader(f, delimiter="\t" if tab else ",", quoting=csv.QUOTE_NONE if tab else csv.QUOTE_MINIMAL)
        for row in reader:
            yield reader.line_num, {k.strip().lower(): v for k, v in row.items() if k is not None}, ""


def read_manifest_file(path: Path, text_column: str | None = None) -> tuple[list[RawItem], list[Skip]]:
    """:func:`iter_manifest_file` collected into (items, skips)."""
    return split_entries(iter_manifest_file(path, text_column))


def iter_manifest_file(path: Path, text_column: str | None = None) -> Iterator[Entry]:
    """A table with one utterance per row: JSONL, CSV (with header) or TSV (with header).

    Columns are found by common names: audio (``audio``, ``path``, ``file``, ``wav``, ``audio_filepath``,
    ``file_name``...) and text (``text``, ``transcript``, ``sentence``..., or ``text_column``) are required; ``id``,
    ``speaker``, ``age``, ``gender``, ``start``/``offset`` and ``end`` (or NeMo's ``offset`` +
    ``duration``) are optional. Audio paths are absolute or relative to the manifest's directory (or its
    ``clips/`` folder, as in Common Voice). Without an id column the id comes from the audio path
    (plus the start time in ms when the row has one). A directory holding one manifest file works too.
    """
    path = Path(path)
    if path.is_dir():
        path = _find_manifest(path)
    base = path.parent
    columns: dict[str, str | None] | None = None
    for lineno, row, raw in _rows(path):
        origin = f"{path}:{lineno}"
        if row is None:
            yield Skip(REASON_BAD_LINE, origin, f"{raw[:80]!r} is not a JSON object")
            continue
        first = columns is None
        if first or path.suffix.lower() == ".jsonl":  # JSONL rows may each carry other keys
            columns = match_columns(row, text_column)
            if columns["audio"] is None or columns["text"] is None:
                message = _missing_columns_message(columns, sorted(row))
                if text_column is not None and columns["text"] is None:
                    message = f"--text-column {text_column!r} is not among the columns {sorted(row)}"
                if first:
                    raise InputError(f"{origin}: {message}")
                yield Skip(REASON_BAD_LINE, origin, message)
                continue
        cols = columns

        def get(key: str, row: dict[str, object] = row, cols: dict[str, str | None] = cols) -> object:
            return None if cols[key] is None else row.get(cols[key])

        value = str(get("audio") or "").strip()
        if not value:  # no path, so no id from it either
            yield Skip(REASON_NO_AUDIO_ENTRY, origin, f"empty {cols['audio']!r} cell; write the audio "
                                                      f"file's path or remove the row", _opt(get("id")))
            continue
        audio = Path(value).expanduser()
        if not audio.is_absolute():
            audio = base / audio if (base / audio).exists() or not (base / "clips" / audio).exists() \
                else base / "clips" / audio
        start, end = _age(get("start")), _age(get("end"))
        if end is None and start is not None and _age(row.get("duration")) is not None:
            end = start + float(row["duration"])  # type: ignore[arg-type]  # NeMo: offset + duration
        utt = _opt(get("id")) or (_path_id(audio, base) if audio.is_relative_to(base) else audio.stem)
        if columns["id"] is None and start is not None:
            utt = f"{utt}_{int(round(start * 1000)):07d}"
        text = get("text")
        text = "" if text is None else str(text)
        if any("\udc80" <= ch <= "\udcff" for ch in text):  # undecodable bytes (surrogateescape)
            yield Skip(REASON_NOT_UTF8, origin, "re-save the manifest as UTF-8", utt)
            continue
        yield RawItem(utt, audio, text, start, end, _opt(get("speaker")), _age(get("age")), _opt(get("gender")),
                      origin)


def _missing_columns_message(columns: dict[str, str | None], names: list[str]) -> str:
    """Which of the audio and text columns a manifest lacks, the one it has, and the names that work."""
    examples = {"audio": "/".join(COLUMN_ALIASES["audio"][:5]), "text": "/".join(COLUMN_ALIASES["text"][:5])}
    missing = [k for k in ("audio", "text") if columns[k] is None]
    if len(missing) == 2:
        return (f"no audio column and no text column among {names}; name them e.g. {examples['audio']}... "
                f"(audio file path) and {examples['text']}... (transcript)")
    (lost,) = missing
    found = "text" if lost == "audio" else "audio"
    what = "the audio file path" if lost == "audio" else "the transcript"
    return (f"no {lost} column among {names} (the {found} column is {columns[found]!r}); name the column with "
            f"{what} e.g. {examples[lost]}..." + (", or pass --text-column NAME" if lost == "text" else ""))


# --------------------------------------------------------------------------- sidecar


def read_sidecar(root: Path) -> tuple[list[RawItem], list[Skip]]:
    """:func:`iter_sidecar` collected into (items, skips)."""
    return split_entries(iter_sidecar(root))


def iter_sidecar(root: Path) -> Iterator[Entry]:
    """A folder tree of ``clip.wav`` + ``clip.txt`` pairs (any audio extension; ``.lab`` also accepted).

    ::

        root/spk1/a.flac   root/spk1/a.txt   -> id "spk1-a"
        root/b.mp3         root/b.txt        -> id "b"

    The id is the path relative to ``root`` without extension, folders joined by ``-``. An audio file
    without a transcript, or a transcript without audio, is a skip. Speaker/age/gender are unknown.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: the sidecar layout needs a directory of clip.wav + clip.txt pairs")
    used: set[Path] = set()  # transcripts with audio, to report the others
    for audio in _iter_walk(root, AUDIO_EXTENSIONS):
        transcript = _sibling(audio, SIDECAR_EXTENSIONS)
        utt = _path_id(audio, root)
        if transcript is None:
            yield Skip(REASON_NO_TRANSCRIPT, str(audio), f"write the transcript to {audio.stem}.txt", utt)
            continue
        used.add(transcript)
        text, ok = _decode(transcript.read_bytes())
        if not ok:
            yield Skip(REASON_NOT_UTF8, str(transcript), "re-save the file as UTF-8", utt)
            continue
        yield RawItem(utt, audio, text, origin=str(transcript))
    for transcript in _iter_walk(root, SIDECAR_EXTENSIONS):
        if transcript not in used:
            yield Skip(REASON_NO_AUDIO_ENTRY, str(transcript), "no audio file with the same name",
                       _path_id(transcript, root))


# --------------------------------------------------------------------------- segments


def read_segments(root: Path) -> tuple[list[RawItem], list[Skip]]:
    """:func:`iter_segments` collected into (items, skips)."""
    return split_entries(iter_segments(root))


def iter_segments(root: Path) -> Iterator[Entry]:
    """Long recordings with a time-aligned transcript beside each (same stem).

    ::

        root/session1.wav  root/session1.TextGrid   Praat, long or short text format, one interval tier
        root/session2.flac root/session2.srt        SubRip
        root/session3.mp3  root/session3.vtt        WebVTT (``<v Name>`` gives the speaker)
        root/session4.wav  root/session4.csv        start,end,text[,speaker] (CSV or TSV, header optional)

    Each non-empty interval/cue/row is one utterance, id ``<recording>_<NNNN>`` (1-based position among
    the parsed segments; empty TextGrid intervals are silence and are not numbered). A segment that starts
    before an earlier one ends is kept with a warning (:data:`WARN_OVERLAP`): both clips then hold the
    overlapping audio. ``root`` may also be one recording file. Cutting and the checks against the recording's length happen later
    (:func:`kidwhisper.data.segment.segment_recording`).
    """
    root = Path(root)
    recordings = [root] if root.is_file() else _iter_walk(root, AUDIO_EXTENSIONS)
    base = root.parent if root.is_file() else root
    used: set[Path] = set()  # transcripts with a recording, to report the others
    for audio in recordings:
        rec_id = _path_id(audio, base)
        transcript = _sibling(audio, SEGMENT_EXTENSIONS)
        if transcript is None:
            yield Skip(REASON_NO_TRANSCRIPT, str(audio), f"put {audio.stem}.TextGrid/.srt/.vtt/.csv beside it",
                       rec_id)
            continue
        used.add(transcript)
        text, ok = _decode(transcript.read_bytes())
        if not ok and transcript.suffix.lower() == ".textgrid":
            text, ok = _decode_utf16(transcript.read_bytes(), text, ok)
        if not ok:
            yield Skip(REASON_NOT_UTF8, str(transcript), "re-save the file as UTF-8", rec_id)
            continue
        try:
            segments = PARSERS[transcript.suffix.lower()](text)
        except SegmentParseError as e:
            yield Skip(REASON_BAD_TRANSCRIPT_FILE, str(transcript), str(e), rec_id)
            continue
        latest_end, latest = float("-inf"), 0  # the segment reaching furthest so far
        for index, seg in enumerate(segments, 1):
            item = RawItem(segment_id(rec_id, index), audio, seg.text, seg.start, seg.end, seg.speaker,
                           origin=f"{transcript} (segment {index})")
            if seg.start < latest_end - OVERLAP_TOLERANCE:
                item.warnings.append((WARN_OVERLAP, f"{seg.start:.3f}-{seg.end:.3f} s starts before "
                                                    f"{segment_id(rec_id, latest)} ends at {latest_end:.3f} s; "
                                                    f"fix the times if the overlap is a mistake"))
            if seg.end > latest_end:
                latest_end, latest = seg.end, index
            yield item
    if root.is_dir():
        for transcript in _iter_walk(root, SEGMENT_EXTENSIONS):
            if transcript not in used:
                yield Skip(REASON_NO_AUDIO_ENTRY, str(transcript), "no recording with the same name",
                           _path_id(transcript, root))


def _decode_utf16(raw: bytes, text: str, ok: bool) -> tuple[str, bool]:
    """Praat saves TextGrids with non-ASCII labels as UTF-16 (with a BOM)."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16"), True
        except UnicodeDecodeError:
            pass
    return text, ok


# --------------------------------------------------------------------------- detection

READERS: dict[str, Reader] = {"kaldi": iter_kaldi, "manifest": iter_manifest_file,
                              "sidecar": iter_sidecar, "segments": iter_segments}


def detect_format(path: str | Path) -> str:
    """Guess the layout of ``path`` for ``--format auto``; raises InputError naming the fix.

    A file: ``.parquet/.arrow`` -> hf; ``.jsonl``/``.jsonl.gz`` whose first record is a lhotse cut,
    recording or supervision -> lhotse; other ``.jsonl/.csv/.tsv`` -> manifest; an audio file -> segments
    (transcript beside it). A directory: ``text`` + ``wav.scp`` -> kaldi; a ``save_to_disk`` directory
    -> hf; lhotse manifests -> lhotse; audio files with same-stem ``.txt``/``.lab`` -> sidecar; with
    same-stem ``.TextGrid/.srt/.vtt/.csv/.tsv`` -> segments (the more common pairing wins); parquet/arrow
    files -> hf; exactly one top-level ``.jsonl/.csv/.tsv`` -> manifest.
    """
    from kidwhisper.data.readers_hf import HF_FILE_EXTENSIONS, is_save_to_disk
    from kidwhisper.data.readers_lhotse import is_lhotse_manifest, lhotse_manifests

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: input not found; pass a Kaldi data dir, a manifest file or a folder of audio")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in HF_FILE_EXTENSIONS:
            return "hf"
        if is_lhotse_manifest(p):
            return "lhotse"
        if suffix in MANIFEST_EXTENSIONS:
            return "manifest"
        if suffix in AUDIO_EXTENSIONS:
            return "segments"
        raise InputError(f"{p}: cannot tell the layout of a {suffix or 'suffix-less'} file; pass a manifest "
                         f"(.jsonl/.csv/.tsv), a Kaldi data directory, a folder of audio, a Hugging Face dataset "
                         f"(.parquet/.arrow/save_to_disk directory) or a lhotse manifest (.jsonl.gz)")
    if (p / "text").is_file() and (p / "wav.scp").is_file():
        return "kaldi"
    if is_save_to_disk(p):
        return "hf"
    if lhotse_manifests(p):
        return "lhotse"
    audio = _walk(p, AUDIO_EXTENSIONS)
    sidecar = sum(_sibling(a, SIDECAR_EXTENSIONS) is not None for a in audio)
    segments = sum(_sibling(a, SEGMENT_EXTENSIONS) is not None for a in audio)
    if sidecar and sidecar >= segments:
        return "sidecar"
    if segments:
        return "segments"
    if _walk(p, HF_FILE_EXTENSIONS):
        return "hf"
    stems = {a.with_suffix("") for a in audio}
    tables = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in MANIFEST_EXTENSIONS
              and f.with_suffix("") not in stems and not f.name.startswith(".")]
    if len(tables) == 1:
        return "manifest"
    raise InputError(f"{p}: cannot detect the corpus layout ({len(audio)} audio files, {sidecar} with a .txt, "
                     f"{segments} with a TextGrid/.srt/.vtt/.csv, {len(tables)} manifest tables); pass "
                     f"--format {'|'.join(FORMATS)}")


def read_input(path: str | Path, fmt: str = "auto", options: ReadOptions | None = None
               ) -> tuple[str, list[RawItem], list[Skip]]:
    """Detect (if ``fmt == "auto"``) and read ``path`` -> (format, items, skips).

    ``path`` may also be a Hugging Face Hub dataset id (``owner/name``) that is not a local path.
    """
    fmt, entries = open_input(path, fmt, options)
    return fmt, *split_entries(entries())


def open_input(path: str | Path, fmt: str = "auto", options: ReadOptions | None = None
               ) -> tuple[str, Callable[[], Iterator[Entry]]]:
    """Detect (if ``fmt == "auto"``) the layout of ``path`` -> (format, a function returning a new iterator
    over its entries each time it is called).

    The file layouts are read again on each call, line by line, so their items are never all in memory.
    Hugging Face datasets and lhotse manifests are read once, when this is called (their reading may write
    audio to ``options.staging_dir``), and their items are kept in a list. A reader's InputError for a
    file layout is raised when the first iterator starts.
    """
    from kidwhisper.data.readers_hf import looks_like_hub_id, read_hf

    options = options or ReadOptions()
    p = Path(path).expanduser().resolve()
    if not p.exists() and fmt in ("auto", "hf") and looks_like_hub_id(str(path)):
        return "hf", _replay(*read_hf(str(path), options))
    if not p.exists():
        raise InputError(f"{path}: input not found; pass a Kaldi data dir, a manifest file or a folder of audio")
    if fmt == "auto":
        fmt = detect_format(p)
        log.info("%s: detected the %s layout", p, fmt)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use --format auto|{'|'.join(FORMATS)}")
    if options.split is not None and fmt not in ("hf", "lhotse"):
        raise InputError(f"{p}: --split applies to Hugging Face datasets and lhotse manifests, not the {fmt} "
                         f"layout; drop --split (or pass --format hf|lhotse)")
    if options.text_column is not None and fmt not in ("hf", "manifest"):
        raise InputError(f"{p}: --text-column applies to Hugging Face datasets and manifests, not the {fmt} "
                         f"layout; drop --text-column")
    if fmt == "hf":
        return fmt, _replay(*read_hf(p, options))
    if fmt == "lhotse":
        from kidwhisper.data.readers_lhotse import read_lhotse

        return fmt, _replay(*read_lhotse(p, options))
    if fmt == "manifest":
        return fmt, lambda: iter_manifest_file(p, options.text_column)
    return fmt, lambda: READERS[fmt](p)


def _replay(items: list[RawItem], skips: list[Skip]) -> Callable[[], Iterator[Entry]]:
    """Entries of a reader that returns lists: its skips, then its items."""
    return lambda: itertools.chain(skips, items)
