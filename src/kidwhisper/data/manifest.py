"""The JSONL manifest every stage reads: one line per clip.

A line looks like::

    {"id": "000030012", "audio": "clips/000030012.flac", "duration": 3.52,
     "text": "MARK IS GOING TO SEE ELEPHANT", "speaker": "0003", "age": 6, "gender": "m",
     "source": {"path": "/abs/original.flac", "start": 0.0, "end": 3.52}}

``audio`` is relative to the manifest's directory (absolute paths are accepted too); unknown fields are
``null``. Manifests are written atomically (temp file + rename) so a crash never leaves half a manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kidwhisper.files import atomic_write_text, sha256_file  # atomic_write_text: also imported from here

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the line and the fix."""


@dataclass
class Clip:
    """One utterance: a 16 kHz mono audio file and its transcript."""

    id: str
    audio: str  # path relative to the manifest directory (or absolute)
    duration: float  # seconds
    text: str
    speaker: str | None = None
    age: float | None = None  # years
    gender: str | None = None  # "m" | "f" | other free text
    source: dict[str, Any] | None = None  # original file and start/end in it
    extra: dict[str, Any] = field(default_factory=dict)  # any further fields, kept round-trip

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Clip:
        known = {"id", "audio", "duration", "text", "speaker", "age", "gender", "source"}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(
            id=str(d["id"]),
            audio=str(d["audio"]),
            duration=float(d["duration"]),
            text=str(d["text"]),
            speaker=None if d.get("speaker") is None else str(d["speaker"]),
            age=None if d.get("age") is None else float(d["age"]),
            gender=d.get("gender"),
            source=d.get("source"),
            extra=extra,
        )


def resolve_manifest_path(path: str | Path) -> Path:
    """A manifest file, or a directory holding ``manifest.jsonl``."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.exists():
        raise ManifestError(f"{path}: manifest not found; create one with `kidwhisper prepare INPUT OUTPUT_DIR` "
                            f"and pass OUTPUT_DIR or OUTPUT_DIR/{MANIFEST_NAME}")
    return p


def iter_manifest(path: str | Path, limit: int | None = None) -> Iterator[Clip]:
    """The clips of a JSONL manifest (file or directory) one at a time, at most ``limit`` of them, without
    holding the file or the clips in memory. Raises ManifestError naming a bad line, or listing duplicate
    ids once the file (or the first ``limit`` clips) has been read."""
    p = resolve_manifest_path(path)
    seen: set[str] = set()
    dup: list[str] = []
    n = 0
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and n >= limit:
                break
            if not line.strip():
                continue
            try:
                clip = Clip.from_json(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ManifestError(f"{p}:{lineno}: bad manifest line ({e!r}); each line must be a JSON "
                                    f"object with at least id, audio, duration, text") from e
            if clip.id in seen:
                dup.append(clip.id)
            seen.add(clip.id)
            n += 1
            yield clip
    if dup:
        raise ManifestError(f"{p}: duplicate clip ids {sorted(set(dup))[:5]}; ids must be unique")


def read_manifest(path: str | Path, limit: int | None = None) -> list[Clip]:
    """Read a JSONL manifest (file or directory), at most its first ``limit`` clips. Raises ManifestError
    naming the bad line."""
    return list(iter_manifest(path, limit))


def audio_path(clip: Clip, manifest_path: str | Path) -> Path:
    """Absolute path of a clip's audio, resolving relative paths against the manifest's directory."""
    p = Path(clip.audio)
    if p.is_absolute():
        return p
    base = Path(manifest_path)
    base = base if base.is_dir() else base.parent
    return (base / p).resolve()


REASON_EMPTY_AUDIO = "empty audio (no samples)"
REASON_UNREADABLE_AUDIO = "unreadable or corrupt audio"
_SHOWN_PER_REASON = 5  # skipped clips named in the log per reason (the counts are complete)


@dataclass
class LoadedClips:
    """The clips whose audio decodes to samples, their audio, and the others by skip reason."""

    clips: list[Clip]
    audios: list[np.ndarray]  # 16 kHz mono float32, one per kept clip, in clip order
    skipped: dict[str, list[str]]  # reason -> ids of the skipped clips, in manifest order

    @property
    def n_skipped(self) -> dict[str, int]:
        """{reason: number of clips skipped for it} (empty when every clip is usable)."""
        return {reason: len(ids) for reason, ids in self.skipped.items()}


def _read_audios(clips: list[Clip], manifest_path: str | Path, progress: bool,
                 workers: int) -> list[np.ndarray | Exception]:
    """Every clip's audio (or the AudioError it raised) in clip order, read with a small thread pool
    (decoding releases the GIL). A missing file raises at once: the manifest points at the wrong place."""
    from tqdm.auto import tqdm

    from kidwhisper.audio import AudioError, load_audio

    bar = tqdm(total=len(clips), desc="loading audio", unit="clip", disable=not progress)

    def one(clip: Clip) -> np.ndarray | Exception:
        path = audio_path(clip, manifest_path)
        try:
            audio: np.ndarray | Exception = load_audio(path)
        except AudioError as e:
            if not path.exists():
                raise
            audio = e
        bar.update(1)
        return audio

    with ThreadPoolExecutor(max_workers=workers) as pool:
        audios = list(pool.map(one, clips))
    bar.close()
    return audios


def _skip_reason(audio: np.ndarray | int | Exception) -> str | None:
    """Why a clip (its audio, its number of samples, or the AudioError reading it raised) is not used."""
    if isinstance(audio, Exception):
        return REASON_UNREADABLE_AUDIO
    return REASON_EMPTY_AUDIO if (audio if isinstance(audio, int) else len(audio)) == 0 else None


def _note_skip(skipped: dict[str, list[str]], reason: str, clip_id: str, detail: object) -> None:
    skipped.setdefault(reason, []).append(clip_id)
    if len(skipped[reason]) <= _SHOWN_PER_REASON:
        log.warning("skipped clip %s (%s): %s", clip_id, reason, detail)


def log_skipped(skipped: dict[str, list[str]], manifest_path: str | Path, n_clips: int) -> None:
    """One warning per skip reason with its count and the fix."""
    for reason, ids in skipped.items():
        log.warning("%s: skipped %d of %d clips (%s)%s; re-export or convert them, or remove them from the "
                    "manifest", manifest_path, len(ids), n_clips, reason,
                    f", e.g. {ids[:_SHOWN_PER_REASON]}" if len(ids) > _SHOWN_PER_REASON else "")


def load_usable_audios(clips: list[Clip], manifest_path: str | Path, progress: bool = False,
                       workers: int = 4) -> LoadedClips:
    """Every clip's audio as 16 kHz mono float32, skipping (with a logged warning, counted by reason) the
    clips whose file is corrupt/undecodable or holds no samples: they are never decoded or trained on as
    silence. A missing file raises AudioError naming it. Kept in memory: an hour of audio is about 230 MB
    (:func:`probe_clips` and :class:`AudioFiles` read clips when they are needed instead).
    """
    kept, audios, skipped = [], [], {}
    for clip, audio in zip(clips, _read_audios(clips, manifest_path, progress, workers), strict=True):
        reason = _skip_reason(audio)
        if reason is not None:
            detail = audio if isinstance(audio, Exception) else f"{audio_path(clip, manifest_path)} holds no samples"
            _note_skip(skipped, reason, clip.id, detail)
            continue
        kept.append(clip)
        audios.append(audio)
    log_skipped(skipped, manifest_path, len(clips))
    return LoadedClips(kept, audios, skipped)


def load_clip_audios(clips: list[Clip], manifest_path: str | Path, progress: bool = False,
                     workers: int = 4) -> list[np.ndarray]:
    """Every clip's audio as 16 kHz mono float32, in clip order; raises AudioError naming the first clip
    whose file is missing, unreadable or empty (:func:`load_usable_audios` skips those instead)."""
    from kidwhisper.audio import AudioError

    audios = _read_audios(clips, manifest_path, progress, workers)
    for clip, audio in zip(clips, audios, strict=True):
        if isinstance(audio, Exception):
            raise audio
        if len(audio) == 0:
            raise AudioError(f"{audio_path(clip, manifest_path)}: clip {clip.id} holds no audio samples; "
                             f"re-export it or remove it from the manifest")
    return audios  # type: ignore[return-value]


@dataclass
class ClipTable:
    """The columns of a manifest that training needs, without per-clip objects (a few hundred bytes a
    clip): ids, absolute audio paths and transcripts, in manifest order."""

    ids: list[str]
    paths: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, keep: Sequence[int]) -> ClipTable:
        return ClipTable([self.ids[i] for i in keep], [self.paths[i] for i in keep], [self.texts[i] for i in keep])


def read_clip_table(path: str | Path) -> ClipTable:
    """:class:`ClipTable` of a manifest (file or directory), read line by line."""
    p = resolve_manifest_path(path)
    table = ClipTable([], [], [])
    for clip in iter_manifest(p):
        table.ids.append(clip.id)
        table.paths.append(str(audio_path(clip, p)))
        table.texts.append(clip.text)
    return table


@dataclass
class ProbedClips:
    """Which clips are usable and how long each is, learnt without keeping any audio."""

    kept: list[int]  # indices (into the probed clips) of the clips with decodable, non-empty audio
    samples: list[int]  # 16 kHz samples of each kept clip, in the order of ``kept``
    skipped: dict[str, list[str]]  # reason -> ids of the skipped clips, in manifest order

    @property
    def n_skipped(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in self.skipped.items()}


PROBE_CHUNK = 1024  # clips handed to the thread pool at a time (bounds the queued futures)


def clip_samples(path: str | Path) -> int:
    """Number of samples of a clip's audio as :func:`kidwhisper.audio.load_audio` returns it: from the file
    header for a 16 kHz file libsndfile opens (nothing decoded), else by decoding it (and freeing it)."""
    import soundfile as sf

    from kidwhisper.audio import SAMPLE_RATE, AudioError, load_audio

    try:
        info = sf.info(str(path))
        if info.samplerate == SAMPLE_RATE and info.frames >= 0:
            return int(info.frames)
    except (RuntimeError, sf.LibsndfileError, TypeError, ValueError):
        if not Path(path).exists():
            raise AudioError(f"{path}: audio file not found; check the path (relative paths are resolved "
                             f"against the data directory or manifest)") from None
    return len(load_audio(path))


def probe_clips(ids: Sequence[str], paths: Sequence[str | Path], manifest_path: str | Path,
                progress: bool = False, workers: int = 4) -> ProbedClips:
    """Length of every clip (:func:`clip_samples`, with a small thread pool), skipping like
    :func:`load_usable_audios` (logged, counted by reason) the clips whose audio is unreadable or empty.
    Memory does not grow with the audio: only one integer per clip is kept. A missing file raises."""
    from tqdm.auto import tqdm

    from kidwhisper.audio import AudioError

    def one(path: str | Path) -> int | Exception:
        try:
            return clip_samples(path)
        except AudioError as e:
            if not Path(path).exists():
                raise
            return e

    kept, samples, skipped = [], [], {}
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(paths), desc="checking audio", unit="clip", disable=not progress) as bar:
        for start in range(0, len(paths), PROBE_CHUNK):
            chunk = paths[start : start + PROBE_CHUNK]
            for k, n in enumerate(pool.map(one, chunk), start):
                reason = _skip_reason(n)
                if reason is None:
                    kept.append(k)
                    samples.append(n)
                else:
                    _note_skip(skipped, reason, ids[k], n if isinstance(n, Exception) else f"{paths[k]} holds no samples")
            bar.update(len(chunk))
    log_skipped(skipped, manifest_path, len(paths))
    return ProbedClips(kept, samples, skipped)


class AudioFiles(Sequence):
    """Clips' audio read from their files on access (``files[i]`` -> 16 kHz mono float32): a drop-in for a
    list of arrays that holds only the paths. A file that no longer decodes raises AudioError naming it."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # noqa: ANN001 - Sequence protocol
        from kidwhisper.audio import load_audio

        if isinstance(i, slice):
            return [load_audio(p) for p in self.paths[i]]
        return load_audio(self.paths[i])


def manifest_line(clip: Clip) -> str:
    """One clip as a manifest line (JSON, UTF-8 characters as they are, ending in a newline)."""
    return json.dumps(clip.to_json(), ensure_ascii=False) + "\n"


def write_manifest(clips: Iterable[Clip], path: str | Path) -> Path:
    """Write clips as JSONL atomically. Returns the path written."""
    text = "".join(manifest_line(c) for c in clips)
    atomic_write_text(path, text)
    return Path(path)


def manifest_hash(path: str | Path) -> str:
    """sha256 of the manifest file's bytes (recorded with every result), read in blocks."""
    return sha256_file(resolve_manifest_path(path))
