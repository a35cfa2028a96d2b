"""Speed and pitch perturbation of training clips (kidwhisper.train.augment) and how it meets packing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kidwhisper.audio import SAMPLE_RATE
from kidwhisper.config import ConfigError
from kidwhisper.train.augment import ClipAugment, perturb
from kidwhisper.train.batching import WindowDataset, build_windows
from kidwhisper.train.config import TrainConfig
from kidwhisper.train.loop import train


@pytest.fixture
def make_config(tiny_model_dir, kids_manifests, tmp_path):
    """12 real clips, a tiny random Whisper, float32 (exact comparisons)."""

    def make(name: str, **kw) -> TrainConfig:
        return TrainConfig(model=str(tiny_model_dir), train=str(kids_manifests[0]), dev=str(kids_manifests[1]),
                           out=str(tmp_path / name), batch_size=1, progress=False, mixed_precision="no", **kw)

    return make


def _sine(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)[np.argmax(spec)])


def test_speed_changes_duration_and_pitch_together():
    fast = perturb(_sine(400.0), factor=1.1)
    assert len(fast) == pytest.approx(SAMPLE_RATE / 1.1, abs=2)
    assert _peak_hz(fast) == pytest.approx(440.0, abs=3)
    slow = perturb(_sine(400.0), factor=0.9)
    assert len(slow) == pytest.approx(SAMPLE_RATE / 0.9, abs=2)
    assert _peak_hz(slow) == pytest.approx(360.0, abs=3)


def test_pitch_shift_keeps_the_duration():
    up = perturb(_sine(400.0), semitones=12.0)  # one octave
    assert len(up) == SAMPLE_RATE
    assert _peak_hz(up) == pytest.approx(800.0, abs=8)
    down = perturb(_sine(400.0), semitones=-2.0)
    assert _peak_hz(down) == pytest.approx(400.0 * 2 ** (-2 / 12), abs=6)
    assert len(perturb(np.zeros(100, np.float32), semitones=1.0)) == 100  # shorter than an FFT frame


def test_draws_depend_on_seed_epoch_and_clip_only():
    aug = ClipAugment(speed=0.1, pitch=2.0, seed=3)
    first = [aug.draw(e, c) for e in range(3) for c in range(5)]
    assert [ClipAugment(0.1, 2.0, 3).draw(e, c) for e in range(3) for c in range(5)] == first  # reproducible
    assert len(set(first)) == len(first)  # every (epoch, clip) its own values
    assert all(0.9 <= f <= 1.1 and -2 <= s <= 2 for f, s in first)
    assert ClipAugment(0.1, 2.0, 4).draw(0, 0) != first[0]
    assert ClipAugment(0.0, 0.0).draw(1, 1) == (1.0, 0.0) and not ClipAugment().active
    assert ClipAugment(speed=0.2).stretch == pytest.approx(1.25)
    with pytest.raises(ValueError, match="speed"):
        ClipAugment(speed=0.5)


def test_windows_are_planned_for_the_slowest_speed():
    texts = ["ONE TWO"] * 2
    audios = [np.zeros(int(12 * SAMPLE_RATE), np.float32)] * 2

    class Tok:  # just enough tokenizer for build_windows
        def set_prefix_tokens(self, **kw):
            pass

        def __call__(self, text, add_special_tokens=True):
            class R:
                input_ids = ([1, 2, 3, 4] if add_special_tokens else []) + [7] * len(text.split()) + (
                    [5] if add_special_tokens else [])
            return R()

        def convert_ids_to_tokens(self, ids):
            names = {1: "<|startoftranscript|>", 2: "<|en|>", 3: "<|transcribe|>", 4: "<|notimestamps|>",
                     5: "<|endoftext|>"}
            return [names.get(i, "x") for i in ids]

    plain, _ = build_windows(texts, [len(a) for a in audios], Tok(), True, max_seconds=25.0)
    assert [w.clips for w in plain] == [[0, 1]]  # 12 + 0.2 + 12 s fit in 25 s
    stretched, _ = build_windows(texts, [len(a) for a in audios], Tok(), True, max_seconds=25.0,
                                 stretch=ClipAugment(0.1).stretch)
    assert sorted(w.clips for w in stretched) == [[0], [1]]  # 13.3 + 0.2 + 13.3 s would not
    assert stretched[0].spans == [(0.0, 12.0)]  # spans stay the unperturbed ones


class _FeatureExtractor:
    feature_size = 80

    def __call__(self, wave, sampling_rate, return_tensors):
        class R:
            input_features = [np.resize(np.asarray(wave, np.float32), (80, 3000))]
        return R()


def test_dataset_perturbs_each_clip_per_epoch_and_moves_its_frames(kids_manifests):
    import soundfile as sf

    lines = [json.loads(x) for x in Path(kids_manifests[0]).read_text().splitlines()[:3]]
    audios = [sf.read(x["audio"], dtype="float32")[0] for x in lines]
    from kidwhisper.train.batching import Window, clip_spans

    durations = [len(a) / SAMPLE_RATE for a in audios]
    spans = clip_spans(durations, 0.2)
    window = Window([0, 1, 2], [1, 2], spans[-1][1], [[1], [1], [1]], spans)
    plain = WindowDataset([window], audios, _FeatureExtractor(), clipwise=True, isolate=True)
    aug = ClipAugment(speed=0.1, pitch=1.0, seed=0)
    ds = WindowDataset([window], audios, _FeatureExtractor(), clipwise=True, isolate=True, augment=aug)
    assert ds.cache is None and plain.cache is not None  # features change every epoch: nothing cached
    a0, b0 = ds[0], ds[0]
    np.testing.assert_array_equal(a0["input_features"], b0["input_features"])  # same epoch, same audio
    assert not np.array_equal(a0["input_features"], plain[0]["input_features"])
    lengths = [len(aug(audios[j], 0, j)) / SAMPLE_RATE for j in range(3)]
    assert lengths == pytest.approx([d / aug.draw(0, j)[0] for j, d in enumerate(durations)], abs=1e-3)
    expected = clip_spans(lengths, 0.2)
    from kidwhisper.train.clipwise import clip_frames

    assert torch.equal(a0["frames"], clip_frames(expected, expected[-1][1], 0.2))
    assert not torch.equal(a0["frames"], plain[0]["frames"])
    ds.epoch = 1
    assert not np.array_equal(ds[0]["input_features"], a0["input_features"])


def test_training_with_augmentation_runs_and_is_reproducible(make_config):
    runs = [make_config(f"aug{k}", speed_perturb=0.1, pitch_perturb=2.0, max_steps=2, eval_every=2, patience=None)
            for k in range(2)]
    summaries = [train(c) for c in runs]
    losses = [[json.loads(x)["loss"] for x in (Path(c.out) / "log.jsonl").read_text().splitlines()] for c in runs]
    assert losses[0] == losses[1] and summaries[0]["steps"] == 2
    plain = make_config("plain", max_steps=2, eval_every=2, patience=None)
    train(plain)
    assert [json.loads(x)["loss"] for x in (Path(plain.out) / "log.jsonl").read_text().splitlines()] != losses[0]
    cached = train(make_config("frozen", strategy="lora-decoder", speed_perturb=0.1, max_steps=1, eval_every=1))
    assert not cached["encoder_outputs_cached"]  # the encoder input changes every epoch


def test_config_checks_the_augmentation_flags():
    base = dict(model="m", train="t", dev="d", out="o")
    with pytest.raises(ConfigError, match="--speed-perturb"):
        TrainConfig(**base, speed_perturb=0.6)
    with pytest.raises(ConfigError, match="--pitch-perturb"):
        TrainConfig(**base, pitch_perturb=-1)
    assert TrainConfig(**base, pitch_perturb=2).augments and not TrainConfig(**base).augments
