"""Packed greedy decoding: several clips share one 30 s encoder pass, each is decoded as if alone.

A child's clip is a few seconds long, yet Whisper's encoder always runs on a 30 s window. Here the clips
of a batch are laid out in windows of at most ``max_seconds`` (``gap`` seconds apart, the layout of
packed training windows, :mod:`kidwhisper.train.clipwise`), the encoder runs once per window, and every
clip is decoded as its own sequence:

- **encoder**: each clip's frames (its audio and the gap after it) take positions 0, 1, ... as if the
  clip opened the window, and attend only to themselves and the window's trailing silence, as in
  ``isolated`` training. Unlike training, the silence attends only to itself, and each clip's log-mel
  and convolutional stem are computed from the clip alone (its own loudness floor, zeros around it), so
  a clip's transcript does not depend on the audio of the clips beside it: only on where the window's
  silence starts. The silence is the log-mel value :data:`SILENCE_MEL`.
- **decoder**: one row per clip, greedy, with the prompt, token budget, timestamp suppression and flags
  of :func:`kidwhisper.decode.decode_batch`; its cross-attention sees the clip's own frames and the
  trailing silence only (the encoder states are gathered per clip, padded, and masked).

A window holding one clip (a clip longer than ``max_seconds``, or the last of a batch) is decoded exactly
as :func:`kidwhisper.decode.decode_batch` decodes it. Beam search decodes one clip per window.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kidwhisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE
from kidwhisper.decode import MAX_NEW_TOKENS, Decoded, decode_batch, generate_from_encoder, transcribe_arrays
from kidwhisper.train.batching import clip_spans
from kidwhisper.train.clipwise import (
    attention_bias,
    check_attention,
    clip_frames,
    compute_dtype,
    decoder_masks,
    encoder_layout,
)

log = logging.getLogger(__name__)

PACK_SECONDS = 25.0  # audio per window, gaps included: >= 5 s of silence closes every window, as in training
PACK_GAP = 0.2  # seconds of silence between the clips of a window
LOUDEST_LOG_MEL = 1.2  # log10 power of the loudest mel bin of speech recorded at ordinary levels
SILENCE_MEL = (LOUDEST_LOG_MEL - 8.0 + 4.0) / 4.0  # Whisper's padding value for such a clip: (max - 8 + 4) / 4
STEM_MARGIN = 4 * HOP_LENGTH  # samples past a clip's gap whose log-mel frames its last stem frame reads
_FIX = "decode without --pack"


def plan_windows(durations: list[float], max_seconds: float = PACK_SECONDS, gap: float = PACK_GAP,
                 max_clips: int = 16) -> list[list[int]]:
    """Clip indices grouped into windows: in order of duration (then index), each clip joins the current
    window while the window stays within ``max_seconds`` (clips and gaps) and ``max_clips`` clips, else
    opens the next one. A clip longer than ``max_seconds`` gets a window of its own."""
    windows: list[list[int]] = []
    seconds = math.inf
    for i in sorted(range(len(durations)), key=lambda i: (durations[i], i)):
        d = durations[i]
        if windows and len(windows[-1]) < max_clips and seconds + gap + d <= max_seconds:
            windows[-1].append(i)
            seconds += gap + d
        else:
            windows.append([i])
            seconds = d
    return windows


def clip_mels(processor, audios: list[np.ndarray], gap: float, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
    """Log-mels [B, n_mels, T] of each clip alone, cut after the longest clip plus ``gap``: frame for frame
    what :func:`kidwhisper.decode.features` computes from the clip padded to 30 s (the same loudness floor;
    zeros after the clip), as far as a clip's encoder frames read them."""
    longest = max(len(a) for a in audios) + int(round(gap * SAMPLE_RATE)) + STEM_MARGIN
    length = min(N_SAMPLES, math.ceil(longest / (2 * HOP_LENGTH)) * 2 * HOP_LENGTH)  # an even number of frames
    feats = processor.feature_extractor(audios, sampling_rate=SAMPLE_RATE, max_length=length,
                                        return_tensors="pt").input_features
    return feats.to(device=device, dtype=dtype)


def stem(encoder, mels: torch.Tensor) -> torch.Tensor:
    """Whisper's convolutional front end: log-mels [B, n_mels, T] -> [B, T // 2, d_model], no positions."""
    x = F.gelu(encoder.conv1(mels))
    return F.gelu(encoder.conv2(x)).transpose(1, 2)


def encode(encoder, embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Whisper's encoder (eval mode) after the stem: ``embeds`` [W, ENCODER_FRAMES, d] plus the position
    embeddings at ``positions`` [W, ENCODER_FRAMES], then every layer with ``mask`` (an attention bias)."""
    hidden = embeds + encoder.embed_positions.weight[positions]
    for layer in encoder.layers:
        hidden = layer(hidden, mask)
    return encoder.layer_norm(hidden)


def encode_windows(whisper, processor, audios: list[np.ndarray], windows: list[list[int]],
                   gap: float = PACK_GAP) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(encoder states [W, ENCODER_FRAMES, d] of the packed windows, for each clip of each window in
    order the boolean [ENCODER_FRAMES] frames its tokens may attend to)."""
    encoder = whisper.model.encoder
    param = next(encoder.parameters())
    order = [i for w in windows for i in w]
    stems = stem(encoder, clip_mels(processor, [audios[i] for i in order], gap, param.device, param.dtype))
    silence = torch.full((1, encoder.conv1.in_channels, N_FRAMES), SILENCE_MEL, device=param.device,
                         dtype=param.dtype)
    silence = stem(encoder, silence)[0]
    embeds, segments, positions, allowed = [], [], [], []
    row = 0
    for w in windows:
        spans = clip_spans([len(audios[i]) / SAMPLE_RATE for i in w], gap)
        frames = clip_frames(spans, spans[-1][1], gap)
        segment, position = (t.to(param.device) for t in encoder_layout(frames, spans[-1][1]))
        x = silence.clone()
        for k in range(len(w)):
            own = (segment == k).nonzero().flatten()
            x[own] = stems[row + k, : len(own)]
        row += len(w)
        embeds.append(x)
        segments.append(segment)
        positions.append(position)
        allowed.extend(frames.to(param.device))
    segments_t = torch.stack(segments)
    query, key = segments_t[:, :, None], segments_t[:, None, :]
    sees = (query == key) | ((query >= 0) & (key < 0))  # a clip: itself and the silence; the silence: itself
    mask = attention_bias(sees[:, None], check_attention(whisper, _FIX), compute_dtype(whisper, param.device))
    return encode(encoder, torch.stack(embeds), torch.stack(positions), mask), allowed


def decode_windows(model, processor, audios: list[np.ndarray], windows: list[list[int]], language: str | None,
                   budgets: list[int], gap: float = PACK_GAP) -> list[Decoded]:
    """Greedy decoding of the clips of ``windows`` (indices into ``audios``), one row per clip, results in
    the order of ``[i for w in windows for i in w]``; ``budgets`` are per clip in that order."""
    from transformers.modeling_outputs import BaseModelOutput

    whisper = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden, allowed = encode_windows(whisper, processor, audios, windows, gap)
    rows = [(w, k) for w in range(len(windows)) for k in range(len(windows[w]))]
    length = max(int(a.sum()) for a in allowed)
    states = hidden.new_zeros(len(rows), length, hidden.shape[-1])
    keys = torch.zeros(len(rows), 1, 1, length, dtype=torch.bool, device=hidden.device)
    for r, ((w, _), frames) in enumerate(zip(rows, allowed, strict=True)):
        n = int(frames.sum())
        states[r, :n] = hidden[w, frames]
        keys[r, ..., :n] = True
    with decoder_masks(whisper, None, keys, fix=_FIX):
        return generate_from_encoder(model, processor, BaseModelOutput(last_hidden_state=states), language, budgets)


def batches(windows: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Consecutive windows grouped into batches of at most ``batch_size`` clips (at least one window)."""
    out: list[list[list[int]]] = []
    n = batch_size
    for w in windows:
        if out and n + len(w) <= batch_size:
            out[-1].append(w)
            n += len(w)
        else:
            out.append([w])
            n = len(w)
    return out


@torch.inference_mode()
def transcribe_packed(model, processor, audios: list[np.ndarray], language: str | None = "en",
                      batch_size: int = 16, max_new_tokens: int | list[int] = MAX_NEW_TOKENS,
                      num_beams: int = 1, progress: bool = True, max_seconds: float = PACK_SECONDS,
                      gap: float = PACK_GAP) -> list[Decoded]:
    """Decode many clips, several per encoder window (see the module docstring); results in input order.

    The options mean what they mean for :func:`kidwhisper.decode.transcribe_arrays`; ``batch_size`` bounds
    the clips decoded together and the clips of one window. With ``num_beams > 1`` every clip gets a window
    of its own (``transcribe_arrays``).
    """
    budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(audios)
    if num_beams > 1:
        log.info("beam search decodes one clip per encoder window (packed decoding is greedy)")
        return transcribe_arrays(model, processor, audios, language, batch_size, budgets, num_beams, progress)
    windows = plan_windows([len(a) / SAMPLE_RATE for a in audios], max_seconds, gap, batch_size)
    log.info("packed decoding: %d clips in %d encoder windows", len(audios), len(windows))
    results: list[Decoded | None] = [None] * len(audios)
    with tqdm(total=len(audios), desc="decoding (packed)", unit="clip", disable=not progress) as bar:
        for batch in batches(windows, batch_size):
            singles = [w[0] for w in batch if len(w) == 1]
            packed = [w for w in batch if len(w) > 1]
            if singles:
                decoded = decode_batch(model, processor, [audios[i] for i in singles], language,
                                       [budgets[i] for i in singles])
                for i, d in zip(singles, decoded, strict=True):
                    results[i] = d
            if packed:
                order = [i for w in packed for i in w]
                decoded = decode_windows(model, processor, audios, packed, language, [budgets[i] for i in order],
                                         gap)
                for i, d in zip(order, decoded, strict=True):
                    results[i] = d
            bar.update(sum(len(w) for w in batch))
    return results  # type: ignore[return-value]
