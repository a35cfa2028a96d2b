"""The JSONL manifest every stage reads: one line per clip.

A line looks like::

    {"id": "000030012", "audio": "clips/000030012.flac", "duration": 3.52,
     "text": "MARK IS GOING TO SEE ELEPHANT", "speaker": "0003", "age": 6, "gender": "m",
     "source": {"path": "/abs/original.flac", "start": 0.0, "end": 3.52}}

``audio`` is relative to the manifest's directory (absolute paths are accepted too); unknown fields are
``null``. Manifests are written atomically (temp file + rename) so a crash never leaves half a manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kidwhisper.files import atomic_write_text  # also imported from here by other modules

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


def read_manifest(path: str | Path) -> list[Clip]:
    """Read a JSONL manifest (file or directory). Raises ManifestError naming the bad line."""
    p = resolve_manifest_path(path)
    clips: list[Clip] = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                clips.append(Clip.from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ManifestError(f"{p}:{lineno}: bad manifest line ({e!r}); each line must be a JSON "
                                    f"object with at least id, audio, duration, text") from e
    ids = [c.id for c in clips]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ManifestError(f"{p}: duplicate clip ids {dup}; ids must be unique")
    return clips


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


def load_usable_audios(clips: list[Clip], manifest_path: str | Path, progress: bool = False,
                       workers: int = 4) -> LoadedClips:
    """Every clip's audio as 16 kHz mono float32, skipping (with a logged warning, counted by reason) the
    clips whose file is corrupt/undecodable or holds no samples: they are never decoded or trained on as
    silence. A missing file raises AudioError naming it. Kept in memory: an hour of audio is about 230 MB.
    """
    kept, audios, skipped = [], [], {}
    for clip, audio in zip(clips, _read_audios(clips, manifest_path, progress, workers), strict=True):
        if isinstance(audio, Exception) or len(audio) == 0:
            reason = REASON_UNREADABLE_AUDIO if isinstance(audio, Exception) else REASON_EMPTY_AUDIO
            skipped.setdefault(reason, []).append(clip.id)
            if len(skipped[reason]) <= _SHOWN_PER_REASON:
                detail = audio if isinstance(audio, Exception) else f"{audio_path(clip, manifest_path)} holds no samples"
                log.warning("skipped clip %s (%s): %s", clip.id, reason, detail)
            continue
        kept.append(clip)
        audios.append(audio)
    for reason, ids in skipped.items():
        log.warning("%s: skipped %d of %d clips (%s)%s; re-export or convert them, or remove them from the "
                    "manifest", manifest_path, len(ids), len(clips), reason,
                    f", e.g. {ids[:_SHOWN_PER_REASON]}" if len(ids) > _SHOWN_PER_REASON else "")
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


def write_manifest(clips: Iterable[Clip], path: str | Path) -> Path:
    """Write clips as JSONL atomically. Returns the path written."""
    text = "".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in clips)
    atomic_write_text(path, text)
    return Path(path)


def manifest_hash(path: str | Path) -> str:
    """sha256 of the manifest file's bytes (recorded with every result)."""
    return hashlib.sha256(resolve_manifest_path(path).read_bytes()).hexdigest()
