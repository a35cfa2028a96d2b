"""lhotse manifests in: a CutSet, and a RecordingSet + SupervisionSet over long recordings, built from real kids
clips; each prepares into the manifest the Kaldi directory of the same clips gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kidwhisper.data.manifest import read_manifest
from kidwhisper.data.prepare import PrepareConfig, PrepareError, prepare
from kidwhisper.data.readers import REASON_NO_AUDIO_ENTRY, REASON_NO_TRANSCRIPT
from kidwhisper.data.readers_lhotse import REASON_UNSUPPORTED_SOURCE

lhotse = pytest.importorskip("lhotse")


def _prepare(src: Path, out: Path, **options) -> dict:
    return prepare(src, out, PrepareConfig(progress=False, jobs=1, **options))


def _supervision(kids, utt: str, recording_id: str, start: float, duration: float, **fields):
    spk = kids.speaker[utt]
    return lhotse.SupervisionSegment(id=utt, recording_id=recording_id, start=start, duration=duration,
                                     text=kids.text[utt], speaker=spk, **fields)


def test_cutset_of_clips(kids_clips, tmp_path):
    recordings = lhotse.RecordingSet.from_recordings(lhotse.Recording.from_file(kids_clips.audio[u])
                                                     for u in kids_clips.utts)
    supervisions = lhotse.SupervisionSet.from_segments(
        _supervision(kids_clips, u, u, 0.0, recordings[u].duration, gender=kids_clips.gender[kids_clips.speaker[u]],
                     custom={"age": kids_clips.age[kids_clips.speaker[u]]}) for u in kids_clips.utts)
    src = tmp_path / "kids_cuts_test.jsonl.gz"
    lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions).to_file(src)

    report = _prepare(src, tmp_path / "out")
    assert report["input"]["format"] == "lhotse" and report["kept"] == 6 and report["skipped"]["total"] == 0
    kids_clips.assert_same_manifest(tmp_path / "out")
    assert read_manifest(tmp_path / "out")[0].source["path"] == str(kids_clips.audio[kids_clips.utts[0]])


def _long_recordings(kids, root: Path) -> tuple[object, object, dict[str, float]]:
    """One recording per speaker: its clips joined by silences of 0.31 s, 0.52 s, ...; supervisions at the
    clips (start/duration in the recording, age as lhotse's CMU Kids recipe stores it) -> (recordings,
    supervisions, utt -> start)."""
    recordings, supervisions, starts = [], [], {}
    for spk in dict.fromkeys(kids.speaker[u] for u in kids.utts):
        pieces, pos = [], 0
        for i, utt in enumerate(u for u in kids.utts if kids.speaker[u] == spk):
            clip = sf.read(kids.audio[utt], dtype="int16")[0]
            gap = np.zeros(16 * (310 + 210 * i) + 7, np.int16)  # not a whole number of milliseconds
            pieces += [gap, clip]
            starts[utt] = (pos + len(gap)) / 16000
            supervisions.append(_supervision(kids, utt, f"session-{spk}", starts[utt], len(clip) / 16000,
                                             gender=kids.gender[spk], custom={"speaker_age": kids.age[spk]}))
            pos += len(gap) + len(clip)
        path = root / "audio" / f"session-{spk}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.concatenate([*pieces, np.zeros(4000, np.int16)]), 16000, subtype="PCM_16")
        recordings.append(lhotse.Recording.from_file(path))
    return (lhotse.RecordingSet.from_recordings(recordings), lhotse.SupervisionSet.from_segments(supervisions),
            starts)


@pytest.mark.parametrize("kind", ["recordings_and_supervisions", "trimmed_cuts"])
def test_long_recordings_with_supervisions_are_cut_back_into_the_clips(kids_clips, tmp_path, kind):
    root = tmp_path / "manifests"
    recordings, supervisions, starts = _long_recordings(kids_clips, root)
    if kind == "recordings_and_supervisions":  # a recipe's output dir: two splits, --split picks one
        recordings.to_file(root / "kids_recordings_test.jsonl.gz")
        supervisions.to_file(root / "kids_supervisions_test.jsonl.gz")
        recordings.to_file(root / "kids_recordings_train.jsonl.gz")
        supervisions.filter(lambda s: s.id == kids_clips.utts[0]).to_file(root / "kids_supervisions_train.jsonl.gz")
        with pytest.raises(PrepareError, match=r"expected one lhotse CutSet, or one RecordingSet.*--split"):
            _prepare(root, tmp_path / "out")
        src, options = root, {"split": "test"}
    else:  # cuts trimmed to their supervisions: supervision start 0 in a cut that starts mid-recording
        cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions()
        src, options = root / "kids_cuts.jsonl", {}
        cuts.to_file(src)

    report = _prepare(src, tmp_path / "out", **options)
    assert report["input"]["format"] == "lhotse" and report["input"]["recordings"] == 2
    assert report["kept"] == 6 and report["skipped"]["total"] == 0 and report["fixes"] == {}
    kids_clips.assert_same_manifest(tmp_path / "out")
    for clip in read_manifest(tmp_path / "out"):
        assert clip.source["path"] == str(root / "audio" / f"session-{clip.speaker}.wav")
        assert clip.source["start"] == pytest.approx(starts[clip.id], abs=1e-6)


def test_supervision_on_one_channel_is_decoded_by_lhotse(kids_clips, tmp_path):
    """A stereo recording with a different clip on each channel: a supervision of channel 1 gets that clip."""
    left, right = (sf.read(kids_clips.audio[u], dtype="int16")[0] for u in kids_clips.utts[:2])
    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), np.int16)
    stereo[: len(left), 0], stereo[: len(right), 1] = left, right
    sf.write(str(tmp_path / "stereo.wav"), stereo, 16000, subtype="PCM_16")
    recording = lhotse.Recording.from_file(tmp_path / "stereo.wav")
    utt = kids_clips.utts[1]
    sup = _supervision(kids_clips, utt, recording.id, 0.0, len(right) / 16000, channel=1)
    lhotse.RecordingSet.from_recordings([recording]).to_file(tmp_path / "recordings.jsonl")
    lhotse.SupervisionSet.from_segments([sup]).to_file(tmp_path / "supervisions.jsonl")

    report = _prepare(tmp_path / "supervisions.jsonl", tmp_path / "out")
    assert report["kept"] == 1 and report["fixes"] == {}
    clip = read_manifest(tmp_path / "out")[0]
    assert np.array_equal(sf.read(tmp_path / "out" / clip.audio, dtype="int16")[0], right)
    assert clip.source["path"] == f"{tmp_path / 'supervisions.jsonl'}[stereo] channels [1]"
    assert not (tmp_path / "out" / ".staging").exists()


def test_what_lhotse_input_cannot_give_is_skipped_with_the_reason(kids_clips, tmp_path):
    utt = kids_clips.utts[0]
    good = lhotse.Recording.from_file(kids_clips.audio[utt])
    piped = lhotse.Recording(id="piped", sources=[lhotse.AudioSource("command", [0], "sox a.sph -t wav - |")],
                             sampling_rate=16000, num_samples=16000, duration=1.0)
    unused = lhotse.Recording.from_file(kids_clips.audio[kids_clips.utts[1]])
    lhotse.RecordingSet.from_recordings([good, piped, unused]).to_file(tmp_path / "recordings.jsonl.gz")
    lhotse.SupervisionSet.from_segments([
        _supervision(kids_clips, utt, good.id, 0.0, good.duration),
        lhotse.SupervisionSegment("p1", "piped", 0.0, 1.0, text="PIPED"),
        lhotse.SupervisionSegment("m1", "missing", 0.0, 1.0, text="NO RECORDING"),
    ]).to_file(tmp_path / "supervisions.jsonl.gz")

    report = _prepare(tmp_path / "recordings.jsonl.gz", tmp_path / "out")
    skipped = {r: [i["id"] for i in e["items"]] for r, e in report["skipped"]["by_reason"].items()}
    assert report["kept"] == 1 and skipped == {REASON_UNSUPPORTED_SOURCE: ["p1"], REASON_NO_AUDIO_ENTRY: ["m1"],
                                               REASON_NO_TRANSCRIPT: [unused.id]}
    assert "run the command once" in report["skipped"]["by_reason"][REASON_UNSUPPORTED_SOURCE]["items"][0]["detail"]

    (tmp_path / "recordings.jsonl.gz").unlink()
    with pytest.raises(PrepareError, match=r"needs its recordings manifest; put recordings.jsonl.gz beside it"):
        _prepare(tmp_path / "supervisions.jsonl.gz", tmp_path / "out")
