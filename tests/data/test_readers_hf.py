"""Hugging Face datasets in: a save_to_disk dir, parquet / arrow files and a Hub id, built from real kids clips;
each prepares into the manifest the Kaldi directory of the same clips gives."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from kidwhisper.cli import main
from kidwhisper.data.manifest import read_manifest
from kidwhisper.data.prepare import PrepareConfig, PrepareError, prepare

datasets = pytest.importorskip("datasets")


def _prepare(src: Path | str, out: Path, **options) -> dict:
    return prepare(src, out, PrepareConfig(progress=False, jobs=1, **options))


def _dataset(kids, utts: list[str], *, embed: bool, text_column: str = "sentence", with_id: bool = True):
    """A dataset of the clips, audio as an ``Audio`` column of embedded bytes or of paths (no torchcodec needed:
    the column is cast from plain {bytes, path} structs)."""
    audio = [{"bytes": kids.audio[u].read_bytes(), "path": kids.audio[u].name} if embed
             else {"bytes": None, "path": str(kids.audio[u])} for u in utts]
    speakers = [kids.speaker[u] for u in utts]
    rows = {"audio": audio, text_column: [kids.text[u] for u in utts], "speaker_id": speakers,
            "age": [kids.age[s] for s in speakers], "gender": [kids.gender[s] for s in speakers]}
    if with_id:
        rows = {"id": list(utts), **rows}
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())


def test_save_to_disk_dataset_dict_with_embedded_audio(kids_clips, tmp_path):
    src = tmp_path / "kids_hf"
    datasets.DatasetDict(train=_dataset(kids_clips, kids_clips.utts[:2], embed=True),
                         test=_dataset(kids_clips, kids_clips.utts, embed=True)).save_to_disk(str(src))

    report = _prepare(src, tmp_path / "out", split="test")
    assert report["input"]["format"] == "hf" and report["kept"] == 6 and report["skipped"]["total"] == 0
    kids_clips.assert_same_manifest(tmp_path / "out")
    first = read_manifest(tmp_path / "out")[0]
    assert first.source["path"] == f"{src}[test][0]"  # embedded audio: the row it came from
    assert not (tmp_path / "out" / ".staging").exists()

    with pytest.raises(PrepareError, match=r"has splits train, test; pick one with --split"):
        _prepare(src, tmp_path / "out2")
    with pytest.raises(PrepareError, match=r"no split 'dev'; its splits are train, test"):
        _prepare(src, tmp_path / "out2", split="dev")


@pytest.mark.parametrize("kind", ["parquet_dir", "arrow_file"])
def test_parquet_and_arrow_files_with_a_named_text_column(kids_clips, tmp_path, kind):
    utts = kids_clips.utts
    if kind == "parquet_dir":  # a Hub snapshot: data/<split>-NNNNN-of-NNNNN.parquet, audio by path
        src = tmp_path / "snapshot"
        (src / "data").mkdir(parents=True)
        for split, subset in (("train", utts[:2]), ("test", utts)):
            _dataset(kids_clips, subset, embed=False, text_column="prompt", with_id=False).to_parquet(
                str(src / "data" / f"{split}-00000-of-00001.parquet"))
        options = {"split": "test"}
    else:  # one arrow file; save_to_disk embeds the audio bytes
        _dataset(kids_clips, utts, embed=False, text_column="prompt", with_id=False).save_to_disk(
            str(tmp_path / "saved"))
        src = tmp_path / "kids.arrow"
        shutil.copy(next((tmp_path / "saved").glob("*.arrow")), src)
        options = {}

    with pytest.raises(PrepareError, match=r"no text column among .*prompt.*--text-column"):
        _prepare(src, tmp_path / "out", **options)
    report = _prepare(src, tmp_path / "out", text_column="prompt", **options)
    assert report["input"]["format"] == "hf" and report["kept"] == 6
    kids_clips.assert_same_manifest(tmp_path / "out")  # no id column: ids are the audio file names


def test_hub_id_without_the_hub_is_one_clear_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "someone/kids-speech", str(tmp_path / "out"), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "someone/kids-speech" in err and "Hub is unreachable" in err and "local copy" in err


def test_hf_input_without_the_datasets_package_says_what_to_install(tmp_path, monkeypatch):
    src = tmp_path / "kids_hf"
    src.mkdir()
    (src / "dataset_dict.json").write_text('{"splits": ["test"]}')
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(PrepareError, match=r"needs the `datasets` package: pip install 'kidwhisper\[hf\]'"):
        _prepare(src, tmp_path / "out")
