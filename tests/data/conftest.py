"""Fixtures for the data tests: the real corpus by path, tiny synthetic audio."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from shared_data import KIDS_DEV, KIDS_TEST


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


@dataclass
class KidsClips:
    """A few real clips of the kids test set, their metadata, and what ``prepare`` makes of them as Kaldi."""

    utts: list[str]  # 3 utterances of each of 2 speakers
    audio: dict[str, Path]  # utt -> the corpus's flac file
    text: dict[str, str]
    speaker: dict[str, str]  # utt -> speaker
    age: dict[str, int]  # speaker -> age
    gender: dict[str, str]  # speaker -> m | f
    reference: Path  # prepare()'s output for a Kaldi directory of these clips

    def assert_same_manifest(self, out: Path) -> None:
        """``out`` holds the reference's clips: same ids, text, speaker, age, gender, duration and samples."""
        from kidwhisper.data.manifest import read_manifest

        got = {c.id: c for c in read_manifest(out)}
        want = {c.id: c for c in read_manifest(self.reference)}
        assert sorted(got) == sorted(want) == sorted(self.utts)
        for cid, w in want.items():
            g = got[cid]
            assert (g.text, g.speaker, g.age, g.gender, g.duration) == (w.text, w.speaker, w.age, w.gender,
                                                                        w.duration), cid
            samples = sf.read(out / g.audio, dtype="int16")[0]
            assert np.array_equal(samples, sf.read(self.reference / w.audio, dtype="int16")[0]), cid


def _table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


@pytest.fixture(scope="session")
def kids_clips(tmp_path_factory) -> KidsClips:
    """Six real kids test clips (two speakers) and the manifest prepared from a Kaldi dir of them."""
    from kidwhisper.data.prepare import PrepareConfig, prepare

    if not (KIDS_TEST / "text").is_file():
        pytest.skip(f"{KIDS_TEST} not found (the shared corpus lives beside the repository)")
    text, utt2spk = _table(KIDS_TEST / "text"), _table(KIDS_TEST / "utt2spk")
    spk2age, spk2gender = _table(KIDS_TEST / "spk2age"), _table(KIDS_TEST / "spk2gender")
    speakers = sorted(set(utt2spk.values()))[:2]
    utts = [u for spk in speakers for u in sorted(u for u in text if utt2spk[u] == spk)[:3]]
    audio = {u: KIDS_TEST / "audio" / f"{u}.flac" for u in utts}
    kaldi = tmp_path_factory.mktemp("kaldi")
    (kaldi / "text").write_text("".join(f"{u} {text[u]}\n" for u in utts))
    (kaldi / "wav.scp").write_text("".join(f"{u} {audio[u]}\n" for u in utts))
    (kaldi / "utt2spk").write_text("".join(f"{u} {utt2spk[u]}\n" for u in utts))
    (kaldi / "spk2age").write_text("".join(f"{s} {spk2age[s]}\n" for s in speakers))
    (kaldi / "spk2gender").write_text("".join(f"{s} {spk2gender[s]}\n" for s in speakers))
    reference = tmp_path_factory.mktemp("reference")
    prepare(kaldi, reference, PrepareConfig(progress=False, jobs=1))
    return KidsClips(utts, audio, {u: text[u] for u in utts}, {u: utt2spk[u] for u in utts},
                     {s: int(spk2age[s]) for s in speakers}, {s: spk2gender[s] for s in speakers}, reference)
