"""What trains: one function turns a Whisper model into the trainable model of a named strategy.

All strategies share one training loop (:mod:`kidwhisper.train.loop`); they differ only in which
parameters have ``requires_grad``:

* ``lora`` / ``lora-encoder`` / ``lora-decoder``: PEFT LoRA adapters on the modules named in
  ``LoraConfig.target_modules`` (default: the attention projections ``q_proj k_proj v_proj out_proj``),
  restricted by a regular expression to the layers of the encoder and decoder, the encoder only or the
  decoder only (a decoder layer's cross-attention ``encoder_attn`` belongs to the decoder). Everything
  else is frozen. For whisper-base with r=16: 1,179,648 / 393,216 / 786,432 trainable parameters.
* ``full``: every parameter trains except the encoder's positional embedding, which is the fixed sinusoid
  of OpenAI's model (a buffer there; training it would make the model differ from what converters and
  the openai/whisper code assume).
* ``encoder``: the encoder trains (except its fixed positions); the decoder is frozen, token and position
  embeddings (and the output projection tied to them) included.
* ``decoder``: the decoder trains, its token and position embeddings (and the tied output projection)
  included; the encoder is frozen.

:func:`count_parameters` reports (trainable, total, percent), where ``total`` counts the base model's
parameters once (tied weights once, LoRA adapter weights excluded) and percent = 100 * trainable / total.
(PEFT's ``print_trainable_parameters`` divides by base + adapter instead, so its percentage of a LoRA
strategy is slightly lower; :func:`count_parameters` returns the adapter size too, in :class:`ParamCount`.)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from torch import nn

from kidwhisper.train.config import LORA_STRATEGIES, STRATEGIES, LoraConfig

log = logging.getLogger(__name__)

ENCODER_POSITIONS = "encoder.embed_positions"  # fixed sinusoids in OpenAI's Whisper; never trained


class StrategyError(ValueError):
    """A strategy that cannot be applied to this model; the message names the flag."""


@dataclass
class ParamCount:
    """Parameter counts of a (possibly PEFT-wrapped) model; tied weights are counted once."""

    trainable: int
    total: int  # parameters of the base model (adapter weights excluded)
    adapter: int  # LoRA weights added by the strategy (0 for non-LoRA strategies)

    @property
    def pct(self) -> float:
        """Trainable parameters as a percentage of all parameters of the model being trained
        (base + adapter), as PEFT's ``print_trainable_parameters`` reports it: LoRA r=16 on whisper-base
        is 1,179,648 / (72,593,920 + 1,179,648) = 1.60 %."""
        everything = self.total + self.adapter
        return 100.0 * self.trainable / everything if everything else 0.0

    def as_tuple(self) -> tuple[int, int, float]:
        return self.trainable, self.total, self.pct


def _is_adapter(name: str) -> bool:
    return "lora_" in name


def parameter_count(model: nn.Module) -> ParamCount:
    """:class:`ParamCount` of ``model`` (``named_parameters`` already yields a tied weight once)."""
    trainable = total = adapter = 0
    for name, p in model.named_parameters():
        n = p.numel()
        if p.requires_grad:
            trainable += n
        if _is_adapter(name):
            adapter += n
        else:
            total += n
    return ParamCount(trainable, total, adapter)


def count_parameters(model: nn.Module) -> tuple[int, int, float]:
    """(trainable, total base-model parameters, trainable as % of base + adapter parameters)."""
    return parameter_count(model).as_tuple()


def lora_target_regex(strategy: str, target_modules: list[str]) -> str:
    """PEFT ``target_modules`` regex (full match on module names) for a LoRA strategy.

    >>> bool(re.fullmatch(lora_target_regex("lora-decoder", ["q_proj"]), "model.decoder.layers.3.encoder_attn.q_proj"))
    True
    """
    names = "|".join(re.escape(m) for m in target_modules)
    stacks = {"lora": "encoder|decoder", "lora-encoder": "encoder", "lora-decoder": "decoder"}[strategy]
    return rf"(.*\.)?({stacks})\.layers\.\d+\.(.*\.)?({names})"


def _whisper(model: nn.Module):
    """The ``WhisperModel`` (``.encoder`` / ``.decoder``) inside a WhisperForConditionalGeneration."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "encoder") or not hasattr(inner, "decoder"):
        raise StrategyError(f"{type(model).__name__} is not a WhisperForConditionalGeneration; "
                            f"`--strategy` needs a Whisper model")
    return inner


def apply_strategy(model: nn.Module, strategy: str, lora_cfg: LoraConfig | None = None) -> nn.Module:
    """Freeze / unfreeze / add adapters on ``model`` for ``strategy``; returns the model to train.

    LoRA strategies return a ``peft.PeftModel`` wrapping ``model`` (adapters injected in place, so
    ``generate`` and ``generation_config`` still work through it); the others return ``model`` itself.
    """
    if strategy not in STRATEGIES:
        raise StrategyError(f"`--strategy` must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    whisper = _whisper(model)
    model.requires_grad_(False)
    if strategy in LORA_STRATEGIES:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        lora_cfg = lora_cfg or LoraConfig()
        regex = lora_target_regex(strategy, lora_cfg.target_modules)
        peft_cfg = PeftLoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                                  target_modules=regex, bias="none")
        try:
            model = get_peft_model(model, peft_cfg)
        except ValueError as e:
            raise StrategyError(f"`--lora.target-modules` {lora_cfg.target_modules} match no module of the "
                                f"{strategy} layers ({e}); Whisper's attention has q_proj k_proj v_proj "
                                f"out_proj, its MLP fc1 fc2") from e
    elif strategy == "full":
        model.requires_grad_(True)
    elif strategy == "encoder":
        whisper.encoder.requires_grad_(True)
    elif strategy == "decoder":
        whisper.decoder.requires_grad_(True)
    if strategy in ("full", "encoder"):
        whisper.encoder.embed_positions.requires_grad_(False)
    counts = parameter_count(model)
    if counts.trainable == 0:
        raise StrategyError(f"`--strategy {strategy}` left no parameter to train")
    log.info("strategy %s: %s trainable of %s parameters (%.2f %%)", strategy, f"{counts.trainable:,}",
             f"{counts.total:,}", counts.pct)
    return model


def trainable_state_dict(model: nn.Module) -> dict:
    """name -> detached tensor of every trainable parameter (what a checkpoint must hold)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
