"""decode: generate() is called with what we set on purpose, without per-batch warnings about it."""

from __future__ import annotations

import logging

import numpy as np


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
