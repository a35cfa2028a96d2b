"""Packed windows trained clip by clip: one encoder pass for ~7 clips, each clip seen as if alone.

**Why.** Packing (:mod:`kidwhisper.train.batching`) makes one 30 s encoder pass serve ~7 clips instead of
one. Trained as one window with the *joined* transcript, though, the model learns from a situation that
decoding never shows it: clips start mid-window after other speech, a transcript's start and end come
once per window, most text sits at decoder positions a 5-word clip never reaches; its encoder output
also mixes each clip with its neighbours. The modes below remove these differences, the decoder's
(``clips``) or the decoder's and the encoder's (``isolated``); ``bench/train_throughput.py`` compares
``isolated`` and ``joined`` with the plain one-clip-per-window recipe (docs/benchmarks.md).

**Decoder (``clips`` and ``isolated``).** Each clip gets its own label sequence (prompt + its text +
<|endoftext|>, exactly as an unpacked clip), and the clips of one window are laid end to end in one
decoder row:

- **positions** restart at 0 for every clip (``decoder_position_ids``), so each clip's text sits where
  an unpacked clip's text sits;
- **self-attention** is causal *within* a clip and blocked between clips (a block-diagonal causal mask);
- **cross-attention** of a clip's tokens sees only that clip's encoder frames (its audio and the packing
  gap after it) and the window's trailing silence, so "which clip" is never ambiguous and the clip is
  followed by silence, as a decoded clip padded to 30 s is.

**Encoder (``isolated``).** Each clip's frames take positions 0, 1, ... (as if the clip opened the
window, where decoding puts it) and attend only to themselves and the trailing silence; the silence
attends to everything, as the padding of a decoded clip attends to the clip (:func:`encoder_isolation`).
With 25 s windows at least 5 s of silence (250 frames) closes every window.

Masks and positions are injected with forward hooks on the attention modules and the encoder's position
embedding (:func:`decoder_masks`, :func:`encoder_isolation`), because ``WhisperDecoder`` builds its own
causal mask and passes no cross-attention mask and ``WhisperEncoder`` takes none; the model is called as
usual, so ``accelerate``/DDP wrapping is unaffected. A window holding one clip trains exactly as without
any of this (tested), so ``--no-pack`` and ``--pack-single`` windows are plain Whisper windows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch

from kidwhisper.audio import CHUNK_LENGTH
from kidwhisper.config import ConfigError

ENCODER_FRAMES = 1500  # encoder positions per 30 s window (3000 log-mel frames after the stride-2 conv)
FRAMES_PER_SECOND = ENCODER_FRAMES // CHUNK_LENGTH  # 50 encoder positions per second


def clip_frames(spans: Sequence[tuple[float, float]], seconds: float, gap: float) -> torch.Tensor:
    """Boolean [len(spans), ENCODER_FRAMES]: the encoder frames each clip's tokens may attend to.

    ``spans`` are (start, end) seconds of the clips in the window, ``seconds`` the end of the last one.
    Clip k sees [start, end + gap), its audio and the silence after it (as a decoded clip opens the window
    and is followed by silence), and the window's trailing silence [seconds, 30 s). Clips do not overlap.
    """
    allowed = torch.zeros(len(spans), ENCODER_FRAMES, dtype=torch.bool)
    tail = min(ENCODER_FRAMES, math.ceil(seconds * FRAMES_PER_SECOND))
    allowed[:, tail:] = True
    for k, (start, end) in enumerate(spans):
        a = round(start * FRAMES_PER_SECOND)
        b = min(ENCODER_FRAMES, round((end + gap) * FRAMES_PER_SECOND))
        allowed[k, a:b] = True
    return allowed


def encoder_layout(frames: torch.Tensor, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment [ENCODER_FRAMES], position [ENCODER_FRAMES]) of a window's encoder frames for ``isolate``.

    ``frames`` is :func:`clip_frames`'s mask. Clip k's own frames (its span with half the gaps) get segment
    k and positions 0, 1, ... as if the clip opened the window (its audio, then the gap's silence); the
    trailing silence keeps segment -1 and its own positions.
    """
    tail = min(ENCODER_FRAMES, math.ceil(seconds * FRAMES_PER_SECOND))
    segment = torch.full((ENCODER_FRAMES,), -1, dtype=torch.long)
    position = torch.arange(ENCODER_FRAMES)
    for k in range(frames.shape[0]):
        own = frames[k, :tail].nonzero().flatten()
        segment[own] = k
        position[own] = torch.arange(len(own))
    return segment, position


def collate_clipwise(items: list[dict], pad_id: int, ignore_index: int) -> dict[str, torch.Tensor]:
    """Decoder rows of clip-wise targets for a batch of windows.

    Each item has ``clip_labels`` (one label list per clip) and ``frames`` (:func:`clip_frames`). Returns
    ``decoder_input_ids``, ``targets`` (``ignore_index`` on padding), ``decoder_position_ids`` (restarting
    at 0 per clip), ``segments`` ([W, L] clip number of each token, -1 on padding) and ``frames``
    ([W, S, ENCODER_FRAMES], S = most clips in a window; rows past a window's clips are all False).
    """
    width = max(sum(len(lab) - 1 for lab in it["clip_labels"]) for it in items)
    n_seg = max(len(it["clip_labels"]) for it in items)
    w = len(items)
    dec = torch.full((w, width), pad_id, dtype=torch.long)
    tgt = torch.full((w, width), ignore_index, dtype=torch.long)
    pos = torch.zeros((w, width), dtype=torch.long)
    seg = torch.full((w, width), -1, dtype=torch.long)
    frames = torch.zeros((w, n_seg, ENCODER_FRAMES), dtype=torch.bool)
    for b, it in enumerate(items):
        t = 0
        for k, lab in enumerate(it["clip_labels"]):
            n = len(lab) - 1
            lab_t = torch.tensor(lab, dtype=torch.long)
            dec[b, t : t + n] = lab_t[:-1]
            tgt[b, t : t + n] = lab_t[1:]
            pos[b, t : t + n] = torch.arange(n)
            seg[b, t : t + n] = k
            t += n
        pos[b, t:] = torch.arange(width - t)  # padding: any valid positions, its loss is ignored
        frames[b, : len(it["frames"])] = it["frames"]
    out = {"decoder_input_ids": dec, "targets": tgt, "decoder_position_ids": pos, "segments": seg,
           "frames": frames}
    if "encoder_segments" in items[0]:
        out["encoder_segments"] = torch.stack([it["encoder_segments"] for it in items])
        out["encoder_positions"] = torch.stack([it["encoder_positions"] for it in items])
    return out


def attention_masks(segments: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(self-attention [W, 1, L, L], cross-attention [W, 1, L, ENCODER_FRAMES]) boolean masks, True = attend.

    A token attends to earlier tokens of its own clip (padding tokens, segment -1, to themselves only, so
    that no row is empty) and to its clip's frames (padding tokens to every frame).
    """
    w, length = segments.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]
    pad = segments < 0
    eye = torch.eye(length, dtype=torch.bool, device=segments.device)
    self_mask = same & causal & ~(pad[:, :, None] & ~eye)
    idx = segments.clamp(min=0)
    cross = torch.gather(frames, 1, idx[:, :, None].expand(w, length, frames.shape[-1]))
    cross = cross | pad[:, :, None]
    return self_mask[:, None], cross[:, None]


def attention_bias(mask: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """SDPA takes the boolean mask; eager attention adds a float bias (0 or the dtype's minimum)."""
    if implementation == "sdpa":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def compute_dtype(whisper, device: torch.device) -> torch.dtype:
    """The dtype attention runs in: the autocast dtype inside autocast, else the weights' dtype."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(whisper.parameters()).dtype


def check_attention(whisper, fix: str) -> str:
    """``whisper``'s attention implementation if masks can be injected into it (sdpa or eager), else
    ConfigError naming ``fix``."""
    implementation = whisper.config._attn_implementation
    if implementation not in ("sdpa", "eager"):
        raise ConfigError(f"clip-wise packing needs sdpa or eager attention, not {implementation!r}; "
                          f"load the model with attn_implementation='sdpa' or {fix}")
    return implementation


@contextlib.contextmanager
def decoder_masks(whisper, self_mask: torch.Tensor | None, cross_mask: torch.Tensor,
                  fix: str = "train with --pack-mode joined") -> Iterator[None]:
    """Within the block, every decoder layer of ``whisper`` (a WhisperForConditionalGeneration, also
    inside a PEFT wrapper) uses these attention masks instead of its own causal mask / no mask; with
    ``self_mask=None`` only the cross-attention is masked (the causal self-attention is left alone)."""
    implementation = check_attention(whisper, fix)
    dtype = compute_dtype(whisper, cross_mask.device)
    masks = {"encoder_attn": attention_bias(cross_mask, implementation, dtype)}
    if self_mask is not None:
        masks = {"self_attn": attention_bias(self_mask, implementation, dtype), **masks}

    def hook(mask):
        def pre_hook(module, args, kwargs):
            kwargs["attention_mask"] = mask
            return args, kwargs

        return pre_hook

    handles = []
    try:
        for layer in whisper.model.decoder.layers:
            for name, mask in masks.items():
                handles.append(getattr(layer, name).register_forward_pre_hook(hook(mask), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def encoder_isolation(whisper, segments: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
    """Within the block, ``whisper``'s encoder sees every clip of a packed window as if it opened the window:
    its frames take positions 0, 1, ... (``positions`` [W, ENCODER_FRAMES]) and attend only to themselves
    and the trailing silence (``segments`` [W, ENCODER_FRAMES], -1 = silence). Silence frames attend to
    every frame, as the padding of a decoded clip attends to the clip, so a window holding one clip is
    encoded exactly as without isolation; the price is that from the second layer on a clip sees the
    others second-hand, through the silence frames."""
    encoder = whisper.model.encoder
    implementation = whisper.config._attn_implementation
    same = segments[:, :, None] == segments[:, None, :]
    allowed = same | (segments[:, None, :] < 0) | (segments[:, :, None] < 0)
    dtype = compute_dtype(whisper, segments.device)
    mask = attention_bias(allowed[:, None], implementation, dtype)

    def embed_hook(module, args, output):
        return module.weight[positions]

    def attn_hook(module, args, kwargs):
        kwargs["attention_mask"] = mask
        return args, kwargs

    handles = [encoder.embed_positions.register_forward_hook(embed_hook)]
    try:
        for layer in encoder.layers:
            handles.append(layer.self_attn.register_forward_pre_hook(attn_hook, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()
