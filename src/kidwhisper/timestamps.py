"""Word times and phrase cues for decoded Whisper windows.

**Word times** come from Whisper's cross-attention, as openai-whisper's ``word_timestamps`` and
transformers' ``return_token_timestamps`` compute them: the decoded text is fed back through the decoder
once (teacher forcing) with the window's encoder output; the cross-attention weights of the model's
*alignment heads* (``generation_config.alignment_heads``; the last half of the decoder layers, all heads,
when a model has none) are normalised per head over the tokens, median-filtered over time (width
``MEDIAN_FILTER_WIDTH``), averaged, and aligned to the audio by dynamic time warping (transformers'
``_median_filter`` and ``_dynamic_time_warping``). A token starts where the warping path first reaches
it; a word spans its tokens (a word starts at a token whose text begins with a space). The text is the
one decoding produced, so timestamps never change a transcript.

Attention alignment puts every frame of a pause inside some word (the word after it: a token's
start is where the previous token ends). Word edges are therefore moved out of silence: 20 ms frames
are speech when their smoothed energy lies within ``SPEECH_RANGE_DB`` of the window's loudest frame,
``NOISE_MARGIN_DB`` above its noise floor and above ``SPEECH_FLOOR``; a word starts after the longest
silence of at least ``TRIM_SECONDS`` before or inside it and ends with its last speech
(:func:`trim_to_speech`). Pauses between words become gaps.

**Cues** (subtitle blocks) group consecutive words: a new cue starts after a pause of at least
``CUE_PAUSE_SECONDS``, or of ``SENTENCE_PAUSE_SECONDS`` after a word ending a sentence (``.?!``). A cue
longer than ``MAX_CUE_SECONDS`` is split again, recursively, at its best gap (the longest pause, with a
bonus after sentence and clause punctuation). Cues never span two windows.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from kidwhisper.audio import HOP_LENGTH, SAMPLE_RATE, TOKENS_PER_SECOND

log = logging.getLogger(__name__)

MEDIAN_FILTER_WIDTH = 7  # openai-whisper's medfilt_width: smooths the attention over 7 positions (140 ms)
FRAME = SAMPLE_RATE // 50  # 320 samples = 20 ms energy frames
SMOOTH_FRAMES = 5  # energy averaged over 100 ms, so short stops inside a word are not silence
SPEECH_RANGE_DB = 30.0  # a frame more than 30 dB below the window's loudest frame is silence
NOISE_MARGIN_DB = 6.0  # ... and so is one less than 6 dB above the window's noise floor (10th percentile)
SPEECH_FLOOR = 10 ** (-60 / 20)  # ... and so is any frame below -60 dBFS RMS
TRIM_SECONDS = 0.2  # a silent run this long at a word's head or tail is cut off the word
CUE_PAUSE_SECONDS = 1.0  # a pause this long always starts a new cue
SENTENCE_PAUSE_SECONDS = 0.3  # ... and this long after a word that ends a sentence
MAX_CUE_SECONDS = 7.0  # a longer cue is split at its best gap
SENTENCE_END = (".", "?", "!")
CLAUSE_END = (",", ";", ":")


@dataclass
class Word:
    word: str  # the word's text, with its leading space as decoded
    start: float  # seconds from the start of the window
    end: float
    probability: float  # mean probability of its tokens under the model


# ------------------------------------------------------------------------------------ attention + DTW
def alignment_heads(model) -> list[tuple[int, int]]:
    """(layer, head) pairs whose cross-attention follows the audio: ``generation_config.alignment_heads``,
    or all heads of the last half of the decoder layers when it names none (or heads the model lacks)."""
    n_layers, n_heads = model.config.decoder_layers, model.config.decoder_attention_heads
    heads = [(int(layer), int(head)) for layer, head in getattr(model.generation_config, "alignment_heads", None) or []]
    if heads and all(0 <= layer < n_layers and 0 <= head < n_heads for layer, head in heads):
        return heads
    if heads:
        log.warning("generation_config.alignment_heads %s do not fit this model (%d layers x %d heads); using the "
                    "last half of its decoder layers", heads, n_layers, n_heads)
    return [(layer, head) for layer in range(n_layers // 2, n_layers) for head in range(n_heads)]


@contextlib.contextmanager
def _eager_attention(model):
    """Attention weights are only returned by the eager implementation; switch to it for one pass."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


def prompt_ids(processor, language: str | None, multilingual: bool) -> list[int]:
    """The decoder prompt of a no-timestamps transcription: ``<|startoftranscript|>[<|xx|><|transcribe|>]
    <|notimestamps|>``."""
    names = ["<|startoftranscript|>"]
    if multilingual:
        names += [f"<|{language or 'en'}|>", "<|transcribe|>"]
    names.append("<|notimestamps|>")
    return processor.tokenizer.convert_tokens_to_ids(names)


@torch.inference_mode()
def token_alignment(model, encoder_hidden: torch.Tensor, prompts: list[list[int]], texts: list[list[int]],
                    n_samples: list[int], eot: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each window: (start time in s of each text token and of the end of text, token probabilities).

    ``encoder_hidden`` [batch, positions, d] is the windows' encoder output; ``prompts`` and ``texts`` the
    decoder prompt and the decoded text ids of each window; ``n_samples`` the window lengths.
    """
    from transformers.models.whisper.generation_whisper import _dynamic_time_warping, _median_filter

    rows = [p + t + [eot] for p, t in zip(prompts, texts, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [eot] * (width - len(r)) for r in rows], device=encoder_hidden.device)
    with _eager_attention(model):
        out = model(encoder_outputs=(encoder_hidden,), decoder_input_ids=ids, output_attentions=True)
    heads = alignment_heads(model)
    weights = torch.stack([out.cross_attentions[layer][:, head] for layer, head in heads], dim=1).float()
    probs = out.logits.float().softmax(-1)
    results = []
    for b, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
        positions = max(1, n_samples[b] // HOP_LENGTH // 2)  # encoder positions holding audio
        w = weights[b, :, len(prompt) - 1 : len(prompt) + len(text), :positions]  # rows predict text + eot
        std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
        w = _median_filter((w - mean) / (std + 1e-10), MEDIAN_FILTER_WIDTH)
        text_idx, time_idx = _dynamic_time_warping(-w.mean(dim=0).double().cpu().numpy())
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        starts = time_idx[jumps] / TOKENS_PER_SECOND  # one per row: each text token, then end of text
        rows_text = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(text))
        token_p = probs[b, rows_text, torch.tensor(text, dtype=torch.long)]
        results.append((starts.astype(np.float64), token_p.cpu().numpy().astype(np.float64)))
    return results


def words_from_tokens(tokenizer, text: list[int], starts: np.ndarray, token_p: np.ndarray,
                      duration: float) -> list[Word]:
    """Group text tokens into words (a word starts at a token beginning with a space) with their times,
    clipped to ``[0, duration]``."""
    pieces = tokenizer.convert_ids_to_tokens(text)
    groups: list[list[int]] = []
    for i, piece in enumerate(pieces):
        if not groups or (piece or "").startswith("Ġ"):  # byte-level BPE marks a leading space with Ġ
            groups.append([])
        groups[-1].append(i)
    words = []
    for g in groups:
        start = float(min(max(starts[g[0]], 0.0), duration))
        end = float(min(max(starts[g[-1] + 1], start), duration))
        words.append(Word(tokenizer.decode([text[i] for i in g]), start, end, float(np.mean(token_p[g]))))
    return [w for w in words if w.word.strip()]


# ------------------------------------------------------------------------------------------- pauses
def speech_frames(audio: np.ndarray) -> np.ndarray:
    """Boolean per 20 ms frame of ``audio``: True where it is not silent (see module docstring)."""
    n = len(audio) // FRAME
    if n == 0:
        return np.zeros(0, bool)
    energy = np.sqrt(np.mean(audio[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1))
    k = min(SMOOTH_FRAMES, n)
    smooth = np.convolve(energy, np.ones(k) / k, mode="same")
    threshold = max(SPEECH_FLOOR, float(smooth.max()) * 10 ** (-SPEECH_RANGE_DB / 20),
                    float(np.percentile(smooth, 10)) * 10 ** (NOISE_MARGIN_DB / 20))
    return smooth >= threshold


def _voiced_runs(speech: np.ndarray, a: int, b: int, min_gap: int) -> list[tuple[int, int]]:
    """[start, end) frame runs of speech in ``speech[a:b]``, merged across silences shorter than ``min_gap``."""
    runs: list[list[int]] = []
    for i in np.flatnonzero(speech[a:b]) + a:
        if runs and i - runs[-1][1] < min_gap:
            runs[-1][1] = int(i) + 1
        else:
            runs.append([int(i), int(i) + 1])
    return [(x, y) for x, y in runs]


def trim_to_speech(words: list[Word], speech: np.ndarray) -> list[Word]:
    """Move word edges out of pauses (in place), using the ``speech`` frames of the window.

    The alignment places each word's end well and lets its start run back to the previous word's end,
    so a pause sits at the head of the word after it. Inside each word, silences of at least
    ``TRIM_SECONDS`` split the audio into voiced runs; the word starts after the longest silence (the one
    before its first run, measured back to the previous speech, or a gap between runs) and ends with its
    last run. Speech before that gap goes to the previous
    word when that word ended where this one started. A word with no voiced frame keeps its times.
    """
    frame_s = FRAME / SAMPLE_RATE
    min_gap = int(round(TRIM_SECONDS / frame_s))
    for i, w in enumerate(words):
        a, b = int(round(w.start / frame_s)), min(int(round(w.end / frame_s)), len(speech))
        runs = _voiced_runs(speech, a, b, min_gap)
        if not runs:
            continue
        before = np.flatnonzero(speech[: runs[0][0]])  # the silence before the first run, even before a
        gaps = [runs[0][0] - (int(before[-1]) + 1 if len(before) else 0)]
        gaps += [runs[k][0] - runs[k - 1][1] for k in range(1, len(runs))]
        k = int(np.argmax(gaps))  # the word's own audio starts with run k
        if gaps[k] >= min_gap:
            if k > 0 and i > 0 and words[i - 1].end == w.start:
                words[i - 1].end = runs[k - 1][1] * frame_s
            w.start = runs[k][0] * frame_s
        if b - runs[-1][1] >= min_gap:
            w.end = max(w.start, runs[-1][1] * frame_s)
    return words


# --------------------------------------------------------------------------------------------- cues
def _gap_score(prev: Word, nxt: Word) -> float:
    end = prev.word.rstrip()
    bonus = 0.5 if end.endswith(SENTENCE_END) else 0.2 if end.endswith(CLAUSE_END) else 0.0
    return (nxt.start - prev.end) + bonus


def _split_long(words: list[Word]) -> list[list[Word]]:
    if len(words) < 2 or words[-1].end - words[0].start <= MAX_CUE_SECONDS:
        return [words]
    middle = (words[0].start + words[-1].end) / 2  # among equal gaps, the one nearest the middle
    best = max(range(1, len(words)),
               key=lambda i: (round(_gap_score(words[i - 1], words[i]), 2), -abs(words[i].start - middle)))
    return _split_long(words[:best]) + _split_long(words[best:])


def group_cues(words: list[Word]) -> list[list[Word]]:
    """Consecutive words -> cues: split at pauses, then any cue over ``MAX_CUE_SECONDS`` at its best gap."""
    groups: list[list[Word]] = []
    for w in words:
        if groups:
            prev = groups[-1][-1]
            gap = w.start - prev.end
            sentence = prev.word.rstrip().endswith(SENTENCE_END)
            if gap < CUE_PAUSE_SECONDS and not (sentence and gap >= SENTENCE_PAUSE_SECONDS):
                groups[-1].append(w)
                continue
        groups.append([w])
    return [part for g in groups for part in _split_long(g)]


def cue_dict(words: list[Word], offset: float, with_words: bool) -> dict:
    """One cue as a result segment: ``start``, ``end`` (s in the file), ``text``, optionally ``words``."""
    seg = {"start": round(offset + words[0].start, 3), "end": round(offset + words[-1].end, 3),
           "text": "".join(w.word for w in words).strip()}
    if with_words:
        seg["words"] = [{"word": w.word.strip(), "start": round(offset + w.start, 3),
                         "end": round(offset + w.end, 3), "probability": round(w.probability, 3)} for w in words]
    return seg
