"""prepare streams: the same bytes serial or parallel, and a bounded number of utterances in memory."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import weakref
from pathlib import Path

import numpy as np
import pytest

from kidwhisper.data import convert
from kidwhisper.data.manifest import read_manifest
from kidwhisper.data.prepare import CHUNK_ITEMS, PrepareConfig, max_items_in_memory, prepare
from kidwhisper.data.readers import RawItem


def _digests(out: Path) -> dict[str, str]:
    """{relative path: sha256} of the manifest, the clean-up list and every clip."""
    files = [out / "manifest.jsonl", out / "prepare_files.json", *sorted((out / "clips").iterdir())]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _report(out: Path) -> dict:
    """The report without what differs between runs of other --jobs into other directories."""
    report = json.loads((out / "prepare_report.json").read_text())
    del report["outputs"], report["workers"], report["config"]["jobs"], report["config"]["progress"]
    return report


def _kaldi(root: Path, n: int, tone, write_audio, corrupt: int | None = None) -> Path:
    """A Kaldi dir of ``n`` tiny clips ``u00000``... (a few 8 kHz stereo, silent or duplicated, one missing,
    and clip ``corrupt`` random bytes) for two speakers."""
    rng = np.random.default_rng(0)
    text, scp, spk = [], [], []
    for i in range(n):
        utt, path = f"u{i:05d}", root / "audio" / f"u{i:05d}.wav"
        if i == corrupt:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.bytes(2000))
        elif i % 17 == 3:
            write_audio(path, tone(0.4, 8000, channels=2), 8000)
        elif i % 29 == 5:
            write_audio(path, np.zeros(6400, np.float32))
        elif i % 31 != 7:  # i % 31 == 7: listed but missing
            write_audio(path, tone(0.35 + (i % 5) * 0.01, amp=0.1 + (i % 7) * 0.05))
        text.append(f"{utt} CLIP {i}")
        scp.append(f"{utt} audio/{utt}.wav")
        spk.append(f"{utt} s{i % 2}")
        if i % 41 == 9:
            text.append(f"{utt} AGAIN")  # a duplicate id
    (root / "text").write_text("\n".join(text) + "\n")
    (root / "wav.scp").write_text("\n".join(scp) + "\n")
    (root / "utt2spk").write_text("\n".join(spk) + "\n")
    (root / "spk2age").write_text("s0 7\ns1 9\n")
    return root


def _segments(root: Path, tone, write_audio) -> Path:
    """Three 20 s recordings with 30 CSV segments each (some too short, beyond the end or overlapping)."""
    for r in range(3):
        write_audio(root / f"rec{r}.flac", tone(20.0, 44100, amp=0.2), 44100)
        rows = [f"{k * 0.6:.2f},{k * 0.6 + 0.5 + (k % 3) * 0.15:.2f},WORD {k}" for k in range(30)]
        rows += ["19.8,21,BEYOND", "3.00,3.05,BLIP"]
        (root / f"rec{r}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("layout", ["kaldi", "segments"])
def test_serial_and_parallel_prepare_write_the_same_bytes(tmp_path, tone, write_audio, layout, capsys):
    src = (_kaldi(tmp_path / "in", 150, tone, write_audio, corrupt=60) if layout == "kaldi"
           else _segments(tmp_path / "in", tone, write_audio))
    serial = prepare(src, tmp_path / "serial", PrepareConfig(jobs=1, progress=False))
    parallel = prepare(src, tmp_path / "parallel", PrepareConfig(jobs=2, progress=True))
    assert (serial["workers"], parallel["workers"]) == (1, 2)
    assert _digests(tmp_path / "serial") == _digests(tmp_path / "parallel")
    assert _report(tmp_path / "serial") == _report(tmp_path / "parallel")
    assert serial["skipped"]["total"] > 0 and serial["fixes"]  # the bad cases are in there
    bar = re.search(r"prepare: 100%\|.*?\| (\d+)/(\d+) \[\d\d:\d\d<\d\d:\d\d", capsys.readouterr().err)
    assert bar and bar[1] == bar[2] and int(bar[2]) > serial["kept"]  # a total (every clip to convert) and an ETA
    ids = [c.id for c in read_manifest(tmp_path / "parallel")]
    assert ids == sorted(ids)  # input order (both layouts list their clips sorted)


def _count_alive(monkeypatch, cls: type) -> dict[str, int]:
    """{"n": the most instances of ``cls`` alive at once} (made in this process or unpickled into it)."""
    count = {"alive": 0, "n": 0}

    def gone() -> None:
        count["alive"] -= 1

    def note(obj) -> None:
        count["alive"] += 1
        count["n"] = max(count["n"], count["alive"])
        weakref.finalize(obj, gone)

    init = cls.__init__

    def counted_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        note(self)

    def counted_setstate(self, state) -> None:
        self.__dict__.update(state)
        note(self)

    monkeypatch.setattr(cls, "__init__", counted_init)
    monkeypatch.setattr(cls, "__setstate__", counted_setstate, raising=False)
    return count


@pytest.mark.parametrize("jobs", [2])
def test_memory_holds_a_bounded_number_of_utterances_whatever_the_corpus_size(tmp_path, tone, write_audio,
                                                                              monkeypatch, caplog, jobs):
    peaks = {}
    for n in (600, 2000):
        src = _kaldi(tmp_path / f"in{n}", n, tone, write_audio, corrupt=n // 2)
        items, outcomes = _count_alive(monkeypatch, RawItem), _count_alive(monkeypatch, convert.Outcome)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kidwhisper.data.prepare"):
            report = prepare(src, tmp_path / f"out{n}", PrepareConfig(jobs=jobs, progress=False))
        monkeypatch.undo()
        peaks[n] = (items["n"], outcomes["n"])
        assert report["workers"] == jobs
        # the corrupt clip in the middle is skipped, counted and logged; everything around it is kept
        corrupt = f"u{n // 2:05d}"
        entry = report["skipped"]["by_reason"][convert.REASON_UNREADABLE]
        assert entry["count"] == 1 and entry["items"][0]["id"] == corrupt
        assert f"skipped {corrupt} (" in caplog.text and f"{convert.REASON_UNREADABLE}: 1" in caplog.text
        clips = read_manifest(tmp_path / f"out{n}")
        assert len(clips) == report["kept"] and corrupt not in {c.id for c in clips}
        assert report["kept"] > n * 0.85
    bound = max_items_in_memory(jobs, CHUNK_ITEMS)
    assert bound < 600 / 2
    assert peaks[600][0] == peaks[2000][0] <= bound  # utterances: the same peak for 600 and 2,000 clips
    assert max(peaks[600][1], peaks[2000][1]) <= bound  # outcomes: only those of the chunks in flight


def test_a_run_that_fails_midway_leaves_the_previous_manifest_whole(tmp_path, tone, write_audio, full_disk):
    src = _kaldi(tmp_path / "in", 120, tone, write_audio)
    out = tmp_path / "out"
    prepare(src, out, PrepareConfig(jobs=1, progress=False))
    before = (out / "manifest.jsonl").read_bytes()
    (out / ".manifest.jsonl.x1y2z3.tmp").write_text("left by a killed run\n")
    (src / "text").write_text((src / "text").read_text().replace("CLIP 1\n", "CLIP ONE\n"))
    refused = full_disk(out, when=lambda path: path.name.startswith(".u00101.flac."))  # after 3 chunks are written
    with pytest.raises(Exception, match="no space left on device writing"):
        prepare(src, out, PrepareConfig(jobs=1, progress=False))
    assert refused and (out / "manifest.jsonl").read_bytes() == before
    assert not [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_an_utterance_that_appears_between_the_two_passes_is_not_written(tmp_path, tone, write_audio, monkeypatch):
    from kidwhisper.data import prepare as prepare_module

    src = _kaldi(tmp_path / "in", 20, tone, write_audio)
    write_audio(src / "audio" / "late.wav", tone())
    plan = prepare_module._plan

    def then_add_one(*args, **kwargs):
        result = plan(*args, **kwargs)
        with open(src / "text", "a") as f, open(src / "wav.scp", "a") as g:
            f.write("late LATE\n"), g.write("late audio/late.wav\n")
        return result

    monkeypatch.setattr(prepare_module, "_plan", then_add_one)
    with pytest.raises(prepare_module.PrepareError, match="changed while prepare read it \\('late' appeared\\)"):
        prepare(src, tmp_path / "out", PrepareConfig(jobs=1, progress=False))
    assert not (tmp_path / "out" / "clips" / "late.flac").exists()
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
