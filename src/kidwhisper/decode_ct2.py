"""Optional CTranslate2 decoding backend (``kidwhisper evaluate --backend ct2``).

Same front end (Hugging Face log-mel, 30 s padding), same prompt (``<|startoftranscript|><|en|>
<|transcribe|><|notimestamps|>``), same token bound and the same ``truncated`` flag as
:mod:`kidwhisper.decode`; only the engine differs. In float32 with greedy search it generates token-for-token
what the PyTorch model generates (see tests/test_decode_ct2.py), runaway decodes included; ``int8`` trades a
little accuracy for speed. Beam search (``num_beams`` > 1) is CTranslate2's own: it divides a finished
hypothesis' score by its length without ``<|endoftext|>`` (transformers counts it) and stops once
``num_beams`` hypotheses have finished, so a transcript that ends by itself can differ from PyTorch's; a
clip whose beam output runs away is decoded again greedily, as on PyTorch.
A tuned model (adapter) is merged and converted once into the cache (``$KIDWHISPER_CACHE/ct2-export``)
with :func:`kidwhisper.models.convert.cached_ct2_dir`.

CTranslate2's ``Whisper.generate(max_length=L)`` does not bound the generated tokens by ``L``: it forwards
the prompt up to its last token, then decodes at most ``min(L // 2, L - (len(prompt) - 1))`` steps (the half
is openai-whisper's ``sample_len = n_text_ctx // 2``), in greedy and beam search alike, and a step that
yields ``<|endoftext|>`` ends a hypothesis without adding to it. :func:`ct2_max_length` inverts that.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from kidwhisper.audio import SAMPLE_RATE
from kidwhisper.decode import MAX_NEW_TOKENS, Decoded, in_length_batches, with_greedy_fallback

log = logging.getLogger(__name__)


def ct2_max_length(max_new_tokens: int, prompt_length: int) -> int:
    """The ``max_length`` for CTranslate2's ``Whisper.generate`` that allows exactly ``max_new_tokens``
    generated tokens after a prompt of ``prompt_length`` tokens (see the module docstring)."""
    return max(2 * max_new_tokens, max_new_tokens + prompt_length - 1)


class CT2Decoder:
    """Batched decoding (greedy or beam search) with a CTranslate2 Whisper."""

    def __init__(self, ct2_dir: Path, processor, compute_type: str = "float32", device: str = "cpu"):
        import ctranslate2

        self.ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(ct2_dir), device=device, compute_type=compute_type,
                                                intra_threads=torch.get_num_threads())
        self.processor = processor
        tok = processor.tokenizer
        self.eot = tok.convert_tokens_to_ids("<|endoftext|>")
        first_ts = tok.convert_tokens_to_ids("<|0.00|>")
        self.suppress = [-1, *range(first_ts, len(tok))]  # the model's suppress list + every timestamp

    def decode_batch(self, audios: list[np.ndarray], language: str | None = "en",
                     max_new_tokens: int = MAX_NEW_TOKENS, num_beams: int = 1,
                     fallback: bool = True) -> list[Decoded]:
        """Decode one batch; with beam search and ``fallback``, a clip whose beam output runs away
        (:func:`kidwhisper.decode.is_runaway`) is decoded again greedily."""
        out = self._decode(audios, language, max_new_tokens, num_beams)
        return with_greedy_fallback(out, lambda rows: self._decode([audios[i] for i in rows], language,
                                                                   max_new_tokens, 1), num_beams, fallback)

    def _decode(self, audios: list[np.ndarray], language: str | None, max_new_tokens: int,
                num_beams: int) -> list[Decoded]:
        feats = self.processor.feature_extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        encoded = self.model.encode(self.ct2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)))
        if self.model.is_multilingual:
            if not language or language == "auto":
                langs = [r[0][0] for r in self.model.detect_language(encoded)]
            else:
                langs = [f"<|{language}|>"] * len(audios)
            prompts = [["<|startoftranscript|>", lang, "<|transcribe|>", "<|notimestamps|>"] for lang in langs]
        else:
            langs = [None] * len(audios)
            prompts = [["<|startoftranscript|>", "<|notimestamps|>"]] * len(audios)
        results = self.model.generate(encoded, prompts, beam_size=num_beams,
                                      max_length=ct2_max_length(max_new_tokens, len(prompts[0])),
                                      suppress_tokens=self.suppress, return_scores=False)
        out = []
        for r, lang in zip(results, langs, strict=True):
            seq = r.sequences_ids[0]  # every generated token but a final <|endoftext|>
            ids = [t for t in seq if t < self.eot]
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
            # A hypothesis as long as the budget never produced <|endoftext|>: the budget stopped it.
            out.append(Decoded(text, ids, lang[2:-2] if lang else None, truncated=len(seq) >= max_new_tokens))
        return out

    def transcribe_arrays(self, audios: list[np.ndarray], language: str | None = "en", batch_size: int = 16,
                          max_new_tokens: int = MAX_NEW_TOKENS, num_beams: int = 1,
                          progress: bool = True, fallback: bool = True) -> list[Decoded]:
        return in_length_batches(audios, batch_size, lambda idx: self.decode_batch(
            [audios[i] for i in idx], language, max_new_tokens, num_beams, fallback), progress, "decoding (ct2)")
