"""Manifest helpers: loading every clip's audio for evaluation and training."""

from __future__ import annotations

import numpy as np
import pytest

from kidwhisper.audio import AudioError
from kidwhisper.data.manifest import Clip, load_clip_audios, write_manifest


def test_load_clip_audios_keeps_clip_order_and_resamples(tmp_path, tone, write_audio):
    clips = []
    for i, (seconds, rate, channels) in enumerate([(0.5, 16000, 1), (1.0, 8000, 2), (0.25, 44100, 1)] * 3):
        write_audio(tmp_path / "clips" / f"{i}.wav", tone(seconds, rate, channels), rate)
        clips.append(Clip(id=str(i), audio=f"clips/{i}.wav", duration=seconds, text="x"))
    manifest = write_manifest(clips, tmp_path / "manifest.jsonl")
    audios = load_clip_audios(clips, manifest, workers=3)
    assert [len(a) for a in audios] == [int(round(c.duration * 16000)) for c in clips]
    assert all(a.dtype == np.float32 and a.ndim == 1 for a in audios)


def test_load_clip_audios_names_the_missing_file(tmp_path):
    clips = [Clip(id="a", audio="clips/missing.wav", duration=1.0, text="x")]
    manifest = write_manifest(clips, tmp_path / "manifest.jsonl")
    with pytest.raises(AudioError, match="missing.wav"):
        load_clip_audios(clips, manifest)
