"""lhotse manifests in: a CutSet, or a RecordingSet + SupervisionSet (``.jsonl`` / ``.jsonl.gz``) -> raw items.

Layouts (``--format lhotse``)::

    kids_cuts_test.jsonl.gz            a CutSet
    kids_supervisions_test.jsonl.gz    a SupervisionSet; its RecordingSet is the file named with
                                       ``recordings`` for ``supervisions`` (or the only one beside it)
    kids_recordings_test.jsonl.gz      the same pair, passed by its recordings file
    manifests/                         a directory of such files (a lhotse recipe's output): ``--split test``
                                       keeps the ``*_test.jsonl.gz`` ones; a CutSet wins over a pair

A file's kind comes from its first record, not its name. Each supervision is one utterance with its
id, text, speaker, gender (``gender``, else ``custom["gender"]``) and age (``custom["age"]``,
``["speaker_age"]`` as lhotse's CMU Kids recipe writes it, or ``["age_years"]``; on the supervision,
else on its cut). Its start and end in the recording (for a cut: the cut's start plus the supervision's)
select the audio, which :func:`kidwhisper.data.segment.segment_recording` cuts like any time-aligned
transcript; a supervision covering its whole recording is read as the whole file. A supervision that
several cuts share (overlapping windows) is read once.

Audio: a recording with one ``file`` source is used in place (relative paths resolve against the
manifest's directory, then the working directory). A recording with transforms (speed perturbation,
resampling), several sources, or a supervision on some of its channels is decoded by lhotse and
written to ``ReadOptions.staging_dir`` as a WAV file. ``command`` and ``url`` sources are skipped with
a reason, as Kaldi's piped ``wav.scp`` entries are; so are mixed and padded cuts.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kidwhisper.data.readers import (
    REASON_NO_AUDIO_ENTRY,
    REASON_NO_TRANSCRIPT,
    InputError,
    RawItem,
    ReadOptions,
    Skip,
    _age,
    _opt,
)
from kidwhisper.data.segment import to_samples

log = logging.getLogger(__name__)

LHOTSE_SUFFIXES = (".jsonl", ".jsonl.gz")
KINDS = ("cuts", "recordings", "supervisions")
AGE_KEYS = ("age", "speaker_age", "age_years")  # custom fields holding the speaker's age in years

REASON_UNSUPPORTED_SOURCE = "lhotse audio source not supported"
REASON_MIXED_CUT = "mixed or padded lhotse cut"
REASON_LHOTSE_LOAD = "lhotse cannot load the recording"

SOURCE_FIXES = {  # lhotse AudioSource.type -> how to make it a file
    "command": "run the command once and point the recording at the resulting file",
    "url": "download the file and point the recording at it",
}


def _is_manifest_name(path: Path) -> bool:
    return path.name.lower().endswith(LHOTSE_SUFFIXES)


def manifest_kind(path: Path) -> str | None:
    """"cuts" | "recordings" | "supervisions" from the first record of a ``.jsonl[.gz]`` file, else None."""
    if not (_is_manifest_name(path) and path.is_file()):
        return None
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            line = next((line for line in f if line.strip()), "")
        record = json.loads(line)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    if str(record.get("type", "")).endswith("Cut") or {"recording", "supervisions"} <= record.keys():
        return "cuts"
    if {"sources", "sampling_rate"} <= record.keys():
        return "recordings"
    if {"recording_id", "start", "duration"} <= record.keys():
        return "supervisions"
    return None


def is_lhotse_manifest(path: Path) -> bool:
    """A ``.jsonl``/``.jsonl.gz`` file whose first record is a lhotse cut, recording or supervision."""
    return manifest_kind(path) is not None


def lhotse_manifests(directory: Path) -> dict[Path, str]:
    """{file: kind} for the lhotse manifests directly in ``directory`` (sorted by name)."""
    if not directory.is_dir():
        return {}
    kinds = {p: manifest_kind(p) for p in sorted(directory.iterdir()) if not p.name.startswith(".")}
    return {p: k for p, k in kinds.items() if k is not None}


def _lhotse() -> Any:
    try:
        import lhotse
    except ImportError as e:
        raise InputError("reading lhotse manifests needs the `lhotse` package: pip install lhotse") from e
    return lhotse


# --------------------------------------------------------------------------- which files


def _stem(path: Path) -> str:
    return re.sub(r"\.jsonl(\.gz)?$", "", path.name, flags=re.IGNORECASE)


def _in_split(path: Path, split: str) -> bool:
    """``kids_cuts_test.jsonl.gz`` is in split ``test`` (the split is a ``_ . -``-separated part of the name)."""
    return re.search(rf"(^|[_.-]){re.escape(split)}($|[_.-])", _stem(path)) is not None


def _partner(path: Path, kind: str, wanted: str) -> Path:
    """The recordings file of a supervisions file (or the reverse): same name with the kind swapped, else
    the only one beside it."""
    candidate = path.with_name(path.name.replace(kind, wanted))
    if candidate != path and manifest_kind(candidate) == wanted:
        return candidate
    others = [p for p, k in lhotse_manifests(path.parent).items() if k == wanted]
    if len(others) == 1:
        return others[0]
    raise InputError(f"{path}: a lhotse {kind} manifest needs its {wanted} manifest; put "
                     f"{candidate.name if candidate != path else f'the {wanted} file'} beside it, or pass a CutSet")


def select_manifests(path: Path, split: str | None) -> tuple[Path | None, Path | None, Path | None]:
    """-> (cuts, recordings, supervisions) files to read: a CutSet alone, or a recordings + supervisions pair."""
    if path.is_file():
        kind = manifest_kind(path)
        if kind is None:
            raise InputError(f"{path}: not a lhotse manifest (its first record is no cut, recording or "
                             f"supervision); pass --format for the layout it has")
        if split is not None:
            raise InputError(f"{path}: one manifest holds one split; drop --split, or pass the directory holding "
                             f"the manifests of every split")
        if kind == "cuts":
            return path, None, None
        other = _partner(path, kind, "supervisions" if kind == "recordings" else "recordings")
        return (None, path, other) if kind == "recordings" else (None, other, path)
    found = lhotse_manifests(path)
    if split is not None:
        found = {p: k for p, k in found.items() if _in_split(p, split)}
    by_kind = {kind: [p for p, k in found.items() if k == kind] for kind in KINDS}
    listing = ", ".join(p.name for p in found) or "none"
    if len(by_kind["cuts"]) == 1:
        return by_kind["cuts"][0], None, None
    if not by_kind["cuts"] and len(by_kind["recordings"]) == 1 and len(by_kind["supervisions"]) == 1:
        return None, by_kind["recordings"][0], by_kind["supervisions"][0]
    where = f" of split {split!r}" if split is not None else ""
    raise InputError(f"{path}: expected one lhotse CutSet, or one RecordingSet and one SupervisionSet{where}; "
                     f"found {listing}; pass --split (e.g. test for *_test.jsonl.gz) or one manifest file")


# --------------------------------------------------------------------------- reading


@dataclass
class _Collector:
    """Supervisions -> RawItems, resolving each recording's audio once."""

    manifest: Path
    options: ReadOptions
    items: list[RawItem] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    audio: dict[tuple, tuple[Path, str] | tuple[str, str]] = field(default_factory=dict)
    seen: set[tuple] = field(default_factory=set)

    def add(self, sup: Any, recording: Any, offset: float, origin: str, cut_custom: dict | None = None) -> None:
        start = offset + sup.start
        end = start + sup.duration
        key = (sup.id, recording.id, round(start, 6), round(end, 6))
        if key in self.seen:
            return
        self.seen.add(key)
        audio, source = self._audio_of(recording, sup.channel)
        if isinstance(audio, str):  # (reason, detail)
            self.skips.append(Skip(audio, origin, source, sup.id))
            return
        rate = recording.sampling_rate
        whole = to_samples(start, rate) == 0 and to_samples(end, rate) >= recording.num_samples
        custom = {**(cut_custom or {}), **(sup.custom or {})}
        age = next((custom[k] for k in AGE_KEYS if custom.get(k) is not None), None)
        self.items.append(RawItem(sup.id, audio, sup.text or "", None if whole else start, None if whole else end,
                                  _opt(sup.speaker), _age(age), _opt(sup.gender or custom.get("gender")),
                                  origin, source=source))

    def _audio_of(self, recording: Any, channel: int | list[int] | None) -> tuple[Path, str] | tuple[str, str]:
        channels = None if channel is None else sorted(channel if isinstance(channel, list) else [channel])
        if channels is not None and set(channels) >= set(recording.channel_ids):
            channels = None  # all of them
        key = (recording.id, tuple(channels) if channels else None)
        if key not in self.audio:
            self.audio[key] = self._resolve(recording, channels)
        return self.audio[key]

    def _resolve(self, recording: Any, channels: list[int] | None) -> tuple[Path, str] | tuple[str, str]:
        kinds = sorted({s.type for s in recording.sources})
        unsupported = [k for k in kinds if k != "file"]
        if unsupported:
            return REASON_UNSUPPORTED_SOURCE, (f"recording {recording.id!r} has a {unsupported[0]!r} source; "
                                               f"{SOURCE_FIXES.get(unsupported[0], 'point it at an audio file')}")
        if len(recording.sources) == 1 and not recording.transforms and channels is None:
            path = self._path(recording.sources[0].source)
            return path, str(path)
        return self._decode(recording, channels)

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        for base in (self.manifest.parent, Path.cwd()):
            if (base / path).exists():
                return base / path
        return self.manifest.parent / path

    def _decode(self, recording: Any, channels: list[int] | None) -> tuple[Path, str] | tuple[str, str]:
        import soundfile as sf

        if self.options.staging_dir is None:
            raise InputError(f"{self.manifest}: recording {recording.id!r} must be decoded by lhotse and no "
                             f"staging directory was given; call kidwhisper.data.prepare.prepare (it provides one)")
        try:
            samples = recording.load_audio(channels=channels)
        except Exception as e:  # noqa: BLE001 - lhotse raises many kinds; the item is skipped with the message
            return REASON_LHOTSE_LOAD, f"recording {recording.id!r}: {e}"
        path = self.options.staging_dir / "lhotse" / f"{len(self.audio):06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), samples.T, recording.sampling_rate, subtype="FLOAT")
        channel_note = f" channels {channels}" if channels else ""
        return path, f"{self.manifest}[{recording.id}]{channel_note}"


def _iterate(manifest: Any, path: Path, options: ReadOptions) -> Any:
    from tqdm import tqdm

    return enumerate(tqdm(manifest, desc=f"reading {path.name}", unit="record", disable=not options.progress), 1)


def read_lhotse(path: Path, options: ReadOptions | None = None) -> tuple[list[RawItem], list[Skip]]:
    """lhotse manifests (see the module docstring for the accepted forms) -> (items, skips)."""
    options = options or ReadOptions()
    lhotse = _lhotse()
    cuts_path, rec_path, sup_path = select_manifests(Path(path), options.split)
    if cuts_path is not None:
        return _read_cuts(cuts_path, options, lhotse)
    assert rec_path is not None and sup_path is not None
    collector = _Collector(sup_path, options)
    recordings = {r.id: r for r in lhotse.load_manifest(rec_path)}
    used: set[str] = set()
    for n, sup in _iterate(lhotse.load_manifest_lazy(sup_path), sup_path, options):
        origin = f"{sup_path}:{n}"
        recording = recordings.get(sup.recording_id)
        if recording is None:
            collector.skips.append(Skip(REASON_NO_AUDIO_ENTRY, origin, f"recording {sup.recording_id!r} is not "
                                                                       f"in {rec_path.name}", sup.id))
            continue
        used.add(recording.id)
        collector.add(sup, recording, 0.0, origin)
    for rec_id in recordings:
        if rec_id not in used:
            collector.skips.append(Skip(REASON_NO_TRANSCRIPT, str(rec_path), f"recording {rec_id!r} has no "
                                                                             f"supervision in {sup_path.name}", rec_id))
    log.info("%s + %s: %d supervisions of %d recordings", rec_path.name, sup_path.name, len(collector.items),
             len(used))
    return collector.items, collector.skips


def _read_cuts(path: Path, options: ReadOptions, lhotse: Any) -> tuple[list[RawItem], list[Skip]]:
    from lhotse.cut import MonoCut, MultiCut

    collector = _Collector(path, options)
    for n, cut in _iterate(lhotse.load_manifest_lazy(path), path, options):
        origin = f"{path}:{n}"
        if not isinstance(cut, (MonoCut, MultiCut)):
            collector.skips.append(Skip(REASON_MIXED_CUT, origin, f"{type(cut).__name__}; store the cuts before "
                                                                  f"mixing or padding them", cut.id))
        elif not cut.has_recording:
            collector.skips.append(Skip(REASON_NO_AUDIO_ENTRY, origin, "the cut has features but no recording",
                                        cut.id))
        elif not cut.supervisions:
            collector.skips.append(Skip(REASON_NO_TRANSCRIPT, origin, "the cut has no supervision", cut.id))
        else:
            for sup in cut.supervisions:
                collector.add(sup, cut.recording, cut.start, origin, cut.custom)
    log.info("%s: %d supervisions", path.name, len(collector.items))
    return collector.items, collector.skips
