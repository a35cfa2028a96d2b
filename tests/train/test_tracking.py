"""Train-side outputs besides the weights: --report-to tensorboard and the first model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kidwhisper.config import ConfigError
from kidwhisper.train.config import TrainConfig
from kidwhisper.train.loop import train


@pytest.fixture
def config(tiny_model_dir, kids_manifests, tmp_path):
    """12 real clips in 2 windows, batch_size 1: 4 optimizer steps over 2 epochs, dev WER at steps 2 and 4."""
    train_m, dev_m = kids_manifests
    return TrainConfig(model=str(tiny_model_dir), train=str(train_m), dev=str(dev_m), out=str(tmp_path / "run"),
                       batch_size=1, epochs=2, progress=False, mixed_precision="no", report_to="tensorboard")


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_report_to_tensorboard_writes_loss_lr_and_dev_wer(config):
    pytest.importorskip("tensorboard")
    train(config)
    out = Path(config.out)
    logdir = out / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    got = scalars(logdir)
    assert set(got) == {"train/loss", "train/lr", "dev/wer"}
    evals = [r for r in rows if "dev_wer" in r]
    assert [s for s, _ in got["train/loss"]] == [s for s, _ in got["train/lr"]] == [r["step"] for r in rows]
    assert [s for s, _ in got["dev/wer"]] == [r["step"] for r in evals] == [2, 4]
    assert [v for _, v in got["train/loss"]] == pytest.approx([r["loss"] for r in rows])  # float32 in the file
    assert [v for _, v in got["train/lr"]] == pytest.approx([r["lr"] for r in rows])
    assert [v for _, v in got["dev/wer"]] == pytest.approx([100 * r["dev_wer"] for r in evals])

    card = (out / "adapter" / "README.md").read_text()  # the first model card, with the dev WER of the weights
    summary = json.loads((out / "summary.json").read_text())
    assert card.startswith("---\nbase_model: ") and "library_name: peft" in card
    assert f"step {summary['best_step']} of the lowest dev WER, {100 * summary['best_dev_wer']:.1f} %" in card
    assert "No test evaluation yet" in card and "Model Card for Model ID" not in card  # peft's template replaced


def test_report_to_tensorboard_without_the_package_says_how_to_install_it(config, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(ConfigError, match=r"--report-to tensorboard needs the tensorboard package: pip install "
                                          r"'kidwhisper\[tensorboard\]'"):
        train(config)
    assert not Path(config.out).exists()  # refused before anything was written


def test_report_to_is_checked_and_off_by_default(config):
    assert TrainConfig(model="m", train="t", dev="d", out="o").report_to == "none"
    with pytest.raises(ConfigError, match="`--report-to` must be one of none, tensorboard; got 'wandb'"):
        TrainConfig(model="m", train="t", dev="d", out="o", report_to="wandb")
