"""Recording + time-aligned transcript -> clips, as a pure function (like lhotse's ``trim_to_supervisions``).

Two halves, neither touches the file system:

* parsers turn the text of a time-aligned transcript into a list of :class:`Segment`:
  :func:`parse_textgrid` (Praat, long and short text format), :func:`parse_srt`, :func:`parse_vtt` and
  :func:`parse_table` (CSV/TSV ``start,end,text[,speaker]``);
* :func:`segment_recording` turns (recording duration, segments) into :class:`ClipSpec` to cut, plus a
  :class:`SegmentSkip` with its reason for every segment that cannot become a clip.

Adjacent segments are independent utterances, so a segment longer than Whisper's 30 s window is skipped,
never split: splitting would need word timings we do not have.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kidwhisper.audio import CHUNK_LENGTH

log = logging.getLogger(__name__)

MAX_CLIP_SECONDS = float(CHUNK_LENGTH)  # 30 s: one Whisper input window
END_TOLERANCE = 0.02  # s; a segment may end this far past the recording (rounded timestamps) and is clamped

REASON_BAD_SPAN = "segment end not after its start"
REASON_BEYOND_END = "segment beyond the end of its recording"
FIX_CLAMPED = "segment end clamped to recording end"


def too_long_reason(max_duration: float = MAX_CLIP_SECONDS) -> str:
    """The skip reason for a clip longer than ``max_duration`` (names Whisper's window at 30 s)."""
    if max_duration == MAX_CLIP_SECONDS:
        return "longer than 30 s (Whisper's window)"
    return f"longer than {max_duration:g} s (--max-duration)"


class SegmentParseError(ValueError):
    """A time-aligned transcript that cannot be parsed; the message names the line."""


@dataclass(frozen=True)
class Segment:
    """One time-aligned utterance in a recording (seconds)."""

    start: float
    end: float
    text: str
    speaker: str | None = None
    id: str | None = None  # explicit id (Kaldi ``segments``, manifests); else derived from the recording


@dataclass(frozen=True)
class ClipSpec:
    """One clip to cut from a recording: ``start``..``end`` seconds."""

    id: str
    start: float
    end: float
    text: str
    speaker: str | None = None
    fixes: tuple[str, ...] = ()  # e.g. FIX_CLAMPED


@dataclass(frozen=True)
class SegmentSkip:
    """A segment that cannot become a clip, and why."""

    id: str
    reason: str
    detail: str


def to_samples(seconds: float, sample_rate: int) -> int:
    """Seconds -> nearest sample index (the one rounding rule used for cutting)."""
    return int(round(seconds * sample_rate))


def segment_id(recording_id: str, index: int) -> str:
    """Derived clip id of the ``index``-th (1-based) segment of a recording."""
    return f"{recording_id}_{index:04d}"


def segment_recording(
    recording_id: str,
    duration: float,
    segments: Sequence[Segment],
    max_duration: float = MAX_CLIP_SECONDS,
    end_tolerance: float = END_TOLERANCE,
) -> tuple[list[ClipSpec], list[SegmentSkip]]:
    """(recording duration in seconds = samples / rate, segments) -> (clips to cut, skipped segments).

    A segment that starts at or after the end of the recording, or ends more than ``end_tolerance``
    past it, is skipped (the transcript belongs to another or a longer recording); one that ends within
    the tolerance is clamped. Segments longer than ``max_duration`` are skipped, not split. Segment ids
    default to ``<recording_id>_<NNNN>`` (1-based position in ``segments``).
    """
    clips: list[ClipSpec] = []
    skips: list[SegmentSkip] = []
    for index, seg in enumerate(segments, 1):
        cid = seg.id or segment_id(recording_id, index)
        start, end = seg.start, seg.end
        span = f"{start:.3f}-{end:.3f} s"
        if start < 0 or end <= start:
            skips.append(SegmentSkip(cid, REASON_BAD_SPAN, f"{span}; fix the times in the transcript"))
            continue
        if start >= duration or end > duration + end_tolerance:
            skips.append(SegmentSkip(cid, REASON_BEYOND_END,
                                     f"{span} but the recording lasts {duration:.3f} s; check that the "
                                     f"transcript belongs to this recording"))
            continue
        fixes: tuple[str, ...] = ()
        if end > duration:
            end, fixes = duration, (FIX_CLAMPED,)
        if end - start > max_duration:
            skips.append(SegmentSkip(cid, too_long_reason(max_duration),
                                     f"{span} ({end - start:.1f} s); shorten or split the segment"))
            continue
        clips.append(ClipSpec(cid, start, end, seg.text, seg.speaker, fixes))
    return clips, skips


# --------------------------------------------------------------------------- timestamps

_TIMESTAMP = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d*)?)$")


def parse_timestamp(value: str) -> float:
    """``"62.5"``, ``"01:02.500"``, ``"00:01:02,500"`` -> 62.5 seconds."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    m = _TIMESTAMP.match(value)
    if not m:
        raise SegmentParseError(f"bad time {value!r}; use seconds (62.5) or HH:MM:SS.mmm")
    hours, minutes, seconds = m.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds.replace(",", "."))


# --------------------------------------------------------------------------- Praat TextGrid

# A quoted string ("" is an escaped quote), a [n] index label to ignore, a number, or a flag. Everything
# else (the ``xmin =`` labels of the long format) is skipped, so one tokenizer reads both formats.
_TG_TOKEN = re.compile(
    r'"((?:[^"]|"")*)"'
    r"|\[[^\]\"]*\]"
    r"|(?<![\w.])([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])"
    r"|(<exists>|<absent>)"
)


def _tg_tokens(text: str) -> list[str | float]:
    tokens: list[str | float] = []
    for m in _TG_TOKEN.finditer(text):
        string, number, flag = m.groups()
        if string is not None:
            tokens.append(string.replace('""', '"'))
        elif number is not None:
            tokens.append(float(number))
        elif flag is not None:
            tokens.append(flag)
    return tokens


def parse_textgrid(text: str, tier: str | None = None) -> list[Segment]:
    """Praat TextGrid (long or short text format) -> segments of one interval tier.

    Uses the tier named ``tier``, else the first interval tier. Empty intervals are silence, not
    segments. Binary TextGrids are not supported (save as text in Praat).
    """
    tokens = _tg_tokens(text)
    pos = 0

    def take(kind: type) -> str | float:
        nonlocal pos
        if pos >= len(tokens):
            raise SegmentParseError("TextGrid ends early; re-save it from Praat as a text file")
        tok = tokens[pos]
        pos += 1
        if not isinstance(tok, kind):
            want = "a number" if kind is float else "a quoted string"
            raise SegmentParseError(f"TextGrid token {pos}: expected {want}, got {tok!r}")
        return tok

    if tokens[:2] != ["ooTextFile", "TextGrid"]:
        raise SegmentParseError('not a Praat TextGrid text file (no \'File type = "ooTextFile"\' / '
                                '\'Object class = "TextGrid"\' header)')
    pos = 2
    take(float), take(float)  # xmin, xmax of the whole grid
    if pos < len(tokens) and tokens[pos] in ("<exists>", "<absent>"):
        pos += 1
        if tokens[pos - 1] == "<absent>":
            return []
    tiers: list[tuple[str, list[Segment]]] = []
    for _ in range(int(take(float))):
        tier_class, name = take(str), str(take(str))
        take(float), take(float)
        count = int(take(float))
        if tier_class == "IntervalTier":
            segments = []
            for _ in range(count):
                start, end, label = float(take(float)), float(take(float)), str(take(str)).strip()
                if label:
                    segments.append(Segment(start, end, label))
            tiers.append((name, segments))
        elif tier_class == "TextTier":
            for _ in range(count):
                take(float), take(str)
        else:
            raise SegmentParseError(f"unknown TextGrid tier class {tier_class!r}")
    if tier is not None:
        for name, segments in tiers:
            if name == tier:
                return segments
        raise SegmentParseError(f"no interval tier named {tier!r}; tiers: {[n for n, _ in tiers]}")
    if not tiers:
        raise SegmentParseError("TextGrid has no interval tier; add one with the utterances")
    if len(tiers) > 1:
        log.info("TextGrid has %d interval tiers; using the first (%s)", len(tiers), tiers[0][0])
    return tiers[0][1]


# --------------------------------------------------------------------------- SRT / WebVTT

_CUE_TIME = r"((?:\d+:)?\d{1,2}:\d{1,2}[.,]\d{1,3})"
_CUE_LINE = re.compile(rf"^\s*{_CUE_TIME}\s*-->\s*{_CUE_TIME}(?:\s.*)?$")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # <i>, <c.x>, <00:01.000>, ASS {\an8}
_VOICE = re.compile(r"<v(?:\.[^ >]*)?\s+([^>]+)>")


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks with the 1-based line number of their first line."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    first = 0
    for lineno, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        if line.strip():
            if not current:
                first = lineno
            current.append(line.rstrip())
        elif current:
            blocks.append((first, current))
            current = []
    if current:
        blocks.append((first, current))
    return blocks


def _cues(text: str, fmt: str) -> list[Segment]:
    segments = []
    for lineno, lines in _blocks(text):
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            if fmt == "SRT" and not (len(lines) == 1 and lines[0].strip().isdigit()):
                raise SegmentParseError(f"line {lineno}: SRT cue without a 'start --> end' line")
            continue  # WebVTT header, NOTE, STYLE, REGION blocks
        m = _CUE_LINE.match(lines[timing])
        if not m:
            raise SegmentParseError(f"line {lineno + timing}: bad {fmt} timing line {lines[timing]!r}; "
                                    f"expected HH:MM:SS{',' if fmt == 'SRT' else '.'}mmm --> ...")
        body = " ".join(lines[timing + 1:])
        voice = _VOICE.search(body)
        words = html.unescape(_TAG.sub("", body)).split()
        segments.append(Segment(parse_timestamp(m.group(1)), parse_timestamp(m.group(2)), " ".join(words),
                                voice.group(1).strip() if voice else None))
    return segments


def parse_srt(text: str) -> list[Segment]:
    """SubRip (.srt) -> segments; formatting tags are removed, multi-line cues joined with spaces."""
    return _cues(text, "SRT")


def parse_vtt(text: str) -> list[Segment]:
    """WebVTT (.vtt) -> segments; the ``<v Name>`` voice tag becomes the speaker."""
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise SegmentParseError("line 1: a WebVTT file must start with 'WEBVTT'")
    return _cues(text, "WebVTT")


# --------------------------------------------------------------------------- CSV / TSV

_TABLE_COLUMNS = {
    "start": ("start", "start_time", "begin", "tmin", "from"),
    "end": ("end", "end_time", "stop", "tmax", "to"),
    "text": ("text", "transcript", "transcription", "sentence", "label", "utterance"),
    "speaker": ("speaker", "speaker_id", "spk", "spk_id"),
}


def _is_time(value: str) -> bool:
    try:
        parse_timestamp(value)
    except SegmentParseError:
        return False
    return True


def parse_table(text: str, delimiter: str | None = None) -> list[Segment]:
    """CSV/TSV rows ``start,end,text[,speaker]`` -> segments.

    A header row is optional; with one, columns are found by name (start/begin, end/stop,
    text/transcript/sentence, speaker). Times are seconds or HH:MM:SS.mmm. The delimiter is a tab if the
    first line has one, else a comma; quote text that contains the delimiter.
    """
    text = text.lstrip("\ufeff")
    if delimiter is None:
        first_line = text.split("\n", 1)[0]
        delimiter = "\t" if "\t" in first_line else ","
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), 1)
            if any(cell.strip() for cell in row)]
    if not rows:
        return []
    columns = {"start": 0, "end": 1, "text": 2, "speaker": 3}
    header = rows[0][1]
    if not (len(header) >= 2 and _is_time(header[0]) and _is_time(header[1])):
        names = [h.strip().lower() for h in header]
        columns = {key: next((names.index(a) for a in aliases if a in names), -1)
                   for key, aliases in _TABLE_COLUMNS.items()}
        missing = [k for k in ("start", "end", "text") if columns[k] < 0]
        if missing:
            raise SegmentParseError(f"line 1: header {header} has no {'/'.join(missing)} column; use "
                                    f"start,end,text[,speaker] (with or without a header)")
        rows = rows[1:]
    segments = []
    for lineno, row in rows:
        if columns == {"start": 0, "end": 1, "text": 2, "speaker": 3} and len(row) > 4:
            raise SegmentParseError(f"line {lineno}: {len(row)} fields, expected start,end,text[,speaker]; "
                                    f"quote text that contains {delimiter!r}")
        if len(row) <= max(columns["start"], columns["end"], columns["text"]):
            raise SegmentParseError(f"line {lineno}: {len(row)} fields, expected start,end,text[,speaker]")
        try:
            start, end = parse_timestamp(row[columns["start"]]), parse_timestamp(row[columns["end"]])
        except SegmentParseError as e:
            raise SegmentParseError(f"line {lineno}: {e}") from e
        spk_col = columns["speaker"]
        speaker = row[spk_col].strip() if 0 <= spk_col < len(row) and row[spk_col].strip() else None
        segments.append(Segment(start, end, row[columns["text"]].strip(), speaker))
    return segments


PARSERS = {".textgrid": parse_textgrid, ".srt": parse_srt, ".vtt": parse_vtt,
           ".csv": parse_table, ".tsv": parse_table}  # by lower-case file suffix
