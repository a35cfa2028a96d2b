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


def test_is_runaway_is_whispers_compression_test_or_the_budget():
    from kidwhisper.decode import Decoded, compression_ratio, is_runaway

    loop = "I like it. " * 12
    assert compression_ratio(loop) > 2.4 > compression_ratio("Mark is going to see the elephant at the zoo.")
    assert compression_ratio("") == 0.0
    assert is_runaway(Decoded(loop, [1] * 40, "en", truncated=False))
    assert is_runaway(Decoded("Mark is", [1, 2], "en", truncated=True))
    assert not is_runaway(Decoded("Mark is going to see the elephant.", [1] * 8, "en", truncated=False))


def test_beam_runaways_are_decoded_again_greedily_from_their_own_encoder_rows(monkeypatch):
    """generate_from_encoder with beams: the rows whose beam output runs away (budget hit, or a loop) are
    decoded again greedily, from exactly their encoder states and budgets; fallback=False and greedy decoding
    make one generate() call."""
    from transformers.modeling_outputs import BaseModelOutput

    import kidwhisper.decode as dec
    from kidwhisper.decode import Decoded

    beams_out = [Decoded("a cat", [1, 2], "en", False), Decoded("and then", [3, 4], "en", True),
                 Decoded("I like it. " * 12, [5] * 48, "en", False), Decoded("a dog", [6, 7], "en", False)]
    calls = []

    def fake_generate(model, processor, encoder_outputs, language, budgets, num_beams):
        states = encoder_outputs.last_hidden_state.clone()
        calls.append((states, budgets, num_beams))
        if num_beams > 1:  # as transformers does: the encoder output expanded in place for the beams
            encoder_outputs.last_hidden_state = states.repeat_interleave(num_beams, dim=0)
            return [Decoded(d.text, list(d.tokens), d.language, d.truncated) for d in beams_out]
        return [Decoded(f"greedy {int(s[0, 0])}", [9], "en", False) for s in states]

    monkeypatch.setattr(dec, "_generate", fake_generate)
    states = torch.arange(4, dtype=torch.float32)[:, None, None].expand(4, 3, 2).contiguous()
    out = dec.generate_from_encoder(None, None, BaseModelOutput(last_hidden_state=states), "en", [10, 11, 12, 13], 5)
    assert [d.text for d in out] == ["a cat", "greedy 1", "greedy 2", "a dog"]
    assert [d.fallback for d in out] == [False, True, True, False]
    (_, _, beams), (greedy_states, greedy_budgets, greedy_beams) = calls
    assert beams == 5 and greedy_beams == 1 and greedy_budgets == [11, 12]
    assert torch.equal(greedy_states, states[[1, 2]])
    calls.clear()
    out = dec.generate_from_encoder(None, None, BaseModelOutput(last_hidden_state=states), "en", [10] * 4, 5,
                                    fallback=False)
    assert len(calls) == 1 and [d.text for d in out] == [d.text for d in beams_out] and not any(d.fallback for d in out)
    calls.clear()
    dec.generate_from_encoder(None, None, BaseModelOutput(last_hidden_state=states), "en", [10] * 4, 1)
    assert len(calls) == 1


def test_beam_fallback_on_a_real_model_matches_greedy_decoding(tiny_model_dir):
    """On the tiny model, a budget of one token cuts every beam output that does not end at once: those clips
    come back as their greedy decoding (the same as decode_batch with one beam), marked fallback."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from kidwhisper.decode import decode_batch

    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_model_dir)
    rng = np.random.default_rng(0)
    audios = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 24000, 32000)]
    greedy = decode_batch(model, processor, audios, max_new_tokens=1)
    plain = decode_batch(model, processor, audios, max_new_tokens=1, num_beams=3, fallback=False)
    fell = decode_batch(model, processor, audios, max_new_tokens=1, num_beams=3)
    assert any(d.truncated for d in plain)
    for p, f, g in zip(plain, fell, greedy, strict=True):
        assert f.fallback == p.truncated
        assert (f.text, f.tokens) == ((g.text, g.tokens) if p.truncated else (p.text, p.tokens))
