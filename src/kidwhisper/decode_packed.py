"""Packed greedy decoding: the clips of a batch share one encoder pass, each is decoded as if alone.

A child's clip is a few seconds long, yet Whisper's encoder always runs on a 30 s window: for a 3.6 s clip,
seven eighths of its work go to the padding after the clip. Here the encoder runs only on each clip's own
frames, and the padding is a precomputed **silence continuation**:

- **silence**: the encoder is run once on a window of pure silence (log-mel value ``v`` everywhere, the
  value that Whisper's feature extractor pads a clip with: its loudest log-mel minus 8, normalized); every
  layer's keys and values and the final states are kept (:class:`SilenceCache`, one per value, ``v``
  rounded to ``silence_step``).
- **encoder**: a clip's frames (its audio and ``gap`` seconds of its padding, ``n`` frames) take positions
  0 .. n-1, as in unpacked decoding, and at every layer attend to themselves and to the silence's keys
  and values at positions n .. 1499: the frames that follow the clip in an unpacked window, at their own
  positions. The clip's log-mel and convolutional stem are computed from the clip alone (its own
  loudness floor, zeros after it). The one difference from unpacked decoding: the silence frames do not
  attend to the clip. The clips of a batch are rows of one encoder pass (padded to the longest, padding
  masked), so a clip's transcript does not depend on the other clips of its batch.
- **decoder**: each clip's encoder states are its own ``n`` frames followed by the silence's final states
  at positions n .. 1499 (1500 frames, as unpacked; the cross-attention keys and values of the silence part
  are projected once per silence, :func:`silence_cross_projections`), decoded greedily with the prompt,
  token budget, timestamp suppression and flags of :func:`kidwhisper.decode.decode_batch`.

A clip longer than ``max_seconds``, or a batch holding one clip, is decoded exactly as
:func:`kidwhisper.decode.decode_batch` decodes it. Beam search is not packed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kidwhisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE
from kidwhisper.decode import (
    MAX_NEW_TOKENS,
    Decoded,
    decode_batch,
    features,
    generate_from_encoder,
    transcribe_arrays,
)
from kidwhisper.train.clipwise import ENCODER_FRAMES, FRAMES_PER_SECOND

log = logging.getLogger(__name__)

PACK_SECONDS = 25.0  # clips longer than this are decoded one per window (packing saves little on them)
PACK_GAP = 0.2  # seconds of a clip's own padding encoded with the clip (the silence continuation follows)
SILENCE_STEP = 0.05  # the silence's log-mel value: a clip's padding value rounded to this step
STEM_MARGIN = 4 * HOP_LENGTH  # samples past a clip's gap whose log-mel frames its last stem frame reads


def clip_lengths(audios: list[np.ndarray], gap: float) -> list[int]:
    """Encoder frames of each clip's own (its audio and ``gap`` seconds of padding, at most a window)."""
    return [min(ENCODER_FRAMES, math.ceil(round((len(a) / SAMPLE_RATE + gap) * FRAMES_PER_SECOND, 6))) for a in audios]


def clip_mels(processor, audios: list[np.ndarray], gap: float, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
    """Log-mels [B, n_mels, T] of each clip alone, cut after the longest clip plus ``gap``: frame for frame
    what :func:`kidwhisper.decode.features` computes from the clip padded to 30 s (the same loudness floor;
    zeros after the clip), as far as a clip's encoder frames read them."""
    longest = max(len(a) for a in audios) + int(round(gap * SAMPLE_RATE)) + STEM_MARGIN
    length = min(N_SAMPLES, math.ceil(longest / (2 * HOP_LENGTH)) * 2 * HOP_LENGTH)  # an even number of frames
    return features(processor, audios, device, dtype, max_length=length)


def stem(encoder, mels: torch.Tensor) -> torch.Tensor:
    """Whisper's convolutional front end: log-mels [B, n_mels, T] -> [B, T // 2, d_model], no positions."""
    x = F.gelu(encoder.conv1(mels))
    return F.gelu(encoder.conv2(x)).transpose(1, 2)


def _heads(attn, x: torch.Tensor) -> torch.Tensor:
    """[B, T, d] -> [B, heads, T, head_dim]."""
    return x.view(*x.shape[:2], attn.num_heads, attn.head_dim).transpose(1, 2)


def layer_forward(layer, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                  extra: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """One Whisper encoder layer (eval mode) on ``hidden`` [B, T, d]; its attention also sees ``extra``
    keys and values ([B, heads, S, head_dim] each) after the rows' own, and ``mask`` [B, 1, T, T + S]
    (True = attend) says which."""
    attn = layer.self_attn
    x = layer.self_attn_layer_norm(hidden)
    q = _heads(attn, attn.q_proj(x) * attn.scaling)
    k, v = _heads(attn, attn.k_proj(x)), _heads(attn, attn.v_proj(x))
    if extra is not None:
        k, v = torch.cat([k, extra[0].to(k.dtype)], 2), torch.cat([v, extra[1].to(v.dtype)], 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    hidden = hidden + attn.out_proj(out.transpose(1, 2).reshape(hidden.shape))
    return hidden + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))


@dataclass
class Silence:
    """The encoder on a window of pure silence: per layer the keys and values [heads, 1500, head_dim] of its
    attention, and the final states [1500, d]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    final: torch.Tensor
    cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per decoder layer: k, v of ``final`` (decoding)


def encode_silence(encoder, value: float) -> Silence:
    """:class:`Silence` of a 30 s window whose log-mels are all ``value``, encoded as Whisper encodes it."""
    param = next(encoder.parameters())
    mels = torch.full((1, encoder.conv1.in_channels, N_FRAMES), value, device=param.device, dtype=param.dtype)
    hidden = stem(encoder, mels) + encoder.embed_positions.weight[:ENCODER_FRAMES]
    keys, values = [], []
    for layer in encoder.layers:
        x = layer.self_attn_layer_norm(hidden)
        keys.append(_heads(layer.self_attn, layer.self_attn.k_proj(x))[0])
        values.append(_heads(layer.self_attn, layer.self_attn.v_proj(x))[0])
        hidden = layer_forward(layer, hidden)
    return Silence(keys, values, encoder.layer_norm(hidden)[0])


@dataclass
class SilenceCache:
    """:class:`Silence` by log-mel value, for one model with fixed weights (reuse it across the batches of one
    evaluation; a model whose weights change needs a new cache). ``step``: values are rounded to it."""

    step: float = SILENCE_STEP
    silences: dict[float, Silence] = field(default_factory=dict)

    def key(self, value: float) -> float:
        return round(round(value / self.step) * self.step, 6)

    def get(self, encoder, value: float) -> Silence:
        key = self.key(value)
        if key not in self.silences:
            self.silences[key] = encode_silence(encoder, key)
        return self.silences[key]


def encode_clips(whisper, processor, audios: list[np.ndarray], gap: float = PACK_GAP,
                 cache: SilenceCache | None = None) -> tuple[torch.Tensor, list[int]]:
    """(encoder states [B, 1500, d] of every clip: its own frames, then the silence continuation, the
    number of own frames of each clip); see the module docstring."""
    states, lengths, _ = _encode_clips(whisper, processor, audios, gap, cache)
    return states, lengths


def _encode_clips(whisper, processor, audios: list[np.ndarray], gap: float,
                  cache: SilenceCache | None) -> tuple[torch.Tensor, list[int], list[Silence]]:
    encoder = whisper.model.encoder
    cache = SilenceCache() if cache is None else cache
    param = next(encoder.parameters())
    mels = clip_mels(processor, audios, gap, param.device, param.dtype)
    lengths = clip_lengths(audios, gap)
    longest = max(lengths)
    silences = [cache.get(encoder, v) for v in mels.flatten(1).amin(1).tolist()]  # the padding value
    hidden = stem(encoder, mels)[:, :longest] + encoder.embed_positions.weight[:longest]
    frame = torch.arange(longest, device=param.device)
    n = torch.tensor(lengths, device=param.device)[:, None]
    own = (frame[None, :] < n)[:, None, :].expand(-1, longest, -1)  # [B, T, T]: a row's own frames
    after = (torch.arange(ENCODER_FRAMES, device=param.device)[None, :] >= n)[:, None, :]  # silence after the clip
    mask = torch.cat([own, after.expand(-1, longest, -1)], 2)[:, None]
    for i, layer in enumerate(encoder.layers):
        extra = (torch.stack([s.keys[i] for s in silences]), torch.stack([s.values[i] for s in silences]))
        hidden = layer_forward(layer, hidden, mask, extra)
    hidden = encoder.layer_norm(hidden)
    states = torch.stack([s.final for s in silences])
    for b, length in enumerate(lengths):
        states[b, :length] = hidden[b, :length]
    return states, lengths, silences


@contextlib.contextmanager
def silence_cross_projections(whisper, silences: list[Silence], lengths: list[int]) -> Iterator[None]:
    """While inside: the key and value projections of every decoder layer's cross-attention compute only each
    clip's own ``lengths`` frames of the encoder states; frames n .. 1499, the silence continuation, take
    the projections of the silence's final states, computed once per silence (a projection is the same
    linear map frame by frame, so only the arithmetic is saved). Other inputs are projected as usual."""
    layers = whisper.model.decoder.layers
    for s in silences:
        if s.cross is None:
            s.cross = [(layer.encoder_attn.k_proj(s.final), layer.encoder_attn.v_proj(s.final)) for layer in layers]
    longest, device = max(lengths), silences[0].final.device
    own = (torch.arange(longest, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None])[..., None]
    patched = []

    def project(x: torch.Tensor, original, pre: torch.Tensor) -> torch.Tensor:
        if x.shape[:2] != pre.shape[:2]:
            return original(x)
        out = pre.clone()
        out[:, :longest] = torch.where(own, original(x[:, :longest]), pre[:, :longest])
        return out

    try:
        for i, layer in enumerate(layers):
            for j, linear in enumerate((layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)):
                pre = torch.stack([s.cross[i][j] for s in silences])
                linear.forward = functools.partial(project, original=linear.forward, pre=pre)
                patched.append(linear)
        yield
    finally:
        for linear in patched:
            del linear.forward  # the class's forward again


def decode_clips(model, processor, audios: list[np.ndarray], language: str | None, budgets: list[int],
                 gap: float = PACK_GAP, cache: SilenceCache | None = None) -> tuple[list[Decoded], torch.Tensor]:
    """Greedy decoding of ``audios`` encoded together by :func:`encode_clips`: (results in input order, the
    encoder states [B, 1500, d] they were decoded from)."""
    from transformers.modeling_outputs import BaseModelOutput

    whisper = model.get_base_model() if hasattr(model, "get_base_model") else model
    states, lengths, silences = _encode_clips(whisper, processor, audios, gap, cache)
    with silence_cross_projections(whisper, silences, lengths):
        decoded = generate_from_encoder(model, processor, BaseModelOutput(last_hidden_state=states), language,
                                        budgets)
    return decoded, states


@torch.inference_mode()
def transcribe_packed(model, processor, audios: list[np.ndarray], language: str | None = "en",
                      batch_size: int = 16, max_new_tokens: int | list[int] = MAX_NEW_TOKENS,
                      num_beams: int = 1, progress: bool = True, max_seconds: float = PACK_SECONDS,
                      gap: float = PACK_GAP, cache: SilenceCache | None = None,
                      fallback: bool = True) -> list[Decoded]:
    """Decode many clips, up to ``batch_size`` in one encoder pass (see the module docstring), in batches of
    similar length; results in input order.

    The options mean what they mean for :func:`kidwhisper.decode.transcribe_arrays`. Clips longer than
    ``max_seconds``, and a batch of one clip, are decoded unpacked. ``cache`` keeps the silence encodings of
    a model across calls (one is made per call without it). With ``num_beams > 1`` every clip gets a window
    of its own (``transcribe_arrays``, with its greedy ``fallback``).
    """
    budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(audios)
    if num_beams > 1:
        log.info("beam search decodes one clip per encoder window (packed decoding is greedy)")
        return transcribe_arrays(model, processor, audios, language, batch_size, budgets, num_beams, progress,
                                 fallback)
    cache = SilenceCache() if cache is None else cache
    order = sorted(range(len(audios)), key=lambda i: (len(audios[i]), i))
    long = [i for i in order if len(audios[i]) > max_seconds * SAMPLE_RATE]
    short = [i for i in order if len(audios[i]) <= max_seconds * SAMPLE_RATE]
    batches = [short[s : s + batch_size] for s in range(0, len(short), batch_size)]
    batches += [long[s : s + batch_size] for s in range(0, len(long), batch_size)]
    log.debug("packed decoding: %d clips, %d longer than %g s decoded unpacked", len(audios), len(long),
              max_seconds)
    results: list[Decoded | None] = [None] * len(audios)
    with tqdm(total=len(audios), desc="decoding (packed)", unit="clip", disable=not progress) as bar:
        for idx in batches:
            clips, clip_budgets = [audios[i] for i in idx], [budgets[i] for i in idx]
            if len(idx) == 1 or len(audios[idx[0]]) > max_seconds * SAMPLE_RATE:
                decoded = decode_batch(model, processor, clips, language, clip_budgets)
            else:
                decoded, _ = decode_clips(model, processor, clips, language, clip_budgets, gap, cache)
            for i, d in zip(idx, decoded, strict=True):
                results[i] = d
            bar.update(len(idx))
    return results  # type: ignore[return-value]
