"""Shared fixtures: real clips from ../shared/data by path, and the offline built-in models."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
KIDS_TEST = SHARED_DATA / "speechocean762-kids" / "test"


def kaldi_clips(set_dir: Path, n: int) -> list[tuple[str, Path, str]]:
    """First ``n`` (utt id, audio path, transcript) of a Kaldi-style set."""
    text = dict(line.rstrip("\n").split(" ", 1) for line in (set_dir / "text").read_text().splitlines()[:n])
    wav = dict(line.split() for line in (set_dir / "wav.scp").read_text().splitlines())
    return [(u, set_dir / wav[u], t) for u, t in text.items()]


@pytest.fixture(scope="session")
def kids_test_clips() -> list[tuple[str, Path, str]]:
    if not KIDS_TEST.exists():
        pytest.skip(f"{KIDS_TEST} not found (the shared children's speech data)")
    return kaldi_clips(KIDS_TEST, 12)
