"""Flags generated from the config dataclasses: described once, with help, defaults, choices and --config."""

from __future__ import annotations

import dataclasses

import pytest

from kidwhisper.cli import build_parser
from kidwhisper.config import ConfigError
from kidwhisper.data.prepare import PrepareConfig
from kidwhisper.evaluate import EvalConfig
from kidwhisper.export import ExportConfig
from kidwhisper.options import config_from_args, field_docs
from kidwhisper.report import CompareConfig
from kidwhisper.train.config import LoraConfig, TrainConfig
from kidwhisper.transcribe import TranscribeConfig

CONFIGS = [TrainConfig, LoraConfig, EvalConfig, PrepareConfig, CompareConfig, TranscribeConfig, ExportConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_option_is_described(cls):
    docs = field_docs(cls)
    undocumented = [f.name for f in dataclasses.fields(cls)
                    if not dataclasses.is_dataclass(f.type) and f.name != "lora" and not docs.get(f.name)]
    assert undocumented == []


def _subparser(name):
    parser = build_parser()
    action = next(a for a in parser._subparsers._group_actions if a.choices)
    return action.choices[name]


@pytest.mark.parametrize("command, cls", [("train", TrainConfig), ("evaluate", EvalConfig),
                                          ("prepare", PrepareConfig), ("compare", CompareConfig),
                                          ("transcribe", TranscribeConfig), ("export", ExportConfig)])
def test_each_field_is_a_flag_with_help_and_default(command, cls):
    options = {a.dest: a for a in _subparser(command)._actions}
    for f in dataclasses.fields(cls):
        if f.name in ("progress", "lora"):
            continue
        action = options[f.name]
        assert action.help and ("(default: " in action.help or "(required)" in action.help), f.name
        assert not action.help.startswith("("), f"{f.name} has no description"


def test_literal_types_give_choices():
    options = {a.dest: a for a in _subparser("train")._actions}
    assert options["pack_mode"].choices == ("isolated", "clips", "joined")
    assert options["mixed_precision"].choices == ("auto", "no", "bf16", "fp16")
    transcribe = {a.dest: a for a in _subparser("transcribe")._actions}
    assert transcribe["format"].choices == ("text", "json", "srt", "vtt")
    assert transcribe["device"].choices == ("auto", "cpu", "cuda", "mps")


def test_transcribe_options_from_a_file_and_flags(tmp_path):
    (tmp_path / "t.yaml").write_text("format: srt\nbatch_size: 2\nmodel: whisper-tiny.en\n")
    args = _subparser("transcribe").parse_args(["--config", str(tmp_path / "t.yaml"), "--batch-size", "4", "a.wav"])
    cfg = config_from_args(TranscribeConfig, args)
    assert (cfg.model, cfg.format, cfg.batch_size, cfg.timestamps) == ("whisper-tiny.en", "srt", 4, True)
    assert TranscribeConfig().timestamps is False and TranscribeConfig(word_timestamps=True).timestamps is True
    with pytest.raises(ConfigError, match="--word-timestamps needs the alignment"):
        TranscribeConfig(word_timestamps=True, timestamps=False)
    (tmp_path / "bad.yaml").write_text("fromat: srt\n")
    args = _subparser("transcribe").parse_args(["--config", str(tmp_path / "bad.yaml"), "a.wav"])
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['fromat'\]"):
        config_from_args(TranscribeConfig, args)


def test_flags_override_the_config_file_and_merge_nested_options(tmp_path):
    (tmp_path / "t.yaml").write_text("model: whisper-base\ntrain: a\ndev: b\nout: c\nepochs: 7\nlr: 0.002\n"
                                     "lora: {r: 8, alpha: 16}\n")
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "t.yaml"), "--epochs", "3",
                                      "--lora.alpha", "64", "--no-pack", "--lora.target-modules", "q_proj,v_proj"])
    cfg = config_from_args(TrainConfig, args, {"progress": False})
    assert (cfg.epochs, cfg.lr, cfg.pack, cfg.progress) == (3, 0.002, False, False)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == (8, 64, ["q_proj", "v_proj"])
    assert cfg.batch_size == TrainConfig.__dataclass_fields__["batch_size"].default  # left to the default


def test_missing_required_options_name_their_flags():
    args = build_parser().parse_args(["evaluate", "--model", "whisper-base"])
    with pytest.raises(ConfigError, match="--data, --out"):
        config_from_args(EvalConfig, args)


def test_choices_are_enforced(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", "--pack-mode", "bogus"])
    assert e.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


def test_comments_and_docstrings_become_help():
    @dataclasses.dataclass
    class Example:
        a: int = 1  # first line
        # second line
        b: str = "x"
        """a docstring below the field"""
        c: float = 0.5

    docs = field_docs(Example)
    assert docs == {"a": "first line second line", "b": "a docstring below the field", "c": ""}
