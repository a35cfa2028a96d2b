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
TOKENS_PER_SECOND = 50 // 2  # 25 encoder positions per second after the stride-2 conv (unused by decoding)


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
        raise AudioError(f"{path}: audio file not found; check the path (relative paths are resolved "
                         f"against the data directory or manifest)")
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
            raise AudioError(f"{path}: unreadable or corrupt audio (libsndfile: {sf_error}; PyAV: {av_error}); "
                             f"re-export or convert it to WAV/FLAC, e.g. `ffmpeg -i {path.name} out.wav`") from av_error


def _read_with_av(path: Path, start: float, end: float | None) -> tuple[np.ndarray, int]:
    import av  # faster-whisper depends on PyAV, so it is installed

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate
        frames = []
        for frame in container.decode(stream):
            arr = frame.to_ndarray()
            if arr.dtype.kind == "i":
                arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
            arr = arr.astype(np.float32)
            if frame.format.is_planar:
                frames.append(arr.T)
            else:
                frames.append(arr.reshape(-1, len(frame.layout.channels)))
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
