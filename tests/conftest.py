"""Shared fixtures: real clips from ../shared/data by path, and the offline built-in models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from shared_data import KIDS_TEST

REPO = Path(__file__).resolve().parents[1]


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


TINY = dict(vocab_size=51865, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
            max_source_positions=1500, max_target_positions=448)


@pytest.fixture(scope="session")
def base_dir() -> Path:
    """The converted whisper-base directory (its processor and generation config are reused)."""
    from kidwhisper.models.builtin import ModelError, builtin_path

    try:
        return builtin_path("whisper-base")
    except ModelError as e:
        pytest.skip(f"whisper-base not available: {e}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, base_dir) -> Path:
    """A randomly initialised 1-layer Whisper (d_model 16) with whisper-base's tokenizer and generation config
    (multilingual prompt), 871,232 parameters."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    out = tmp_path_factory.mktemp("tiny-whisper")
    base_cfg = json.loads((base_dir / "config.json").read_text())
    ids = {k: base_cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                                    "suppress_tokens", "begin_suppress_tokens")}
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY, **ids))
    # Make <|endoftext|> the likely next token so greedy dev decoding stops after a token or two instead of
    # running to the 224-token budget (the EOT row is the zero padding row of a fresh model).
    with torch.no_grad():
        u = torch.nn.functional.normalize(torch.randn(TINY["d_model"]), dim=0)
        model.model.decoder.embed_tokens.weight[ids["eos_token_id"]] = u
        model.model.decoder.layer_norm.bias.copy_(10 * u)
    model.generation_config = GenerationConfig.from_pretrained(base_dir)
    # A random model also emits timestamp tokens after <|notimestamps|>, which makes transformers' Whisper
    # generate re-seek and drop rows of the batch (a transformers quirk; real Whisper practically never
    # does this). Suppress them so dev decoding of the tiny model is well defined.
    first_timestamp = model.generation_config.no_timestamps_token_id + 1
    model.generation_config.suppress_tokens = [*model.generation_config.suppress_tokens,
                                               *range(first_timestamp, TINY["vocab_size"])]
    model.save_pretrained(out)
    WhisperProcessor.from_pretrained(base_dir).save_pretrained(out)
    return out


@pytest.fixture
def full_disk(monkeypatch):
    """full_disk(root, when=None) -> the list of paths refused: from now on every file kidwhisper writes under
    ``root`` (for which ``when(path)`` is true) fails as on a full disk: half its bytes land, then
    OSError(ENOSPC), at the one place kidwhisper writes file contents (kidwhisper.files._write)."""
    import errno
    import os

    from kidwhisper import files

    real = files._write

    def arm(root: Path, when=None) -> list[Path]:
        refused: list[Path] = []

        def write(path, data, mode="wb", fsync=False):
            path = Path(path)
            if path.is_relative_to(root) and (when is None or when(path)):
                with open(path, mode) as f:
                    f.write(bytes(data)[: len(data) // 2])
                refused.append(path)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(path, data, mode, fsync)

        monkeypatch.setattr(files, "_write", write)
        return refused

    return arm
