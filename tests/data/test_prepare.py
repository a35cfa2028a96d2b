"""prepare(): the real kids dev set, long recordings cut back into their clips, and every bad-input case."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kidwhisper.data.manifest import read_manifest
from kidwhisper.data.prepare import (
    FIX_DOWNMIXED,
    FIX_ID_SAFE,
    FIX_NFC,
    FIX_RESAMPLED,
    FIX_TEXT_CLEANED,
    PrepareConfig,
    PrepareError,
    prepare,
)


def _prepare(src: Path, out: Path, **options) -> tuple[dict, dict]:
    """prepare() in-process, no progress bar -> (report, {id: Clip})."""
    report = prepare(src, out, PrepareConfig(progress=False, jobs=options.pop("jobs", 1), **options))
    return report, {c.id: c for c in read_manifest(out)}


def _skipped(report: dict) -> dict[str, list]:
    """{reason: [ids]} from the report."""
    return {r: [i["id"] for i in e["items"]] for r, e in report["skipped"]["by_reason"].items()}


def _fixes(report: dict) -> dict[str, list]:
    return {k: v["ids"] for k, v in report["fixes"].items()}


def _sidecar(root: Path, write_audio, clips: dict[str, tuple[np.ndarray, int, bytes | str]]) -> Path:
    """root/<name>.wav + root/<name>.txt for each (audio, rate, transcript)."""
    for name, (data, rate, text) in clips.items():
        write_audio(root / f"{name}.wav", data, rate)
        (root / f"{name}.txt").write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def _kaldi_table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def _matches(cut: np.ndarray, original: np.ndarray) -> bool:
    """Equal sample for sample, allowing the cut to be shifted or one sample longer/shorter (rounding)."""
    if abs(len(cut) - len(original)) > 1:
        return False
    for shift in (0, 1, -1):
        a, b = cut[max(shift, 0):], original[max(-shift, 0):]
        n = min(len(a), len(b))
        if n >= len(original) - 1 and np.array_equal(a[:n], b[:n]):
            return True
    return False


# --------------------------------------------------------------------------- real data


def test_prepare_real_kids_dev(kids_dev, tmp_path, caplog):
    out = tmp_path / "dev"
    with caplog.at_level(logging.INFO, logger="kidwhisper.data.prepare"):
        report, clips = _prepare(kids_dev, out, jobs=2)
    text, utt2spk = _kaldi_table(kids_dev / "text"), _kaldi_table(kids_dev / "utt2spk")
    spk2age, spk2gender = _kaldi_table(kids_dev / "spk2age"), _kaldi_table(kids_dev / "spk2gender")

    assert report["input"]["format"] == "kaldi" and report["input"]["utterances"] == 220
    assert report["kept"] == 220 and report["skipped"]["total"] == 0 and report["fixes"] == {}
    assert report["speakers"]["count"] == 11 and set(report["speakers"]["clips"].values()) == {20}
    assert sum(report["ages"].values()) == 220 and set(report["ages"]) == {f"{float(a):g}" for a in spk2age.values()}
    assert 13.5 < report["duration"]["minutes"] < 13.9 and report["workers"] == 2
    assert "kept 220 of 220 utterances" in caplog.text

    assert set(clips) == set(text)
    for utt, clip in clips.items():
        spk = utt2spk[utt]
        assert (clip.text, clip.speaker, clip.age, clip.gender) == (text[utt], spk, float(spk2age[spk]), spk2gender[spk])
        assert clip.audio == f"clips/{utt}.flac" and clip.source["start"] == 0.0
    for utt in sorted(clips)[:3]:
        cut, rate = sf.read(out / clips[utt].audio, dtype="int16")
        original, _ = sf.read(clips[utt].source["path"], dtype="int16")
        assert rate == 16000 and np.array_equal(cut, original)
        assert clips[utt].duration == pytest.approx(len(original) / 16000)
        assert sf.info(str(out / clips[utt].audio)).subtype == "PCM_16"
    assert json.loads((out / "prepare_report.json").read_text())["kept"] == 220
    assert PrepareConfig(**json.loads((out / "prepare_config.json").read_text())).format == "kaldi"


def _textgrid(spans: list[tuple[float, float, str]], total: float) -> str:
    """Long-format TextGrid with empty (silence) intervals between the spans."""
    intervals, t = [], 0.0
    for start, end, label in spans:
        intervals += [(t, start, ""), (start, end, label)]
        t = end
    intervals.append((t, total, ""))
    body = "".join(f'        intervals [{i}]:\n            xmin = {a!r}\n            xmax = {b!r}\n'
                   f'            text = "{label}"\n' for i, (a, b, label) in enumerate(intervals, 1))
    return (f'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = {total!r}\ntiers? <exists>\n'
            f'size = 1\nitem []:\n    item [1]:\n        class = "IntervalTier"\n        name = "utt"\n'
            f'        xmin = 0\n        xmax = {total!r}\n        intervals: size = {len(intervals)}\n{body}')


def _ms(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def test_long_recordings_are_cut_back_into_the_original_clips(kids_dev, tmp_path):
    text = _kaldi_table(kids_dev / "text")
    utts = sorted(text)[:4]
    originals = {u: sf.read(kids_dev / "audio" / f"{u}.flac", dtype="int16")[0] for u in utts}
    # SRT/WebVTT times are whole milliseconds: build their recordings from clips trimmed to whole ms
    ms_aligned = {u: a[: len(a) // 16 * 16] for u, a in originals.items()}
    root = tmp_path / "long"
    root.mkdir()
    expected = {}
    for name, clips in [("tg", originals), ("srt", ms_aligned), ("vtt", ms_aligned), ("csv", originals)]:
        pieces, spans, pos = [], [], 0
        for i, utt in enumerate(utts):
            gap = np.zeros(16 * (250 + 120 * i), np.int16)  # 0.25 s, 0.37 s, ... of silence
            pieces += [gap, clips[utt]]
            pos += len(gap)
            spans.append((pos / 16000, (pos + len(clips[utt])) / 16000, text[utt]))
            expected[f"{name}_{i + 1:04d}"] = (clips[utt], text[utt], pos / 16000)
            pos += len(clips[utt])
        pieces.append(np.zeros(8000, np.int16))
        total = (pos + 8000) / 16000
        sf.write(str(root / f"{name}.flac"), np.concatenate(pieces), 16000, subtype="PCM_16")
        if name == "tg":
            (root / "tg.TextGrid").write_text(_textgrid(spans, total))
        elif name == "srt":
            (root / "srt.srt").write_text("".join(f"{i}\n{_ms(a, ',')} --> {_ms(b, ',')}\n{t}\n\n"
                                                  for i, (a, b, t) in enumerate(spans, 1)))
        elif name == "vtt":
            (root / "vtt.vtt").write_text("WEBVTT\n\n" + "".join(f"{_ms(a, '.')} --> {_ms(b, '.')}\n<v kid>{t}\n\n"
                                                                  for a, b, t in spans))
        else:
            (root / "csv.csv").write_text("start,end,text\n" + "".join(f"{a!r},{b!r},{t}\n" for a, b, t in spans))

    report, clips = _prepare(root, tmp_path / "out")
    assert report["input"]["format"] == "segments" and report["input"]["recordings"] == 4
    assert report["kept"] == 16 and report["skipped"]["total"] == 0
    assert set(clips) == set(expected)
    for cid, (original, transcript, start) in expected.items():
        cut, _ = sf.read(tmp_path / "out" / clips[cid].audio, dtype="int16")
        assert _matches(cut, original), cid
        assert clips[cid].text == transcript and clips[cid].source["start"] == pytest.approx(start, abs=1e-3)
    assert {clips[c].speaker for c in clips if c.startswith("vtt")} == {"kid"}


def test_kaldi_segments_cut_a_resampled_stereo_recording(tmp_path, tone, write_audio):
    d = tmp_path / "kaldi"
    write_audio(d / "rec.wav", tone(3.0, 44100, channels=2), 44100)
    (d / "text").write_text("a FIRST\nb SECOND\n")
    (d / "wav.scp").write_text("rec1 rec.wav\n")
    (d / "segments").write_text("a rec1 0.5 1.5\nb rec1 1.5 2.75\n")
    report, clips = _prepare(d, tmp_path / "out")
    assert [(c.id, c.duration, c.source["start"], c.source["end"]) for c in clips.values()] == [
        ("a", 1.0, 0.5, 1.5), ("b", 1.25, 1.5, 2.75)]
    assert _fixes(report) == {FIX_RESAMPLED: ["a", "b"], FIX_DOWNMIXED: ["a", "b"]}
    assert clips["a"].source["path"] == str(d / "rec.wav") and report["input"]["recordings"] == 1


# --------------------------------------------------------------------------- bad input, one case each


def test_stereo_44k_is_downmixed_and_resampled(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"st": (tone(1.0, 44100, channels=2), 44100, "STEREO")})
    report, clips = _prepare(src, tmp_path / "out")
    info = sf.info(str(tmp_path / "out" / clips["st"].audio))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
    assert _fixes(report) == {FIX_RESAMPLED: ["st"], FIX_DOWNMIXED: ["st"]}
    mono, _ = sf.read(tmp_path / "out" / clips["st"].audio)
    assert np.abs(mono).max() == pytest.approx(0.375, abs=0.01)  # mean of the 0.25 and 0.5 channels


def test_8k_is_resampled(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"phone": (tone(1.5, 8000), 8000, "EIGHT K"),
                                                  "ok": (tone(1.0), 16000, "SIXTEEN K")})
    report, clips = _prepare(src, tmp_path / "out")
    assert sf.info(str(tmp_path / "out" / clips["phone"].audio)).frames == 24000
    assert clips["phone"].duration == 1.5 and _fixes(report) == {FIX_RESAMPLED: ["phone"]}


def test_corrupt_audio_is_skipped(tmp_path, tone, write_audio, kids_dev):
    src = _sidecar(tmp_path / "in", write_audio, {"good": (tone(), 16000, "GOOD")})
    (src / "noise.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (src / "noise.txt").write_text("RANDOM BYTES")
    flac = next((kids_dev / "audio").iterdir()).read_bytes()
    (src / "cut.flac").write_bytes(flac[:3000])  # valid header, truncated stream
    (src / "cut.txt").write_text("TRUNCATED")
    report, clips = _prepare(src, tmp_path / "out")
    assert set(clips) == {"good"}
    assert _skipped(report) == {"unreadable or corrupt audio": ["cut", "noise"]}
    entry = report["skipped"]["by_reason"]["unreadable or corrupt audio"]
    assert entry["items"][1]["file"].endswith("noise.wav") and "ffmpeg" in entry["fix"]


def test_random_bytes_flac_is_reported_as_corrupt_not_as_zero_length(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"good": (tone(), 16000, "GOOD")})
    (src / "noise.flac").write_bytes(np.random.default_rng(0).bytes(20000))  # libsndfile refuses, PyAV decodes 0 frames
    (src / "noise.txt").write_text("RANDOM BYTES")
    report, clips = _prepare(src, tmp_path / "out")
    assert set(clips) == {"good"} and _skipped(report) == {"unreadable or corrupt audio": ["noise"]}
    entry = report["skipped"]["by_reason"]["unreadable or corrupt audio"]
    assert entry["count"] == 1 and "re-export" in entry["fix"]
    (item,) = entry["items"]
    assert item["file"] == str(src / "noise.flac")
    assert "noise.flac: unreadable or corrupt audio" in item["detail"] and "convert it" in item["detail"]


def test_missing_audio_is_skipped(tmp_path, tone, write_audio):
    write_audio(tmp_path / "a.wav", tone())
    (tmp_path / "list.csv").write_text("path,text\na.wav,HERE\ngone/b.wav,NOT HERE\n")
    report, clips = _prepare(tmp_path / "list.csv", tmp_path / "out")
    assert set(clips) == {"a"} and _skipped(report) == {"audio file not found": ["gone-b"]}
    assert report["skipped"]["by_reason"]["audio file not found"]["items"][0]["file"] == str(tmp_path / "gone/b.wav")


def test_empty_transcript_is_skipped(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"a": (tone(), 16000, "A"), "b": (tone(), 16000, " \n\t ")})
    report, clips = _prepare(src, tmp_path / "out")
    assert set(clips) == {"a"} and _skipped(report) == {"empty transcript": ["b"]}


def test_non_utf8_transcript_is_skipped(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"a": (tone(), 16000, "CAFÉ"), "b": (tone(), 16000, b"CAF\xc9")})
    report, clips = _prepare(src, tmp_path / "out")
    assert clips["a"].text == "CAFÉ" and set(clips) == {"a"}
    assert _skipped(report) == {"transcript is not UTF-8": ["b"]}


def test_silent_zero_length_and_too_short_clips_are_skipped(tmp_path, tone, write_audio):
    hiss = np.random.default_rng(0).uniform(-5e-5, 5e-5, 16000).astype(np.float32)
    src = _sidecar(tmp_path / "in", write_audio, {
        "ok": (tone(), 16000, "OK"), "zeros": (np.zeros(16000, np.float32), 16000, "ZEROS"),
        "hiss": (hiss, 16000, "HISS"), "empty": (np.zeros(0, np.float32), 16000, "EMPTY"),
        "blip": (tone(0.1), 16000, "BLIP")})
    report, clips = _prepare(src, tmp_path / "out")
    assert set(clips) == {"ok"}
    assert _skipped(report) == {"silent audio": ["hiss", "zeros"], "zero-length audio": ["empty"],
                                "too short": ["blip"]}
    report, clips = _prepare(src, tmp_path / "out2", min_duration=0.05)
    assert set(clips) == {"ok", "blip"}


def test_clip_longer_than_30s_is_skipped_with_the_fix(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"ok": (tone(29.5, 8000), 8000, "OK"),
                                                  "long": (tone(31.0, 8000), 8000, "TOO LONG"),
                                                  "short": (tone(1.0, 8000), 8000, "SHORT")})
    report, clips = _prepare(src, tmp_path / "out")
    assert set(clips) == {"ok", "short"} and clips["ok"].duration == 29.5
    entry = report["skipped"]["by_reason"]["longer than 30 s (Whisper's window)"]
    assert entry["count"] == 1 and "split it with a segments/TextGrid file" in entry["items"][0]["detail"]
    assert entry["items"][0]["file"].endswith("long.wav")
    report, clips = _prepare(src, tmp_path / "out2", max_duration=20)
    assert set(clips) == {"short"} and _skipped(report) == {"longer than 20 s (--max-duration)": ["long", "ok"]}


def test_duplicate_ids_keep_the_first(tmp_path, tone, write_audio):
    d = tmp_path / "kaldi"
    write_audio(d / "a.wav", tone()), write_audio(d / "b.wav", tone())
    (d / "text").write_text("a FIRST\nb B\na SECOND\n")
    (d / "wav.scp").write_text("a a.wav\nb b.wav\n")
    report, clips = _prepare(d, tmp_path / "out")
    assert clips["a"].text == "FIRST" and len(clips) == 2
    (item,) = report["skipped"]["by_reason"]["duplicate id"]["items"]
    assert item["id"] == "a" and item["file"] == f"{d / 'text'}:3" and "text:1" in item["detail"]


def test_unsafe_ids_are_made_file_name_safe(tmp_path, tone, write_audio):
    write_audio(tmp_path / "a.wav", tone())
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "../spk 1/utt:1", "audio": "a.wav", "text": "A"}) + "\n")
    report, clips = _prepare(tmp_path / "m.jsonl", tmp_path / "out")
    assert list(clips) == ["_._spk_1_utt_1"] and _fixes(report) == {FIX_ID_SAFE: ["../spk 1/utt:1"]}
    assert (tmp_path / "out" / "clips" / "_._spk_1_utt_1.flac").is_file()


def test_segments_beyond_the_recording_or_too_long_are_skipped(tmp_path, tone, write_audio):
    write_audio(tmp_path / "in" / "rec.flac", tone(40.0))
    (tmp_path / "in" / "rec.csv").write_text("0,2,OK\n38,45,BEYOND\n41,42,AFTER THE END\n2,35,TOO LONG\n39.5,40.01,EDGE\n")
    report, clips = _prepare(tmp_path / "in", tmp_path / "out")
    assert set(clips) == {"rec_0001", "rec_0005"}
    assert clips["rec_0005"].source["end"] == 40.0 and clips["rec_0005"].duration == 0.5
    assert _skipped(report) == {"segment beyond the end of its recording": ["rec_0002", "rec_0003"],
                                "longer than 30 s (Whisper's window)": ["rec_0004"]}
    assert _fixes(report) == {"segment end clamped to recording end": ["rec_0005"]}


def test_unrepresentable_characters_are_removed_or_skipped(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {
        "ctl": (tone(), 16000, "HELLO\u200b WOR\x07LD\ufffd\ufeff"), "nfc": (tone(), 16000, "CAFE\u0301"),
        "junk": (tone(), 16000, "\u200b\ufffd\x01"), "plain": (tone(), 16000, "ALREADY\tFINE\n")})
    report, clips = _prepare(src, tmp_path / "out")
    assert (clips["ctl"].text, clips["nfc"].text, clips["plain"].text) == ("HELLO WORLD", "CAF\u00c9", "ALREADY FINE")
    assert _fixes(report) == {FIX_TEXT_CLEANED: ["ctl"], FIX_NFC: ["nfc"]}
    assert _skipped(report) == {"transcript has only unrepresentable characters": ["junk"]}


def test_piped_wav_scp_entry_is_reported(tmp_path, tone, write_audio):
    d = tmp_path / "kaldi"
    write_audio(d / "a.wav", tone())
    (d / "text").write_text("a A\nb B\n")
    (d / "wav.scp").write_text("a a.wav\nb sph2pipe -f wav b.sph |\n")
    report, clips = _prepare(d, tmp_path / "out")
    assert set(clips) == {"a"} and report["input"]["utterances"] == 2
    assert _skipped(report) == {"piped command in wav.scp (not supported)": ["b"]}


# --------------------------------------------------------------------------- re-runs, errors, config


def test_rerun_overwrites_and_removes_stale_clips(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"a": (tone(), 16000, "A"), "b": (tone(), 16000, "B")})
    out = tmp_path / "out"
    _prepare(src, out)
    (src / "b.wav").unlink(), (src / "b.txt").unlink()
    (src / "a.txt").write_text("A AGAIN")
    report, clips = _prepare(src, out, audio_format="wav")
    assert list(clips) == ["a"] and clips["a"].text == "A AGAIN"
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["a.wav"]


def test_temp_files_of_a_killed_run_are_removed_and_no_other_file(tmp_path, tone, write_audio):
    """A run killed while writing clips leaves ``.<clip>.<random>.tmp`` files: the next run removes those of
    clips prepare writes, and keeps dot files that only look alike."""
    src = _sidecar(tmp_path / "in", write_audio, {"a": (tone(), 16000, "A"), "b": (tone(), 16000, "B")})
    out = tmp_path / "out"
    _prepare(src, out)
    clips = out / "clips"
    for name in (".a.flac.k3x9q1.tmp", ".b.flac.tmp", ".notes.txt.tmp", ".zz.flac.abc.tmp"):
        (clips / name).write_bytes(b"partial")
    (clips / "b.flac").unlink()  # killed before b's clip was renamed into place
    (src / "b.wav").unlink(), (src / "b.txt").unlink()  # and b left the corpus before the next run
    (clips / ".b.flac.q8r2.tmp").write_bytes(b"partial")
    _prepare(src, out)
    assert sorted(p.name for p in clips.iterdir()) == [".notes.txt.tmp", ".zz.flac.abc.tmp", "a.flac"]


def test_nothing_usable_raises_and_still_writes_the_report(tmp_path, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"quiet": (np.zeros(16000, np.float32), 16000, "SHH")})
    with pytest.raises(PrepareError, match=r"no usable clips among 1 utterances \(skipped: silent audio: 1\).*quiet"):
        prepare(src, tmp_path / "out", PrepareConfig(progress=False))
    assert json.loads((tmp_path / "out" / "prepare_report.json").read_text())["kept"] == 0
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


@pytest.mark.parametrize(
    "layout, fmt, match",
    [
        ("missing", "auto", "input not found"),
        ("empty_dir", "auto", "cannot detect the corpus layout.*--format"),
        ("text_only", "kaldi", "wav.scp missing"),
        ("bad_columns", "auto", "no audio column and no text column"),
    ],
)
def test_unreadable_input_raises_prepare_error(tmp_path, layout, fmt, match):
    src = tmp_path / layout
    if layout == "empty_dir":
        src.mkdir()
    elif layout == "text_only":
        src.mkdir()
        (src / "text").write_text("a A\n")
    elif layout == "bad_columns":
        src = tmp_path / "m.csv"
        src.write_text("x,y\n1,2\n")
    with pytest.raises(PrepareError, match=match):
        prepare(src, tmp_path / "out", PrepareConfig(format=fmt, progress=False))


@pytest.mark.parametrize(
    "options, match",
    [({"max_duration": 31}, "--max-duration"), ({"min_duration": 30}, "--min-duration"),
     ({"jobs": -1}, "--jobs"), ({"format": "webdataset"}, "--format"), ({"audio_format": "mp3"}, "--audio-format")],
)
def test_config_validation_names_the_flag(options, match):
    with pytest.raises(ValueError, match=match):
        PrepareConfig(**options)


# --------------------------------------------------------------------------- segments that overlap, empty cells


def test_overlapping_textgrid_intervals_are_kept_and_reported(tmp_path, tone, write_audio):
    write_audio(tmp_path / "in" / "rec.wav", tone(6.0))
    (tmp_path / "in" / "rec.TextGrid").write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\n0\n6\n<exists>\n1\n"IntervalTier"\n"u"\n0\n6\n'
        '3\n0\n2\n"ONE"\n1.5\n3\n"TWO"\n3\n5\n"THREE"\n')
    report, clips = _prepare(tmp_path / "in", tmp_path / "out")
    assert set(clips) == {"rec_0001", "rec_0002", "rec_0003"} and report["skipped"]["total"] == 0
    assert report["warnings"]["total"] == 1
    (entry,) = report["warnings"]["by_kind"].values()
    assert entry["count"] == 1 and entry["items"][0]["id"] == "rec_0002" and "fix the segment times" in entry["fix"]
    assert "starts before rec_0001 ends at 2.000 s" in entry["items"][0]["detail"]


def test_csv_row_with_an_empty_audio_cell_is_skipped_and_counted(tmp_path, tone, write_audio):
    write_audio(tmp_path / "corpus" / "a.wav", tone())
    (tmp_path / "corpus" / "list.csv").write_text("path,sentence\na.wav,HELLO\n,LOST\n")
    report, clips = _prepare(tmp_path / "corpus" / "list.csv", tmp_path / "out")
    assert set(clips) == {"a"}
    (item,) = report["skipped"]["by_reason"]["no audio for transcript"]["items"]
    assert item["id"] is None and item["file"].endswith("list.csv:3") and "empty 'path' cell" in item["detail"]


# --------------------------------------------------------------------------- never delete or overwrite others' files


def _sha256s(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _common_voice(root: Path, tone, write_audio) -> Path:
    """root/train.csv (path,sentence) + root/clips/{a,b}.flac, the Common Voice layout."""
    write_audio(root / "clips" / "a.flac", tone(1.0))
    write_audio(root / "clips" / "b.flac", tone(1.2))
    (root / "train.csv").write_text("path,sentence\na.flac,HELLO\nb.flac,GOODBYE\n")
    return root


@pytest.mark.parametrize("what", ["manifest file", "manifest directory"])
def test_csv_with_clips_prepared_into_its_own_directory_is_refused(tmp_path, tone, write_audio, what):
    corpus = _common_voice(tmp_path / "cv", tone, write_audio)
    before = _sha256s(corpus)
    src = corpus / "train.csv" if what == "manifest file" else corpus
    with pytest.raises(PrepareError) as e:
        prepare(src, corpus, PrepareConfig(progress=False, jobs=1))
    message = str(e.value)
    assert f"OUTPUT_DIR {corpus} " in message and str(src) in message
    assert "must not overlap the input: pass a new directory outside the input" in message
    assert _sha256s(corpus) == before  # nothing deleted, overwritten or added
    report, clips = _prepare(src, tmp_path / "cv-prepared")  # the suggested fix works
    assert set(clips) == {"clips-a", "clips-b"} and _sha256s(corpus) == before


def test_sidecar_tree_prepared_into_itself_or_inside_itself_is_refused(tmp_path, tone, write_audio):
    root = _sidecar(tmp_path / "tree", write_audio, {"a": (tone(), 16000, "A")})
    _sidecar(root / "spk1" / "clips", write_audio, {"b": (tone(), 16000, "B")})  # audio where OUTPUT_DIR/clips goes
    before = _sha256s(root)
    for out, relation in ((root, "is the input"), (root / "spk1", "is inside the input"),
                          (root / "prepared", "is inside the input")):
        with pytest.raises(PrepareError, match=f"OUTPUT_DIR {out} {relation} {root};"):
            prepare(root, out, PrepareConfig(progress=False, jobs=1))
        assert _sha256s(root) == before
    assert not (root / "prepared").exists() and not (root / "clips").exists()


def test_output_dir_that_contains_the_input_or_is_a_symlink_to_it_is_refused(tmp_path, tone, write_audio):
    root = _sidecar(tmp_path / "outer" / "tree", write_audio, {"a": (tone(), 16000, "A")})
    (tmp_path / "link").symlink_to(root)
    before = _sha256s(tmp_path / "outer")
    with pytest.raises(PrepareError, match=f"OUTPUT_DIR {tmp_path / 'outer'} contains the input {root};"):
        prepare(root, tmp_path / "outer", PrepareConfig(progress=False, jobs=1))
    with pytest.raises(PrepareError, match=f"OUTPUT_DIR {tmp_path / 'link'} is the input {root};"):
        prepare(root, tmp_path / "link", PrepareConfig(progress=False, jobs=1))
    assert _sha256s(tmp_path / "outer") == before


def test_output_dir_holding_audio_the_input_refers_to_is_refused(tmp_path, tone, write_audio):
    store = tmp_path / "store"
    write_audio(store / "clips" / "a.flac", tone())
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "text").write_text("u1 HELLO\n")
    (kaldi / "wav.scp").write_text(f"u1 {tmp_path / 'alias' / 'clips' / 'a.flac'}\n")
    (tmp_path / "alias").symlink_to(store)  # the scp names the file through a symlink
    before = _sha256s(store)
    with pytest.raises(PrepareError, match=rf"OUTPUT_DIR {store} holds 1 audio file\(s\) of the input {kaldi} "
                                           rf"\(e.g. {store / 'clips' / 'a.flac'}\)"):
        prepare(kaldi, store, PrepareConfig(progress=False, jobs=1))
    assert _sha256s(store) == before


def test_clean_up_removes_only_the_clips_prepare_wrote(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"a": (tone(), 16000, "A"), "b": (tone(), 16000, "B")})
    out = tmp_path / "out"
    write_audio(out / "clips" / "mine.flac", tone(0.5))  # the user's own files in OUTPUT_DIR/clips
    (out / "clips" / ".draft.wav.tmp").write_text("not prepare's temp file")
    (out / "notes.txt").write_text("keep me")
    foreign = _sha256s(out)
    _prepare(src, out)
    assert json.loads((out / "prepare_files.json").read_text()) == {"clips": ["a.flac", "b.flac"]}
    (src / "b.wav").unlink(), (src / "b.txt").unlink()
    (out / "clips" / ".a.flac.tmp").write_text("prepare's own leftover")
    report, clips = _prepare(src, out)
    assert list(clips) == ["a"] and report["outputs"]["written"] == str(out / "prepare_files.json")
    assert sorted(p.name for p in (out / "clips").iterdir()) == [".draft.wav.tmp", "a.flac", "mine.flac"]
    assert {k: v for k, v in _sha256s(out).items() if k in foreign} == foreign
    assert json.loads((out / "prepare_files.json").read_text()) == {"clips": ["a.flac"]}


def test_files_prepare_did_not_write_are_never_overwritten(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"a": (tone(), 16000, "A")})
    clash = tmp_path / "clash"
    write_audio(clash / "clips" / "a.flac", tone(0.5))  # the name of a clip to write
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.jsonl").write_text('{"someone": "else"}\n')
    for out, first in ((clash, clash / "clips" / "a.flac"), (other, other / "manifest.jsonl")):
        before = _sha256s(out)
        with pytest.raises(PrepareError, match=f"{first} exists and was not written by kidwhisper prepare"):
            prepare(src, out, PrepareConfig(progress=False, jobs=1))
        assert _sha256s(out) == before


def test_rerun_into_an_output_without_a_file_list_cleans_the_clips_of_its_manifest(tmp_path, tone, write_audio):
    src = _sidecar(tmp_path / "in", write_audio, {"a": (tone(), 16000, "A"), "b": (tone(), 16000, "B")})
    out = tmp_path / "out"
    _prepare(src, out)
    (out / "prepare_files.json").unlink()  # an output written before prepare kept its file list
    write_audio(out / "clips" / "mine.flac", tone(0.5))
    (src / "b.wav").unlink(), (src / "b.txt").unlink()
    _, clips = _prepare(src, out)
    assert list(clips) == ["a"]
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["a.flac", "mine.flac"]


def test_a_full_disk_is_one_line_naming_the_clip_and_leaves_no_temp_file(tmp_path, tone, write_audio, full_disk,
                                                                          capsys):
    from kidwhisper.cli import main

    src = _sidecar(tmp_path / "in", write_audio, {n: (tone(), 16000, n.upper()) for n in ("a", "b", "c")})
    out = tmp_path / "out"
    refused = full_disk(out, when=lambda path: path.name.startswith(".b.flac."))
    assert main(["prepare", str(src), str(out), "--jobs", "1", "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"kidwhisper prepare: error: no space left on device writing {out / 'clips' / 'b.flac'}; free some space on "
        f"that disk (or write to another directory) and run again")
    assert refused and not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not (out / "manifest.jsonl").exists()
