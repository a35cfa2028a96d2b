"""Fixtures for the training tests: a tiny random Whisper with the real processor, real kids' clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data beside the repo
KIDS = SHARED / "speechocean762-kids"

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


def _write_manifest(src: Path, out: Path, n: int) -> Path:
    texts = dict(line.split(maxsplit=1) for line in (src / "text").read_text().splitlines() if line.strip())
    wavs = dict(line.split(maxsplit=1) for line in (src / "wav.scp").read_text().splitlines() if line.strip())
    lines = []
    for utt in sorted(texts)[:n]:
        path = (src / wavs[utt].strip()).resolve()
        lines.append(json.dumps({"id": utt, "audio": str(path), "duration": sf.info(str(path)).duration,
                                 "text": texts[utt].strip()}))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def kids_manifests(tmp_path_factory) -> tuple[Path, Path]:
    """(train manifest of 12 real clips, dev manifest of 3 real clips), absolute audio paths."""
    if not (KIDS / "train" / "text").is_file():
        pytest.skip(f"{KIDS} not found (the shared corpus lives beside the repository)")
    root = tmp_path_factory.mktemp("manifests")
    return (_write_manifest(KIDS / "train", root / "train" / "manifest.jsonl", 12),
            _write_manifest(KIDS / "dev", root / "dev" / "manifest.jsonl", 3))


@pytest.fixture
def copy_dir():
    def copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst

    return copy
