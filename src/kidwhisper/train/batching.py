"""Training windows: packing clips into 30 s windows, labels, features, batches.

**Why packing.** Whisper's encoder always sees one 30 s window (3000 log-mel frames, padded with
silence), so an unpacked 3.6 s child clip (the corpus median) pays for 30 s of encoder compute.
:func:`pack_clips` groups clips (greedy first-fit over a seeded shuffle) into windows of at most
``max_seconds``: their waveforms are concatenated with ``gap`` seconds of silence between them and their
transcripts joined by a space. Within a window the clips keep manifest order. Windows are packed once per
run (from the seed) and stay fixed across epochs (only their order is reshuffled each epoch), which is
what lets frozen-encoder strategies reuse cached encoder outputs every epoch.

**What the decoder learns from a packed window.** Decoding (dev, test, users) sees one clip at the start
of the window, then silence, and a transcript that starts right after the prompt. With *joined* targets
(the window's transcripts joined into one label sequence) a packed window shows that situation once for
~8 clips: a transcript's start and end are trained once per window, and most text sits at decoder
positions a 5-word clip never reaches. *Clip-wise* targets (``--pack-mode clips``,
:mod:`kidwhisper.train.clipwise`) give each clip its own label sequence, decoder positions and encoder
frames, at the price of a few more decoder tokens. What packing cannot change is the encoder's view: a
clip's frames are encoded next to other clips instead of 26 s of silence. ``single_fraction``
(``--pack-single``) gives a seeded fraction of the clips a window of their own, each at the cost of a full
30 s encoder pass; a smaller ``max_seconds`` (``--pack-seconds``) makes more windows, each ending in silence.
``bench/train_throughput.py`` measures these trades against the plain one-clip-per-window recipe.

**Labels.** ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|> text <|endoftext|>`` for
multilingual models, ``<|startoftranscript|><|notimestamps|> text <|endoftext|>`` for English-only ones,
from the tokenizer's own prefix (:func:`label_ids`); at most :data:`MAX_LABEL_TOKENS` tokens per window.
The collator feeds ``decoder_input_ids = labels[:-1]`` and scores ``targets = labels[1:]`` (padding
-100), so the model is never asked to shift the labels again.

**Target text casing.** Our references are upper-case prompts ("MARK IS GOING TO SEE ELEPHANT"), while
Whisper writes sentence case. Training on upper case would spend the first steps re-learning casing
and make the fine-tuned model's raw output look unlike Whisper's, so :func:`target_text` writes sentence
case: lower case, first letter capitalised, the pronoun ``I`` (and I'm, I'll ...) capitalised, no
punctuation added (a prompt does not tell a statement from a question). The normalized WER does not
depend on this choice.

**Audio and log-mels.** Windows are planned from clip lengths alone; :class:`WindowDataset` reads a window's
clips from their files (:class:`kidwhisper.data.manifest.AudioFiles`) when the window is trained, in the
DataLoader's worker processes when there are any, and frees them afterwards, so memory does not grow with
the corpus. Log-mels are computed per window; in the main process (no workers, no augmentation) the first
windows' log-mels are kept until :data:`FEATURE_CACHE_BYTES` is full and the others are recomputed every
epoch, which gives the same values.

**Batches.** :func:`epoch_order` shuffles windows per epoch from (seed, epoch) alone, so a resumed run sees
the same order; in unpacked mode it groups clips of similar label length (less decoder padding).
:func:`rank_batches` shards an epoch over processes, every window exactly once (see there), and each process
reads only its own windows' audio.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kidwhisper.audio import N_FRAMES, N_SAMPLES, SAMPLE_RATE
from kidwhisper.data.manifest import REASON_EMPTY_AUDIO
from kidwhisper.train.clipwise import clip_frames, collate_clipwise, encoder_layout

log = logging.getLogger(__name__)

MAX_LABEL_TOKENS = 440  # per window, prompt and <|endoftext|> included; Whisper's decoder context is 448
LABEL_TOKEN_MARGIN = 8  # joined-text tokenization may differ slightly from the sum of per-clip counts
IGNORE_INDEX = -100  # targets with this value do not count in the loss
MEGABATCH = 50  # length grouping sorts within chunks of 50 batches, then shuffles the batches
FEATURE_CACHE_BYTES = 256 * 2**20  # at most 256 MiB of log-mels kept in memory (0.96 MB a window)
_EPS = 1e-6  # seconds of float slack when comparing durations

_PRONOUN_I = re.compile(r"\bi\b")


def target_text(text: str) -> str:
    """Sentence case for training targets: "I'M SIX" -> "I'm six", "WE CALL IT BEAR" -> "We call it bear"."""
    s = " ".join(text.split()).lower()
    s = _PRONOUN_I.sub("I", s)
    return s[:1].upper() + s[1:]


def pack_clips(durations: Sequence[float], max_seconds: float = 30.0, gap: float = 0.2, seed: int = 0,
               tokens: Sequence[int] | None = None, max_tokens: int | None = None) -> list[list[int]]:
    """Group clip indices into windows of at most ``max_seconds`` (clips + gaps between them).

    Greedy first-fit over a shuffle seeded by ``seed``: each clip goes into the first window it still
    fits in. Optional ``tokens`` per clip bound each window's summed token count by ``max_tokens``. Every
    index appears exactly once; indices inside a window are ascending (manifest order); windows are in
    the order they were opened. A clip longer than ``max_seconds`` is a ValueError (filter it first).
    """
    n = len(durations)
    if tokens is not None and len(tokens) != n:
        raise ValueError(f"pack_clips: {len(tokens)} token counts for {n} durations")
    limit_tokens = max_tokens if max_tokens is not None else float("inf")
    windows: list[list[int]] = []
    seconds: list[float] = []
    n_tokens: list[int] = []
    for i in np.random.default_rng(seed).permutation(n).tolist():
        d = float(durations[i])
        t = 0 if tokens is None else int(tokens[i])
        if d > max_seconds + _EPS or t > limit_tokens:
            raise ValueError(f"pack_clips: clip {i} ({d:.2f} s, {t} tokens) does not fit in one window of "
                             f"{max_seconds:g} s / {max_tokens} tokens")
        for w in range(len(windows)):
            if seconds[w] + gap + d <= max_seconds + _EPS and n_tokens[w] + t <= limit_tokens:
                windows[w].append(i)
                seconds[w] += gap + d
                n_tokens[w] += t
                break
        else:
            windows.append([i])
            seconds.append(d)
            n_tokens.append(t)
    return [sorted(w) for w in windows]


def label_ids(tokenizer, text: str, multilingual: bool, language: str = "en") -> list[int]:
    """Token ids of prompt + ``text`` + <|endoftext|> (see the module docstring)."""
    if multilingual:
        tokenizer.set_prefix_tokens(language=language, task="transcribe", predict_timestamps=False)
        expected = ["<|startoftranscript|>", f"<|{language}|>", "<|transcribe|>", "<|notimestamps|>"]
    else:
        tokenizer.language = tokenizer.task = None  # set_prefix_tokens(language=None) keeps the old value
        tokenizer.set_prefix_tokens(predict_timestamps=False)
        expected = ["<|startoftranscript|>", "<|notimestamps|>"]
    ids = list(tokenizer(text).input_ids)
    got = tokenizer.convert_ids_to_tokens(ids[: len(expected)] + ids[-1:])
    if got != [*expected, "<|endoftext|>"]:
        raise ValueError(f"tokenizer wrote the prompt {got}, expected {expected} ... <|endoftext|>")
    return ids


def text_token_count(tokenizer, text: str) -> int:
    """Tokens of ``text`` as it appears after a space inside a joined transcript."""
    return len(tokenizer(" " + text, add_special_tokens=False).input_ids)


@dataclass
class Window:
    """One training example: clips (indices into the clip list) played one after another, and labels."""

    clips: list[int]
    labels: list[int]  # the joined transcript's labels
    seconds: float  # audio in the window, gaps included
    clip_labels: list[list[int]]  # each clip's own labels (clip-wise targets, kidwhisper.train.clipwise)
    spans: list[tuple[float, float]]  # (start, end) seconds of each clip in the window


def build_windows(texts: list[str], samples: Sequence[int], tokenizer, multilingual: bool, language: str = "en",
                  pack: bool = True, max_seconds: float = 30.0, gap: float = 0.2, seed: int = 0,
                  single_fraction: float = 0.0, stretch: float = 1.0) -> tuple[list[Window], dict[str, list[int]]]:
    """Windows for training and the clip indices skipped by reason (never dropped silently).

    Planned from each clip's length in 16 kHz ``samples`` alone (no audio is needed). With ``pack``, a seeded ``single_fraction`` of the kept clips get a window of their own (listed
    first) and the rest are packed; without it every clip is alone anyway. ``stretch`` (>= 1) plans for
    clips that augmentation may lengthen by that factor (:attr:`kidwhisper.train.augment.ClipAugment.stretch`):
    windows and the length limit use the stretched durations; a window's ``spans`` stay the unstretched ones.
    """
    prefix = len(label_ids(tokenizer, "", multilingual, language)) - 1
    budget = MAX_LABEL_TOKENS - prefix - 1 - LABEL_TOKEN_MARGIN
    targets = [target_text(t) for t in texts]
    counts = [text_token_count(tokenizer, t) for t in targets]
    durations = [n / SAMPLE_RATE for n in samples]
    planned = [d * stretch for d in durations]
    limit = max_seconds if pack else N_SAMPLES / SAMPLE_RATE
    skipped: dict[str, list[int]] = {REASON_EMPTY_AUDIO: [], "empty transcript": [], f"longer than {limit:g} s": [],
                                     f"more than {budget} label tokens": []}
    kept = []
    for i, (t, n, d) in enumerate(zip(targets, counts, planned, strict=True)):
        if d == 0:  # never train on silence standing in for audio that did not decode
            skipped[REASON_EMPTY_AUDIO].append(i)
        elif not t:
            skipped["empty transcript"].append(i)
        elif d > limit + _EPS:
            skipped[f"longer than {limit:g} s"].append(i)
        elif n > budget:
            skipped[f"more than {budget} label tokens"].append(i)
        else:
            kept.append(i)
    if pack:
        n_single = int(round(single_fraction * len(kept)))
        chosen = set(np.random.default_rng([seed, 1]).permutation(len(kept))[:n_single].tolist())
        singles = [kept[j] for j in sorted(chosen)]
        rest = [i for j, i in enumerate(kept) if j not in chosen]
        groups = [[i] for i in singles] + [[rest[j] for j in g] for g in pack_clips(
            [planned[i] for i in rest], max_seconds, gap, seed, [counts[i] for i in rest], budget)]
    else:
        groups = [[i] for i in kept]
    windows = []
    for g in groups:
        labels = label_ids(tokenizer, " ".join(targets[i] for i in g), multilingual, language)
        if len(labels) > MAX_LABEL_TOKENS:
            raise ValueError(f"window of clips {g} has {len(labels)} label tokens > {MAX_LABEL_TOKENS}")
        spans = clip_spans([durations[i] for i in g], gap)
        windows.append(Window(g, labels, spans[-1][1], [label_ids(tokenizer, targets[i], multilingual, language)
                                                        for i in g] if len(g) > 1 else [labels], spans))
    return windows, {k: v for k, v in skipped.items() if v}


def clip_spans(durations: Sequence[float], gap: float) -> list[tuple[float, float]]:
    """(start, end) seconds of clips of ``durations`` played one after another with ``gap`` s between."""
    spans, t = [], 0.0
    for d in durations:
        spans.append((t, t + d))
        t += d + gap
    return spans


def window_audio(audios: list[np.ndarray], clips: list[int], gap: float) -> np.ndarray:
    """The clips' waveforms joined with ``gap`` seconds of silence (at most 30 s)."""
    silence = np.zeros(int(round(gap * SAMPLE_RATE)), np.float32)
    parts: list[np.ndarray] = []
    for k, i in enumerate(clips):
        if k:
            parts.append(silence)
        parts.append(audios[i])
    wave = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return wave[:N_SAMPLES]  # float slack of the packer can exceed 30 s by a sample or so


class WindowDataset(torch.utils.data.Dataset):
    """Window ``i`` -> {"index", "labels", and unless ``with_features=False`` "input_features" [80, 3000];
    with ``clipwise`` also "clip_labels" and "frames" (:func:`kidwhisper.train.clipwise.clip_frames`)}.

    ``audios[j]`` is clip ``j``'s waveform: a list of arrays, or :class:`kidwhisper.data.manifest.AudioFiles`
    that reads it from its file on access.

    With ``augment`` (:class:`kidwhisper.train.augment.ClipAugment`) every clip is perturbed for the current
    :attr:`epoch` before it is joined into its window, the clip spans follow the perturbed durations, and
    log-mels are computed anew every time (no cache).
    """

    def __init__(self, windows: list[Window], audios: Sequence[np.ndarray], feature_extractor, gap: float = 0.2,
                 with_features: bool = True, clipwise: bool = False, isolate: bool = False,
                 cache_bytes: int = FEATURE_CACHE_BYTES, augment=None):
        self.windows = windows
        self.audios = audios
        self.feature_extractor = feature_extractor
        self.gap = gap
        self.with_features = with_features
        self.clipwise = clipwise
        self.isolate = isolate
        self.augment = augment if augment is not None and augment.active else None
        self.epoch = 0  # set by the training loop before each epoch's DataLoader is made
        # Log-mels of the first windows computed are kept (80 mel bins x 3000 frames of float32 = 0.96 MB a
        # window) up to ``cache_bytes``; the others are recomputed each time. None: no cache at all.
        self.cache_windows = cache_bytes // (feature_extractor.feature_size * N_FRAMES * 4)
        self.cache: dict[int, np.ndarray] | None = (
            {} if with_features and self.augment is None and self.cache_windows > 0 else None)

    def __len__(self) -> int:
        return len(self.windows)

    def features(self, i: int, wave: np.ndarray | None = None) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        if wave is None:
            wave = window_audio(self.audios, self.windows[i].clips, self.gap)
        feats = self.feature_extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        if self.cache is not None and len(self.cache) < self.cache_windows:
            self.cache[i] = feats
        return feats

    def __getitem__(self, i: int) -> dict:
        w = self.windows[i]
        item = {"index": i, "labels": w.labels}
        spans, seconds, wave = w.spans, w.seconds, None
        if self.augment is not None:
            parts = [self.augment(self.audios[j], self.epoch, j) for j in w.clips]
            spans = clip_spans([len(p) / SAMPLE_RATE for p in parts], self.gap)
            seconds = spans[-1][1]
            wave = window_audio(parts, list(range(len(parts))), self.gap)
        if self.clipwise:
            item["clip_labels"] = w.clip_labels
            item["frames"] = clip_frames(spans, seconds, self.gap)
            if self.isolate:
                item["encoder_segments"], item["encoder_positions"] = encoder_layout(item["frames"], seconds)
        if self.with_features:
            item["input_features"] = self.features(i, wave)
        return item


class Collator:
    """Items -> tensors: decoder_input_ids = labels[:-1] (padded with ``pad_id``), targets = labels[1:]
    (padded with -100), input_features stacked when present, index. Items with "clip_labels" get
    clip-wise decoder rows instead (:func:`kidwhisper.train.clipwise.collate_clipwise`)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        out = self._clipwise(items) if "clip_labels" in items[0] else self._joined(items)
        out["index"] = torch.tensor([it["index"] for it in items])
        if "input_features" in items[0]:
            out["input_features"] = torch.from_numpy(np.stack([it["input_features"] for it in items]))
        return out

    def _clipwise(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return collate_clipwise(items, self.pad_id, IGNORE_INDEX)

    def _joined(self, items: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(it["labels"]) for it in items) - 1
        dec = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        tgt = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        for b, it in enumerate(items):
            lab = torch.tensor(it["labels"], dtype=torch.long)
            dec[b, : len(lab) - 1] = lab[:-1]
            tgt[b, : len(lab) - 1] = lab[1:]
        return {"decoder_input_ids": dec, "targets": tgt}


def epoch_order(n: int, seed: int, epoch: int, lengths: Sequence[int] | None = None,
                batch_size: int = 1) -> list[int]:
    """Window order of one epoch, a function of (seed, epoch) only.

    With ``lengths`` (unpacked mode) windows of similar length are grouped: sort by length inside chunks
    of ``MEGABATCH`` batches of a random permutation, cut into batches, shuffle the batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n).tolist()
    if lengths is None or batch_size <= 1:
        return order
    mega = MEGABATCH * batch_size
    grouped = []
    for s in range(0, n, mega):
        grouped += sorted(order[s : s + mega], key=lambda i: -lengths[i])
    batches = [grouped[s : s + batch_size] for s in range(0, n, batch_size)]
    return [i for b in (batches[j] for j in rng.permutation(len(batches)).tolist()) for i in b]


@dataclass
class Shard:
    """One process's part of one global batch."""

    windows: list[int]  # the windows this process trains (the batch's first one, weight 0, if none is left)
    weight: float  # its loss factor: its windows x world size / the batch's windows (1.0 for an even share)
    batch: list[int]  # the global batch: every process's windows


def rank_batches(order: list[int], batch_size: int, world_size: int = 1, rank: int = 0) -> list[Shard]:
    """This process's shards of one epoch: global batches of ``batch_size * world_size`` windows, each split
    over the processes as evenly as possible (sizes differ by at most one), so every window is trained
    exactly once per epoch. Every process runs the same number of steps: one left without a window in the
    last batch runs a stand-in window at weight 0. Weighting each process's mean loss by its share makes
    the average over processes the mean over the batch's windows."""
    shards = []
    for s in range(0, len(order), batch_size * world_size):
        batch = list(order[s : s + batch_size * world_size])
        mine = [int(i) for i in np.array_split(np.asarray(batch), world_size)[rank]]
        shards.append(Shard(mine or batch[:1], len(mine) * world_size / len(batch), batch))
    return shards
