"""The speechocean762 recipe: a miniature public release built from real clips -> the published sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from shared_data import SHARED_DATA as SHARED

from kidwhisper.data.recipes.speechocean762 import (
    RecipeError,
    Speechocean762Config,
    describe_sets,
    load_split,
    speechocean762,
)

SETS = ("speechocean762-kids/train", "speechocean762-kids/dev", "speechocean762-kids/test",
        "speechocean762-adults/test")
PER_SET = 2  # speakers of each set in the miniature release
EXTRA = "0093"  # a speaker of the release's test split that is in no set


def table(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def shared() -> Path:
    if not all((SHARED / s / "utt2spk").is_file() for s in SETS):
        pytest.skip(f"{SHARED} not found (the shared corpus lives beside the repository)")
    return SHARED


@pytest.fixture(scope="module")
def release(shared, tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """A speechocean762 tree in the public release's layout: the first and last speakers of each set (all
    their clips, as 16-bit PCM .WAV) and one extra speaker; -> (root, {set: its chosen speakers})."""
    root = tmp_path_factory.mktemp("corpus") / "speechocean762"
    split = load_split()
    chosen: dict[str, list[str]] = {}
    rows: dict[str, dict[str, list[str]]] = {s: {f: [] for f in ("wav.scp", "text", "utt2spk", "spk2utt",
                                                                  "spk2age", "spk2gender")} for s in ("train", "test")}
    for name in SETS:
        d = shared / name
        speakers = sorted({s for _, s in table(d / "utt2spk")})
        chosen[name] = [speakers[0], speakers[-1]][:PER_SET]
        r = rows[split["sets"][name]["release_split"]]
        text, utt2spk = dict(table(d / "text")), dict(table(d / "utt2spk"))
        wav, age, gender = dict(table(d / "wav.scp")), dict(table(d / "spk2age")), dict(table(d / "spk2gender"))
        for spk in chosen[name]:
            utts = sorted(u for u, s in utt2spk.items() if s == spk)
            for utt in utts:
                rel = f"WAVE/SPEAKER{spk}/{utt}.WAV"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                pcm, rate = sf.read(str(d / wav[utt]), dtype="int16")
                sf.write(str(root / rel), pcm, rate, format="WAV", subtype="PCM_16")
                r["wav.scp"].append(f"{utt}\t{rel}")
                r["text"].append(f"{utt}\t{text[utt]}")
                r["utt2spk"].append(f"{utt} {spk}")
            r["spk2utt"].append(" ".join([spk, *utts]))
            r["spk2age"].append(f"{spk} {age[spk]}")
            r["spk2gender"].append(f"{spk} {gender[spk]}")
    r = rows["test"]
    for utt in (f"{EXTRA}0005", f"{EXTRA}0014"):
        rel = f"WAVE/SPEAKER{EXTRA}/{utt}.WAV"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32), 16000, subtype="PCM_16")
        r["wav.scp"].append(f"{utt}\t{rel}")
        r["text"].append(f"{utt}\tBILLY LIKES BLUE")
        r["utt2spk"].append(f"{utt} {EXTRA}")
    r["spk2utt"].append(f"{EXTRA} {EXTRA}0005 {EXTRA}0014")
    r["spk2age"].append(f"{EXTRA} 6")
    r["spk2gender"].append(f"{EXTRA} f")
    for split_name, files in rows.items():
        for f, lines in files.items():  # reversed: the recipe must not rely on the release's order
            (root / split_name).mkdir(parents=True, exist_ok=True)
            (root / split_name / f).write_text("".join(line + "\n" for line in reversed(lines)))
    return root, chosen


def test_shipped_split_is_the_published_data(shared):
    """The shipped speakers, counts and checksums are those of ../shared/data (so a full rebuild is
    checked against it), and no speaker is in two sets."""
    split = load_split()
    assert list(split["sets"]) == list(SETS)
    for name in SETS:
        assert split["sets"][name]["speakers"] == sorted({s for _, s in table(shared / name / "utt2spk")})
    speakers = [s for e in split["sets"].values() for s in e["speakers"]]
    assert len(speakers) == len(set(speakers)) == 110
    assert describe_sets(shared, split) == split


def test_recipe_rebuilds_the_published_sets(release, shared, tmp_path, caplog):
    root, chosen = release
    out = tmp_path / "sets"
    caplog.set_level("INFO")
    report = speechocean762(root.parent, out, Speechocean762Config(jobs=1, progress=False))  # the unpacked archive

    for name in SETS:
        ref, got = shared / name, out / name
        keep = set(chosen[name])
        utt2spk = dict(table(ref / "utt2spk"))
        utts = sorted(u for u, s in utt2spk.items() if s in keep)
        assert len(utts) == 20 * len(keep)
        for f in ("text", "wav.scp", "utt2spk"):  # byte for byte, restricted to the chosen speakers
            lines = ref.joinpath(f).read_text().splitlines(keepends=True)
            assert got.joinpath(f).read_bytes() == "".join(x for x in lines if utt2spk[x.split()[0]] in keep).encode()
        for f in ("spk2age", "spk2gender"):
            lines = ref.joinpath(f).read_text().splitlines(keepends=True)
            assert got.joinpath(f).read_bytes() == "".join(x for x in lines if x.split()[0] in keep).encode()
        assert sorted(p.name for p in (got / "audio").iterdir()) == [f"{u}.flac" for u in utts]
        for utt in utts:
            a, b = ref / "audio" / f"{utt}.flac", got / "audio" / f"{utt}.flac"
            pcm, rate = sf.read(str(a), dtype="int16")
            assert sf.info(str(b)).samplerate == 16000 and sf.info(str(b)).channels == 1
            assert sf.info(str(b)).subtype == "PCM_16" and sf.info(str(b)).format == "FLAC"
            assert np.array_equal(sf.read(str(b), dtype="int16")[0], pcm)
            if utt == utts[0]:  # byte for byte too where this libsndfile re-encodes the published file exactly
                again = tmp_path / "again.flac"
                sf.write(str(again), pcm, rate, format="FLAC", subtype="PCM_16")
                if again.read_bytes() == a.read_bytes():
                    assert b.read_bytes() == a.read_bytes()
        entry = report["sets"][name]
        assert (entry["speakers"], entry["utterances"], entry["release_split"]) == \
            (len(keep), len(utts), [load_split()["sets"][name]["release_split"]])
        assert len(entry["missing_speakers"]) == len(load_split()["sets"][name]["speakers"]) - len(keep)
        assert not entry["skipped"] and not entry["converted"]
        assert entry["matches_published"] == {f: False for f in (*entry["sha256"],)}  # a subset of the set

    assert report["left_out"] == {"speakers": 1, "utterances": 2, "by_release_split": {"test": [EXTRA]},
                                  "utterances_without_speaker": 0}
    assert not any(spk == EXTRA for name in SETS for _, spk in table(out / name / "utt2spk"))
    assert report["identical_to_published"] is False
    assert json.loads((out / "recipe_report.json").read_text()) == report
    assert json.loads((out / "recipe_config.json").read_text())["prepare"] is True
    for name, prepared in (("speechocean762-kids/train", "kids-train"), ("speechocean762-kids/dev", "kids-dev"),
                           ("speechocean762-kids/test", "kids-test"), ("speechocean762-adults/test", "adults-test")):
        manifest = out / "prepared" / prepared / "manifest.jsonl"
        clips = [json.loads(line) for line in manifest.read_text().splitlines()]
        assert len(clips) == report["prepared"][prepared]["kept"] == 20 * len(chosen[name])
        assert {c["speaker"] for c in clips} == set(chosen[name])
    assert "left out 1 speakers (2 utterances)" in caplog.text


def test_rerun_into_the_same_dir_removes_stale_audio(release, tmp_path):
    root, _ = release
    out = tmp_path / "sets"
    stale = out / "speechocean762-kids/dev/audio/999999999.flac"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    report = speechocean762(root, out, Speechocean762Config(prepare=False, progress=False))
    assert not stale.exists() and report["prepared"] == {} and not (out / "prepared").exists()


def test_missing_corpus_says_where_to_download(tmp_path):
    with pytest.raises(RecipeError, match="not found.*openslr.org/101.*github.com/jimbozhang/speechocean762"):
        speechocean762(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "half" / "train").mkdir(parents=True)
    (tmp_path / "half" / "train" / "text").write_text("")
    with pytest.raises(RecipeError, match=r"not the speechocean762 release layout \(train/wav.scp, train/utt2spk"):
        speechocean762(tmp_path / "half", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kidwhisper", *args], capture_output=True, text=True, timeout=600)


def test_cli_builds_and_reports(release, tmp_path):
    root, chosen = release
    r = run_cli("recipe", "speechocean762", str(root), str(tmp_path / "sets"), "--no-prepare", "-q")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["sets"]["speechocean762-kids/dev"]["utterances"] == 20 * len(chosen["speechocean762-kids/dev"])
    assert out["left_out"] == {"speakers": 1, "utterances": 2} and out["prepared"] == {}


def test_cli_error_names_the_download(tmp_path):
    r = run_cli("recipe", "speechocean762", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert r.returncode == 2
    assert "speechocean762 corpus not found" in r.stderr and "https://www.openslr.org/101/" in r.stderr
    assert "https://github.com/jimbozhang/speechocean762" in r.stderr and "Traceback" not in r.stderr
