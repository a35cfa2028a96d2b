"""CTranslate2 Whisper (faster-whisper) -> Hugging Face ``WhisperForConditionalGeneration``.

``model.bin`` layout (little-endian), as written by ``ctranslate2.specs.model_spec``:
u32 version; if version >= 2: string spec name, u32 revision; u32 variable count; per variable:
string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw bytes; then (version >= 3)
u32 alias count and (alias, target) string pairs. Strings are u16 length (counting a trailing NUL)
+ bytes + NUL. Rank-0 variables are config scalars (``encoder/num_heads``), not weights.

Name mapping (from ctranslate2's ``converters/transformers.py`` WhisperLoader and
``specs/whisper_spec.py``): self-attention q,k,v are fused row-wise in ``linear_0`` (k has no bias
in HF, its fused slot is zeros); cross-attention q is ``attention/linear_0``, k,v are fused in
``attention/linear_1``; ``decoder/projection/weight`` aliases the token embedding (tied ``proj_out``).
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# CTranslate2 dtype codes -> numpy dtypes (bf16 handled separately: numpy has none).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 0.02 s steps
MULTILINGUAL_VOCAB = 51865  # multilingual iff vocab size >= this


class CT2FormatError(ValueError):
    """A model.bin that is truncated, corrupt or not a Whisper model."""


@dataclass
class CT2Model:
    spec: str | None
    revision: int | None
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


def read_model_bin(path: str | Path, data: bytes | None = None) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (or its bytes ``data``, with ``path`` naming it in errors).

    Raises CT2FormatError naming the file if it is truncated or malformed.
    """
    path = Path(path)
    buf = memoryview(data if data is not None else path.read_bytes())
    off = 0

    def take(fmt: str):
        nonlocal off
        size = struct.calcsize("<" + fmt)
        if off + size > len(buf):
            raise CT2FormatError(f"{path}: truncated at byte {off} of {len(buf)}")
        (value,) = struct.unpack_from("<" + fmt, buf, off)
        off += size
        return value

    def string() -> str:
        nonlocal off
        n = take("H")
        if n == 0 or off + n > len(buf):
            raise CT2FormatError(f"{path}: truncated or corrupt string at byte {off}")
        s = bytes(buf[off : off + n - 1]).decode("utf-8", errors="strict")
        off += n
        return s

    try:
        version = take("I")
        if not 1 <= version <= 10:
            raise CT2FormatError(f"{path}: not a CTranslate2 model.bin (version field {version})")
        spec = string() if version >= 2 else None
        revision = take("I") if version >= 2 else None
        count = take("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = string()
            rank = take("B")
            dims = [take("I") for _ in range(rank)]
            dtype = take("B")
            nbytes = take("I")
            if off + nbytes > len(buf):
                raise CT2FormatError(f"{path}: truncated inside variable {name!r}")
            raw = buf[off : off + nbytes]
            off += nbytes
            if dtype == _BF16:
                arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype in _DTYPES:
                arr = np.frombuffer(raw, dtype=_DTYPES[dtype])
            else:
                raise CT2FormatError(f"{path}: unknown dtype code {dtype} for {name!r}")
            if arr.size != int(np.prod(dims)):
                raise CT2FormatError(f"{path}: {name!r} has {arr.size} values for shape {dims}")
            variables[name] = arr.reshape(dims)
        aliases: dict[str, str] = {}
        if version >= 3:
            for _ in range(take("I")):
                alias = string()
                aliases[alias] = string()
    except (UnicodeDecodeError, struct.error) as e:
        raise CT2FormatError(f"{path}: corrupt model.bin ({e})") from e
    if off != len(buf):
        raise CT2FormatError(f"{path}: {len(buf) - off} unexpected trailing bytes")
    return CT2Model(spec, revision, variables, aliases)


def _scalar(model: CT2Model, name: str) -> int:
    return int(model.get(name).reshape(()))


def _count_layers(model: CT2Model, side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    return n


def hf_state_dict(model: CT2Model) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (WhisperConfig kwargs, HF state dict as float32 numpy arrays)."""
    if model.spec not in (None, "WhisperSpec"):
        raise CT2FormatError(f"model.bin holds a {model.spec}, not a WhisperSpec")
    scaled = [n for n in model.variables if n.endswith("weight_scale")]
    if scaled:
        raise CT2FormatError(f"this is a quantized CTranslate2 model ({scaled[0]} and {len(scaled) - 1} more "
                             f"scales); kidwhisper converts float32/float16/bfloat16 models only: use the "
                             f"float export (`kidwhisper export --format ct2` without --quantization) or the "
                             f"merged Hugging Face export")
    g = model.get
    sd: dict[str, np.ndarray] = {}

    def linear(hf: str, ct: str, bias: bool = True) -> None:
        sd[f"{hf}.weight"] = g(f"{ct}/weight")
        if bias:
            sd[f"{hf}.bias"] = g(f"{ct}/bias")

    def norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"] = g(f"{ct}/gamma")
        sd[f"{hf}.bias"] = g(f"{ct}/beta")

    def fused(prefix: str, ct: str, names: list[str]) -> None:
        w, b = g(f"{ct}/weight"), g(f"{ct}/bias")
        d = w.shape[0] // len(names)
        for i, n in enumerate(names):
            sd[f"{prefix}.{n}.weight"] = w[i * d : (i + 1) * d]
            if n != "k_proj":  # HF k_proj has no bias; CTranslate2 stores zeros there
                sd[f"{prefix}.{n}.bias"] = b[i * d : (i + 1) * d]

    def layer(side: str, i: int) -> None:
        hf, ct = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
        fused(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        if side == "decoder":
            linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
            fused(f"{hf}.encoder_attn", f"{ct}/attention/linear_1", ["k_proj", "v_proj"])
            linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
            norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")

    n_enc, n_dec = _count_layers(model, "encoder"), _count_layers(model, "decoder")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.encoder.embed_positions.weight"] = g("encoder/position_encodings/encodings")
    for i in range(n_enc):
        layer("encoder", i)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = g("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = g("decoder/position_encodings/encodings")
    for i in range(n_dec):
        layer("decoder", i)
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    sd = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}

    emb = sd["model.decoder.embed_tokens.weight"]
    config = dict(
        vocab_size=emb.shape[0],
        num_mel_bins=sd["model.encoder.conv1.weight"].shape[1],
        d_model=emb.shape[1],
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=_scalar(model, "encoder/num_heads"),
        decoder_attention_heads=_scalar(model, "decoder/num_heads"),
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
    )
    return config, sd


def convert_ct2_dir(ct2_dir: str | Path, out_dir: str | Path, model_bin: CT2Model | None = None) -> Path:
    """Convert a faster-whisper directory (model.bin, config.json, tokenizer.json) to a HF directory.

    ``model_bin`` is an already parsed model.bin (the built-in models reassemble theirs from parts).
    Writes safetensors weights, config, generation config (language/task ids), tokenizer (with the
    1501 timestamp tokens the faster-whisper tokenizer.json lacks) and feature extractor.
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    ct = model_bin or read_model_bin(ct2_dir / "model.bin")
    cfg_kwargs, sd = hf_state_dict(ct)
    ct_config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").exists() else {}
    tokenizer = build_tokenizer(ct2_dir / "tokenizer.json", cfg_kwargs["vocab_size"])
    ids = special_token_ids(tokenizer)
    multilingual = cfg_kwargs["vocab_size"] >= MULTILINGUAL_VOCAB
    config = WhisperConfig(
        **cfg_kwargs,
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
        suppress_tokens=ct_config.get("suppress_ids", []),
        begin_suppress_tokens=ct_config.get("suppress_ids_begin", [220, ids["eot"]]),
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(v) for k, v in sd.items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = build_generation_config(config, tokenizer, ct_config, multilingual)
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    build_processor(tokenizer).save_pretrained(out_dir)
    return out_dir


def build_tokenizer(tokenizer_json: Path, vocab_size: int):
    """WhisperTokenizerFast from faster-whisper's tokenizer.json, plus the timestamp tokens."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    tok = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json), unk_token="<|endoftext|>",
                               bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>", add_prefix_space=False)
    missing = vocab_size - len(tok)
    if missing > 0:
        # As ctranslate2's converter does: the remaining ids are <|0.00|> .. <|30.00|>.
        tok.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False,
                                   special=False) for i in range(missing)])
    if len(tok) != vocab_size:
        raise CT2FormatError(f"tokenizer has {len(tok)} tokens but the model's vocabulary has {vocab_size}")
    return tok


def special_token_ids(tok) -> dict[str, int]:
    get = tok.convert_tokens_to_ids
    return {
        "eot": get("<|endoftext|>"),
        "sot": get("<|startoftranscript|>"),
        "translate": get("<|translate|>"),
        "transcribe": get("<|transcribe|>"),
        "prev": get("<|startofprev|>"),
        "lm": get("<|startoflm|>"),
        "no_timestamps": get("<|notimestamps|>"),
        "no_speech": get("<|nocaptions|>"),
        "timestamp_begin": get("<|0.00|>"),
    }


def build_generation_config(config, tok, ct_config: dict, multilingual: bool):
    from transformers import GenerationConfig

    ids = special_token_ids(tok)
    lang_to_id = {}
    if multilingual:
        for tid in ct_config.get("lang_ids", []):
            lang_to_id[tok.convert_ids_to_tokens(tid)] = tid
    gen = GenerationConfig(
        decoder_start_token_id=ids["sot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=config.max_target_positions,
        suppress_tokens=list(config.suppress_tokens or []),
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["prev"],
        max_initial_timestamp_index=50,
        is_multilingual=multilingual,
        return_timestamps=False,
    )
    gen.alignment_heads = ct_config.get("alignment_heads")
    if multilingual:
        gen.lang_to_id = lang_to_id
        gen.task_to_id = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
        # Default to English transcription: a tuned model must never guess the language.
        gen.language = "<|en|>"
        gen.task = "transcribe"
    return gen


def build_processor(tokenizer):
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
