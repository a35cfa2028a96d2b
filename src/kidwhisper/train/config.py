"""The documented config of ``kidwhisper train``: :class:`TrainConfig` and its nested :class:`LoraConfig`.

Every field is the CLI flag of the same name (``batch_size`` is ``--batch-size``); a YAML/JSON file given
with ``--config`` holds the same keys (``lora`` as a nested mapping). The resolved config is written to
``RUN_DIR/train_config.yaml`` beside every run.

Strategies (what trains; see :mod:`kidwhisper.train.strategies`):

=================  ================================================================  ==========
strategy           trainable parameters                                              default lr
=================  ================================================================  ==========
``lora``           LoRA adapters on the attention projections of encoder + decoder  1e-3
``lora-decoder``   LoRA adapters on the decoder's attention only (encoder frozen)    1e-3
``lora-encoder``   LoRA adapters on the encoder's attention only                     1e-3
``full``           every weight (except the encoder's fixed sinusoidal positions)    1e-5
``encoder``        the encoder; decoder frozen, embeddings included                  1e-5
``decoder``        the decoder incl. token/position embeddings; encoder frozen       1e-5
=================  ================================================================  ==========

LoRA trains ~1 % of the weights from a zero-initialised update, so it needs a large step (1e-3, as in the
LoRA paper and the PEFT Whisper recipes); updating pretrained weights directly needs a small one (1e-5,
the Hugging Face Whisper fine-tuning default), or the model forgets what it knew.

Batching: ``batch_size`` is Whisper input windows per process per forward pass; one optimizer step sees
``batch_size * grad_accum * processes`` windows. With ``pack`` (default) a window is up to ``pack_seconds``
of clips joined with ``pack_gap`` seconds of silence (one encoder pass for ~7 clips instead of one), and a
``pack_single`` fraction of the clips get a window of their own; without it, a window is one clip.
``pack_mode`` says how a packed window trains (:mod:`kidwhisper.train.clipwise`):

- ``isolated`` (default): every clip as if it were alone in the window: its own label sequence and
  decoder positions, its encoder frames at positions 0, 1, ... attending only to themselves and the
  trailing silence, its tokens cross-attending only to its frames and that silence;
- ``clips``: the same clip-wise labels, but the encoder sees the whole window (clips next to clips);
- ``joined``: one label sequence, the window's transcripts joined.

``bench/train_throughput.py`` measures them against the plain one-clip-per-window recipe (results in
docs/benchmarks.md).

Schedule: linear warmup then cosine decay to 0 over ``max_steps`` (or ``epochs`` x steps per epoch when
``max_steps`` is not given; ``max_steps`` wins over ``epochs``). Warmup defaults to 10 % of the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kidwhisper.config import PRECISIONS, ConfigError

Strategy = Literal["lora", "lora-decoder", "lora-encoder", "full", "encoder", "decoder"]
STRATEGIES: tuple[str, ...] = ("lora", "lora-decoder", "lora-encoder", "full", "encoder", "decoder")
LORA_STRATEGIES = ("lora", "lora-decoder", "lora-encoder")
FROZEN_ENCODER_STRATEGIES = ("lora-decoder", "decoder")  # encoder outputs can be computed once per window
DEFAULT_LR = {"lora": 1e-3, "lora-decoder": 1e-3, "lora-encoder": 1e-3, "full": 1e-5, "encoder": 1e-5,
              "decoder": 1e-5}
DEFAULT_WARMUP_RATIO = 0.1  # when neither --warmup-ratio nor --warmup-steps is given
DEVICES = ("auto", "cpu", "cuda", "mps")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
PACK_MODES = ("isolated", "clips", "joined")
REPORT_TO = ("none", "tensorboard")  # experiment trackers, through accelerate
MAX_WINDOW_SECONDS = 30.0  # Whisper's encoder always sees one 30 s window


@dataclass
class LoraConfig:
    """LoRA adapter shape (``--lora.r`` etc.; in a config file, a nested ``lora:`` mapping).

    r: rank of the update. alpha: scaling numerator (the update is scaled by alpha / r). dropout: on the
    adapter input. target_modules: leaf module names to adapt; the strategy restricts them to encoder or
    decoder layers (Whisper's attention projections are ``q_proj k_proj v_proj out_proj``).
    """

    r: int = 16  # LoRA rank of the update
    alpha: int = 32  # LoRA scaling numerator (the update is scaled by alpha / r)
    dropout: float = 0.05  # LoRA dropout on the adapter input
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])
    # leaf module names to adapt; the strategy restricts them to encoder or decoder layers

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"`--lora.r` must be >= 1; got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"`--lora.alpha` must be > 0; got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"`--lora.dropout` must be in [0, 1); got {self.dropout}")
        if isinstance(self.target_modules, str):
            self.target_modules = [m for m in self.target_modules.replace(",", " ").split() if m]
        if not self.target_modules or not all(isinstance(m, str) and m.isidentifier() for m in self.target_modules):
            raise ConfigError(f"`--lora.target-modules` must be a non-empty list of module names such as "
                              f"q_proj,v_proj; got {self.target_modules!r}")
        self.target_modules = list(self.target_modules)


@dataclass
class TrainConfig:
    """Options of ``kidwhisper train``: each field is the flag of the same name, described by its comment.

    ``lr`` None is resolved here to the strategy's default (table above), and ``spec_augment`` None to on where
    the encoder trains (it won its ablation row) and off where it is frozen (its outputs are then computed once
    and cached), so the saved config holds the values used. Every dev-WER evaluation also writes the resumable
    checkpoint; ``save_every`` adds checkpoints in between. ``mixed_precision`` ``auto`` = bf16 autocast where
    the hardware does bf16 natively (a CUDA GPU that supports it, a CPU with AVX512-BF16 or AMX), float32
    elsewhere; dev WER is decoded in float32 on CPU either way. Augmentation (``speed_perturb``,
    ``pitch_perturb``) changes every training clip before packing, seeded by (seed, epoch, clip)
    (:mod:`kidwhisper.train.augment`); dev audio is never augmented. ``report_to`` ``tensorboard`` logs training
    loss, learning rate and dev WER through accelerate's tracker to ``RUN_DIR/tensorboard/`` (``tensorboard
    --logdir RUN_DIR/tensorboard``; needs the ``tensorboard`` extra). ``average_best`` N keeps the trained
    weights of the N evaluations with the lowest dev WER so far (``RUN_DIR/snapshots/``) and, when training
    ends, scores their element-wise mean on dev (n-best checkpoint averaging, as ESPnet does; for LoRA the A
    and B matrices are averaged separately); the lower of the two dev WERs decides which weights
    ``RUN_DIR/adapter`` (or ``model``) holds, and both stay in ``RUN_DIR/average/`` and
    ``RUN_DIR/best-checkpoint/``.
    """

    model: str  # built-in name, HF directory or Hub id (see `kidwhisper models`)
    train: str  # training manifest (file, or directory from `kidwhisper prepare`)
    dev: str  # dev manifest: model selection and early stopping on its WER
    out: str  # the run directory (adapter/ or model/, checkpoints/, log.jsonl, summary.json)
    strategy: Strategy = "lora"  # what trains (see the table in `kidwhisper.train.config`)
    lora: LoraConfig = field(default_factory=LoraConfig)
    epochs: int = 5  # passes over the training set (max_steps wins when given)
    max_steps: int | None = None  # optimizer steps; None = epochs x steps per epoch
    batch_size: int = 8  # windows per process per forward pass
    grad_accum: int = 1  # forward passes per optimizer step
    lr: float | None = None  # peak learning rate; None = the strategy's default (1e-3 LoRA, 1e-5 otherwise)
    weight_decay: float = 0.01  # AdamW, matrices only (biases and LayerNorms are not decayed)
    warmup_ratio: float | None = None  # share of the steps spent warming up; None = 0.1 unless warmup_steps
    warmup_steps: int | None = None  # linear warmup steps (wins over warmup_ratio)
    max_grad_norm: float = 1.0  # gradient clipping
    label_smoothing: float = 0.0  # share of each target token's probability spread over the vocabulary (0 = plain cross-entropy)
    seed: int = 0  # data order, packing, dropout, augmentation and dev subset
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto = CUDA, then Apple MPS, then CPU
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto = bf16 where native; no = float32
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory, slower)
    spec_augment: bool | None = None  # Whisper's own SpecAugment with the mask_* settings; None = on unless the encoder is frozen
    mask_time_prob: float = 0.05  # SpecAugment: share of time frames masked
    mask_time_length: int = 10  # SpecAugment: frames per time mask
    mask_feature_prob: float = 0.05  # SpecAugment: share of mel bins masked
    mask_feature_length: int = 10  # SpecAugment: bins per frequency mask
    speed_perturb: float = 0.0  # max relative speed change per clip and epoch (0.1: x0.9-1.1); 0 = off
    pitch_perturb: float = 0.0  # max pitch shift in semitones per clip and epoch (tempo kept); 0 = off
    pack: bool = True  # join several clips into one encoder window
    pack_seconds: float = 25.0  # window length when packing; leaves >= 5 s of silence at the end of every window
    pack_gap: float = 0.2  # seconds of silence between packed clips
    pack_single: float = 0.0  # fraction of clips given a window of their own when packing
    pack_mode: Literal["isolated", "clips", "joined"] = "isolated"  # how a packed window trains (see above)
    eval_every: int | None = None  # optimizer steps between dev-WER evaluations; None = once per epoch
    save_every: int | None = None  # steps between checkpoints; None = at every evaluation
    eval_batch_size: int = 16  # clips per batch when decoding dev
    eval_pack: bool = False  # decode the dev clips of a batch in one encoder pass (kidwhisper.decode_packed)
    eval_precision: Literal["float32", "bf16", "fp16", "auto"] | None = None  # dev decoding's matrix products, as evaluate --precision (unset: the training's precision on a GPU, float32 on a CPU)
    patience: int | None = 3  # evaluations without a dev-WER improvement before stopping; None = never stop early
    average_best: int | None = None  # at the end, average the weights of the N evaluations with the lowest dev WER, keep the average if its dev WER is lower; None = off
    dev_max_clips: int | None = None  # decode only a seeded random subset of the dev set (faster evaluations)
    language: str = "en"  # the language trained on and forced when decoding dev
    num_workers: int | None = None  # clip-reading DataLoader processes; None = 0 on CPU, up to 4 per process on a GPU
    report_to: Literal["none", "tensorboard"] = "none"  # tensorboard: loss, lr, dev WER -> RUN_DIR/tensorboard/ (tensorboard extra)
    progress: bool = True  # show tqdm progress bars

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)
        for name in ("model", "train", "dev", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"`--{name}` is required")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"`--strategy` must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"`--device` must be one of {', '.join(DEVICES)}; got {self.device!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"`--mixed-precision` must be one of {', '.join(MIXED_PRECISION)}; "
                              f"got {self.mixed_precision!r}")
        self._check_positive("epochs", "batch_size", "grad_accum", "eval_batch_size", "mask_time_length",
                             "mask_feature_length")
        for name in ("max_steps", "eval_every", "save_every", "dev_max_clips"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"`--{name.replace('_', '-')}` must be >= 1 (or unset); got {getattr(self, name)}")
        if self.average_best is not None and self.average_best < 2:
            raise ConfigError(f"`--average-best` must be >= 2 (evaluations averaged; unset = no averaging); "
                              f"got {self.average_best}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"`--patience` must be >= 1 (or unset to never stop early); got {self.patience}")
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            raise ConfigError("Can't provide both `--warmup-ratio` and `--warmup-steps`")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"`--warmup-ratio` must be in [0, 1); got {self.warmup_ratio}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"`--warmup-steps` must be >= 0; got {self.warmup_steps}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.strategy]
        if self.spec_augment is None:  # a frozen encoder's outputs are cached instead (several times faster)
            self.spec_augment = not self.frozen_encoder
        if not self.lr > 0:
            raise ConfigError(f"`--lr` must be > 0; got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"`--weight-decay` must be >= 0; got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"`--label-smoothing` must be in [0, 1); got {self.label_smoothing}")
        if not self.max_grad_norm > 0:
            raise ConfigError(f"`--max-grad-norm` must be > 0; got {self.max_grad_norm}")
        if not 1.0 <= self.pack_seconds <= MAX_WINDOW_SECONDS:
            raise ConfigError(f"`--pack-seconds` must be in [1, {MAX_WINDOW_SECONDS:g}] (Whisper's window); "
                              f"got {self.pack_seconds}")
        if not 0 <= self.pack_gap <= 2:
            raise ConfigError(f"`--pack-gap` must be in [0, 2] seconds; got {self.pack_gap}")
        if not 0 <= self.pack_single <= 1:
            raise ConfigError(f"`--pack-single` must be in [0, 1] (a fraction of the clips); got {self.pack_single}")
        if self.eval_precision is not None and self.eval_precision not in PRECISIONS:
            raise ConfigError(f"`--eval-precision` must be one of {', '.join(PRECISIONS)}; "
                              f"got {self.eval_precision!r}")
        if self.pack_mode not in PACK_MODES:
            raise ConfigError(f"`--pack-mode` must be one of {', '.join(PACK_MODES)}; got {self.pack_mode!r}")
        for name in ("mask_time_prob", "mask_feature_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"`--{name.replace('_', '-')}` must be in [0, 1]; got {getattr(self, name)}")
        if not 0 <= self.speed_perturb < 0.5:
            raise ConfigError(f"`--speed-perturb` must be in [0, 0.5) (0.1 means speeds 0.9-1.1); got {self.speed_perturb}")
        if not 0 <= self.pitch_perturb <= 12:
            raise ConfigError(f"`--pitch-perturb` must be in [0, 12] semitones; got {self.pitch_perturb}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"`--num-workers` must be >= 0; got {self.num_workers}")
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"`--report-to` must be one of {', '.join(REPORT_TO)}; got {self.report_to!r}")
        if not self.language or not self.language.isalpha():
            raise ConfigError(f"`--language` must be an ISO code such as en; got {self.language!r}")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 1:
                raise ConfigError(f"`--{name.replace('_', '-')}` must be >= 1; got {getattr(self, name)}")

    def warmup(self, total_steps: int) -> int:
        """Warmup steps for a run of ``total_steps`` optimizer steps."""
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        ratio = DEFAULT_WARMUP_RATIO if self.warmup_ratio is None else self.warmup_ratio
        return int(round(ratio * total_steps))

    @property
    def is_lora(self) -> bool:
        return self.strategy in LORA_STRATEGIES

    @property
    def augments(self) -> bool:
        """Whether training clips are perturbed (their encoder input changes every epoch)."""
        return self.speed_perturb > 0 or self.pitch_perturb > 0

    @property
    def frozen_encoder(self) -> bool:
        return self.strategy in FROZEN_ENCODER_STRATEGIES
