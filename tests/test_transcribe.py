"""transcribe: real child clips in several formats, a >30 s file chunked at pauses and streamed, phrase cues
and word times, SRT/WebVTT/JSON output, one output file per input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from kidwhisper.audio import SAMPLE_RATE, AudioError, load_audio
from kidwhisper.text import normalize
from kidwhisper.transcribe import (
    chunk_bounds,
    format_transcripts,
    srt_time,
    to_srt,
    transcribe,
)

SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"


def _seconds(stamp: str) -> float:
    h, m, s, ms = map(int, re.fullmatch(SRT_TIME, stamp).groups())
    return 3600 * h + 60 * m + s + ms / 1000


def _write_av(path, codec: str, stereo: np.ndarray, rate: int) -> None:
    """Encode [frames, 2] float32 with PyAV (libsndfile cannot write every format)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo.T), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory, kids_test_clips):
    """The first kids clip as 16 kHz FLAC (original) and re-encoded as stereo 44.1 kHz WAV/OGG/MP3/M4A,
    plus a >30 s WAV of all 12 clips joined with short pauses."""
    import soxr

    tmp = tmp_path_factory.mktemp("transcribe")
    _, original, _ = kids_test_clips[0]
    mono = load_audio(original)
    up = soxr.resample(mono, SAMPLE_RATE, 44100).astype(np.float32)
    stereo = np.stack([up, 0.6 * up], axis=1)  # unequal channels: the mixdown must still be right
    files = {"flac16k": original}
    files["wav44k"] = tmp / "clip_stereo_44k.wav"
    sf.write(files["wav44k"], stereo, 44100, subtype="PCM_16")
    if "OGG" in sf.available_formats():
        files["ogg"] = tmp / "clip.ogg"
        sf.write(files["ogg"], stereo, 44100, format="OGG", subtype="VORBIS")
    for name, codec in (("mp3", "libmp3lame"), ("m4a", "aac")):
        try:
            _write_av(tmp / f"clip.{name}", codec, stereo, 44100)
            files[name] = tmp / f"clip.{name}"
        except Exception as e:  # noqa: BLE001 - an encoder missing from this PyAV build
            print(f"skipping {name}: {e}")
    pause = np.zeros(int(0.4 * SAMPLE_RATE), np.float32)
    pieces = []
    for _, path, _ in kids_test_clips:
        pieces += [load_audio(path), pause]
    files["long"] = tmp / "long.wav"
    sf.write(files["long"], np.concatenate(pieces), SAMPLE_RATE)
    return files


@pytest.fixture(scope="module")
def results(audio_files):
    """One transcribe() call (one model load) over every file."""
    names = list(audio_files)
    out = transcribe([audio_files[n] for n in names], "whisper-tiny.en", device="cpu", batch_size=8,
                     progress=False)
    return dict(zip(names, out, strict=True))


@pytest.mark.slow
def test_formats_and_rates_give_the_same_text(results, audio_files):
    original = results["flac16k"]
    assert "elephant" in normalize(original["text"])
    assert original["language"] == "en" and original["duration"] == pytest.approx(3.36, abs=0.01)
    assert [(w["start"], w["end"]) for w in original["windows"]] == [(0.0, 3.36)]
    assert len(original["segments"]) == 1 and 0 <= original["segments"][0]["start"] < original["segments"][0]["end"] <= 3.36
    assert {"mp3", "ogg", "wav44k"} <= set(audio_files)
    for name in audio_files:
        if name != "long":
            assert normalize(results[name]["text"]) == normalize(original["text"]), name


@pytest.mark.slow
def test_long_file_is_chunked_and_keeps_first_and_last_clip(results, kids_test_clips):
    long = results["long"]
    assert long["duration"] > 30
    segs = long["windows"]
    assert len(segs) == 2 and segs[0]["start"] == 0 and segs[-1]["end"] == long["duration"]
    assert all(a["end"] == b["start"] for a, b in zip(segs, segs[1:], strict=False))
    assert 25 <= segs[0]["end"] <= 30
    text = normalize(long["text"])
    assert "elephant" in text  # MARK IS GOING TO SEE ELEPHANT (first clip)
    assert "biscuit" in text  # DOES HE KNOW THE BISCUIT (last clip)


@pytest.mark.slow
def test_srt_and_json_output(results):
    srt = to_srt(results["long"])
    blocks = srt.strip().split("\n\n")
    assert len(blocks) == len(results["long"]["segments"]) >= 6  # phrase cues, not one per 30 s window
    last_end = 0.0
    for i, block in enumerate(blocks, 1):
        index, times, *text = block.split("\n")
        assert index == str(i)
        assert re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", times), times
        start, end = times.split(" --> ")
        assert _seconds(start) >= last_end and _seconds(end) > _seconds(start)
        assert _seconds(end) - _seconds(start) <= 7.0
        assert text and text[0].strip()
        last_end = _seconds(end)
    assert blocks[0].split("\n")[1].startswith("00:00:00,")  # the first clip's speech starts within 1 s
    assert format_transcripts([results["long"]], "srt") == srt
    parsed = json.loads(format_transcripts(list(results.values()), "json"))
    assert parsed[0]["segments"][0]["text"] == results["flac16k"]["text"]
    lines = format_transcripts(list(results.values()), "text").splitlines()
    assert len(lines) == len(results) and lines[0].endswith(results["flac16k"]["text"])


# ------------------------------------------------------------------------------ fast, no model
def test_chunks_cut_at_the_pause():
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(70 * SAMPLE_RATE)).astype(np.float32)  # 70 s of "speech"
    audio[int(27.0 * SAMPLE_RATE) : int(27.4 * SAMPLE_RATE)] = 0  # a pause inside the search region
    bounds = chunk_bounds(audio)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(0 < e - s <= 30 * SAMPLE_RATE for s, e in bounds)
    assert 27.0 <= bounds[0][1] / SAMPLE_RATE <= 27.4
    assert chunk_bounds(audio[: 30 * SAMPLE_RATE]) == [(0, 30 * SAMPLE_RATE)]
    assert chunk_bounds(np.zeros(0, np.float32)) == [(0, 0)]


def test_srt_time_and_empty_segments():
    assert srt_time(0) == "00:00:00,000"
    assert srt_time(3725.25) == "01:02:05,250"
    result = {"segments": [{"start": 0.0, "end": 30.0, "text": ""},
                           {"start": 30.0, "end": 31.5, "text": "hi"}]}
    assert to_srt(result) == "1\n00:00:30,000 --> 00:00:31,500\nhi\n"


def test_unreadable_file_is_named_before_the_model_loads(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    with pytest.raises(AudioError, match="broken.wav"):
        transcribe([bad], "no-such-model")
    with pytest.raises(AudioError, match="missing.flac"):
        transcribe(tmp_path / "missing.flac", "no-such-model")


def test_bad_options_fail_fast(tmp_path):
    with pytest.raises(ValueError, match="--format"):
        transcribe([tmp_path / "x.wav"], "whisper-tiny.en", output_format="docx")
    with pytest.raises(ValueError, match="no audio files"):
        transcribe([], "whisper-tiny.en")


def test_language_rules_on_a_tiny_random_model(tiny_model_dir, kids_test_clips):
    from kidwhisper.models.load import load_model
    from kidwhisper.transcribe import transcribe_loaded

    net, processor = load_model(str(tiny_model_dir), device="cpu")
    audio = load_audio(kids_test_clips[0][1])
    with pytest.raises(ValueError, match="--language xx"):
        transcribe_loaded(net, processor, ["a"], [audio], language="xx")
    out = transcribe_loaded(net, processor, ["a"], [audio], language="en", progress=False,
                           max_new_tokens=4)
    assert out[0]["language"] == "en"  # forced, whatever the random weights would guess
    auto = transcribe_loaded(net, processor, ["a"], [audio], language="auto", progress=False, max_new_tokens=1)
    assert auto[0]["language"]  # detected by the (random) model, whichever it is
    net.generation_config.is_multilingual = False  # now pretend it is English-only
    with pytest.raises(ValueError, match="English-only"):
        transcribe_loaded(net, processor, ["a"], [audio], language="de")


def test_language_is_checked_before_the_audio_and_the_model(tmp_path):
    from kidwhisper.config import ConfigError

    with pytest.raises(ConfigError, match="--language xx: whisper-tiny.en is an English-only model"):
        transcribe([tmp_path / "missing.flac"], "whisper-tiny.en", language="xx")
