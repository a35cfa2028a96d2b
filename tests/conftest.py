"""Shared fixtures: real clips from ../shared/data by path, and the offline built-in models."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
KIDS_TEST = SHARED_DATA / "speechocean762-kids" / "test"


def kaldi_clips(set_dir: Path, n: int) -> list[tuple[str, Path, str]]:
    """First ``n`` (utt id, audio path, transcript) of a Kaldi-style set."""
    text = dict(line.rstrip("\n").split(" ", 1) for line in (set_dir / "text").read_text().splitlines()[:n])
    wav = dict(line.split() for line in (set_dir / "wav.scp").read_text().splitlines())
    return [(u, set_dir / wav[u], t) for u, t in text.items()]


@pytest.fixture(scope="session")
def kids_test_clips() -> list[tuple[str, Path, str]]:
    if not KIDS_TEST.exists():
        pytest.skip(f"{KIDS_TEST} not found (the shared children's speech data)")
    return kaldi_clips(KIDS_TEST, 12)


@pytest.fixture(scope="session")
def kids_manifest(tmp_path_factory, kids_test_clips) -> Path:
    """A prepared manifest of the first 12 kids-test clips (real audio, speakers, ages)."""
    from kidwhisper.data.manifest import Clip, write_manifest

    set_dir = KIDS_TEST
    spk = dict(line.split() for line in (set_dir / "utt2spk").read_text().splitlines())
    age = dict(line.split() for line in (set_dir / "spk2age").read_text().splitlines())
    import soundfile as sf

    clips = [Clip(id=u, audio=str(p), duration=sf.info(str(p)).duration, text=t, speaker=spk[u],
                  age=float(age[spk[u]])) for u, p, t in kids_test_clips]
    out = tmp_path_factory.mktemp("kids") / "manifest.jsonl"
    return write_manifest(clips, out)


@pytest.fixture(scope="session")
def tiny_random_whisper(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Whisper with whisper-base's tokenizer and generation config."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    from kidwhisper.models.builtin import builtin_path

    base = builtin_path("whisper-base")
    ref = WhisperConfig.from_pretrained(base)
    cfg = WhisperConfig(vocab_size=ref.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
                        pad_token_id=ref.pad_token_id, bos_token_id=ref.bos_token_id, eos_token_id=ref.eos_token_id,
                        decoder_start_token_id=ref.decoder_start_token_id, suppress_tokens=ref.suppress_tokens,
                        begin_suppress_tokens=ref.begin_suppress_tokens)
    import torch

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig.from_pretrained(base)
    out = tmp_path_factory.mktemp("tiny-whisper")
    model.save_pretrained(out)
    WhisperProcessor.from_pretrained(base).save_pretrained(out)
    return out
