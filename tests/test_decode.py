"""decode: generate() is called with what we set on purpose, without per-batch warnings about it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_decode_batch_keeps_generate_quiet_and_restores_loggers(tiny_model_dir):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from kidwhisper.decode import decode_batch

    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_model_dir)
    assert model.generation_config.max_length  # the saved max_length that generate() warns about
    audios = [np.zeros(16000, np.float32), 0.1 * np.sin(np.arange(24000, dtype=np.float32) / 5)]
    hf = logging.getLogger("transformers")  # transformers' loggers end here (they do not reach the root)
    records, level = _Records(), hf.level
    hf.addHandler(records)
    hf.setLevel(logging.WARNING)
    try:
        decoded = decode_batch(model, processor, audios, max_new_tokens=[5, 7])
        model.generate(processor.feature_extractor(audios[:1], sampling_rate=16000, return_tensors="pt").input_features,
                       max_new_tokens=3)  # the control: called plainly, generate() does warn
    finally:
        hf.removeHandler(records)
        hf.setLevel(level)
    assert len(decoded) == 2 and all(d.n_tokens <= n for d, n in zip(decoded, [5, 7], strict=True))
    warned = [m for m in records.messages if "seem to have been set" in m]
    assert len(warned) == 1  # the control's, not decode_batch's
    assert logging.getLogger("transformers.generation.utils").level == logging.NOTSET


def _linear_dtypes(model) -> tuple[list[torch.dtype], object]:
    """(the output dtypes of the model's first encoder q_proj, as the model runs; the hook's handle)."""
    seen: list[torch.dtype] = []
    layer = model.model.encoder.layers[0].self_attn.q_proj
    return seen, layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))


@pytest.mark.parametrize("packed", [False, True])
def test_bf16_decoding_runs_the_model_in_bf16_on_float32_log_mels(tiny_model_dir, packed):
    """precision_context("bf16"): the matrix products run in bf16 (autocast), the log-mel front end stays
    float32 (it ran torch's STFT under autocast and failed on a bf16 tensor), transcripts come back whole."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from kidwhisper.decode import decode_batch, features, precision_context
    from kidwhisper.decode_packed import transcribe_packed

    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_model_dir)
    audios = [0.1 * np.sin(np.arange(n, dtype=np.float32) / 5) for n in (16000, 24000, 8000)]
    seen, handle = _linear_dtypes(model)
    cpu = torch.device("cpu")
    try:
        with precision_context("bf16", cpu):
            assert features(processor, audios, cpu, torch.float32).dtype == torch.float32
            if packed:
                decoded = transcribe_packed(model, processor, audios, max_new_tokens=6, progress=False)
            else:
                decoded = decode_batch(model, processor, audios, max_new_tokens=6)
        with precision_context("float32", cpu):
            decode_batch(model, processor, audios[:1], max_new_tokens=2)
    finally:
        handle.remove()
    assert len(decoded) == 3 and all(0 < d.n_tokens <= 6 for d in decoded)
    assert seen[0] == torch.bfloat16 and seen[-1] == torch.float32  # autocast on inside, off in float32


def test_resolve_precision():
    from kidwhisper.decode import resolve_precision
    from kidwhisper.models.load import native_bf16

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "float32")
    assert resolve_precision("float32", cpu) == "float32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="one of float32, bf16, fp16, auto"):
        resolve_precision("half", cpu)
