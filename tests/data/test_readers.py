"""One reader per corpus layout, and layout detection. Readers only read text, so audio files are stubs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from kidwhisper.data.readers import (
    REASON_BAD_TRANSCRIPT_FILE,
    REASON_NO_AUDIO_ENTRY,
    REASON_NO_TRANSCRIPT,
    REASON_NOT_UTF8,
    REASON_PIPED,
    WARN_OVERLAP,
    InputError,
    ReadOptions,
    detect_format,
    read_input,
    read_kaldi,
    read_manifest_file,
    read_segments,
    read_sidecar,
)


def _touch(path: Path, content: bytes | str = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _kaldi_dir(tmp_path: Path) -> Path:
    d = tmp_path / "kaldi"
    _touch(d / "text", "u1 HELLO WORLD\nu2 GOOD MORNING\nu3 \xe9t\xe9\n".encode("latin-1")
           + b"u4 PIPED\nu5 NOT IN SCP\n")
    _touch(d / "wav.scp", f"u1 audio/u1.flac\nu2 {tmp_path}/abs/u2.wav\nu3 audio/u3.flac\n"
                          f"u4 sox x.sph -t wav - |\nu6 audio/u6.flac\n")
    _touch(d / "utt2spk", "u1 s1\nu2 s2\n")
    _touch(d / "spk2age", "s1 7\ns2 unknown\n")
    _touch(d / "spk2gender", "s1 f\n")
    return d


def test_read_kaldi_items_metadata_and_skips(tmp_path):
    d = _kaldi_dir(tmp_path)
    items, skips = read_kaldi(d)
    assert [(i.id, i.audio, i.text, i.speaker, i.age, i.gender) for i in items] == [
        ("u1", d / "audio/u1.flac", "HELLO WORLD", "s1", 7.0, "f"),
        ("u2", tmp_path / "abs/u2.wav", "GOOD MORNING", "s2", None, None),
    ]
    assert items[0].start is None and items[0].origin == f"{d / 'text'}:1"
    assert [(s.id, s.reason) for s in skips] == [
        ("u3", REASON_NOT_UTF8), ("u4", REASON_PIPED), ("u5", REASON_NO_AUDIO_ENTRY), ("u6", REASON_NO_TRANSCRIPT)]
    assert "sox x.sph" in skips[1].detail


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_read_kaldi_and_jsonl_lines_end_at_crlf_or_cr_as_at_lf(tmp_path, newline):
    unix, other = tmp_path / "unix", tmp_path / "other"
    for d, end in ((unix, b"\n"), (other, newline)):
        _touch(d / "text", end.join([b"u1 HELLO", b"", b"u2 GOOD \xe9", b"u3 BYE"]) + end)
        _touch(d / "wav.scp", end.join([b"u1 a.wav", b"u2 b.wav", b"u3 c.wav"]) + end)
        _touch(d / "m.jsonl", end.join([json.dumps({"audio": f"{u}.wav", "text": u}).encode() for u in "xyz"]) + end)
    for read in (read_kaldi, lambda d: read_manifest_file(d / "m.jsonl")):
        (want, want_skips), (got, got_skips) = read(unix), read(other)
        assert [(i.id, i.text, i.audio.name, i.origin.split("/")[-1]) for i in got] == \
               [(i.id, i.text, i.audio.name, i.origin.split("/")[-1]) for i in want]
        assert [(s.id, s.reason, s.file.split("/")[-1]) for s in got_skips] == \
               [(s.id, s.reason, s.file.split("/")[-1]) for s in want_skips]
    assert [s.origin.split("/")[-1] for s in read_kaldi(other)[0]] == ["text:1", "text:4"]  # u2 is not UTF-8


def test_read_kaldi_segments_cut_recordings(tmp_path):
    d = tmp_path / "k"
    _touch(d / "text", "a HI\nb THERE\nc ORPHAN\n")
    _touch(d / "wav.scp", "rec1 long.wav\n")
    _touch(d / "segments", "a rec1 0.5 1.25\nb rec1 2 3.5\nc rec9 0 1\nbad rec1 x\n")
    items, skips = read_kaldi(d)
    assert [(i.id, i.audio, i.start, i.end) for i in items] == [
        ("a", d / "long.wav", 0.5, 1.25), ("b", d / "long.wav", 2.0, 3.5)]
    assert sorted((s.id, s.reason) for s in skips) == [
        ("bad", "unparseable line"), ("c", REASON_NO_AUDIO_ENTRY)]


def test_read_kaldi_requires_text_and_wav_scp(tmp_path):
    _touch(tmp_path / "text", "a HI\n")
    with pytest.raises(InputError, match="wav.scp missing"):
        read_kaldi(tmp_path)


def test_read_manifest_csv_tsv_jsonl_with_common_column_names(tmp_path):
    _touch(tmp_path / "clips" / "cv1.mp3")
    csv_path = _touch(tmp_path / "metadata.csv", "file_name,transcription,Speaker_ID,age\n"
                                                 "a/x.wav,\"HI, THERE\",k1,8\nb.wav,BYE,,\n")
    items, skips = read_manifest_file(csv_path)
    assert [(i.id, i.audio, i.text, i.speaker, i.age) for i in items] == [
        ("a-x", tmp_path / "a/x.wav", "HI, THERE", "k1", 8.0), ("b", tmp_path / "b.wav", "BYE", None, None)]
    assert skips == []

    tsv = _touch(tmp_path / "validated.tsv", "client_id\tpath\tsentence\tage\tgender\n"
                                             "c1\tcv1.mp3\t\"QUOTED\" TEXT\ttwenties\tmale\n")
    (item,), _ = read_manifest_file(tsv)
    assert (item.audio, item.text, item.speaker, item.age, item.gender) == (
        tmp_path / "clips/cv1.mp3", '"QUOTED" TEXT', "c1", None, "male")  # Common Voice: clips/ fallback

    rows = [{"audio_filepath": "/abs/long.wav", "text": "ONE", "offset": 1.5, "duration": 2.0},
            {"id": "own", "wav": "w.flac", "transcript": "TWO", "start": 0, "end": 1, "gender": "m"}]
    jsonl = _touch(tmp_path / "m.jsonl", ("\n".join(json.dumps(r) for r in rows) + "\nnot json\n").encode()
                   + b'{"path": "p.wav", "text": "caf\xe9"}\n')  # latin-1 byte on line 4
    items, skips = read_manifest_file(jsonl)
    assert [(i.id, str(i.audio), i.text, i.start, i.end, i.gender) for i in items] == [
        ("long_0001500", "/abs/long.wav", "ONE", 1.5, 3.5, None), ("own", str(tmp_path / "w.flac"), "TWO", 0, 1, "m")]
    assert [(s.reason, s.file) for s in skips] == [
        ("unparseable line", f"{jsonl}:3"), (REASON_NOT_UTF8, f"{jsonl}:4")]


def test_read_manifest_without_audio_or_text_column_names_the_fix(tmp_path):
    bad = _touch(tmp_path / "m.csv", "clip,words_spoken\na.wav,HI\n")
    with pytest.raises(InputError, match=r"no audio column and no text column among \['clip', 'words_spoken'\]; "
                                         r"name them e.g. audio/path/file/wav"):
        read_manifest_file(bad)


@pytest.mark.parametrize("header, message", [
    ("path,said", "no text column among ['path', 'said'] (the audio column is 'path'); name the column with "
                   "the transcript e.g. text/transcript/"),
    ("clip,sentence", "no audio column among ['clip', 'sentence'] (the text column is 'sentence'); name the "
                      "column with the audio file path e.g. audio/path/file/"),
])
def test_read_manifest_names_the_one_missing_column_and_the_one_found(tmp_path, header, message):
    bad = _touch(tmp_path / "m.csv", f"{header}\na.wav,HI\n")
    with pytest.raises(InputError) as e:
        read_manifest_file(bad)
    assert message in str(e.value)


def test_read_manifest_row_with_an_empty_audio_cell_is_skipped_without_an_id(tmp_path):
    m = _touch(tmp_path / "corpus" / "m.csv", "path,sentence\na.wav,HELLO\n,NO AUDIO\n  ,BLANK\n")
    items, skips = read_manifest_file(m)
    assert [i.id for i in items] == ["a"]
    assert [(s.reason, s.file, s.id) for s in skips] == [(REASON_NO_AUDIO_ENTRY, f"{m}:3", None),
                                                         (REASON_NO_AUDIO_ENTRY, f"{m}:4", None)]
    assert "empty 'path' cell" in skips[0].detail
    with_ids = _touch(tmp_path / "ids.jsonl", json.dumps({"id": "u9", "audio": "", "text": "X"}) + "\n")
    assert [(s.reason, s.id) for s in read_manifest_file(with_ids)[1]] == [(REASON_NO_AUDIO_ENTRY, "u9")]


def test_read_sidecar_tree(tmp_path):
    _touch(tmp_path / "spk1" / "a.flac")
    _touch(tmp_path / "spk1" / "a.txt", "HELLO\nTHERE\n")
    _touch(tmp_path / "spk2" / "b.mp3")
    _touch(tmp_path / "spk2" / "b.lab", "\ufeffBYE")
    _touch(tmp_path / "c.wav")  # no transcript
    _touch(tmp_path / "d.ogg")
    _touch(tmp_path / "d.txt", b"caf\xe9")  # latin-1
    _touch(tmp_path / "orphan.txt", "NO AUDIO")
    _touch(tmp_path / ".hidden" / "e.wav")
    items, skips = read_sidecar(tmp_path)
    assert [(i.id, i.audio.name, i.text) for i in items] == [("spk1-a", "a.flac", "HELLO\nTHERE\n"),
                                                             ("spk2-b", "b.mp3", "BYE")]
    assert [(s.id, s.reason) for s in skips] == [
        ("c", REASON_NO_TRANSCRIPT), ("d", REASON_NOT_UTF8), ("orphan", REASON_NO_AUDIO_ENTRY)]


def test_read_segments_each_transcript_kind(tmp_path):
    _touch(tmp_path / "s1.wav")
    _touch(tmp_path / "s1.TextGrid", 'File type = "ooTextFile"\nObject class = "TextGrid"\n0\n4\n<exists>\n1\n'
                                     '"IntervalTier"\n"u"\n0\n4\n3\n0\n1\n""\n1\n2\n"A B"\n2\n4\n"C"\n')
    _touch(tmp_path / "sub" / "s2.flac")
    _touch(tmp_path / "sub" / "s2.srt", "1\n00:00:00,500 --> 00:00:01,000\nHI\n")
    _touch(tmp_path / "s3.mp3")
    _touch(tmp_path / "s3.csv", "0,1,X,kid\n")
    _touch(tmp_path / "s4.wav")  # no transcript
    _touch(tmp_path / "s5.wav")
    _touch(tmp_path / "s5.vtt", "no header\n")
    items, skips = read_segments(tmp_path)
    assert [(i.id, i.audio.name, i.start, i.end, i.text, i.speaker) for i in items] == [
        ("s1_0001", "s1.wav", 1.0, 2.0, "A B", None), ("s1_0002", "s1.wav", 2.0, 4.0, "C", None),
        ("s3_0001", "s3.mp3", 0.0, 1.0, "X", "kid"), ("sub-s2_0001", "s2.flac", 0.5, 1.0, "HI", None)]
    assert [(s.id, s.reason) for s in skips] == [("s4", REASON_NO_TRANSCRIPT), ("s5", REASON_BAD_TRANSCRIPT_FILE)]
    assert "WEBVTT" in skips[1].detail


def test_read_segments_warns_about_overlapping_intervals_and_keeps_them(tmp_path):
    _touch(tmp_path / "r.wav")
    _touch(tmp_path / "r.TextGrid", 'File type = "ooTextFile"\nObject class = "TextGrid"\n0\n9\n<exists>\n1\n'
                                    '"IntervalTier"\n"u"\n0\n9\n5\n0\n3\n"A"\n2.5\n4\n"B"\n4\n5\n"C"\n'
                                    '4.5\n5.5\n"D"\n1\n2\n"E"\n')
    items, skips = read_segments(tmp_path)
    assert [i.id for i in items] == ["r_0001", "r_0002", "r_0003", "r_0004", "r_0005"] and skips == []
    warned = {i.id: i.warnings for i in items if i.warnings}
    assert list(warned) == ["r_0002", "r_0004", "r_0005"]  # touching (4 -> 4) is not an overlap
    assert all(kind == WARN_OVERLAP for w in warned.values() for kind, _ in w)
    assert "2.500-4.000 s starts before r_0001 ends at 3.000 s" in warned["r_0002"][0][1]
    assert "starts before r_0003 ends at 5.000 s" in warned["r_0004"][0][1]
    assert "starts before r_0004 ends at 5.500 s" in warned["r_0005"][0][1]


def test_read_segments_utf16_textgrid(tmp_path):
    _touch(tmp_path / "r.wav")
    tg = 'File type = "ooTextFile"\nObject class = "TextGrid"\n0\n2\n<exists>\n1\n"IntervalTier"\n"u"\n0\n2\n1\n0\n2\n"ÉTÉ"\n'
    _touch(tmp_path / "r.TextGrid", tg.encode("utf-16"))
    items, skips = read_segments(tmp_path)
    assert [i.text for i in items] == ["ÉTÉ"] and skips == []


def test_detect_format(tmp_path):
    kaldi = _kaldi_dir(tmp_path)
    side = tmp_path / "side"
    _touch(side / "a.wav"), _touch(side / "a.txt", "A"), _touch(side / "notes.csv", "x")
    segs = tmp_path / "segs"
    _touch(segs / "r.flac"), _touch(segs / "r.srt", ""), _touch(segs / "r2.wav"), _touch(segs / "r2.csv", "")
    table_dir = tmp_path / "tbl"
    _touch(table_dir / "train.tsv", "path\tsentence\n"), _touch(table_dir / "clips" / "x.mp3")
    assert detect_format(kaldi) == "kaldi"
    assert detect_format(side) == "sidecar"
    assert detect_format(segs) == "segments"
    assert detect_format(segs / "r.flac") == "segments"
    assert detect_format(table_dir) == "manifest"
    assert detect_format(table_dir / "train.tsv") == "manifest"
    with pytest.raises(InputError, match="input not found"):
        read_input(tmp_path / "nope")
    _touch(tmp_path / "empty" / "readme.md")
    with pytest.raises(InputError, match="cannot detect the corpus layout.*pass --format"):
        detect_format(tmp_path / "empty")


def test_text_column_names_the_transcript_column_of_a_manifest(tmp_path):
    csv_path = _touch(tmp_path / "m.csv", "path,prompt,notes\na.wav,HELLO,loud\n")
    (item,), _ = read_manifest_file(csv_path, text_column="Prompt")
    assert (item.audio, item.text) == (tmp_path / "a.wav", "HELLO")
    with pytest.raises(InputError, match=r"--text-column 'said' is not among the columns \['notes', 'path', 'prompt'\]"):
        read_manifest_file(csv_path, text_column="said")


def test_detect_hugging_face_and_lhotse_layouts(tmp_path):
    sup = {"id": "u1", "recording_id": "r1", "start": 0.5, "duration": 1.0, "channel": 0, "text": "HI"}
    rec = {"id": "r1", "sources": [{"type": "file", "channels": [0], "source": "r1.wav"}], "sampling_rate": 16000,
           "num_samples": 16000, "duration": 1.0}
    lhotse_dir = tmp_path / "lhotse"
    _touch(lhotse_dir / "kids_supervisions_test.jsonl", json.dumps(sup) + "\n")
    with gzip.open(_touch(lhotse_dir / "kids_recordings_test.jsonl.gz"), "wt") as f:
        f.write(json.dumps(rec) + "\n")
    ours = _touch(tmp_path / "prepared" / "manifest.jsonl", json.dumps(
        {"id": "u1", "audio": "clips/u1.flac", "duration": 1.0, "text": "HI", "source": {"start": 0.5}}) + "\n")
    assert detect_format(lhotse_dir) == "lhotse"
    assert detect_format(lhotse_dir / "kids_supervisions_test.jsonl") == "lhotse"
    assert detect_format(lhotse_dir / "kids_recordings_test.jsonl.gz") == "lhotse"
    assert detect_format(ours) == "manifest"
    assert detect_format(_touch(tmp_path / "kids.parquet")) == "hf"
    assert detect_format(_touch(tmp_path / "snapshot" / "data" / "test-00000-of-00001.arrow")) == "hf"
    assert detect_format(tmp_path / "snapshot") == "hf"
    _touch(tmp_path / "saved" / "dataset_dict.json", '{"splits": ["test"]}')
    assert detect_format(tmp_path / "saved") == "hf"


def test_split_and_text_column_are_refused_where_they_do_not_apply(tmp_path):
    kaldi = _kaldi_dir(tmp_path)
    with pytest.raises(InputError, match=r"--split applies to Hugging Face datasets and lhotse manifests"):
        read_input(kaldi, options=ReadOptions(split="test"))
    with pytest.raises(InputError, match=r"--text-column applies to Hugging Face datasets and manifests"):
        read_input(kaldi, options=ReadOptions(text_column="prompt"))
