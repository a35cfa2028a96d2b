"""Audio conversion for :mod:`kidwhisper.data.prepare`: utterances -> checked 16 kHz mono clip files, in
worker processes, streamed in chunks.

A chunk of at most CHUNK_ITEMS utterances is one unit of work: within it, a whole-file utterance is one
task and the utterances cut from one recording are one task (the recording is opened once and cut with
:func:`kidwhisper.data.segment.segment_recording`). :func:`converted` keeps at most IN_FLIGHT_PER_WORKER
chunks per worker submitted ahead of the one the caller is writing, and returns results in input order,
so the output does not depend on the number of workers and memory holds a bounded number of utterances
(:func:`max_items_in_memory`) and only their audio in the workers.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kidwhisper.audio import SAMPLE_RATE, AudioError, read_audio, to_mono_16k
from kidwhisper.data.readers import RawItem
from kidwhisper.data.segment import Segment, segment_recording, to_samples, too_long_reason
from kidwhisper.files import atomic_write_bytes

SILENCE_PEAK = 1e-4  # full scale = 1.0; below this peak (about 3 LSB of 16-bit audio) a clip is silent
CHUNK_ITEMS = 32  # most items per unit of work sent to a worker process
IN_FLIGHT_PER_WORKER = 2  # chunks submitted ahead of the one being written, per worker process
REASON_UNREADABLE = "unreadable or corrupt audio"
REASON_ZERO_LENGTH = "zero-length audio"
REASON_SILENT = "silent audio"
REASON_TOO_SHORT = "too short"
FIX_RESAMPLED = "resampled"
FIX_DOWNMIXED = "downmixed"
FIX_PEAKS_CLIPPED = "peaks clipped to full scale"


@dataclass
class _Job:
    """One clip to make: the whole file (start = end = None) or start..end seconds of a recording."""

    id: str
    start: float | None
    end: float | None
    text: str


@dataclass
class _Task:
    """The clips to make from one audio file, opened once."""

    audio: str
    segmented: bool  # cut start..end from a recording (checked with segment_recording)
    jobs: list[_Job]


@dataclass(frozen=True)
class Settings:
    """What a worker needs to know besides its tasks."""

    clips_dir: str
    audio_format: str
    min_duration: float
    max_duration: float


@dataclass
class Outcome:
    """One clip's result: written (``reason`` None, with its duration and span) or skipped with a reason."""

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


def _cut(source: _Source, cid: str, start: float, end: float | None, fixes: list[str], s: Settings,
         segmented: bool) -> Outcome:
    src_end = source.duration if end is None else end
    if source.frames == 0:
        return Outcome(cid, REASON_ZERO_LENGTH, f"{source.path} is an audio file with no samples")
    if src_end - start <= 0:
        return Outcome(cid, REASON_ZERO_LENGTH, f"{source.path} has no samples in {start:.3f}-{src_end:.3f} s")
    if not segmented and src_end - start > s.max_duration + 1.0 / SAMPLE_RATE:  # decide before decoding
        return Outcome(cid, too_long_reason(s.max_duration),
                        f"{src_end - start:.1f} s; split it with a segments/TextGrid file")
    try:
        data = source.read(start, end)
    except AudioError as e:
        return Outcome(cid, REASON_UNREADABLE, str(e))
    audio = to_mono_16k(data, source.rate)
    if source.rate != SAMPLE_RATE:
        fixes.append(FIX_RESAMPLED)
    if data.ndim == 2 and data.shape[1] > 1:
        fixes.append(FIX_DOWNMIXED)
    duration = len(audio) / SAMPLE_RATE
    if len(audio) == 0:
        if segmented:
            return Outcome(cid, REASON_ZERO_LENGTH, f"{source.path} has no samples in {start:.3f}-{src_end:.3f} s")
        return Outcome(cid, REASON_UNREADABLE, f"{source.path}: its header announces {source.frames} frames but "
                                                f"none decode; the file is corrupt")
    if duration < s.min_duration:
        return Outcome(cid, REASON_TOO_SHORT, f"{duration:.3f} s < --min-duration {s.min_duration:g} s")
    if len(audio) > to_samples(s.max_duration, SAMPLE_RATE):
        hint = "shorten or split the segment" if segmented else "split it with a segments/TextGrid file"
        return Outcome(cid, too_long_reason(s.max_duration), f"{duration:.1f} s; {hint}")
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        return Outcome(cid, REASON_SILENT, f"peak {peak:.2g} < {SILENCE_PEAK:g} of full scale")
    if peak > 1.0:
        fixes.append(FIX_PEAKS_CLIPPED)
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)  # exact for 16-bit input
    _write_clip(Path(s.clips_dir) / f"{cid}.{s.audio_format}", pcm, s.audio_format)
    return Outcome(cid, None, "", round(duration, 6), round(start, 6), round(start + duration, 6), fixes)


def _write_clip(path: Path, pcm: np.ndarray, audio_format: str) -> None:
    """Encode in memory, then write atomically (a full disk is a DiskFullError naming the clip)."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format=audio_format.upper(), subtype="PCM_16")
    atomic_write_bytes(path, buf.getbuffer(), fsync=False)


def _convert_task(task: _Task, settings: Settings) -> list[Outcome]:
    """One source file -> one outcome per job (runs in a worker process)."""
    try:
        source = _Source(Path(task.audio))
    except AudioError as e:
        return [Outcome(job.id, REASON_UNREADABLE, str(e)) for job in task.jobs]
    if not task.segmented:
        return [_cut(source, job.id, 0.0, None, [], settings, False) for job in task.jobs]
    segments = [Segment(job.start or 0.0, source.duration if job.end is None else job.end, job.text, id=job.id)
                for job in task.jobs]
    specs, seg_skips = segment_recording(Path(task.audio).stem, source.duration, segments, settings.max_duration)
    outcomes = [Outcome(k.id, k.reason, k.detail) for k in seg_skips]
    outcomes += [_cut(source, spec.id, spec.start, spec.end, list(spec.fixes), settings, True) for spec in specs]
    return outcomes


def _convert_chunk(tasks: list[_Task], settings: Settings) -> list[Outcome]:
    """The tasks of one chunk -> their outcomes (runs in a worker process)."""
    return [outcome for task in tasks for outcome in _convert_task(task, settings)]


def n_workers(jobs: int, n_items: int) -> int:
    """Worker processes for ``--jobs`` (0 = the cores this process may use), at most one per item."""
    if jobs == 0:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(jobs, n_items))


def chunk_size(workers: int, n_items: int) -> int:
    """Items per chunk: at most CHUNK_ITEMS, fewer for small inputs so that every worker gets several."""
    return max(1, min(CHUNK_ITEMS, n_items // (workers * 8)))


def _window(workers: int) -> int:
    """Chunks submitted and not yet written: enough that no worker waits for its next chunk."""
    return 1 if workers == 1 else IN_FLIGHT_PER_WORKER * workers


def max_items_in_memory(workers: int, chunk: int) -> int:
    """The most items :func:`converted` and its caller hold at once: the chunks in flight, the chunk being
    written and the one being gathered, plus the item a reader is checking (no audio: that stays in the
    workers)."""
    return (_window(workers) + 1) * chunk + 2


def converted(items: Iterator[RawItem], settings: Settings, workers: int, chunk: int
              ) -> Iterator[tuple[list[RawItem], list[Outcome]]]:
    """(chunk of items, their outcomes) in input order, converting up to ``_window(workers)`` chunks ahead.

    Items are drawn from ``items`` only as chunks are submitted, so memory holds a bounded number of them
    whatever the corpus size (``multiprocessing.Pool.imap`` would read the whole iterator ahead). Within a
    chunk, items cut from the same recording make one task, so the recording is opened once per chunk.
    """
    chunks = iter(lambda: list(itertools.islice(items, chunk)), [])
    if workers == 1:
        for part in chunks:
            yield part, _convert_chunk(_tasks(part), settings)
        return
    pool = ProcessPoolExecutor(workers)
    pending: deque[tuple[list[RawItem], Future[list[Outcome]]]] = deque()
    try:
        for part in chunks:
            pending.append((part, pool.submit(_convert_chunk, _tasks(part), settings)))
            if len(pending) >= _window(workers):
                part, future = pending.popleft()
                yield part, future.result()
        while pending:
            part, future = pending.popleft()
            yield part, future.result()
    finally:
        pool.shutdown(cancel_futures=True)


def _tasks(items: list[RawItem]) -> list[_Task]:
    """A chunk's whole-file items -> one task each; its items with start/end -> one task per recording."""
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


