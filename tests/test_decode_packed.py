"""Packed decoding (kidwhisper.decode_packed): a clip's tokens do not depend on the clips beside it, a window
holding one clip decodes exactly as unpacked decoding, results come back in input order."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from kidwhisper.audio import SAMPLE_RATE
from kidwhisper.decode import decode_batch, transcribe_arrays
from kidwhisper.decode_packed import SilenceCache, encode_clips, encode_silence, transcribe_packed
from kidwhisper.train.clipwise import attention_bias

BUDGET = 8  # tokens per clip: the random model below rarely ends a transcript by itself


def sound(seconds: float, seed: int) -> np.ndarray:
    """A noisy tone, different for every seed (so different clips make the random model say different things)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * rng.uniform(100, 2000) * t) * rng.uniform(0.05, 0.5)
    return (tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def chatty(request, base_dir):
    """(model, processor): a random Whisper (d_model 16, 2 encoder layers, 1 decoder layer) whose greedy
    transcript is BUDGET tokens that follow the audio: its convolutions and cross-attention are scaled up
    (a fresh model's encoder output is mostly position embeddings, and its cross-attention averages them);
    timestamp tokens suppressed."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    cfg = json.loads((base_dir / "config.json").read_text())
    ids = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                               "suppress_tokens", "begin_suppress_tokens")}
    torch.manual_seed(1)
    config = WhisperConfig(vocab_size=51865, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           attn_implementation=request.param, **ids)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for weight in (model.model.encoder.conv1.weight, model.model.encoder.conv2.weight,
                       *(getattr(layer.encoder_attn, name).weight for layer in model.model.decoder.layers
                         for name in ("q_proj", "k_proj", "v_proj", "out_proj"))):
            weight.mul_(30)
    model.generation_config = GenerationConfig.from_pretrained(base_dir)
    first_timestamp = model.generation_config.no_timestamps_token_id + 1
    model.generation_config.suppress_tokens = [*model.generation_config.suppress_tokens,
                                               *range(first_timestamp, config.vocab_size)]
    return model, WhisperProcessor.from_pretrained(base_dir)


def test_encoder_rebuilt_from_its_parts_is_whisper_encoder(chatty):
    """A clip whose own frames fill the window (the gap reaches 30 s) is encoded as Whisper's encoder does."""
    model, processor = chatty
    audios = [sound(2.0, 0), sound(4.0, 1)]
    feats = processor.feature_extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.inference_mode():
        ours, lengths = encode_clips(model, processor, audios, gap=30.0)
        theirs = model.model.encoder(feats).last_hidden_state
    assert lengths == [1500, 1500]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_silence_is_whisper_encoder_on_a_silent_window(chatty):
    model, processor = chatty
    feats = processor.feature_extractor([np.zeros(SAMPLE_RATE, np.float32)], sampling_rate=SAMPLE_RATE,
                                        return_tensors="pt").input_features
    value = float(feats.min())
    assert torch.equal(feats, torch.full_like(feats, value))
    with torch.inference_mode():
        silence = encode_silence(model.model.encoder, value)
        theirs = model.model.encoder(feats).last_hidden_state[0]
    torch.testing.assert_close(silence.final, theirs, rtol=0, atol=1e-5)


def padding_blind_to_the_clip(model, n: int):
    """Hooks that make Whisper's encoder attention let frames >= n (the padding) see only the padding."""
    frames = torch.arange(1500)
    sees = ~((frames[:, None] >= n) & (frames[None, :] < n))
    mask = attention_bias(sees[None, None], model.config._attn_implementation, torch.float32)

    def hook(module, args, kwargs):
        kwargs["attention_mask"] = mask
        return args, kwargs

    return [layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True) for layer in model.model.encoder.layers]


def test_a_packed_clip_sees_the_silence_that_follows_it_unpacked(chatty):
    """Each clip's encoder states are those of unpacked decoding in which the padding after its own frames
    does not attend to the clip: its frames see the silence at the positions that follow the clip."""
    model, processor = chatty
    audios = [sound(1.5, 30), sound(3.2, 31)]
    cache = SilenceCache(step=1e-6)  # the silence at the clip's own padding value
    with torch.inference_mode():
        states, lengths = encode_clips(model, processor, audios, cache=cache)
        for b, audio in enumerate(audios):
            feats = processor.feature_extractor([audio], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            handles = padding_blind_to_the_clip(model, lengths[b])
            try:
                reference = model.model.encoder(feats).last_hidden_state[0]
            finally:
                for h in handles:
                    h.remove()
            unpacked = model.model.encoder(feats).last_hidden_state[0]
            torch.testing.assert_close(states[b], reference, rtol=0, atol=3e-5)
            assert (states[b] - unpacked).abs().max() > 1e-4  # unpacked, the padding sees the clip
    assert lengths == [85, 170]  # ceil((seconds + 0.2 s gap) * 50)
    assert len(cache.silences) == 2  # two padding values: one silence encoding each


def test_packed_clip_tokens_do_not_depend_on_its_neighbours(chatty):
    model, processor = chatty
    clip = sound(1.5, 0)
    first = [clip, sound(2.0, 1), sound(1.0, 2)]
    other = [clip, sound(2.0, 3), sound(1.0, 4)]  # the same durations: the same batch, other audio
    a = transcribe_packed(model, processor, first, max_new_tokens=BUDGET, progress=False)
    b = transcribe_packed(model, processor, other, max_new_tokens=BUDGET, progress=False)
    assert a[0] == b[0] and a[0].n_tokens == BUDGET
    assert a[1].tokens != b[1].tokens and a[2].tokens != b[2].tokens  # the neighbours did change what is said
    with torch.inference_mode():  # and exactly: the encoder states the clip's tokens attend to
        states_a, _ = encode_clips(model, processor, first)
        states_b, _ = encode_clips(model, processor, other)
    assert torch.equal(states_a[0], states_b[0])
    assert not torch.equal(states_a[1], states_b[1])


def test_precomputed_silence_cross_projections_decode_as_projecting_every_frame(chatty, monkeypatch):
    """The decoder's cross-attention keys and values of the silence continuation come from projections made
    once per silence; the tokens, and the projections themselves, are those of projecting all 1500 frames."""
    import contextlib

    from kidwhisper import decode_packed

    model, processor = chatty
    clips = [sound(1.5, 0), sound(2.0, 1), sound(1.0, 2), sound(2.5, 6)]
    fast = transcribe_packed(model, processor, clips, max_new_tokens=BUDGET, progress=False)
    with torch.inference_mode():
        states, lengths, silences = decode_packed._encode_clips(model, processor, clips, 0.2, SilenceCache())
        k_proj = model.model.decoder.layers[0].encoder_attn.k_proj
        full = k_proj(states)
        with decode_packed.silence_cross_projections(model, silences, lengths):
            assert "forward" in vars(k_proj)  # patched on the instance
            torch.testing.assert_close(k_proj(states), full, rtol=1e-5, atol=1e-6)
        assert "forward" not in vars(k_proj)  # restored
    monkeypatch.setattr(decode_packed, "silence_cross_projections", lambda *a: contextlib.nullcontext())
    assert transcribe_packed(model, processor, clips, max_new_tokens=BUDGET, progress=False) == fast


def test_window_of_one_clip_decodes_exactly_as_unpacked(chatty):
    model, processor = chatty
    clip = sound(3.0, 5)
    assert transcribe_packed(model, processor, [clip], max_new_tokens=BUDGET, progress=False) == decode_batch(
        model, processor, [clip], max_new_tokens=BUDGET)


def test_clip_longer_than_the_window_falls_back_to_its_own_window(chatty, monkeypatch):
    from kidwhisper import decode_packed

    model, processor = chatty
    audios = [sound(2.0, 6), sound(6.0, 7), sound(3.0, 8)]
    calls = []

    def spy(name):
        real = getattr(decode_packed, name)

        def decode(model, processor, clips, *args):
            calls.append((name, [next(i for i, a in enumerate(audios) if a is c) for c in clips]))
            return real(model, processor, clips, *args)

        return decode

    for name in ("decode_batch", "decode_clips"):
        monkeypatch.setattr(decode_packed, name, spy(name))
    packed = transcribe_packed(model, processor, audios, max_new_tokens=BUDGET, progress=False, max_seconds=5.5)
    assert calls == [("decode_clips", [0, 2]), ("decode_batch", [1])]
    assert packed[1] == decode_batch(model, processor, [audios[1]], max_new_tokens=BUDGET)[0]


def test_batch_of_different_lengths_comes_back_in_input_order(chatty):
    model, processor = chatty
    audios = [sound(1.0 + 0.37 * i, 10 + i) for i in range(7)]
    decoded = transcribe_packed(model, processor, audios, batch_size=3, max_new_tokens=BUDGET, progress=False)
    order = [4, 0, 6, 2, 5, 1, 3]
    shuffled = transcribe_packed(model, processor, [audios[i] for i in order], batch_size=3,
                                 max_new_tokens=BUDGET, progress=False)
    assert shuffled == [decoded[i] for i in order]
    assert len({tuple(d.tokens) for d in decoded}) == len(audios)  # every clip got its own transcript


def test_beam_search_decodes_one_clip_per_window(chatty):
    model, processor = chatty
    audios = [sound(1.0, 20), sound(2.0, 21)]
    assert transcribe_packed(model, processor, audios, max_new_tokens=BUDGET, num_beams=2, progress=False) == \
        transcribe_arrays(model, processor, audios, max_new_tokens=BUDGET, num_beams=2, progress=False)


def run(*args):
    return subprocess.run([sys.executable, "-m", "kidwhisper", *args], capture_output=True, text=True, timeout=600)


def test_evaluate_pack_end_to_end(kids_manifest, tmp_path):
    r = run("evaluate", "--model", "whisper-tiny.en", "--data", str(kids_manifest), "--out", str(tmp_path),
            "--pack", "--limit", "8", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["pack"] is True and summary["n_utts"] == 8
    assert summary["wer"]["digits"]["wer"] < 0.5  # real transcripts of the prompts (digits as words), not noise
    assert summary["flags"]["empty"] == 0


def test_evaluate_pack_needs_the_torch_backend(kids_manifest, tmp_path):
    r = run("evaluate", "--model", "whisper-tiny.en", "--data", str(kids_manifest), "--out", str(tmp_path),
            "--pack", "--backend", "ct2")
    assert r.returncode == 2 and "--pack applies to --backend torch only" in r.stderr


def test_dev_wer_in_training_decodes_packed_when_asked(monkeypatch, tmp_path):
    from kidwhisper.decode import Decoded
    from kidwhisper.train import loop
    from kidwhisper.train.config import TrainConfig

    calls = []

    def decoder(name):
        def decode(model, processor, audios, language, batch_size, **kwargs):
            calls.append((name, batch_size, kwargs))
            return [Decoded("the cat", [1, 2], "en", False), Decoded("a dog", [3, 4], "en", True)]

        return decode

    monkeypatch.setattr(loop, "transcribe_packed", decoder("packed"))
    monkeypatch.setattr(loop, "transcribe_arrays", decoder("unpacked"))
    config = TrainConfig(model="m", train="t", dev="d", out=str(tmp_path), eval_pack=True, pack_seconds=20.0,
                         pack_gap=0.3, eval_batch_size=4, progress=False)
    assert loop.evaluate_dev(None, None, [np.zeros(1)] * 2, ["the cat", "a dog runs"], config) == (0.2, 1)
    config.eval_pack = False
    loop.evaluate_dev(None, None, [np.zeros(1)] * 2, ["the cat", "a dog runs"], config)
    assert calls == [("packed", 4, {"progress": False, "max_seconds": 20.0, "gap": 0.3}),
                     ("unpacked", 4, {"progress": False})]
