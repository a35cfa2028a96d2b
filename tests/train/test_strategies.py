"""Which parameters train under each strategy (kidwhisper.train.strategies)."""

from __future__ import annotations

import re

import pytest
import torch

from kidwhisper.train.config import STRATEGIES, LoraConfig
from kidwhisper.train.strategies import (
    StrategyError,
    apply_strategy,
    count_parameters,
    lora_target_regex,
    parameter_count,
)

# The tiny model (tests/train/conftest.py, d_model 16, 1+1 layers, vocab 51,865), counted by hand:
#   encoder 30,880 = conv1 3,856 + conv2 784 + positions 1500x16 = 24,000 + layer 2,208 + final norm 32
#   decoder 840,352 = tokens 51,865x16 = 829,840 + positions 448x16 = 7,168 + layer 3,312 + final norm 32
#   LoRA r=16 on one 16x16 projection: 16 x (16 + 16) = 512; q,k,v,out = 2,048 per attention block
TINY_TOTAL = 871_232
TINY_TRAINABLE = {
    "lora": 3 * 2048,  # encoder self-attn + decoder self-attn + decoder cross-attn
    "lora-decoder": 2 * 2048,
    "lora-encoder": 2048,
    "full": TINY_TOTAL - 24_000,  # all but the encoder's fixed sinusoidal positions
    "encoder": 30_880 - 24_000,
    "decoder": 840_352,  # embeddings (and the tied output projection) included
}


@pytest.fixture
def tiny(tiny_model_dir):
    from transformers import WhisperForConditionalGeneration

    return lambda: WhisperForConditionalGeneration.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_trainable_parameter_counts_on_the_tiny_model(tiny, strategy):
    model = apply_strategy(tiny(), strategy, LoraConfig())
    trainable, total, pct = count_parameters(model)
    assert (trainable, total) == (TINY_TRAINABLE[strategy], TINY_TOTAL)
    adapter = trainable if strategy.startswith("lora") else 0
    assert pct == pytest.approx(100 * trainable / (TINY_TOTAL + adapter))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if strategy.startswith("lora"):
        assert all("lora_" in n for n in names)
        assert parameter_count(model).adapter == trainable
    if strategy in ("lora-decoder", "decoder"):
        assert not any(".encoder." in n for n in names)
    if strategy in ("lora-encoder", "encoder"):
        assert not any(".decoder." in n for n in names)
    if strategy == "decoder":
        assert "model.decoder.embed_tokens.weight" in names
    assert "model.encoder.embed_positions.weight" not in names


def test_lora_regex_separates_encoder_and_decoder():
    names = ["model.encoder.layers.0.self_attn.q_proj", "model.decoder.layers.5.self_attn.v_proj",
             "model.decoder.layers.5.encoder_attn.k_proj", "model.decoder.layers.5.fc1", "proj_out"]
    match = {s: [n for n in names if re.fullmatch(lora_target_regex(s, ["q_proj", "k_proj", "v_proj"]), n)]
             for s in ("lora", "lora-encoder", "lora-decoder")}
    assert match["lora"] == names[:3]
    assert match["lora-encoder"] == names[:1]
    assert match["lora-decoder"] == names[1:3]  # cross-attention belongs to the decoder


def test_lora_model_still_transcribes(tiny, tiny_model_dir):
    import numpy as np
    from transformers import WhisperProcessor

    from kidwhisper.decode import transcribe_arrays

    model = apply_strategy(tiny(), "lora", LoraConfig()).eval()
    processor = WhisperProcessor.from_pretrained(tiny_model_dir)
    out = transcribe_arrays(model, processor, [np.zeros(16000, np.float32)], progress=False)
    assert len(out) == 1 and not out[0].truncated


def test_bad_strategy_and_targets_are_named(tiny):
    with pytest.raises(StrategyError, match="--strategy"):
        apply_strategy(tiny(), "adapters")
    with pytest.raises(StrategyError, match="--lora.target-modules"):
        apply_strategy(tiny(), "lora", LoraConfig(target_modules=["no_such_proj"]))


def test_lora_config_accepts_a_comma_list():
    assert LoraConfig(target_modules="q_proj,v_proj").target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="--lora.r"):
        LoraConfig(r=0)


@pytest.mark.slow
def test_whisper_base_counts(base_dir):
    from transformers import WhisperForConditionalGeneration

    base = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    assert count_parameters(base)[1] == 72_593_920  # proj_out is tied to the token embedding: counted once
    expected = {"lora": 1_179_648, "lora-decoder": 786_432, "lora-encoder": 393_216}
    for strategy, n in expected.items():
        model = base if strategy == "lora" else WhisperForConditionalGeneration.from_pretrained(base_dir)
        trainable, total, pct = count_parameters(apply_strategy(model, strategy, LoraConfig()))
        assert (trainable, total) == (n, 72_593_920)
        assert pct == pytest.approx(100 * n / (72_593_920 + n))  # PEFT's convention: base + adapter
        assert round(pct, 2) == {"lora": 1.60, "lora-decoder": 1.07, "lora-encoder": 0.54}[strategy]
