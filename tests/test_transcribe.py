"""transcribe: real child clips in several formats, a >30 s file chunked at pauses and streamed, phrase cues
and word times, SRT/WebVTT/JSON output, one output file per input."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from kidwhisper.audio import SAMPLE_RATE, AudioError, load_audio
from kidwhisper.text import normalize
from kidwhisper.transcribe import (
    TranscribeConfig,
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
    config = TranscribeConfig(model="whisper-tiny.en", device="cpu", batch_size=8, progress=False, timestamps=True)
    out = transcribe(config, [audio_files[n] for n in names])
    return dict(zip(names, out, strict=True))


@pytest.mark.slow
def test_formats_and_rates_give_the_same_text(results, audio_files):
    original = results["flac16k"]
    assert "elephant" in normalize(original["text"])
    assert original["language"] == "en" and original["duration"] == pytest.approx(3.36, abs=0.01)
    assert [(w["start"], w["end"]) for w in original["windows"]] == [(0.0, 3.36)]
    (cue,) = original["segments"]
    assert 0 <= cue["start"] < cue["end"] <= 3.36
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
        transcribe(TranscribeConfig(model="no-such-model"), [bad])
    with pytest.raises(AudioError, match="missing.flac"):
        transcribe(TranscribeConfig(model="no-such-model"), tmp_path / "missing.flac")


def test_bad_options_fail_fast(tmp_path):
    with pytest.raises(ValueError, match="--format"):
        transcribe(TranscribeConfig(model="whisper-tiny.en", format="docx"), [tmp_path / "x.wav"])
    with pytest.raises(ValueError, match="no audio files"):
        transcribe(TranscribeConfig(model="whisper-tiny.en"), [])


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
        transcribe(TranscribeConfig(model="whisper-tiny.en", language="xx"), [tmp_path / "missing.flac"])


def test_fp16_on_a_cpu_is_refused_before_the_audio_the_model_and_the_output_dir(tmp_path):
    from kidwhisper.config import ConfigError

    subs = tmp_path / "subs"
    with pytest.raises(ConfigError, match="--precision fp16 needs a GPU"):
        transcribe(TranscribeConfig(model="whisper-tiny.en", precision="fp16", device="cpu", output_dir=str(subs)),
                   [tmp_path / "missing.flac"])
    assert not subs.exists()


# ------------------------------------------------------------------------------ streaming (#14)
def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts of 0.3-2 s with 0.1-0.6 s pauses: cut points depend on where the pauses fall."""
    rng = np.random.default_rng(seed)
    out, n = [], int(seconds * SAMPLE_RATE)
    while sum(map(len, out)) < n:
        out.append((0.2 * rng.standard_normal(int(rng.uniform(0.3, 2.0) * SAMPLE_RATE))).astype(np.float32))
        out.append(np.zeros(int(rng.uniform(0.1, 0.6) * SAMPLE_RATE), np.float32))
    return np.concatenate(out)[:n]


def test_reader_cuts_like_chunk_bounds_and_holds_one_window(tmp_path):
    from kidwhisper.audio import N_SAMPLES
    from kidwhisper.transcribe import READ_BLOCK_SECONDS, WindowReader

    audio = _speechlike(200)
    path = tmp_path / "long.wav"
    sf.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
    reader = WindowReader(path)
    windows = list(reader)
    assert [(s, e) for s, e, _ in windows] == chunk_bounds(audio)
    assert len(windows) >= 7
    for s, e, samples in windows:
        np.testing.assert_array_equal(samples, audio[s:e])
    assert reader.peak <= N_SAMPLES + READ_BLOCK_SECONDS * SAMPLE_RATE
    from_array = WindowReader(audio)
    assert [(s, e) for s, e, _ in from_array] == chunk_bounds(audio)


def test_reader_memory_is_flat_in_file_length(tmp_path):
    """A 20-minute file is read holding no more samples than a 2-minute one."""
    from kidwhisper.transcribe import WindowReader

    peaks = {}
    for minutes in (2, 20):
        path = tmp_path / f"{minutes}min.flac"
        with sf.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
            for i in range(minutes * 2):  # written 30 s at a time: the test never holds the whole file either
                f.write(_speechlike(30, seed=i))
        reader = WindowReader(path)
        count = sum(1 for _ in reader)
        assert count >= minutes * 2
        peaks[minutes] = reader.peak
    assert peaks[20] <= peaks[2]


def test_resampled_stereo_streams_like_load_audio(tmp_path):
    from kidwhisper.audio import stream_audio

    mono = _speechlike(65, seed=3)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    path = tmp_path / "s44.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    streamed = np.concatenate(list(stream_audio(path, block_seconds=7.0)))
    np.testing.assert_array_equal(streamed, load_audio(path))


class _FakeNet(torch.nn.Module):
    """Stands in for a Whisper model: an English-only generation config and an encoder to hook."""

    def __init__(self):
        super().__init__()
        from types import SimpleNamespace

        self.encoder = torch.nn.Identity()
        self.generation_config = SimpleNamespace(is_multilingual=False)

    def get_encoder(self):
        return self.encoder


def test_windows_of_several_files_share_batches_and_results_come_early(tmp_path, monkeypatch):
    import kidwhisper.transcribe as tr
    from kidwhisper.decode import Decoded

    paths = []
    for i, seconds in enumerate((70, 20, 95)):
        paths.append(tmp_path / f"f{i}.wav")
        sf.write(paths[-1], _speechlike(seconds, seed=i), SAMPLE_RATE, subtype="FLOAT")
    events, batches = [], []

    def fake_decode(net, processor, audios, language, max_new_tokens, num_beams=1):
        batches.append(len(audios))
        events.append(("decode", len(audios)))
        return [Decoded(f"w{len(batches)}.{j}", [1], "en", False) for j in range(len(audios))]

    real_stream = tr.stream_audio

    def spy_stream(path, block_seconds):
        events.append(("open", Path(path).name))
        return real_stream(path, block_seconds)

    monkeypatch.setattr(tr, "decode_batch", fake_decode)
    monkeypatch.setattr(tr, "stream_audio", spy_stream)
    out = []
    for r in tr.stream_transcripts(_FakeNet(), None, paths, paths, "en", 2, False, "fake", 10, False, False):
        events.append(("result", Path(r["file"]).name))
        out.append(r)
    assert [Path(r["file"]).name for r in out] == ["f0.wav", "f1.wav", "f2.wav"]
    assert [len(r["windows"]) for r in out] == [3, 1, 4]
    assert batches == [2, 2, 2, 2]  # f0's third window shares a batch with f1's window
    assert events.index(("result", "f0.wav")) < events.index(("open", "f2.wav"))  # yielded before f2 is read
    assert out[2]["windows"][-1]["end"] == pytest.approx(95.0)
    assert all(r["segments"] == [{"id": i, **w} for i, w in enumerate(r["windows"])] for r in out)


@pytest.mark.slow
def test_streamed_long_file_has_the_text_of_whole_file_windows(results, audio_files):
    """The streamed long file gives the same windows and text as decoding chunk_bounds of the whole array."""
    from kidwhisper.decode import transcribe_arrays
    from kidwhisper.models.load import load_model

    audio = load_audio(audio_files["long"])
    bounds = chunk_bounds(audio)
    net, processor = load_model("whisper-tiny.en", device="cpu")
    old = transcribe_arrays(net, processor, [audio[s:e] for s, e in bounds], "en", 8, progress=False)
    long = results["long"]
    assert [(w["start"], w["end"]) for w in long["windows"]] == [(round(s / SAMPLE_RATE, 3), round(e / SAMPLE_RATE, 3))
                                                                 for s, e in bounds]
    assert [w["text"] for w in long["windows"]] == [d.text for d in old]
    assert long["text"] == " ".join(d.text for d in old)


# ------------------------------------------------------------------------------ cues and word times (#18)
def _words(*spec):
    from kidwhisper.timestamps import Word

    return [Word(f" {w}", s, e, 1.0) for w, s, e in spec]


def test_cues_split_at_pauses_sentences_and_seven_seconds():
    from kidwhisper.timestamps import group_cues

    def texts(cues):
        return ["".join(w.word for w in c).strip() for c in cues]

    # a 1.2 s pause splits; a 0.4 s pause splits only after a sentence end; 0.4 s mid-sentence does not
    words = _words(("a", 0, .4), ("b", .4, .8), ("c.", 2.0, 2.4), ("d", 2.8, 3.2), ("e", 3.6, 4.0))
    assert texts(group_cues(words)) == ["a b", "c.", "d e"]
    # 12 s of speech with no pause: split into cues <= 7 s at the clause mark, not at the first gap
    run = _words(*[(f"w{i}{',' if i == 9 else ''}", 0.5 * i, 0.5 * i + 0.5) for i in range(24)])
    cues = group_cues(run)
    assert all(c[-1].end - c[0].start <= 7.0 for c in cues)
    assert texts(cues)[0].endswith("w9,") and sum(len(c) for c in cues) == 24


def test_word_edges_leave_pauses():
    from kidwhisper.timestamps import speech_frames, trim_to_speech

    audio = np.zeros(4 * SAMPLE_RATE, np.float32)
    rng = np.random.default_rng(0)
    audio[int(0.5 * SAMPLE_RATE) : int(1.5 * SAMPLE_RATE)] = 0.3 * rng.standard_normal(SAMPLE_RATE)
    audio[int(3.0 * SAMPLE_RATE) : int(3.6 * SAMPLE_RATE)] = 0.3 * rng.standard_normal(int(0.6 * SAMPLE_RATE))
    # as the alignment gives them: the first word ends early, the second starts where the first ended
    words = trim_to_speech(_words(("one", 0.0, 1.3), ("two", 1.3, 3.9)), speech_frames(audio))
    assert words[0].start == pytest.approx(0.5, abs=0.1) and words[0].end == pytest.approx(1.5, abs=0.1)
    assert words[1].start == pytest.approx(3.0, abs=0.1) and words[1].end == pytest.approx(3.6, abs=0.1)


def test_alignment_heads_fall_back_when_missing_or_out_of_range(tiny_model_dir):
    from transformers import WhisperForConditionalGeneration

    from kidwhisper.timestamps import alignment_heads

    net = WhisperForConditionalGeneration.from_pretrained(str(tiny_model_dir))
    assert net.generation_config.alignment_heads  # whisper-base's, which a 1-layer model does not have
    assert alignment_heads(net) == [(0, 0), (0, 1)]
    net.generation_config.alignment_heads = [[0, 1]]
    assert alignment_heads(net) == [(0, 1)]


def test_vtt_and_output_files(tmp_path):
    from kidwhisper.config import ConfigError
    from kidwhisper.transcribe import output_paths, to_vtt, write_result

    result = {"file": "a.wav", "text": "hi there", "segments": [
        {"id": 0, "start": 0.5, "end": 1.25, "text": "hi there", "words": [
            {"word": "hi", "start": 0.5, "end": 0.8, "probability": 0.9},
            {"word": "there", "start": 0.9, "end": 1.25, "probability": 0.9}]},
        {"id": 1, "start": 30.0, "end": 31.0, "text": ""}]}
    assert to_vtt(result) == "WEBVTT\n\n00:00:00.500 --> 00:00:01.250\nhi <00:00:00.900>there\n"
    ins = tmp_path / "in"
    ins.mkdir()
    a, b = ins / "a.wav", ins / "b.flac"
    targets = output_paths([a, b], tmp_path / "out", "vtt")
    assert targets == [tmp_path / "out" / "a.vtt", tmp_path / "out" / "b.vtt"]
    write_result(result, targets[0], "vtt")
    assert targets[0].read_text() == to_vtt(result) and not list((tmp_path / "out").glob(".*tmp"))
    with pytest.raises(ConfigError, match="a.wav and .*a.flac would both be written to a.srt"):
        output_paths([a, tmp_path / "a.flac"], tmp_path / "out", "srt")
    text_input = ins / "notes.txt"
    with pytest.raises(ConfigError, match="notes.txt is one of the input files"):
        output_paths([text_input], ins, "text")


@pytest.fixture(scope="module")
def recording(tmp_path_factory, kids_test_clips):
    """7 kids clips joined with 1.0-2.0 s of silence, and each clip's speech (start, end) in the recording:
    the first and last 10 ms frame of runs of >= 100 ms whose energy (averaged over 50 ms) is above -20 dB
    of the clip's loudest and 10 dB above its noise floor (a click where a clip was cut is not speech)."""
    rng = np.random.default_rng(7)
    pieces, speech, t = [], [], 0
    for _, path, _ in kids_test_clips[:7]:
        clip = load_audio(path)
        n = len(clip) // 160
        rms = np.convolve(np.sqrt(np.mean(clip[: n * 160].reshape(n, 160) ** 2, axis=1)), np.ones(5) / 5, "same")
        loud = rms >= max(0.1 * rms.max(), np.sqrt(10) * np.percentile(rms, 10))
        sustained = np.flatnonzero(np.convolve(loud, np.ones(10), "valid") == 10)  # frames i..i+9 loud
        first, last = sustained[0], sustained[-1] + 9
        speech.append(((t + first * 160) / SAMPLE_RATE, (t + (last + 1) * 160) / SAMPLE_RATE))
        gap = np.zeros(int(rng.uniform(1.0, 2.0) * SAMPLE_RATE), np.float32)
        pieces += [clip, gap]
        t += len(clip) + len(gap)
    path = tmp_path_factory.mktemp("recording") / "recording.flac"
    sf.write(path, np.concatenate(pieces), SAMPLE_RATE)
    return path, speech


@pytest.mark.slow
def test_cue_boundaries_match_clip_boundaries(recording):
    """Real whisper-base with word times: every clip's speech starts and ends within 0.5 s of a cue edge."""
    path, speech = recording
    result = transcribe(TranscribeConfig(model="whisper-base", device="cpu", word_timestamps=True, progress=False),
                        path)[0]
    assert len(result["windows"]) == 2  # the recording is longer than one window
    segs = result["segments"]
    edges = np.array([s["start"] for s in segs] + [s["end"] for s in segs])
    for start, end in speech:
        assert np.abs(edges - start).min() <= 0.5, (start, segs)
        assert np.abs(edges - end).min() <= 0.5, (end, segs)
    words = [w for s in segs for w in s["words"]]
    assert len(words) >= 10
    times = [t for w in words for t in (w["start"], w["end"])]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= result["duration"]
    assert all(s["end"] - s["start"] <= 7.0 for s in segs)
    assert " ".join(w["word"] for w in words) == " ".join(s["text"] for s in segs)


@pytest.mark.slow
def test_cli_output_dir_and_quiet(tmp_path, kids_test_clips):
    import subprocess
    import sys

    a, b = kids_test_clips[0][1], kids_test_clips[1][1]
    out = tmp_path / "subs"
    (tmp_path / "subs.yaml").write_text("format: vtt\nword_timestamps: true\nmodel: whisper-base\n")
    cmd = [sys.executable, "-m", "kidwhisper", "transcribe", "--config", str(tmp_path / "subs.yaml"), "--model",
           "whisper-tiny.en", "--output-dir", str(out), str(a), str(b), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == ""  # -q: no progress bar, no library warning
    assert sorted(p.name for p in out.iterdir()) == [f"{Path(a).stem}.vtt", f"{Path(b).stem}.vtt",
                                                     "transcribe_config.yaml"]
    saved = yaml.safe_load((out / "transcribe_config.yaml").read_text())  # the resolved options, flags win
    assert saved == {"model": "whisper-tiny.en", "adapter": None, "language": "en", "format": "vtt",
                     "word_timestamps": True, "timestamps": True, "output_dir": str(out), "device": "auto",
                     "batch_size": 8, "beam_size": 1, "pack": False, "precision": "float32", "progress": False}
    vtt = (out / f"{Path(a).stem}.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n00:00:0") and "elephant" in vtt.lower() and "<00:00:0" in vtt


@pytest.mark.slow
def test_packed_transcribe_of_short_files_is_packed_evaluate_and_leaves_long_files(
        results, audio_files, kids_manifest, kids_test_clips, tmp_path, monkeypatch):
    """transcribe --pack: the short files of a batch share one encoder pass and give the text ``evaluate
    --pack`` gives them; a file longer than a window is decoded as without --pack."""
    import kidwhisper.transcribe as tr
    from kidwhisper.evaluate import EvalConfig, evaluate

    packed_batches = []

    def spy(net, processor, audios, *args, **kwargs):
        packed_batches.append(len(audios))
        return decode_clips(net, processor, audios, *args, **kwargs)

    decode_clips = tr.decode_clips
    monkeypatch.setattr(tr, "decode_clips", spy)
    shorts = [path for _, path, _ in kids_test_clips]
    config = TranscribeConfig(model="whisper-tiny.en", device="cpu", batch_size=len(shorts), progress=False,
                              timestamps=True, pack=True)
    packed = transcribe(config, [*shorts, audio_files["long"]])
    assert packed_batches == [len(shorts)]
    evaluate(EvalConfig(model="whisper-tiny.en", data=str(kids_manifest), out=str(tmp_path / "eval"),
                        device="cpu", batch_size=len(shorts), pack=True, progress=False))
    lines = (tmp_path / "eval" / "utterances.jsonl").read_text().splitlines()
    hyps = {u["id"]: u["hyp"] for u in map(json.loads, lines)}
    assert [r["text"] for r in packed[:-1]] == [hyps[u] for u, _, _ in kids_test_clips]
    assert all(r["segments"] and r["segments"][-1]["end"] <= r["duration"] for r in packed[:-1])  # aligned cues
    assert packed[-1]["windows"] == results["long"]["windows"]
    assert packed[-1]["segments"] == results["long"]["segments"]


@pytest.mark.slow
def test_bf16_packed_transcribe_aligns_its_cues(kids_test_clips):
    """transcribe --precision bf16 --pack: decoded in bf16, aligned in float32, cues inside each file."""
    shorts = [path for _, path, _ in kids_test_clips[:4]]
    config = TranscribeConfig(model="whisper-tiny.en", device="cpu", batch_size=4, progress=False,
                              word_timestamps=True, pack=True, precision="bf16")
    out = transcribe(config, shorts)
    assert "elephant" in normalize(out[0]["text"])
    for r in out:
        words = [w for s in r["segments"] for w in s["words"]]
        assert words and all(0 <= w["start"] <= w["end"] <= r["duration"] for w in words)


def test_beam_search_transcribes_like_evaluate_with_beams_and_is_never_packed(tiny_model_dir, kids_test_clips,
                                                                               monkeypatch):
    """transcribe --beam-size: each window is decoded as decode_batch decodes it with those beams (greedy fallback
    for runaways included), even with --pack."""
    import kidwhisper.transcribe as tr
    from kidwhisper.decode import decode_batch
    from kidwhisper.models.load import load_model
    from kidwhisper.transcribe import transcribe_loaded

    net, processor = load_model(str(tiny_model_dir), device="cpu")
    audios = [load_audio(p) for _, p, _ in kids_test_clips[:3]]
    expected = decode_batch(net, processor, audios, max_new_tokens=8, num_beams=2)
    beams_asked = []
    monkeypatch.setattr(tr, "decode_batch", lambda *a: beams_asked.append(a[5]) or decode_batch(*a))
    monkeypatch.setattr(tr, "decode_clips", lambda *a, **k: pytest.fail("beam search must not be packed"))
    out = transcribe_loaded(net, processor, ["a", "b", "c"], audios, progress=False, max_new_tokens=8, pack=True,
                            num_beams=2, batch_size=3)
    assert beams_asked == [2]
    assert [r["text"] for r in out] == [d.text for d in expected]
    assert [r["truncated"] for r in out] == [d.truncated for d in expected]
    with pytest.raises(ValueError, match="--beam-size must be >= 1"):
        TranscribeConfig(beam_size=0)
