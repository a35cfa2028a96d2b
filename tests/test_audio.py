"""kidwhisper.audio: any file -> 16 kHz mono float32, regions, and clear errors for what cannot be read."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from kidwhisper.audio import SAMPLE_RATE, AudioError, load_audio, read_audio, to_mono_16k


def _tone(sr: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_44k_becomes_16k_mono_with_the_same_tone(tmp_path):
    left, right = _tone(44100, 1.0), _tone(44100, 1.0) * 0.5
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    audio = load_audio(tmp_path / "s.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == SAMPLE_RATE  # 1 s at 16 kHz
    expected = _tone(SAMPLE_RATE, 1.0) * 0.75  # the channel mean, resampled
    assert np.max(np.abs(audio[200:-200] - expected[200:-200])) < 1e-2
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio) - 440) <= 1


def test_a_region_is_read_without_the_rest(tmp_path):
    ramp = np.linspace(-1, 1, 3 * SAMPLE_RATE, dtype=np.float32)
    sf.write(tmp_path / "r.flac", ramp, SAMPLE_RATE, subtype="PCM_24")
    part = load_audio(tmp_path / "r.flac", start=1.0, end=2.0)
    assert len(part) == SAMPLE_RATE
    assert np.allclose(part, ramp[SAMPLE_RATE:2 * SAMPLE_RATE], atol=1e-5)
    assert len(load_audio(tmp_path / "r.flac", start=2.5)) == SAMPLE_RATE // 2
    assert len(load_audio(tmp_path / "r.flac", start=5.0)) == 0  # past the end: nothing, no error


def test_16k_mono_passes_through_unchanged():
    x = _tone(SAMPLE_RATE, 0.5)
    assert np.array_equal(to_mono_16k(x, SAMPLE_RATE), x)
    assert np.array_equal(to_mono_16k(x[:, None], SAMPLE_RATE), x)


def test_compressed_formats_decode_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "t.mp3"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=22050, layout="mono")
        tone = _tone(22050, 1.0)[None, :]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = 22050
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    audio = load_audio(path)
    assert abs(len(audio) / SAMPLE_RATE - 1.0) < 0.1  # mp3 adds encoder padding
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio) - 440) <= 3


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, bytes(range(256)) * 40])
def test_corrupt_files_are_audio_errors_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.flac"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=r"broken\.flac: unreadable or corrupt audio.*convert it"):
        read_audio(path)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(AudioError, match=r"nothing\.wav: audio file not found"):
        load_audio(tmp_path / "nothing.wav")
