"""Batched Whisper decoding done right: language forced, task transcribe, no timestamps, greedy (or beam
search, where a clip whose beam output runs away is decoded again greedily: :func:`is_runaway`).

This is the one place that turns audio into text with a PyTorch model; ``evaluate``, ``train`` (dev WER)
and ``transcribe`` all call it, so they decode the same way. The front end is Hugging Face's
``WhisperFeatureExtractor`` (audio padded to 30 s, then log-mel), used for training too.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutput

from kidwhisper.audio import SAMPLE_RATE
from kidwhisper.config import PRECISIONS, ConfigError
from kidwhisper.models.load import is_multilingual, native_bf16, resolve_device

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 224  # Whisper's own sample_len default (n_text_ctx // 2): a bound on runaway loops
COMPRESSION_RATIO_THRESHOLD = 2.4  # Whisper's own: a text that gzip compresses more than this is a loop


@dataclass
class Decoded:
    text: str
    tokens: list[int]  # generated text token ids (specials excluded)
    language: str | None  # the language token the decoder used, e.g. "en"
    truncated: bool  # stopped by the token budget, not by <|endoftext|>
    fallback: bool = False  # beam search ran away on this clip; this is its greedy decoding

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def compression_ratio(text: str) -> float:
    """UTF-8 bytes of ``text`` over their zlib-compressed size, as Whisper's ``transcribe`` computes it."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_runaway(d: Decoded) -> bool:
    """A decoding that ran away: it never ended within its token budget, or it is so repetitive that its
    compression ratio exceeds :data:`COMPRESSION_RATIO_THRESHOLD` (Whisper's own fallback test). Decided from
    the output alone, never from a reference."""
    return d.truncated or compression_ratio(d.text) > COMPRESSION_RATIO_THRESHOLD


def with_greedy_fallback(decoded: list[Decoded], redecode: Callable[[list[int]], list[Decoded]],
                         num_beams: int, enabled: bool = True) -> list[Decoded]:
    """``decoded`` with each runaway (:func:`is_runaway`) replaced by ``redecode(rows)``, the greedy decoding
    of those rows, marked ``fallback``; ``decoded`` unchanged when it is greedy already (``num_beams`` 1) or
    the fallback is not ``enabled``. Whisper's ``transcribe`` falls back to sampling at rising temperatures
    instead; greedy keeps evaluation deterministic."""
    if num_beams == 1 or not enabled:
        return decoded
    rows = [i for i, d in enumerate(decoded) if is_runaway(d)]
    if not rows:
        return decoded
    out = list(decoded)
    for i, d in zip(rows, redecode(rows), strict=True):
        d.fallback = True
        out[i] = d
    return out


def features(processor, audios: list[np.ndarray], device: torch.device, dtype: torch.dtype,
             max_length: int | None = None) -> torch.Tensor:
    """Log-mels [B, n_mels, T] of ``audios`` padded to 30 s (or cut to ``max_length`` samples), computed in
    float32 whatever the decoding's precision, then moved to ``device`` and ``dtype``."""
    extra = {} if max_length is None else {"max_length": max_length}
    with torch.autocast("cpu", enabled=False):
        feats = processor.feature_extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                            **extra).input_features
    return feats.to(device=device, dtype=dtype)


def check_precision(precision: str, flag: str = "--precision") -> None:
    """ConfigError naming ``flag`` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{flag} must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def resolve_precision(precision: str, device: torch.device, flag: str = "--precision") -> str:
    """``precision`` (one of :data:`PRECISIONS`) made concrete for ``device``: ``auto`` is bf16 where the
    device runs it natively (:func:`kidwhisper.models.load.native_bf16`), float32 elsewhere. A precision the
    device cannot run is a ConfigError naming ``flag``."""
    check_precision(precision, flag)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "float32"
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError(f"{flag} fp16 needs a GPU; on a CPU use bf16 (where native) or float32")
    if precision == "bf16" and not native_bf16(device):
        log.warning("%s bf16 on %s: not native here, emulated (slower than float32)", flag, device.type)
    return precision


def check_device_precision(precision: str, device: str, flag: str = "--precision") -> None:
    """The ConfigError :func:`resolve_precision` would raise for ``precision`` on ``device`` (a ``--device``
    value), raised before a model loads or an output is started."""
    if precision == "fp16":
        resolve_precision(precision, resolve_device(device), flag)


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Where decoding runs in ``precision`` (resolved by :func:`resolve_precision`): float32 weights, matrix
    products in bf16 / fp16 under ``torch.autocast`` (layer norms, softmax and the log-mel stay float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@contextlib.contextmanager
def _quiet_generate():
    """Silence generate()'s per-batch warnings about arguments we set on purpose (max_new_tokens next to
    the saved max_length, no attention mask for fixed 30 s inputs, suppress_tokens next to a config)."""
    loggers = [logging.getLogger(n) for n in ("transformers.generation.utils",
                                              "transformers.models.whisper.generation_whisper")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@torch.inference_mode()
def decode_batch(model, processor, audios: list[np.ndarray], language: str | None = "en",
                 max_new_tokens: int | list[int] = MAX_NEW_TOKENS, num_beams: int = 1,
                 fallback: bool = True) -> list[Decoded]:
    """Decode one batch of 16 kHz mono arrays.

    ``language``: an ISO code to force (default ``en``) or ``None``/``"auto"`` to let a multilingual
    model detect it (the broken setup, reproduced on purpose). English-only models ignore it.
    ``max_new_tokens`` may be a per-clip list (a duration-based guard); the batch uses its max and each
    output is cut to its own budget. ``fallback`` (beam search only): a clip whose beam output runs away
    (:func:`is_runaway`) is decoded again greedily from the same encoder output.
    """
    param = next(model.parameters())
    feats = features(processor, audios, param.device, param.dtype)
    budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(audios)
    # Encode once: with language="auto", generate() would otherwise run the encoder twice
    # (once to detect the language, once to decode).
    return generate_from_encoder(model, processor, model.get_encoder()(feats), language, budgets, num_beams,
                                 fallback)


def generate_from_encoder(model, processor, encoder_outputs, language: str | None, budgets: list[int],
                          num_beams: int = 1, fallback: bool = True) -> list[Decoded]:
    """Decode one row per clip from ``encoder_outputs`` (a ``BaseModelOutput``) with the options of
    :func:`decode_batch`, each row cut to its own budget in ``budgets``."""
    states = encoder_outputs.last_hidden_state  # before generate(), which may expand it in place for beams
    decoded = _generate(model, processor, encoder_outputs, language, budgets, num_beams)

    def greedy(rows: list[int]) -> list[Decoded]:
        return _generate(model, processor, BaseModelOutput(last_hidden_state=states[rows]), language,
                         [budgets[i] for i in rows], 1)

    return with_greedy_fallback(decoded, greedy, num_beams, fallback)


def _generate(model, processor, encoder_outputs, language: str | None, budgets: list[int],
              num_beams: int) -> list[Decoded]:
    """One generate() call: the rows of ``encoder_outputs`` decoded with ``num_beams`` beams."""
    kwargs: dict = dict(do_sample=False, num_beams=num_beams, return_timestamps=False,
                        max_new_tokens=max(budgets), return_dict_in_generate=True)
    gen = model.generation_config
    saved_language = getattr(gen, "language", None)
    # Timestamps are off: never let a timestamp token through (a badly tuned model that emits one after
    # <|notimestamps|> makes transformers drop rows from the batch).
    first_ts = processor.tokenizer.convert_tokens_to_ids("<|0.00|>")
    vocab = model.config.vocab_size
    if isinstance(first_ts, int) and 0 < first_ts < vocab:
        kwargs["suppress_tokens"] = sorted(set(gen.suppress_tokens or []) | set(range(first_ts, vocab)))
    if is_multilingual(model):
        kwargs["task"] = "transcribe"
        auto = not language or language == "auto"
        # The saved generation config defaults to English; "auto" must really let the model guess.
        gen.language = None if auto else language
    try:
        with _quiet_generate():
            seqs = model.generate(encoder_outputs=encoder_outputs, **kwargs).sequences
    finally:
        gen.language = saved_language
    tok = processor.tokenizer
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    results = []
    if len(seqs) != len(budgets):
        raise RuntimeError(f"generate() returned {len(seqs)} sequences for {len(budgets)} clips")
    for row, budget in zip(seqs.tolist(), budgets, strict=True):
        lang = None
        for t in row[:4]:
            s = tok.convert_ids_to_tokens(t)
            if s and s.startswith("<|") and s.endswith("|>") and 2 <= len(s) - 4 <= 3 and s[2:-2].isalpha():
                lang = s[2:-2]
        text_ids = [t for t in row if t < eot]
        ended = eot in row[1:]
        truncated = len(text_ids) > budget or not ended
        text_ids = text_ids[:budget]
        results.append(Decoded(tok.decode(text_ids, skip_special_tokens=True).strip(), text_ids, lang, truncated))
    return results


def in_length_batches(audios: list[np.ndarray], batch_size: int, decode: Callable[[list[int]], list[Decoded]],
                      progress: bool = True, desc: str = "decoding") -> list[Decoded]:
    """Call ``decode(indices)`` on batches of clips of similar length; results come back in input order."""
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    results: list[Decoded | None] = [None] * len(audios)
    with tqdm(total=len(audios), desc=desc, unit="clip", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            for i, d in zip(idx, decode(idx), strict=True):
                results[i] = d
            bar.update(len(idx))
    return results  # type: ignore[return-value]


def transcribe_arrays(model, processor, audios: list[np.ndarray], language: str | None = "en",
                      batch_size: int = 16, max_new_tokens: int | list[int] = MAX_NEW_TOKENS,
                      num_beams: int = 1, progress: bool = True, fallback: bool = True) -> list[Decoded]:
    """Decode many clips in batches of similar length (order of the input is kept)."""
    budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(audios)
    return in_length_batches(audios, batch_size, lambda idx: decode_batch(
        model, processor, [audios[i] for i in idx], language, [budgets[i] for i in idx], num_beams, fallback),
        progress)
