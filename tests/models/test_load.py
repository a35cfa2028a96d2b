"""kidwhisper.models.load: what a wrong adapter or a pickle weight file is told, the language check."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from kidwhisper.config import ConfigError
from kidwhisper.models.builtin import ModelError
from kidwhisper.models.load import attach_adapter, check_language, load_model


@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path):
    """A LoRA adapter trained (well, initialised) on the tiny model, as peft saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    base = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_an_adapter_for_another_model_names_the_model_it_was_trained_on(tiny_model_dir, adapter_dir):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    (adapter_dir / "kidwhisper_adapter.json").write_text(json.dumps({"base_model": "whisper-tiny-run"}))
    config = WhisperConfig.from_pretrained(tiny_model_dir)
    config.d_model = 32  # another model: the adapter's matrices do not fit
    with pytest.raises(ModelError) as e:
        attach_adapter(WhisperForConditionalGeneration(config), adapter_dir, "whisper-other")
    msg = str(e.value)
    assert msg.startswith(f"--adapter {adapter_dir} does not fit --model whisper-other: the adapter was trained on "
                          f"{tiny_model_dir} (adapter_config.json base_model_name_or_path) / whisper-tiny-run "
                          f"(kidwhisper_adapter.json base_model); pass that model as --model (size mismatch for ")
    assert "torch.Size([4, 16])" in msg and "PeftModel:;" not in msg


def test_pickle_weights_are_refused_with_the_file_and_the_fix(tiny_model_dir, adapter_dir, tmp_path):
    model_dir = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    (model_dir / "model.safetensors").unlink()
    torch.save(weights, model_dir / "pytorch_model.bin")
    load_model(str(model_dir), device="cpu")  # tensors only: torch.load(weights_only=True) reads it safely
    torch.save({**weights, "extra": argparse.Namespace(a=1)}, model_dir / "pytorch_model.bin")
    with pytest.raises(ModelError) as e:
        load_model(str(model_dir), device="cpu")
    assert str(e.value).startswith(f"{model_dir / 'pytorch_model.bin'}: pickle weights are not loaded (it holds "
                                   f"argparse.Namespace, not only tensors); convert to safetensors")

    adapter = load_file(str(adapter_dir / "adapter_model.safetensors"))
    (adapter_dir / "adapter_model.safetensors").unlink()
    torch.save({**adapter, "extra": argparse.Namespace(a=1)}, adapter_dir / "adapter_model.bin")
    with pytest.raises(ModelError, match=r"adapter_model.bin: pickle weights are not loaded .*convert to safetensors"):
        load_model(str(tiny_model_dir), adapter=str(adapter_dir), device="cpu")


def test_language_check_reads_only_the_generation_config(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "no-weights"
    model_dir.mkdir()
    for name in ("config.json", "generation_config.json"):
        shutil.copy(tiny_model_dir / name, model_dir / name)
    check_language(str(model_dir), "fr")
    with pytest.raises(ConfigError, match="--language xx: not a language .* knows"):
        check_language(str(model_dir), "xx")
    gen = json.loads((model_dir / "generation_config.json").read_text())
    gen.update(is_multilingual=False, lang_to_id={})
    (model_dir / "generation_config.json").write_text(json.dumps(gen))
    with pytest.raises(ConfigError, match="--language fr: .* is an English-only model; use --language en"):
        check_language(str(model_dir), "fr")
    check_language(str(model_dir), "en")
    check_language(str(model_dir), "auto")
    with pytest.raises(ConfigError, match="training needs the language of the data"):
        check_language(str(model_dir), "auto", allow_auto=False)


def test_a_model_that_is_neither_a_directory_nor_a_hub_id_is_one_clear_error():
    from kidwhisper.models.load import resolve_model_path

    for typo in ("missing_model_dir/", "no such model", "runs/x/model/"):
        with pytest.raises(ModelError, match=rf"Model {typo} not found: no such directory; available models = "):
            resolve_model_path(typo)
    assert resolve_model_path("openai/whisper-small") == "openai/whisper-small"  # a Hub id, left to the Hub
