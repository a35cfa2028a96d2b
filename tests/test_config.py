"""kidwhisper.config: config files, dataclass building with clear errors, resolved configs saved."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from kidwhisper.config import ConfigError, from_dict, read_config_file, save_config
from kidwhisper.train.config import LoraConfig, TrainConfig


def test_yaml_and_json_files_read_as_mappings(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: 3\nlora: {r: 8}\n")
    (tmp_path / "a.json").write_text('{"epochs": 3, "lora": {"r": 8}}')
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "a.yaml") == read_config_file(tmp_path / "a.json") == {"epochs": 3, "lora": {"r": 8}}
    assert read_config_file(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize("name, text, message", [
    ("bad.yaml", "epochs: [3", "not valid YAML/JSON"),
    ("list.yaml", "- 1\n- 2\n", "top level must be a mapping"),
])
def test_bad_files_name_themselves(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=f"{name}: .*{message}"):
        read_config_file(tmp_path / name)


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        read_config_file(tmp_path / "nope.yaml")


def test_from_dict_builds_nested_dataclasses_and_rejects_unknown_keys():
    cfg = from_dict(TrainConfig, {"model": "m", "train": "t", "dev": "d", "out": "o", "lora": {"r": 4}})
    assert isinstance(cfg.lora, LoraConfig) and cfg.lora.r == 4 and cfg.lora.alpha == 32
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['epoch'\]; known options are .*'epochs'"):
        from_dict(TrainConfig, {"model": "m", "train": "t", "dev": "d", "out": "o", "epoch": 3})
    with pytest.raises(ConfigError, match=r"train options\.lora: unknown option\(s\) \['rank'\]"):
        from_dict(TrainConfig, {"model": "m", "train": "t", "dev": "d", "out": "o", "lora": {"rank": 4}},
                  where="train options")


def test_saved_config_round_trips(tmp_path):
    cfg = TrainConfig(model="m", train="t", dev="d", out="o", lora=LoraConfig(r=4), epochs=2)
    save_config(cfg, tmp_path / "c.yaml")
    save_config(cfg, tmp_path / "c.json")
    for name in ("c.yaml", "c.json"):
        again = from_dict(TrainConfig, read_config_file(tmp_path / name))
        assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["lr"] == cfg.lr == 1e-3  # resolved, not None


def test_machine_info_names_the_cpu_and_its_bf16(monkeypatch):
    import os

    import torch

    import kidwhisper.models.load as load
    from kidwhisper.config import machine_info

    m = machine_info()
    assert m["cpu"] and m["cpu_count"] == os.cpu_count()
    assert m["cpu_native_bf16"] == load.native_bf16(torch.device("cpu"))
    monkeypatch.setattr(load, "native_bf16", lambda device: device.type == "cpu")
    assert machine_info()["cpu_native_bf16"] is True
