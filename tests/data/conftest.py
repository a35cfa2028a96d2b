"""Fixtures for the data tests: the real corpus by path, tiny synthetic audio."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data beside the repo
KIDS_DEV = SHARED / "speechocean762-kids" / "dev"


@pytest.fixture(scope="session")
def kids_dev() -> Path:
    """The real kids dev set (Kaldi layout), or skip when ../shared/data is absent."""
    if not (KIDS_DEV / "text").is_file():
        pytest.skip(f"{KIDS_DEV} not found (the shared corpus lives beside the repository)")
    return KIDS_DEV


def _tone(seconds: float = 1.0, rate: int = 16000, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    mono = (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.fixture
def tone() -> Callable[..., np.ndarray]:
    """tone(seconds, rate, channels, amp) -> float32 440 Hz sine ([frames] or [frames, channels])."""
    return _tone


@pytest.fixture
def write_audio() -> Callable[..., Path]:
    """write_audio(path, data, rate=16000) -> path; 16-bit PCM, format from the extension."""

    def write(path: Path, data: np.ndarray, rate: int = 16000) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), data, rate, subtype="PCM_16")
        return path

    return write
