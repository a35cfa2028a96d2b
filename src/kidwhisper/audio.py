"""Audio loading and Whisper's audio constants.

Everything downstream sees 16 kHz mono float32 in [-1, 1]. Resampling uses soxr (high quality),
channel mixing is a plain mean.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz, what Whisper was trained on
CHUNK_LENGTH = 30  # seconds in one Whisper input window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30 s window
HOP_LENGTH = 160  # samples between log-mel frames (10 ms)
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 log-mel frames in one window
TOKENS_PER_SECOND = SAMPLE_RATE // (2 * HOP_LENGTH)  # 50 encoder positions per second (stride-2 conv over mel frames)


class AudioError(ValueError):
    """Audio that cannot be read or used; the message names the file and the fix."""


def read_audio(path: str | Path, start: float = 0.0, end: float | None = None) -> tuple[np.ndarray, int]:
    """Read a file (any format libsndfile knows, else PyAV) -> (float32 array [frames, channels], rate).

    ``start``/``end`` in seconds select a region without decoding the whole file where possible. A file
    neither decoder can read, or one PyAV opens but decodes to no audio at all (random bytes named
    ``.flac`` do that), raises AudioError: it is corrupt or not audio, never an empty recording.
    """
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    try:
        import soundfile as sf

        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            first = int(round(start * sr))
            last = f.frames if end is None else min(int(round(end * sr)), f.frames)
            f.seek(min(first, f.frames))
            data = f.read(max(0, last - first), dtype="float32", always_2d=True)
        return data, sr
    except Exception as sf_error:  # noqa: BLE001 - fall back to PyAV for mp3/m4a/...
        try:
            return _read_with_av(path, start, end)
        except Exception as av_error:
            raise _unreadable(path, sf_error, av_error) from av_error


def _missing(path: Path) -> AudioError:
    return AudioError(f"{path}: audio file not found; check the path (relative paths are resolved against the "
                      f"data directory or manifest)")


def _unreadable(path: Path, sf_error: BaseException, av_error: BaseException) -> AudioError:
    return AudioError(f"{path}: unreadable or corrupt audio (libsndfile: {sf_error}; PyAV: {av_error}); "
                      f"re-export or convert it to WAV/FLAC, e.g. `ffmpeg -i {path.name} out.wav`")


def _av_frames(path: Path):
    """(float32 [frames, channels] array, rate) per decoded PyAV frame of the first audio stream."""
    import av  # faster-whisper depends on PyAV, so it is installed

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            arr = frame.to_ndarray()
            if arr.dtype.kind == "i":
                arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
            arr = arr.astype(np.float32)
            yield (arr.T if frame.format.is_planar else arr.reshape(-1, len(frame.layout.channels))), sr


def _read_with_av(path: Path, start: float, end: float | None) -> tuple[np.ndarray, int]:
    frames, rates = [], []
    for arr, rate in _av_frames(path):
        frames.append(arr)
        rates.append(rate)
    sr = rates[0] if rates else 0
    if not frames or not sr:
        raise ValueError("no audio frames decoded (the file is corrupt or not audio)")
    data = np.concatenate(frames, axis=0)
    first = int(round(start * sr))
    last = len(data) if end is None else min(int(round(end * sr)), len(data))
    return data[first:last], sr


def to_mono_16k(data: np.ndarray, sr: int) -> np.ndarray:
    """[frames, channels] or [frames] at ``sr`` -> float32 mono at 16 kHz."""
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    data = np.ascontiguousarray(data, dtype=np.float32)
    if sr != SAMPLE_RATE and len(data):
        import soxr

        data = soxr.resample(data, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return data


def load_audio(path: str | Path, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Load any audio file as 16 kHz mono float32 (optionally the region ``start``..``end`` seconds)."""
    data, sr = read_audio(path, start, end)
    return to_mono_16k(data, sr)


def audio_duration(path: str | Path) -> float | None:
    """Duration in seconds read from the file's header (None when the container does not say), without
    decoding it. AudioError when the file is missing, unreadable, or holds no audio samples."""
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    try:
        import soundfile as sf

        info = sf.info(str(path))
        if info.frames == 0:
            raise AudioError(f"{path}: contains no audio samples")
        return info.frames / info.samplerate
    except AudioError:
        raise
    except Exception as sf_error:  # noqa: BLE001 - not a libsndfile format: ask PyAV
        try:
            import av

            with av.open(str(path)) as container:
                duration = container.duration / 1e6 if container.duration else None
            next(_av_frames(path))
            return duration
        except StopIteration:
            raise AudioError(f"{path}: contains no audio samples") from None
        except Exception as av_error:  # noqa: BLE001
            raise _unreadable(path, sf_error, av_error) from av_error


def stream_audio(path: str | Path, block_seconds: float = 10.0):
    """Yield a file as 16 kHz mono float32 blocks of about ``block_seconds``, holding one block at a time.

    The blocks joined are the samples :func:`load_audio` returns (the same channel mean; soxr's streaming
    resampler gives the same samples as its one-shot call).
    """
    path = Path(path)
    try:
        import soundfile as sf

        f = sf.SoundFile(str(path))
    except Exception:  # noqa: BLE001 - not a libsndfile format: PyAV
        f = None
    if f is not None:
        with f:
            blocks = (b for b in f.blocks(blocksize=max(1, int(block_seconds * f.samplerate)), dtype="float32",
                                          always_2d=True))
            yield from _mono_16k_stream(blocks, f.samplerate)
        return
    yield from _mono_16k_stream(_av_blocks(path, block_seconds), None)


def _av_blocks(path: Path, block_seconds: float):
    pending, n, sr = [], 0, 0
    for arr, sr in _av_frames(path):
        pending.append(arr)
        n += len(arr)
        if n >= block_seconds * sr:
            yield np.concatenate(pending), sr
            pending, n = [], 0
    if pending:
        yield np.concatenate(pending), sr


def _mono_16k_stream(blocks, sr: int | None):
    """[frames, channels] blocks (or (block, rate) pairs when ``sr`` is None) -> 16 kHz mono blocks."""
    resampler = None
    for item in blocks:
        data, rate = (item, sr) if sr is not None else item
        mono = to_mono_16k(data, SAMPLE_RATE)  # channel mean only
        if rate != SAMPLE_RATE:
            if resampler is None:
                import soxr

                resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            mono = resampler.resample_chunk(mono, last=False)
        if len(mono):
            yield mono
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail
