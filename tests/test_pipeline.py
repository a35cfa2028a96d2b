"""`kidwhisper run`: the whole job from one config, on real clips with a tiny random Whisper."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shared_data import SHARED_DATA

from kidwhisper.config import ConfigError
from kidwhisper.pipeline import RunConfig, load_run_config


@pytest.mark.slow
def test_run_prepares_evaluates_trains_and_compares(tmp_path, tiny_model_dir):
    if not SHARED_DATA.exists():
        pytest.skip("shared data not found")
    cfg = {"out": str(tmp_path / "run"), "data": str(SHARED_DATA), "model": str(tiny_model_dir),
           "test_sets": {"kids-test": "speechocean762-kids/test"}, "limit_train": 6, "limit_dev": 3, "limit_test": 3,
           "train": {"strategy": "lora", "max_steps": 2, "batch_size": 2, "patience": None}, "eval_batch_size": 3,
           "beam_size": 2}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "kidwhisper", "run", str(tmp_path / "run.yaml"), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "run"
    assert (out / "run_config.yaml").exists()
    for d in ("data/train", "data/dev", "data/kids-test"):
        assert (out / d / "manifest.jsonl").exists()
    assert len((out / "data" / "kids-test-3" / "manifest.jsonl").read_text().splitlines()) == 3
    assert (out / "eval" / "baseline-en" / "kids-test" / "summary.json").exists()
    assert (out / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "run" / "eval" / "kids-test" / "summary.json").exists()
    for d in ("eval/baseline-en-beam2/kids-test", "run/eval-beam2/kids-test"):  # beam_size: greedy and beams
        decoding = json.loads((out / d / "summary.json").read_text())["decoding"]
        assert decoding["beam_size"] == 2 and decoding["fallback"] == "greedy"
    rows = list(csv.DictReader(open(out / "report" / "comparison.csv")))
    assert len(rows) == 4 and sum("lora" in row["configuration"] for row in rows) == 2
    assert sum("2 beams + greedy fallback" in row["configuration"] for row in rows) == 2
    report = (out / "report" / "report.md").read_text()
    for row in rows:  # both configurations, each with its kids-test WER as the comparison table has it
        assert f"| {row['configuration']} | kids-test | {row['n_utts']} (" in report
        assert f"| {float(row['wer_pct']):.1f} |" in report
    assert "**Small test sets.** These results come from small subsets (kids-test: 3 clips;" in r.stdout
    card = (out / "run" / "adapter" / "README.md").read_text()  # the model card, with the test results
    assert "model-index:" in card and "name: speechocean762 kids-test (3 clips" in card
    assert "No test evaluation yet" not in card and "With 2 beams + greedy fallback (`--beam-size 2`" in card
    # A second run finds every step done and changes nothing.
    before = (out / "run" / "summary.json").stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "run" / "summary.json").stat().st_mtime_ns == before


def test_run_config_rejects_misplaced_options(tmp_path):
    with pytest.raises(ConfigError, match="top level"):
        RunConfig(out="x", train={"model": "whisper-base"})
    (tmp_path / "c.yaml").write_text("out: x\nepochs: 3\n")
    with pytest.raises(ConfigError, match="unknown option.*epochs"):
        load_run_config(tmp_path / "c.yaml")


def test_run_without_the_data_says_how_to_build_it(tmp_path):
    """`--data` overrides the config's `data:`; a missing set names the recipe that builds it."""
    config = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
    r = subprocess.run([sys.executable, "-m", "kidwhisper", "run", str(config), "--data", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "run"), "-q"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{tmp_path / 'nope' / 'speechocean762-kids' / 'train'}: not found" in r.stderr
    assert "kidwhisper recipe speechocean762 CORPUS_DIR OUT_DIR" in r.stderr and "Traceback" not in r.stderr


def test_shipped_configs_load():
    from kidwhisper.train.config import TrainConfig

    for name in ("quick", "reference"):
        cfg = load_run_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
        TrainConfig(model=cfg.model, train="t", dev="d", out="o", **cfg.train)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "configs" /
                                                          "ablation").glob("*.yaml")))
def test_ablation_configs_load_and_write_their_own_run(name):
    """Every ablation row is a valid train config that writes to runs/ablation/<row> (results/ablation.sh
    copies from there)."""
    from kidwhisper.config import from_dict, read_config_file
    from kidwhisper.train.config import TrainConfig

    cfg = from_dict(TrainConfig, read_config_file(Path(__file__).resolve().parents[1] / "configs" / "ablation" / name))
    assert cfg.out == f"runs/ablation/{name.removesuffix('.yaml')}"
    assert cfg.train == "data/kids-train" and cfg.dev == "data/kids-dev" and cfg.model == "whisper-base"


@pytest.mark.parametrize("run_config, train_config", [("reference-v1.yaml", "train-lora.yaml"),
                                                       ("reference.yaml", "ablation/lora-isolated-specaug.yaml")])
def test_run_configs_train_like_their_committed_runs(run_config, train_config):
    """`kidwhisper run configs/reference-v1.yaml` trains exactly what results/reference.sh trained, and
    `kidwhisper run configs/reference.yaml` exactly the ablation row committed as models/whisper-base-kids."""
    from dataclasses import asdict

    from kidwhisper.config import from_dict, read_config_file
    from kidwhisper.train.config import TrainConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    run = load_run_config(configs / run_config)
    via_run = TrainConfig(model=run.model, train="t", dev="d", out="o", **run.train)
    direct = from_dict(TrainConfig, {**read_config_file(configs / train_config), "train": "t", "dev": "d",
                                     "out": "o"})
    assert asdict(via_run) == asdict(direct)


def test_out_and_languages_are_checked_before_any_step(tmp_path):
    from kidwhisper.config import OutputError
    from kidwhisper.pipeline import run

    (tmp_path / "file").write_text("mine")
    nothing = str(tmp_path / "no-data")  # preparing would fail on it: the checks come first
    with pytest.raises(OutputError, match="--out .*file is an existing file"):
        run(RunConfig(out=str(tmp_path / "file"), data=nothing, model="whisper-tiny.en"))
    with pytest.raises(ConfigError, match="baseline_languages xx: whisper-tiny.en is an English-only model"):
        run(RunConfig(out=str(tmp_path / "o"), data=nothing, model="whisper-tiny.en", baseline_languages=["en", "xx"]))
    with pytest.raises(ConfigError, match="train.language fr: whisper-tiny.en is an English-only model"):
        run(RunConfig(out=str(tmp_path / "o"), data=nothing, model="whisper-tiny.en", train={"language": "fr"}))
    assert not (tmp_path / "o").exists()
