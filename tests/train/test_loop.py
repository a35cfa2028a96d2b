"""The training loop end to end on a tiny random Whisper and real kids' clips (kidwhisper.train.loop)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from kidwhisper.config import ConfigError, from_dict
from kidwhisper.train import loop, runtime
from kidwhisper.train.config import LoraConfig, TrainConfig
from kidwhisper.train.loop import Trainer, train
from kidwhisper.train.strategies import trainable_state_dict

RUN_FILES = {"adapter", "checkpoints", "train_config.yaml", "log.jsonl", "learning_curve.png", "summary.json"}
CHECKPOINT_FILES = {"trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng_rank0.json", "trainer_state.json",
                    "checksums.sha256"}


@pytest.fixture
def make_config(tiny_model_dir, kids_manifests, tmp_path):
    """12 real clips pack into 2 windows; batch_size 1 -> 2 optimizer steps per epoch."""
    train_m, dev_m = kids_manifests

    def make(name: str = "run", **kw) -> TrainConfig:
        opts = dict(model=str(tiny_model_dir), train=str(train_m), dev=str(dev_m), out=str(tmp_path / name),
                    batch_size=1, epochs=2, progress=False, mixed_precision="no")  # exact comparisons
        return TrainConfig(**{**opts, **kw})

    return make


# --------------------------------------------------------------------------------------------- config
def test_config_validation_names_the_flags():
    base = dict(model="m", train="t", dev="d", out="o")
    with pytest.raises(ConfigError, match="Can't provide both `--warmup-ratio` and `--warmup-steps`"):
        TrainConfig(**base, warmup_ratio=0.1, warmup_steps=10)
    with pytest.raises(ConfigError, match="`--strategy` must be one of lora, lora-decoder"):
        TrainConfig(**base, strategy="adapters")
    with pytest.raises(ConfigError, match="`--batch-size` must be >= 1"):
        TrainConfig(**base, batch_size=0)
    with pytest.raises(ConfigError, match="`--pack-seconds`"):
        TrainConfig(**base, pack_seconds=31)
    with pytest.raises(ConfigError, match="`--pack-single`"):
        TrainConfig(**base, pack_single=1.5)
    with pytest.raises(ConfigError, match="`--pack-mode` must be one of isolated, clips, joined"):
        TrainConfig(**base, pack_mode="window")
    with pytest.raises(ConfigError, match="`--average-best` must be >= 2"):
        TrainConfig(**base, average_best=1)
    with pytest.raises(ConfigError, match="`--device`"):
        TrainConfig(**base, device="tpu")
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"`--label-smoothing` must be in \[0, 1\)"):
            TrainConfig(**base, label_smoothing=bad)
    assert TrainConfig(**base).lr == 1e-3 and TrainConfig(**base, strategy="lora-decoder").lr == 1e-3
    assert TrainConfig(**base, strategy="full").lr == 1e-5 and TrainConfig(**base, strategy="decoder", lr=3e-5).lr == 3e-5
    assert TrainConfig(**base).warmup(100) == 10 and TrainConfig(**base, warmup_steps=7).warmup(100) == 7
    cfg = from_dict(TrainConfig, {**base, "lora": {"r": 8, "target_modules": ["q_proj"]}})
    assert cfg.lora == LoraConfig(r=8, target_modules=["q_proj"])
    with pytest.raises(ConfigError, match="unknown option"):
        from_dict(TrainConfig, {**base, "learning_rate": 1})


@pytest.mark.parametrize("strategy, expected", [("lora", True), ("full", True), ("encoder", True),
                                                ("lora-decoder", False), ("decoder", False)])
def test_spec_augment_defaults_on_where_the_encoder_trains(strategy, expected):
    """SpecAugment (the recommended recipe's winning lever) is on by default unless the encoder is frozen (its
    outputs are then cached); the saved config holds the resolved value and an explicit choice is kept."""
    base = dict(model="m", train="t", dev="d", out="o", strategy=strategy)
    cfg = TrainConfig(**base)
    assert cfg.spec_augment is expected and cfg.mask_time_prob == 0.05 and cfg.mask_feature_prob == 0.05
    assert TrainConfig(**base, spec_augment=not expected).spec_augment is (not expected)
    assert from_dict(TrainConfig, asdict(cfg)) == cfg


def test_dev_wer_aggregates_and_skips_empty_references(monkeypatch, tmp_path, caplog):
    from kidwhisper.decode import Decoded

    refs = ["WE CALL IT BEAR", "YES", "[noise]"]
    hyps = ["We call it a bear.", "", "hello"]

    def decode(model, processor, audios, language, batch_size, **kwargs):
        return [Decoded(h, [1], "en", False) for h in hyps[: len(audios)]]

    monkeypatch.setattr(loop, "transcribe_arrays", decode)
    config = TrainConfig(model="m", train="t", dev="d", out=str(tmp_path), progress=False)
    with caplog.at_level("INFO", logger="kidwhisper.train.loop"):
        wer, _ = loop.evaluate_dev(None, None, [np.zeros(1)] * 3, refs, config)
    skipped = int(re.search(r"dev WER skips (\d+) references", caplog.text).group(1))
    assert skipped == 1  # "[noise]" normalizes to nothing
    assert wer == pytest.approx((1 + 1) / (4 + 1))  # one insertion, one deletion over 5 reference words
    with pytest.raises(ValueError, match="normalizes to empty"):
        loop.evaluate_dev(None, None, [np.zeros(1)], ["[noise]"], config)


# ---------------------------------------------------------------------------------------- end to end
def test_label_smoothing_reaches_the_training_loss(make_config):
    """The first step's loss (same weights, same window) is the smoothed cross-entropy only when asked."""
    def first_loss(name, **kw):
        config = make_config(name, max_steps=1, eval_every=10, **kw)
        train(config)
        return json.loads((Path(config.out) / "log.jsonl").read_text().splitlines()[0])["loss"]

    plain, smoothed = first_loss("plain"), first_loss("smoothed", label_smoothing=0.1)
    assert plain == first_loss("plain-again") and smoothed != plain


def test_lora_run_writes_the_run_dir(make_config):
    from kidwhisper.models.load import load_model

    config = make_config()
    summary = train(config)
    out = Path(config.out)
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"last", "previous"}
    for name in ("last", "previous"):
        assert {p.name for p in (out / "checkpoints" / name).iterdir()} == CHECKPOINT_FILES
    assert {"adapter_config.json", "adapter_model.safetensors", "kidwhisper_adapter.json"} <= \
        {p.name for p in (out / "adapter").iterdir()}
    meta = json.loads((out / "adapter" / "kidwhisper_adapter.json").read_text())
    assert meta["base_model"] == config.model and meta["strategy"] == "lora"

    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "dev_wer" in r] == [2, 4]  # once per epoch by default
    assert [r["step"] for r in rows if "dev_truncated" in r] == [2, 4]  # runaway decodes, with each dev WER
    assert all(0 <= r["dev_truncated"] <= 3 for r in rows if "dev_wer" in r)
    assert all({"step", "epoch", "loss", "lr", "elapsed_s"} <= set(r) for r in rows)
    assert (out / "learning_curve.png").stat().st_size > 10_000

    assert summary == json.loads((out / "summary.json").read_text())
    assert (summary["trainable_params"], summary["total_params"]) == (6144, 871_232)
    assert summary["n_train_clips"] == 12 and summary["n_windows"] == 2 and summary["steps"] == 4
    assert summary["epochs_run"] == 2 and not summary["stopped_early"] and summary["n_dev_clips"] == 3
    assert summary["best_step"] in (2, 4) and 0 < summary["best_dev_wer"]
    assert summary["clips_per_s"] > 0 and summary["peak_rss_mb"] > 0
    saved = from_dict(TrainConfig, yaml.safe_load((out / "train_config.yaml").read_text()))
    assert saved == config

    weights = load_file(str(out / "checkpoints" / "last" / "trainable.safetensors"))
    assert weights and all("lora_" in k for k in weights)  # frozen weights are not in the checkpoint
    model, _ = load_model(config.model, adapter=str(out / "adapter"), device="cpu")
    assert any("lora_" in n for n, _ in model.named_parameters())
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(config)


@pytest.mark.parametrize("strategy, trains, frozen", [
    ("decoder", "model.decoder.", "model.encoder."),
    ("encoder", "model.encoder.", "model.decoder."),
])
def test_frozen_parameters_do_not_change(make_config, tiny_model_dir, strategy, trains, frozen):
    from transformers import WhisperForConditionalGeneration

    from kidwhisper.models.load import load_model

    config = make_config(strategy=strategy, max_steps=2, lr=1e-2)
    summary = train(config)
    assert summary["encoder_outputs_cached"] is (strategy == "decoder")
    before = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir).state_dict()
    model, processor = load_model(str(Path(config.out) / "model"), device="cpu")  # best weights, loadable
    after = model.state_dict()
    assert model.generation_config.task == "transcribe" and "en" in str(model.generation_config.language)
    changed = {k for k in before if not torch.equal(before[k], after[k]) and k != "proj_out.weight"}  # tied
    assert changed and all(k.startswith(trains) for k in changed)
    assert not any(k.startswith(frozen) for k in changed)
    assert "model.encoder.embed_positions.weight" not in changed  # fixed sinusoids


class Killed(Exception):
    pass


@pytest.mark.parametrize("strategy, spec_augment", [("lora", True), ("lora-decoder", False)])
def test_resume_after_a_kill_ends_like_an_uninterrupted_run(make_config, monkeypatch, tmp_path, strategy,
                                                           spec_augment):
    opts = dict(strategy=strategy, spec_augment=spec_augment, max_steps=6, eval_every=3, save_every=1,
                patience=None)
    reference = train(make_config("uninterrupted", **opts))

    killed = make_config("killed", **opts)
    save, step = Trainer.save_checkpoint, Trainer._step

    def save_and_copy(self):
        save(self)
        if self.state.global_step == 3:
            shutil.copytree(Path(self.config.out) / "checkpoints" / "last", tmp_path / "step3")

    def die_at_step_6(self, micro_batches, shards):
        if self.state.global_step == 5:
            raise Killed
        return step(self, micro_batches, shards)

    monkeypatch.setattr(Trainer, "save_checkpoint", save_and_copy)
    monkeypatch.setattr(Trainer, "_step", die_at_step_6)
    with pytest.raises(Killed):
        train(killed)
    monkeypatch.undo()
    last = Path(killed.out) / "checkpoints" / "last"
    assert json.loads((last / "trainer_state.json").read_text())["global_step"] == 5
    shutil.rmtree(last)  # go back to the step-3 checkpoint: steps 4 and 5 must be redone
    shutil.copytree(tmp_path / "step3", last)

    resumed = train(killed, resume=True)
    assert resumed["steps"] == reference["steps"] == 6 and resumed["resumed"]
    assert resumed["evals"] == reference["evals"] and resumed["best_step"] == reference["best_step"]
    final = [load_file(str(Path(c) / "checkpoints" / "last" / "trainable.safetensors"))
             for c in (make_config("uninterrupted").out, killed.out)]
    assert final[0].keys() == final[1].keys()
    for k in final[0]:
        torch.testing.assert_close(final[1][k], final[0][k], rtol=1e-5, atol=1e-7)
    logs = [[json.loads(x) for x in (Path(c) / "log.jsonl").read_text().splitlines()]
            for c in (make_config("uninterrupted").out, killed.out)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-4)
    with pytest.raises(ConfigError, match="differ from"):
        train(make_config("killed", **{**opts, "seed": 1}), resume=True)


def test_a_resume_that_resolves_another_precision_says_so(make_config, monkeypatch, caplog):
    """--mixed-precision auto trained in bf16 on one machine, resumed on one without native bf16: the run
    continues in float32 and warns that it will not end like an uninterrupted run."""
    import kidwhisper.train.runtime as runtime

    config = make_config("moved", mixed_precision="auto", max_steps=2, eval_every=2, save_every=1, patience=None)
    step = Trainer._step

    def die_at_step_2(self, micro_batches, shards):
        if self.state.global_step == 1:
            raise Killed
        return step(self, micro_batches, shards)

    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: True)
    monkeypatch.setattr(Trainer, "_step", die_at_step_2)
    with pytest.raises(Killed):
        train(config)
    last = Path(config.out) / "checkpoints" / "last"
    assert json.loads((last / "trainer_state.json").read_text())["mixed_precision"] == "bf16"
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: False)
    monkeypatch.setattr(Trainer, "_step", step)
    with caplog.at_level("WARNING"):
        summary = train(config, resume=True)
    assert "trained in bf16 until step 1 and continues in float32" in caplog.text
    assert summary["mixed_precision"] == "no" and summary["steps"] == 2


def _step_of(checkpoint: Path) -> int:
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_in_a_moved_run_dir(make_config, monkeypatch, tmp_path,
                                                                                caplog):
    """Killed after step 5: last = step 5, previous = step 4. last/optimizer.pt is then cut short and the run
    directory moved; the resume (given the new place, spelled relative with a trailing slash) warns naming
    the bad file, continues from step 4 and ends exactly where an uninterrupted run ends."""
    opts = dict(max_steps=6, eval_every=3, save_every=1, patience=None)
    reference = train(make_config("uninterrupted", **opts))
    killed = make_config("killed", **opts)
    step = Trainer._step

    def die_at_step_6(self, micro_batches, shards):
        if self.state.global_step == 5:
            raise Killed
        return step(self, micro_batches, shards)

    monkeypatch.setattr(Trainer, "_step", die_at_step_6)
    with pytest.raises(Killed):
        train(killed)
    monkeypatch.undo()
    ckpts = Path(killed.out) / "checkpoints"
    assert (_step_of(ckpts / "last"), _step_of(ckpts / "previous")) == (5, 4)
    optimizer = ckpts / "last" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:1000])

    moved = tmp_path / "moved" / "run"
    moved.parent.mkdir()
    shutil.move(killed.out, moved)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="kidwhisper.train.checkpoint"):
        resumed = train(make_config("killed", **opts, out="moved/run/"), resume=True)
    assert "checkpoints/last/optimizer.pt: its sha256 differs" in caplog.text
    assert resumed["steps"] == 6 and resumed["evals"] == reference["evals"]
    final = [load_file(str(Path(d) / "checkpoints" / "last" / "trainable.safetensors"))
             for d in (make_config("uninterrupted").out, moved)]
    for k in final[0]:
        torch.testing.assert_close(final[1][k], final[0][k], rtol=1e-5, atol=1e-7)
    logs = [[json.loads(x) for x in (Path(d) / "log.jsonl").read_text().splitlines()]
            for d in (make_config("uninterrupted").out, moved)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-4)
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["last", "last.damaged", "previous"]


def test_resume_accepts_the_run_dir_spelled_differently(make_config, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from kidwhisper.config import save_config
    from kidwhisper.train import checkpoint as ckpt_io

    config = make_config("runs/kill")
    out = Path(config.out)
    save_config(config, out / "train_config.yaml")
    tmp = ckpt_io.tmp_dir(out)
    tmp.mkdir(parents=True)
    ckpt_io.write_rng(tmp, 0)
    ckpt_io.write_files(tmp, {"w": torch.zeros(2)}, {"state": {}, "param_groups": []}, {"last_epoch": 1})
    ckpt_io.finish(tmp, ckpt_io.TrainerState(global_step=1, epoch=0, step_in_epoch=1, world_size=1,
                                             windows_fingerprint="w"))
    monkeypatch.chdir(tmp_path)
    for spelling in ("runs/kill/", "./runs/kill", str(out.resolve()), str(tmp_path / "runs" / ".." / "runs" / "kill")):
        trainer = Trainer(make_config(out=spelling), resume=True)
        trainer.acc = SimpleNamespace(process_index=0)
        trainer._check_run_dir()
        assert trainer.ckpt.state.global_step == 1
    with pytest.raises(ConfigError, match=r"option\(s\) \['seed'\] differ"):
        trainer = Trainer(make_config(out="runs/kill", seed=1), resume=True)
        trainer.acc = SimpleNamespace(process_index=0)
        trainer._check_run_dir()


def test_out_and_language_are_checked_before_loading(make_config, tmp_path, monkeypatch):
    from kidwhisper.config import OutputError

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded before the options were checked")

    monkeypatch.setattr(loop, "load_model", must_not_load)
    monkeypatch.setattr(loop, "load_usable_audios", must_not_load)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(OutputError, match="--out .*file is an existing file"):
        train(make_config("file"))
    with pytest.raises(OutputError, match="--out .*file/run: .*file is a file, so no directory can be made under it"):
        train(make_config("file/run"))
    with pytest.raises(ConfigError, match="--language xx: not a language .* knows; use one of .*en.*fr"):
        train(make_config(language="xx"))
    with pytest.raises(ConfigError, match="--language auto: training needs the language of the data"):
        train(make_config(language="auto"))
    with pytest.raises(ConfigError, match="--language de: whisper-tiny.en is an English-only model"):
        train(make_config(model="whisper-tiny.en", language="de"))
    assert (tmp_path / "file").read_text() == "mine" and not (tmp_path / "run").exists()


def test_a_full_disk_stops_training_in_one_line_and_keeps_the_last_checkpoint(make_config, full_disk, capsys):
    """The second checkpoint's optimizer.pt hits a full disk: `kidwhisper train` says so in one line naming
    the file, leaves no temp file, and the step-1 checkpoint stays usable; damaging that one too makes
    --resume fail with one line naming the bad file."""
    from kidwhisper.cli import main
    from kidwhisper.train import checkpoint as ckpt_io

    config = make_config("full", max_steps=2, eval_every=2, save_every=1)
    optimizer_files = []

    def second_optimizer_file(path: Path) -> bool:
        if path.name == "optimizer.pt":
            optimizer_files.append(path)
            return len(optimizer_files) == 2
        return False

    refused = full_disk(Path(config.out), when=second_optimizer_file)
    argv = ["train", "--model", config.model, "--train", config.train, "--dev", config.dev, "--out", config.out,
            "--batch-size", "1", "--max-steps", "2", "--eval-every", "2", "--save-every", "1",
            "--mixed-precision", "no", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err == f"kidwhisper train: error: no space left on device writing {refused[0]}; free some space on that " \
                  f"disk (or write to another directory) and run again"
    assert refused[0].parent.name == ".last.tmp"
    out = Path(config.out)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last"]
    assert ckpt_io.load_usable(out).state.global_step == 1
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]

    weights = out / "checkpoints" / "last" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"kidwhisper train: error: --resume: no usable checkpoint in {out / 'checkpoints'}: "
                          f"{weights}: its sha256 differs")


def test_best_checkpoint_is_the_lowest_dev_wer_and_patience_stops(make_config, monkeypatch):
    scripted = iter([0.9, 0.4, 0.6, 0.7, 0.1, 0.1])
    seen = {}

    def fake_dev(model, processor, audios, refs, config):
        seen[len(seen) + 1] = {k.replace(".default", ""): v.clone() for k, v in trainable_state_dict(model).items()}
        return next(scripted), 0

    monkeypatch.setattr(loop, "evaluate_dev", fake_dev)
    config = make_config(max_steps=10, eval_every=1, patience=2)
    summary = train(config)
    assert summary["steps"] == 4 and summary["stopped_early"]  # 0.6 and 0.7 do not beat 0.4
    assert (summary["best_step"], summary["best_dev_wer"]) == (2, 0.4)
    assert [e["dev_wer"] for e in summary["evals"]] == [0.9, 0.4, 0.6, 0.7]
    adapter = load_file(str(Path(config.out) / "adapter" / "adapter_model.safetensors"))
    assert adapter.keys() == seen[2].keys()
    for k, v in adapter.items():
        assert torch.equal(v, seen[2][k])  # the best weights, not the last
        assert not torch.equal(seen[2][k], seen[4][k]) or "lora_A" in k


def _adapter(run_dir: Path, sub: str) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / sub / "adapter_model.safetensors"))


@pytest.mark.parametrize("average_wer, kept", [(0.3, True), (0.45, False)])
def test_average_best_scores_the_mean_of_the_n_best_and_keeps_the_lower(make_config, monkeypatch, average_wer,
                                                                         kept):
    """--average-best 2: the weights of the two lowest dev WERs (steps 2 and 3) are averaged and scored;
    RUN_DIR/adapter holds the average only when it scores lower, and both candidates stay on disk."""
    scripted = iter([0.9, 0.4, 0.5, 0.7, average_wer])
    seen = {}

    def fake_dev(model, processor, audios, refs, config):
        seen[len(seen) + 1] = {k.replace(".default", ""): v.clone() for k, v in trainable_state_dict(model).items()}
        return next(scripted), 0

    monkeypatch.setattr(loop, "evaluate_dev", fake_dev)
    config = make_config(max_steps=4, eval_every=1, patience=None, average_best=2)
    summary = train(config)
    out = Path(config.out)
    assert summary["average"] == {"steps": [2, 3], "dev_wer": average_wer, "dev_truncated": 0, "kept": kept,
                                  "best_checkpoint_dev_wer": 0.4, "best_checkpoint_step": 2}
    assert summary["best_dev_wer"] == min(average_wer, 0.4) and summary["best_step"] == 2
    assert len(seen) == 5
    for k in seen[5]:  # the fifth evaluation decoded the mean of the weights at steps 2 and 3
        torch.testing.assert_close(seen[5][k], (seen[2][k] + seen[3][k]) / 2)
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-0000002.safetensors",
                                                                   "step-0000003.safetensors"]
    expected = {"average": seen[5], "best-checkpoint": seen[2], "adapter": seen[5] if kept else seen[2]}
    for sub, weights in expected.items():
        saved = _adapter(out, sub)
        assert saved.keys() == weights.keys()
        for k, v in saved.items():
            assert torch.equal(v, weights[k]), (sub, k)
    meta = json.loads((out / "average" / "kidwhisper_adapter.json").read_text())
    assert meta["averaged_steps"] == [2, 3] and meta["dev_wer"] == average_wer
    assert (out / "average" / "README.md").exists()


def test_average_best_resumes_after_a_kill_between_a_snapshot_and_its_checkpoint(make_config, monkeypatch):
    """Killed after step 3's evaluation (0.3, among the two best) and snapshot but before its checkpoint, the
    run resumes from step 2 and step 3 now scores 0.8 (as on other hardware): the two best are steps 1 and 2,
    whose weights must still be on disk, and the leftover step-3 snapshot must not be averaged."""
    scripted = iter([0.5, 0.4, 0.3,  # the killed run
                     0.8, 0.6, 0.35])  # resumed: steps 3 and 4, then the average
    seen = []

    def fake_dev(model, processor, audios, refs, config):
        seen.append({k.replace(".default", ""): v.clone() for k, v in trainable_state_dict(model).items()})
        return next(scripted), 0

    monkeypatch.setattr(loop, "evaluate_dev", fake_dev)
    config = make_config(max_steps=4, eval_every=1, patience=None, average_best=2)
    save = Trainer.save_checkpoint

    def die_before_checkpoint_3(self):
        if self.state.global_step == 3:
            assert loop.snapshot_path(self.out, 3).exists()
            raise Killed
        save(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", die_before_checkpoint_3)
    with pytest.raises(Killed):
        train(config)
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    summary = train(config, resume=True)
    assert [e["dev_wer"] for e in summary["evals"]] == [0.5, 0.4, 0.8, 0.6]
    assert summary["average"]["steps"] == [1, 2] and summary["average"]["kept"]
    for k, v in seen[-1].items():  # the average of the weights evaluated at steps 1 and 2
        torch.testing.assert_close(v, (seen[0][k] + seen[1][k]) / 2)
    assert sorted(p.name for p in (Path(config.out) / "snapshots").iterdir()) == \
        [loop.snapshot_path(".", st).name for st in (1, 2)]


def test_n_best_steps_and_average_weights(tmp_path):
    from safetensors.torch import save_file

    evals = [{"step": 1, "dev_wer": 0.5}, {"step": 2, "dev_wer": 0.3}, {"step": 3, "dev_wer": 0.5},
             {"step": 4, "dev_wer": 0.2}]
    assert loop.n_best_steps(evals, 3) == [1, 2, 4]  # the tie at 0.5 goes to the earlier step
    save_file({"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.float16)}, tmp_path / "a")
    save_file({"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.float16)}, tmp_path / "b")
    avg = loop.average_weights([tmp_path / "a", tmp_path / "b"])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and avg["h"].dtype == torch.float16
    assert float(avg["h"]) == 1.5
    save_file({"w": torch.tensor([1.0, 2.0])}, tmp_path / "c")
    with pytest.raises(ConfigError, match="holds other parameters than"):
        loop.average_weights([tmp_path / "a", tmp_path / "c"])


@pytest.mark.parametrize("eval_precision, expected", [(None, torch.float32), ("bf16", torch.bfloat16)])
def test_dev_decoding_runs_in_the_eval_precision(make_config, monkeypatch, eval_precision, expected):
    """--eval-precision bf16: the dev decoding's matrix products run in bf16 (autocast); unset on a CPU:
    float32, as `kidwhisper evaluate` decodes by default."""
    seen = []

    def spy_dev(model, processor, audios, refs, config):
        q = model.get_base_model().model.encoder.layers[0].self_attn.q_proj
        seen.append(q(torch.zeros(1, q.in_features)).dtype)
        return 0.5, 0

    monkeypatch.setattr(loop, "evaluate_dev", spy_dev)
    train(make_config(max_steps=1, eval_precision=eval_precision))
    assert seen == [expected]


def test_fp16_dev_decoding_on_a_cpu_is_refused_before_training(make_config, capsys):
    config = make_config(eval_precision="fp16", device="cpu")
    with pytest.raises(ConfigError, match="--eval-precision fp16 needs a GPU"):
        train(config)
    assert not (Path(config.out) / "checkpoints").exists()
    with pytest.raises(ConfigError, match="`--eval-precision` must be one of float32, bf16, fp16, auto"):
        make_config(eval_precision="half")


WORKER = textwrap.dedent("""
    import json
    import sys
    from safetensors.torch import save_file
    from kidwhisper.config import from_dict, read_config_file
    from kidwhisper.train.batching import WindowDataset
    from kidwhisper.train.config import TrainConfig
    from kidwhisper.train.loop import Trainer
    from kidwhisper.train.strategies import trainable_state_dict

    trained, read = [], []
    step, getitem = Trainer._step, WindowDataset.__getitem__

    def recording_step(self, micro_batches, shards):
        trained.extend([i for sh in shards if sh.weight > 0 for i in sh.windows])
        return step(self, micro_batches, shards)

    def recording_getitem(self, i):
        read.append(i)
        return getitem(self, i)

    Trainer._step, WindowDataset.__getitem__ = recording_step, recording_getitem
    trainer = Trainer(from_dict(TrainConfig, read_config_file(sys.argv[1])))
    trainer.fit()
    weights = trainable_state_dict(trainer.acc.unwrap_model(trainer.model))
    save_file({k: v.contiguous() for k, v in weights.items()}, f"{sys.argv[2]}{trainer.rank}.safetensors")
    with open(f"{sys.argv[2]}{trainer.rank}.json", "w") as f:
        json.dump({"trained": trained, "read": read}, f)
""")


def test_two_cpu_processes_end_with_identical_weights_and_train_every_window_once(make_config, kids_manifests,
                                                                                  tmp_path):
    """11 unpacked windows, 1 per process per step: 6 steps, the last one with a window for rank 0 only (rank 1
    runs a stand-in at weight 0). Over the epoch every window is trained exactly once, and each process reads
    only the windows it trains (plus the stand-in)."""
    train_manifest = tmp_path / "train11.jsonl"
    train_manifest.write_text("\n".join(kids_manifests[0].read_text().splitlines()[:11]) + "\n")
    config = make_config("ddp", train=str(train_manifest), pack=False, epochs=1, eval_every=6)
    cfg_file = tmp_path / "ddp.yaml"
    from kidwhisper.config import save_config

    save_config(config, cfg_file)
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "worker.py"), str(cfg_file), str(tmp_path / "rank")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k])
    assert any(ranks[0][k].abs().sum() > 0 for k in ranks[0] if "lora_B" in k)  # it trained (B starts at 0)
    summary = json.loads((Path(config.out) / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["windows_per_step"] == 2 and summary["steps"] == 6
    assert summary["n_windows"] == 11 and summary["clips_per_s"] > 0
    assert (Path(config.out) / "checkpoints" / "last" / "rng_rank1.json").exists()
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(seen[0]["trained"] + seen[1]["trained"]) == list(range(11))  # each window once, none missed
    assert [len(s["trained"]) for s in seen] == [6, 5]
    assert set(seen[0]["read"]) == set(seen[0]["trained"])
    assert set(seen[1]["read"]) - set(seen[1]["trained"]) <= set(seen[0]["trained"][-1:])  # the stand-in


def _losses(config: TrainConfig) -> list[float]:
    return [json.loads(x)["loss"] for x in (Path(config.out) / "log.jsonl").read_text().splitlines()]


def test_pack_modes_agree_when_every_clip_is_alone(make_config):
    """With one clip per window the clip-wise row is the joined row (same tokens, positions, full cross-
    attention) and isolation changes nothing, so training is identical; with packed windows the three modes
    differ (and train, with the encoder cached too)."""
    alone = dict(pack_single=1.0, max_steps=3, eval_every=3, batch_size=4)
    runs = {mode: make_config(f"{mode}1", pack_mode=mode, **alone) for mode in ("joined", "clips", "isolated")}
    for config in runs.values():
        train(config)
    assert _losses(runs["clips"]) == pytest.approx(_losses(runs["joined"]), rel=1e-5)
    assert _losses(runs["isolated"]) == pytest.approx(_losses(runs["joined"]), rel=1e-5)
    packed = {}
    for mode in ("joined", "clips", "isolated"):
        config = make_config(f"packed-{mode}", pack_mode=mode, strategy="lora-decoder", max_steps=2, eval_every=2)
        summary = train(config)
        assert summary["encoder_outputs_cached"] and summary["n_windows"] == 2
        packed[mode] = _losses(config)
    assert all(np.isfinite(packed["clips"] + packed["isolated"]))
    assert len({round(packed[m][0], 4) for m in packed}) == 3  # three different training signals
    assert train(make_config("lora-isolated", max_steps=1, eval_every=1))["steps"] == 1  # default, encoder trains


def test_mixed_precision_auto_is_bf16_only_where_native(make_config):
    summary = train(make_config("auto", mixed_precision="auto", max_steps=2, eval_every=2))
    assert summary["mixed_precision"] == ("bf16" if runtime.cpu_bf16_supported() else "no")
    assert summary["steps"] == 2 and summary["best_dev_wer"] > 0  # dev decoded (in float32) after bf16 steps
    assert TrainConfig(model="m", train="t", dev="d", out="o").mixed_precision == "auto"


def test_isolated_packing_trains_the_same_with_gradient_checkpointing(make_config):
    """Checkpointing recomputes the forward during backward: the packing masks must still be in place then,
    or the gradients (and so the second step's loss and the weights) would differ."""
    runs = [make_config(f"ckpt-{on}", gradient_checkpointing=on, max_steps=2, eval_every=2, lr=1e-2)
            for on in (False, True)]
    for config in runs:
        train(config)
    assert _losses(runs[1]) == pytest.approx(_losses(runs[0]), rel=1e-5)
    weights = [load_file(str(Path(c.out) / "checkpoints" / "last" / "trainable.safetensors")) for c in runs]
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-5, atol=1e-6)


def test_corrupt_or_empty_clips_are_skipped_and_never_trained_on(make_config, kids_manifests, tmp_path, caplog):
    """A manifest line whose audio is random bytes (decodes to nothing) or an empty file is skipped, logged and
    counted, in --train and --dev alike; the good clips train exactly as without it (same windows, same loss)."""
    import soundfile as sf

    (tmp_path / "noise.flac").write_bytes(np.random.default_rng(0).bytes(20000))
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000, subtype="PCM_16")
    bad = [json.dumps({"id": "noise", "audio": str(tmp_path / "noise.flac"), "duration": 2.0, "text": "RANDOM"}),
           json.dumps({"id": "empty", "audio": str(tmp_path / "empty.wav"), "duration": 1.0, "text": "NOTHING"})]
    manifests = {}
    for name, path in zip(("train", "dev"), kids_manifests, strict=True):
        lines = path.read_text().splitlines()
        manifests[name] = tmp_path / f"{name}-with-bad.jsonl"
        manifests[name].write_text("\n".join([lines[0], bad[0], *lines[1:], bad[1]]) + "\n")
    clean = make_config("clean", max_steps=1, eval_every=1)
    dirty = make_config("dirty", max_steps=1, eval_every=1, train=str(manifests["train"]), dev=str(manifests["dev"]))
    train(clean)
    with caplog.at_level(logging.WARNING, logger="kidwhisper"):
        summary = train(dirty)
    skipped = {"unreadable or corrupt audio": 1, "empty audio (no samples)": 1}
    assert summary["skipped_train_clips"] == skipped and summary["skipped_dev_clips"] == skipped
    assert summary["n_train_clips"] == 12 and summary["n_dev_clips"] == 3
    assert "skipped clip noise (unreadable or corrupt audio)" in caplog.text
    assert "skipped clip empty (empty audio (no samples))" in caplog.text
    states = [json.loads((Path(c.out) / "checkpoints" / "last" / "trainer_state.json").read_text())
              for c in (clean, dirty)]
    assert states[0]["windows_fingerprint"] == states[1]["windows_fingerprint"]
    assert _losses(dirty) == _losses(clean)
