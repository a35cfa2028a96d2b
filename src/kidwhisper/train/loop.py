"""``kidwhisper train``: one training loop for every strategy, on ``accelerate``.

The same code runs on one CPU, one GPU or several processes (``accelerate launch`` / ``torchrun``; gloo on
CPU; :mod:`kidwhisper.train.runtime` sets up the accelerator, precision and workers): AdamW over the trainable parameters (:mod:`kidwhisper.train.strategies`), linear warmup + cosine
decay, gradient accumulation and clipping, a fixed seed, and model selection by **dev WER** (decoded with
:func:`kidwhisper.decode.transcribe_arrays`, exactly as ``kidwhisper evaluate`` decodes; the main process
decodes while the others wait), with early stopping after ``patience`` evaluations without improvement.

The loss is the mean token cross-entropy of ``targets = labels[1:]`` given ``decoder_input_ids =
labels[:-1]`` (:mod:`kidwhisper.train.batching`), computed here from the logits (with ``label_smoothing``
when set; the logged loss is then the smoothed one). Frozen-encoder strategies
(``decoder``, ``lora-decoder``) compute each window's encoder output once and reuse it every epoch
(unless SpecAugment is on, which changes the encoder input every time), for as many windows as fit in
:data:`ENCODER_CACHE_BYTES`; the others are recomputed each time.

Training data streams: windows are planned from clip lengths read from the file headers, each process
reads only the audio of its own share of each batch (:func:`kidwhisper.train.batching.rank_batches`), in
DataLoader workers when ``num_workers`` > 0, so memory does not grow with the corpus; the dev audio (small)
is loaded once by the main process.

Run directory::

    RUN_DIR/train_config.yaml      the resolved TrainConfig
    RUN_DIR/adapter/               LoRA strategies: best dev-WER adapter (adapter_model.safetensors,
                                   adapter_config.json, kidwhisper_adapter.json = base model + strategy)
    RUN_DIR/model/                 full/encoder/decoder: best dev-WER model (safetensors + processor +
                                   generation config with language/task)
    RUN_DIR/checkpoints/last/      trainable.safetensors, optimizer.pt, scheduler.pt, rng_rank<R>.json,
                                   trainer_state.json (checkpoint.TrainerState: data position, best WER,
                                   patience), checksums.sha256; replaced atomically, read by ``resume=True``
    RUN_DIR/checkpoints/previous/  the checkpoint before it, the fallback when ``last`` is damaged
                                   (:mod:`kidwhisper.train.checkpoint`)
    RUN_DIR/snapshots/             with ``average_best`` N: step-<S>.safetensors, the trained weights of the N
                                   evaluations with the lowest dev WER so far
    RUN_DIR/average/               with ``average_best``: their element-wise mean (adapter or model form), and
    RUN_DIR/best-checkpoint/       the best single evaluation's weights; ``adapter``/``model`` holds the one
                                   of the two with the lower dev WER
    RUN_DIR/log.jsonl              one line per optimizer step (step, epoch, loss, lr, elapsed_s[, dev_wer])
    RUN_DIR/learning_curve.png     training loss and dev WER against step
    RUN_DIR/summary.json           parameters, best dev WER and step, timing, throughput, peak memory,
                                   train/dev clips skipped by reason (corrupt or empty audio is never
                                   trained on or decoded)

A run killed at any point continues with ``resume=True`` from the last checkpoint and ends where an
uninterrupted run with the same config ends: the epoch order is a function of (seed, epoch), and the
weights, optimizer, scheduler and RNG states (python, numpy, torch) are restored. The run directory is
wherever the checkpoint is: a moved run resumes with its new path as ``out``.

``out`` is checked (a directory that can be written) and ``language`` against the model before anything
is loaded; a full disk stops the run with DiskFullError naming the file, leaving the last complete
checkpoint in place and no temp files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kidwhisper.config import ConfigError, machine_info, package_versions, save_config
from kidwhisper.data.manifest import (
    AudioFiles,
    load_usable_audios,
    manifest_hash,
    probe_clips,
    read_clip_table,
    read_manifest,
    resolve_manifest_path,
)
from kidwhisper.decode import is_multilingual, precision_context, resolve_precision, transcribe_arrays
from kidwhisper.decode_packed import transcribe_packed
from kidwhisper.files import (
    append_text,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    replacing_dir,
    restore_dir,
    writing,
)
from kidwhisper.metrics import corpus_wer, is_empty
from kidwhisper.models.load import check_language, load_model
from kidwhisper.text import normalize
from kidwhisper.train import batching
from kidwhisper.train import checkpoint as ckpt_io
from kidwhisper.train.augment import ClipAugment
from kidwhisper.train.batching import IGNORE_INDEX, Collator, WindowDataset, epoch_order, rank_batches
from kidwhisper.train.clipwise import attention_masks, decoder_masks, encoder_isolation
from kidwhisper.train.config import TrainConfig
from kidwhisper.train.runtime import (
    TENSORBOARD_DIR,
    enable_checkpointing,
    make_accelerator,
    peak_memory_mb,
    resolve_num_workers,
)
from kidwhisper.train.strategies import apply_strategy, parameter_count, trainable_state_dict

log = logging.getLogger(__name__)



def evaluate_dev(model, processor, audios: list[np.ndarray], refs: list[str],
                 config: TrainConfig) -> tuple[float, int]:
    """Dev WER of ``model`` (decoded like ``kidwhisper evaluate``: greedy, language forced; with ``eval_pack``
    like ``evaluate --pack``, clips longer than ``pack_seconds`` unpacked; Whisper-normalized corpus WER, references that
    normalize to empty skipped and counted in the log) and the number of clips whose decoding hit the token
    bound, i.e. runaway repetitions, which alone can move dev WER by many points on a small dev set."""
    if config.eval_pack:
        decoded = transcribe_packed(model, processor, audios, config.language, config.eval_batch_size,
                                    progress=config.progress, max_seconds=config.pack_seconds, gap=config.pack_gap)
    else:
        decoded = transcribe_arrays(model, processor, audios, config.language, config.eval_batch_size,
                                    progress=config.progress)
    pairs = [(normalize(r), normalize(d.text)) for r, d in zip(refs, decoded, strict=True)]
    wer = corpus_wer(pairs)
    if wer is None:
        raise ConfigError("--dev: every dev reference normalizes to empty; the dev set cannot score WER")
    skipped = sum(is_empty(r) for r, _ in pairs)
    if skipped:
        log.info("dev WER skips %d references that normalize to empty", skipped)
    truncated = sum(d.truncated for d in decoded)
    log.info("dev WER %.2f %% (%d of %d clips hit the token bound)", 100 * wer, truncated, len(decoded))
    return wer, truncated


SNAPSHOTS = "snapshots"  # RUN_DIR/snapshots/step-<S>.safetensors (average_best)
AVERAGE_DIR = "average"  # RUN_DIR/average: the averaged weights
BEST_CHECKPOINT_DIR = "best-checkpoint"  # RUN_DIR/best-checkpoint: the best single evaluation's weights


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step-{step:07d}.safetensors"


def n_best_steps(evals: list[dict], n: int) -> list[int]:
    """Steps of the ``n`` evaluations (``{"step", "dev_wer"}``) with the lowest dev WER, the earlier step
    first among ties, in step order."""
    ranked = sorted(evals, key=lambda e: (e["dev_wer"], e["step"]))[:n]
    return sorted(e["step"] for e in ranked)


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the safetensors state dicts in ``paths`` (summed in float32, returned in each
    tensor's own dtype); ConfigError naming the file whose parameters differ from the first one's."""
    from safetensors.torch import load_file

    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path in paths:
        weights = load_file(str(path))
        if total and set(weights) != set(total):
            raise ConfigError(f"{path} holds other parameters than {paths[0]}; remove {path.parent} to train "
                              f"again without it")
        for name, t in weights.items():
            dtypes.setdefault(name, t.dtype)
            total[name] = total[name] + t.float() if name in total else t.float()
    return {name: (t / len(paths)).to(dtypes[name]) for name, t in total.items()}


ENCODER_CACHE_BYTES = 2**30  # frozen-encoder strategies keep at most 1 GiB of encoder outputs in memory


def token_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the target tokens that are not IGNORE_INDEX; with ``label_smoothing`` e the
    target distribution puts 1 - e on the label and spreads e evenly over the vocabulary."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing)


def _precision_name(mixed_precision: str) -> str:
    return "float32" if mixed_precision == "no" else mixed_precision


def base_model(model):
    """The WhisperForConditionalGeneration inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class Trainer:
    """Holds the state of one run; :func:`train` is ``Trainer(config, resume).fit()``."""

    def __init__(self, config: TrainConfig, resume: bool = False):
        self.config = config
        self.resume = resume
        self.out = Path(config.out)

    # ------------------------------------------------------------------------------------------- setup
    def _check_run_dir(self) -> None:
        """--out, --language and the run directory against --resume, before any model or data is loaded;
        on resume, the checkpoint to continue from (``self.ckpt``)."""
        check_output_dir(self.out, "--out")
        check_language(self.config.model, self.config.language, allow_auto=False)
        self.ckpt = None
        if not self.resume:
            if ckpt_io.has_checkpoint(self.out) or (self.out / "summary.json").exists():
                raise ConfigError(f"--out {self.out} already holds a run; pass --resume to continue it or choose "
                                  f"another --out")
            return
        if not ckpt_io.has_checkpoint(self.out):
            raise ConfigError(f"--resume: no checkpoint in {self.out / ckpt_io.CHECKPOINTS}; start the run without "
                              f"--resume")
        saved_file = self.out / "train_config.yaml"
        diff = ckpt_io.resume_conflicts(saved_file, asdict(self.config))
        if diff:
            raise ConfigError(f"--resume: option(s) {diff} differ from {saved_file}; resume with the run's own "
                              f"options (or start a new --out)")
        self.ckpt = ckpt_io.load_usable(self.out, self.acc.process_index)

    def _load_data(self, tokenizer, multilingual: bool) -> None:
        """Plan the training windows from clip lengths (file headers; no audio is kept) and load the dev audio."""
        c = self.config
        train_manifest = resolve_manifest_path(c.train)
        table = read_clip_table(train_manifest)
        if not len(table):
            raise ConfigError(f"--train {c.train}: the manifest has no clips")
        probed = probe_clips(table.ids, table.paths, train_manifest, c.progress and self.acc.is_main_process)
        table = table.select(probed.kept)  # clips with corrupt or empty audio are never trained on
        augment = ClipAugment(c.speed_perturb, c.pitch_perturb, c.seed)
        self.windows, skipped = batching.build_windows(table.texts, probed.samples, tokenizer, multilingual,
                                              c.language, c.pack, c.pack_seconds, c.pack_gap, c.seed,
                                              c.pack_single, augment.stretch)
        for reason, idx in skipped.items():
            self.log.warning("skipped %d training clips (%s), e.g. %s", len(idx), reason,
                             [table.ids[i] for i in idx[:5]])
        self.n_skipped = probed.n_skipped | {k: len(v) for k, v in skipped.items()}
        if not self.windows:
            raise ConfigError(f"--train {c.train}: no usable training clip (skipped: {self.n_skipped})")
        self.n_clips = sum(len(w.clips) for w in self.windows)
        self.num_workers = resolve_num_workers(c.num_workers, self.acc.device, self.acc.num_processes)
        self.dataset = WindowDataset(self.windows, AudioFiles(table.paths), self.processor.feature_extractor,
                                     c.pack_gap, with_features=not self.cache_encoder,
                                     clipwise=c.pack and c.pack_mode in ("isolated", "clips"),
                                     isolate=c.pack and c.pack_mode == "isolated", augment=augment,
                                     cache_bytes=0 if self.num_workers else batching.FEATURE_CACHE_BYTES)
        self._log_data_plan(augment)
        self.dev_refs, self.dev_audios = [], []
        dev_manifest = resolve_manifest_path(c.dev)
        dev = read_manifest(dev_manifest)
        if c.dev_max_clips and c.dev_max_clips < len(dev):
            dev = [dev[i] for i in sorted(random.Random(c.seed).sample(range(len(dev)), c.dev_max_clips))]
        self.n_dev, self.n_skipped_dev = len(dev), {}
        if self.acc.is_main_process:  # the other processes wait while this one decodes the dev set
            loaded = load_usable_audios(dev, dev_manifest, c.progress)
            if not loaded.clips:
                raise ConfigError(f"--dev {c.dev}: no dev clip has usable audio (skipped: {loaded.n_skipped})")
            self.dev_refs = [cl.text for cl in loaded.clips]
            self.dev_audios, self.n_dev, self.n_skipped_dev = loaded.audios, len(loaded.clips), loaded.n_skipped
        self.hashes = {"train_manifest_sha256": manifest_hash(train_manifest),
                       "dev_manifest_sha256": manifest_hash(dev_manifest)}

    def _log_data_plan(self, augment: ClipAugment) -> None:
        c, ds = self.config, self.dataset
        if augment.active:
            self.log.info("augmenting training clips: speed x%.2f-%.2f, pitch +-%.1f semitones", 1 - c.speed_perturb,
                          1 + c.speed_perturb, c.pitch_perturb)
        where = f"in {self.num_workers} DataLoader worker process(es)" if self.num_workers else "in the main process"
        if self.cache_encoder:
            cached = "encoder outputs cached instead (see below)"
        elif ds.cache is None:
            cached = "not cached (computed for every step)"
        else:
            cached = f"the first {min(ds.cache_windows, len(self.windows))} windows' cached in memory (cap " \
                     f"{batching.FEATURE_CACHE_BYTES / 2**20:.0f} MiB), the others recomputed every epoch"
        self.log.info("training audio read from the clip files per window %s; log-mels %s", where, cached)
        fill = np.mean([w.seconds for w in self.windows]) / c.pack_seconds
        self.log.info("%d training clips in %d windows (%.2f clips/window, windows %.0f %% full)", self.n_clips,
                      len(self.windows), self.n_clips / len(self.windows), 100 * fill)

    def _setup(self) -> None:
        from accelerate.utils import set_seed
        from transformers import get_cosine_schedule_with_warmup

        c = self.config
        self.acc = acc = make_accelerator(c, self.out)
        # Other processes log warnings only (tagged with their rank), the main process logs everything.
        self.log = log if acc.is_main_process else logging.getLogger(f"{__name__}.rank{acc.process_index}")
        if not acc.is_main_process:
            self.log.setLevel(logging.WARNING)
        self._check_run_dir()
        self.eval_precision = None  # dev decoding: --eval-precision resolved for the device
        if c.eval_precision is not None:
            self.eval_precision = resolve_precision(c.eval_precision, acc.device, "--eval-precision")
        if self.ckpt is not None and self.ckpt.passed_over:
            acc.wait_for_everyone()  # every process has read its checkpoint before the damaged ones move
            if acc.is_main_process:
                ckpt_io.set_aside(self.ckpt.passed_over)
        set_seed(c.seed)
        net, self.processor = load_model(c.model, device="cpu")
        net.config.apply_spec_augment = c.spec_augment
        for k in ("mask_time_prob", "mask_time_length", "mask_feature_prob", "mask_feature_length"):
            setattr(net.config, k, getattr(c, k))
        if c.gradient_checkpointing:
            enable_checkpointing(net)
        self.multilingual = is_multilingual(net)
        model = apply_strategy(net, c.strategy, c.lora)
        self.counts = parameter_count(model)
        self.cache_encoder = c.frozen_encoder and not c.spec_augment and not c.augments
        if c.frozen_encoder and not self.cache_encoder:
            self.log.info("augmentation changes the encoder input every step: encoder outputs are not cached")
        self.cache: dict[int, torch.Tensor] = {}
        self.cache_room: int | None = None  # windows the encoder cache may hold, set from the first output
        self._load_data(self.processor.tokenizer, self.multilingual)

        self.world, self.rank = acc.num_processes, acc.process_index
        n_batches = len(rank_batches(list(range(len(self.windows))), c.batch_size, self.world, self.rank))
        self.steps_per_epoch = math.ceil(n_batches / c.grad_accum)
        self.total_steps = c.max_steps or c.epochs * self.steps_per_epoch
        self.warmup_steps = c.warmup(self.total_steps)
        self.eval_every = c.eval_every or self.steps_per_epoch
        self.save_every = c.save_every or self.eval_every
        self.fingerprint = hash_windows(self.windows)

        self.state = ckpt_io.TrainerState(world_size=self.world, windows_fingerprint=self.fingerprint,
                                          mixed_precision=acc.mixed_precision)
        ckpt = self.ckpt
        if ckpt is not None:
            self._load_weights(model, ckpt.weights, ckpt.path / ckpt_io.WEIGHTS_FILE)
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=c.lr)
        self.scheduler = get_cosine_schedule_with_warmup(optimizer, self.warmup_steps, self.total_steps)
        if ckpt is not None:
            optimizer.load_state_dict(ckpt.optimizer)
            self.scheduler.load_state_dict(ckpt.scheduler)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        set_seed(c.seed, device_specific=True)
        if ckpt is not None:
            self._load_state(ckpt)
            self.ckpt = None  # the parsed state dicts are not needed any more
            if acc.is_main_process:
                for name in (self.weights_name, AVERAGE_DIR, BEST_CHECKPOINT_DIR):
                    restore_dir(self.out / name)
        elif acc.is_main_process:
            with writing(self.out):
                self.out.mkdir(parents=True, exist_ok=True)
            save_config(c, self.out / "train_config.yaml")
            atomic_write_text(self.out / "log.jsonl", "")
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if c.report_to != "none":
            acc.init_trackers(TENSORBOARD_DIR)  # RUN_DIR/tensorboard/ (a resumed run adds an event file)

    def _load_weights(self, model, saved: dict[str, torch.Tensor], source: Path) -> None:
        """Copy ``saved`` (read from ``source``) into the trainable parameters of ``model``."""
        params = dict(trainable_state_dict(model))
        if set(saved) != set(params):
            raise ConfigError(f"--resume: {source} holds other parameters than --strategy "
                              f"{self.config.strategy} trains; resume with the run's own options")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])

    def _load_state(self, ckpt: ckpt_io.Checkpoint) -> None:
        state = ckpt.state
        if state.world_size != self.world:
            raise ConfigError(f"--resume: the run used {state.world_size} processes, now {self.world}; "
                              f"resume with the same number of processes")
        if state.windows_fingerprint != self.fingerprint:
            raise ConfigError("--resume: the training windows differ from the checkpoint's (manifest, tokenizer "
                              "or packing options changed); resume with the same --train and options")
        if state.mixed_precision not in (None, self.acc.mixed_precision):
            self.log.warning("--resume: the run trained in %s until step %d and continues in %s here "
                             "(--mixed-precision %s resolves differently on this hardware), so it will not end "
                             "exactly like an uninterrupted run", _precision_name(state.mixed_precision),
                             state.global_step, _precision_name(self.acc.mixed_precision),
                             self.config.mixed_precision)
        state.mixed_precision = self.acc.mixed_precision
        self.state = state
        ckpt_io.set_rng_state(ckpt.rng)
        if self.acc.is_main_process:  # drop steps logged and weights kept after the checkpoint by the killed run
            ckpt_io.trim_log(self.out / "log.jsonl", state.global_step)
            self._prune_snapshots()
        self.log.info("resuming %s from %s: step %d (epoch %d, step %d of it)", self.out, ckpt.path.name,
                      state.global_step, state.epoch, state.step_in_epoch)

    # ---------------------------------------------------------------------------------------- training
    def _encoder_states(self, index: torch.Tensor) -> torch.Tensor:
        """Encoder outputs of windows ``index``, computed in eval mode on first use and kept while the cache
        holds less than :data:`ENCODER_CACHE_BYTES`; the other windows' are recomputed (the same values)."""
        fresh: dict[int, torch.Tensor] = {}
        missing = [i for i in index.tolist() if i not in self.cache]
        if missing:
            encoder = base_model(self.acc.unwrap_model(self.model)).model.encoder
            feats = torch.from_numpy(np.stack([self.dataset.features(i) for i in missing])).to(self.acc.device)
            was_training = encoder.training
            encoder.eval()
            isolation = contextlib.nullcontext()
            if self.dataset.isolate:
                layouts = [self.dataset[i] for i in missing]
                isolation = encoder_isolation(
                    base_model(self.acc.unwrap_model(self.model)),
                    torch.stack([it["encoder_segments"] for it in layouts]).to(self.acc.device),
                    torch.stack([it["encoder_positions"] for it in layouts]).to(self.acc.device))
            with torch.no_grad(), self.acc.autocast(), isolation:
                hidden = encoder(feats).last_hidden_state
            encoder.train(was_training)
            for i, h in zip(missing, hidden, strict=True):
                fresh[i] = h.detach().to("cpu", copy=True)
                if self.cache_room is None:
                    self.cache_room = max(ENCODER_CACHE_BYTES // (h.numel() * h.element_size()), 0)
                    self.log.info("encoder outputs: %s", "all windows cached in memory" if self.cache_room >= len(
                        self.windows) else f"{self.cache_room} of {len(self.windows)} windows cached in memory (cap "
                        f"{ENCODER_CACHE_BYTES / 2**20:.0f} MiB), the others recomputed every step")
                if len(self.cache) < self.cache_room:
                    self.cache[i] = fresh[i]
        return torch.stack([self.cache.get(i, fresh.get(i)) for i in index.tolist()]).to(self.acc.device)

    def _forward(self, batch: dict) -> torch.Tensor:
        device = self.acc.device
        kwargs = {"decoder_input_ids": batch["decoder_input_ids"].to(device), "use_cache": False}
        if self.cache_encoder:
            kwargs["encoder_outputs"] = (self._encoder_states(batch["index"]),)
        else:
            kwargs["input_features"] = batch["input_features"].to(device)
        if "decoder_position_ids" in batch:
            kwargs["decoder_position_ids"] = batch["decoder_position_ids"].to(device)
        out = self.model(**kwargs)
        return token_loss(out.logits, batch["targets"].to(device), self.config.label_smoothing)

    def _pack_hooks(self, batch: dict) -> contextlib.ExitStack:
        """The attention masks and encoder positions of clip-wise / isolated packing
        (:mod:`kidwhisper.train.clipwise`) for this batch, held through forward *and* backward (gradient
        checkpointing recomputes the forward during backward)."""
        hooks = contextlib.ExitStack()
        if "segments" in batch:
            device = self.acc.device
            whisper = base_model(self.acc.unwrap_model(self.model))
            self_mask, cross_mask = attention_masks(batch["segments"].to(device), batch["frames"].to(device))
            hooks.enter_context(decoder_masks(whisper, self_mask, cross_mask))
            if "encoder_segments" in batch and not self.cache_encoder:  # cached outputs are isolated already
                hooks.enter_context(encoder_isolation(whisper, batch["encoder_segments"].to(device),
                                                      batch["encoder_positions"].to(device)))
        return hooks

    def _step(self, micro_batches: list[dict], shards: list[batching.Shard]) -> float:
        """One optimizer step over ``micro_batches`` (gradient accumulation), each this process's part of a
        global batch (``shards``, which weight the losses); returns the mean loss."""
        self.model.train()
        total = 0.0
        n = len(micro_batches)
        for j, (batch, shard) in enumerate(zip(micro_batches, shards, strict=True)):
            ctx = self.acc.no_sync(self.model) if j < n - 1 else contextlib.nullcontext()
            with ctx, self._pack_hooks(batch):
                with self.acc.autocast():
                    loss = self._forward(batch)
                self.acc.backward(loss * shard.weight / n)
            total += loss.item() * shard.weight
            self.state.windows_seen += len(shard.batch)
            self.state.clips_seen += sum(len(self.windows[i].clips) for i in shard.batch)
        self.acc.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.step_lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self.optimizer.step()
        if not self.acc.optimizer_step_was_skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean = torch.tensor(total / n, device=self.acc.device)
        return float(self.acc.reduce(mean, reduction="mean").item()) if self.world > 1 else float(mean)

    def _evaluate(self) -> tuple[float, int]:
        """(dev WER, dev clips that hit the token bound), the same on every process."""
        t0 = time.perf_counter()
        wer = truncated = None
        if self.acc.is_main_process:
            model = self.acc.unwrap_model(self.model)
            model.eval()
            # --eval-precision, else: CPU float32, as `kidwhisper evaluate` decodes by default; GPU the
            # training's precision.
            device = self.acc.device
            if self.eval_precision is not None:
                precision = precision_context(self.eval_precision, device)
            else:
                precision = self.acc.autocast() if device.type != "cpu" else contextlib.nullcontext()
            with precision:
                wer, truncated = evaluate_dev(model, self.processor, self.dev_audios, self.dev_refs, self.config)
            model.train()
        self.acc.wait_for_everyone()
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            wer, truncated = broadcast_object_list([wer, truncated])
        self.state.eval_s += time.perf_counter() - t0
        return float(wer), int(truncated)

    def fit(self) -> dict:
        t_start = time.perf_counter()
        self._setup()
        c, s, acc = self.config, self.state, self.acc
        elapsed0, train0 = s.elapsed_s, s.train_s
        self.log.info("training %s (%s) for %d steps (%d per epoch, warmup %d, lr %g), dev WER every %d steps "
                      "on %d clips, %d process(es) on %s", c.model, c.strategy, self.total_steps,
                      self.steps_per_epoch, self.warmup_steps, c.lr, self.eval_every, self.n_dev, self.world,
                      acc.device)
        collate = Collator(self.processor.tokenizer.pad_token_id)
        bar = tqdm(total=self.total_steps, initial=s.global_step, desc=f"train {c.strategy}", unit="step",
                   disable=not (c.progress and acc.is_main_process))
        t_train = 0.0
        epoch = s.epoch
        while s.global_step < self.total_steps and not s.stopped_early:
            if s.order is None or s.epoch != epoch:
                s.epoch, s.step_in_epoch = epoch, 0
                s.order = epoch_order(len(self.windows), c.seed, epoch,
                                      None if c.pack else [len(w.labels) for w in self.windows],
                                      c.batch_size * self.world)
            shards = rank_batches(s.order, c.batch_size, self.world, self.rank)
            groups = [shards[i : i + c.grad_accum] for i in range(0, len(shards), c.grad_accum)]
            start = s.step_in_epoch  # a resumed epoch reads only the windows of the steps still to run
            self.dataset.epoch = epoch
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=[sh.windows for g in groups[start:] for sh in g], collate_fn=collate,
                num_workers=self.num_workers, generator=torch.Generator().manual_seed(c.seed))
            it = iter(loader)
            for k in range(start, len(groups)):
                t0 = time.perf_counter()
                loss = self._step([next(it) for _ in groups[k]], groups[k])
                t_train += time.perf_counter() - t0
                s.global_step += 1
                s.step_in_epoch = k + 1
                step = s.global_step
                row = {"step": step, "epoch": round(epoch + (k + 1) / len(groups), 4), "loss": round(loss, 5),
                       "lr": self.step_lr,
                       "elapsed_s": round(elapsed0 + time.perf_counter() - t_start, 2)}
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if step % self.eval_every == 0 or step == self.total_steps:
                    wer, truncated = self._evaluate()
                    row["dev_wer"] = self._after_eval(step, wer)
                    row["dev_truncated"] = truncated
                if acc.is_main_process:
                    append_text(self.out / "log.jsonl", json.dumps(row) + "\n")
                self._track(row)
                if "dev_wer" in row or step % self.save_every == 0:
                    s.train_s = train0 + t_train
                    s.elapsed_s = elapsed0 + time.perf_counter() - t_start
                    self.save_checkpoint()
                    if acc.is_main_process:
                        self._prune_snapshots()
                if step >= self.total_steps or s.stopped_early:
                    break
            epoch += 1
        bar.close()
        if c.report_to != "none":
            acc.end_training()  # flushes and closes the trackers' files
        s.train_s = train0 + t_train
        average = self._average() if c.average_best else None
        s.elapsed_s = elapsed0 + time.perf_counter() - t_start
        summary = self._summary(average)
        if acc.is_main_process:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
            self._plot_learning_curve()
        acc.wait_for_everyone()
        self.log.info("done: best dev WER %.2f %% at step %s after %d steps (%.0f s)%s",
                      100 * summary["best_dev_wer"], summary["best_step"], s.global_step, s.elapsed_s,
                      "; stopped early" if s.stopped_early else "")
        return summary

    def _plot_learning_curve(self) -> None:
        """RUN_DIR/learning_curve.png from log.jsonl, drawn as ``kidwhisper compare`` draws learning curves."""
        from kidwhisper.report.collect import load_run
        from kidwhisper.report.plots import plot_learning_curves

        run = load_run(self.out)
        run.label = f"{Path(self.config.model).name} - {self.config.strategy}"
        plot_learning_curves([run], self.out / "learning_curve.png", dpi=120)

    def _track(self, row: dict) -> None:
        """Send one log.jsonl row to the ``--report-to`` tracker: train/loss, train/lr, dev/wer (%)."""
        if self.config.report_to == "none":
            return
        values = {"train/loss": row["loss"], "train/lr": row["lr"]}
        if row.get("dev_wer") is not None:
            values["dev/wer"] = 100 * row["dev_wer"]
        self.acc.log(values, step=row["step"])

    def _after_eval(self, step: int, wer: float) -> float:
        s = self.state
        s.evals.append({"step": step, "dev_wer": wer})
        if self.config.average_best and step in n_best_steps(s.evals, self.config.average_best):
            self._save_snapshot(step)
        if s.best_wer is None or wer < s.best_wer:
            s.best_wer, s.best_step, s.bad_evals = wer, step, 0
            self.save_best()
        else:
            s.bad_evals += 1
            if self.config.patience and s.bad_evals >= self.config.patience and step < self.total_steps:
                s.stopped_early = True
        self.log.info("step %d: dev WER %.2f %% (best %.2f %% at step %d)%s", step, 100 * wer,
                      100 * s.best_wer, s.best_step, "; stopping early" if s.stopped_early else "")
        return wer

    # ------------------------------------------------------------------------------------------ saving
    @property
    def weights_name(self) -> str:
        """The kept weights' directory in RUN_DIR: ``adapter`` (LoRA strategies) or ``model``."""
        return "adapter" if self.config.is_lora else "model"

    def save_best(self) -> None:
        """Write the current weights as RUN_DIR/adapter (LoRA) or RUN_DIR/model, atomically."""
        if self.acc.is_main_process:
            self._save_weights(self.out / self.weights_name, self.state.best_wer, self.state.best_step)
        self.acc.wait_for_everyone()

    def _save_weights(self, final: Path, dev_wer: float, step: int, extra: dict | None = None) -> None:
        """Write the model's current weights to directory ``final`` atomically: a PEFT adapter (with
        kidwhisper_adapter.json: base model, strategy, step, dev WER and ``extra``) or a whole model with its
        processor and language; and a first model card (recipe, parameters, ``dev_wer``); ``kidwhisper
        compare`` adds the test results to the card."""
        from kidwhisper.report.model_card import model_card, write_model_card

        model = self.acc.unwrap_model(self.model)
        with replacing_dir(final) as tmp:
            if self.config.is_lora:
                model.save_pretrained(str(tmp), safe_serialization=True)
                meta = {"base_model": self.config.model, "strategy": self.config.strategy, "step": step,
                        "dev_wer": dev_wer, **(extra or {})}
                atomic_write_text(tmp / "kidwhisper_adapter.json", json.dumps(meta, indent=2) + "\n")
            else:
                gen = model.generation_config
                if self.multilingual:
                    gen.language, gen.task = self.config.language, "transcribe"
                model.save_pretrained(str(tmp), safe_serialization=True)
                self.processor.save_pretrained(str(tmp))
            summary = {"trainable_params": self.counts.trainable, "total_params": self.counts.total,
                       "best_dev_wer": dev_wer, "best_step": step, "n_train_clips": self.n_clips}
            write_model_card(tmp, model_card(final, asdict(self.config), summary))

    # ------------------------------------------------------------------------------- checkpoint averaging
    def _save_snapshot(self, step: int) -> None:
        """RUN_DIR/snapshots/step-<step>.safetensors: the trained weights now (main process, atomic)."""
        if self.acc.is_main_process:
            from safetensors.torch import save

            weights = {n: t.to("cpu").contiguous() for n, t in
                       trainable_state_dict(self.acc.unwrap_model(self.model)).items()}
            atomic_write_bytes(snapshot_path(self.out, step), save(weights), fsync=False)

    def _prune_snapshots(self) -> None:
        """Remove the snapshots (and temp files) of steps that are not among the ``average_best`` best
        evaluations of the state: after a checkpoint is saved, so a kill never leaves the checkpoint's n best
        without their weights, and on resume, where it also drops those written after the checkpoint."""
        folder = self.out / SNAPSHOTS
        if not folder.is_dir():
            return
        keep = {snapshot_path(self.out, st).name for st in n_best_steps(self.state.evals, self.config.average_best)}
        for path in folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def _average(self) -> dict | None:
        """Score the element-wise mean of the ``average_best`` best evaluations' weights on dev; write it to
        RUN_DIR/average, the best single evaluation's weights to RUN_DIR/best-checkpoint, and the average to
        RUN_DIR/adapter (or model) too when its dev WER is lower. Returns what happened (None: fewer than two
        evaluations to average). Run again after a kill, it ends the same way."""
        c, s = self.config, self.state
        steps = [st for st in n_best_steps(s.evals, c.average_best) if snapshot_path(self.out, st).exists()]
        if len(steps) < 2:
            self.log.warning("checkpoint averaging skipped: %d evaluation(s) with saved weights, 2 needed",
                             len(steps))
            return None
        final, single = self.out / self.weights_name, self.out / BEST_CHECKPOINT_DIR
        if self.acc.is_main_process:
            if not single.exists():  # a rerun after a kill may find final already replaced by the average
                with replacing_dir(single) as tmp:
                    shutil.copytree(final, tmp, dirs_exist_ok=True)
            paths = [snapshot_path(self.out, st) for st in steps]
            self._load_weights(self.acc.unwrap_model(self.model), average_weights(paths), paths[0])
        self.acc.wait_for_everyone()
        wer, truncated = self._evaluate()
        kept = wer < s.best_wer
        if self.acc.is_main_process:
            extra = {"averaged_steps": steps}
            self._save_weights(self.out / AVERAGE_DIR, wer, s.global_step, extra)
            if kept:
                self._save_weights(final, wer, s.global_step, extra)
        self.acc.wait_for_everyone()
        self.log.info("average of the weights at steps %s: dev WER %.2f %% against %.2f %% at step %d, the best "
                      "evaluation; %s kept in %s", steps, 100 * wer, 100 * s.best_wer, s.best_step,
                      "the average" if kept else "the best evaluation's weights", final)
        return {"steps": steps, "dev_wer": wer, "dev_truncated": truncated, "kept": kept,
                "best_checkpoint_dev_wer": s.best_wer, "best_checkpoint_step": s.best_step}

    def save_checkpoint(self) -> None:
        """Write RUN_DIR/checkpoints/last (the old one becomes previous); see kidwhisper.train.checkpoint."""
        tmp = ckpt_io.tmp_dir(self.out)
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            with writing(tmp):
                tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        with writing(tmp, cleanup=tmp):
            ckpt_io.write_rng(tmp, self.rank)
            if self.acc.is_main_process:
                ckpt_io.write_files(tmp, trainable_state_dict(self.acc.unwrap_model(self.model)),
                                    self.optimizer.state_dict(), self.scheduler.state_dict())
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            with writing(tmp, cleanup=tmp):
                ckpt_io.finish(tmp, self.state)
        self.acc.wait_for_everyone()

    def _summary(self, average: dict | None = None) -> dict:
        """summary.json; ``best_dev_wer`` is the dev WER of the kept weights (the average's when it won)."""
        c, s = self.config, self.state
        best_wer = average["dev_wer"] if average and average["kept"] else s.best_wer
        train_s = max(s.train_s, 1e-9)
        return {
            "model": c.model, "strategy": c.strategy, "out": str(self.out),
            "trainable_params": self.counts.trainable, "total_params": self.counts.total,
            "trainable_pct": round(self.counts.pct, 4), "adapter_params": self.counts.adapter,
            "best_dev_wer": best_wer, "best_step": s.best_step, "evals": s.evals,
            **({"average": average} if average else {}),
            "best_weights": str(self.out / self.weights_name),
            "steps": s.global_step, "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
            "epochs_run": round(s.global_step / self.steps_per_epoch, 3), "stopped_early": s.stopped_early,
            "warmup_steps": self.warmup_steps, "eval_every": self.eval_every, "lr": c.lr,
            "windows_per_step": c.batch_size * c.grad_accum * self.world,
            "wall_seconds": round(s.elapsed_s, 2), "train_seconds": round(s.train_s, 2),
            "eval_seconds": round(s.eval_s, 2),
            "seconds_per_step": round(s.train_s / max(s.global_step, 1), 3),
            "clips_per_s": round(s.clips_seen / train_s, 3), "windows_per_s": round(s.windows_seen / train_s, 3),
            "n_train_clips": self.n_clips, "n_windows": len(self.windows),
            "clips_per_window": round(self.n_clips / len(self.windows), 3),
            "window_fill": round(float(np.mean([w.seconds for w in self.windows])) / 30.0, 4),
            "skipped_train_clips": self.n_skipped, "n_dev_clips": self.n_dev, "skipped_dev_clips": self.n_skipped_dev,
            "encoder_outputs_cached": self.cache_encoder, "device": str(self.acc.device),
            "world_size": self.world, "mixed_precision": self.acc.mixed_precision,
            "torch_threads": torch.get_num_threads(), **peak_memory_mb(), "resumed": self.resume,
            **self.hashes, "versions": package_versions(), "machine": machine_info(),
        }


def hash_windows(windows) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([[w.clips, w.labels] for w in windows]).encode()).hexdigest()


def train(config: TrainConfig, resume: bool = False) -> dict:
    """Train ``config.strategy`` on ``config.train``, select by dev WER, write RUN_DIR; returns the summary.

    ``resume=True`` continues the run in ``config.out`` from its last checkpoint.
    """
    return Trainer(config, resume).fit()
