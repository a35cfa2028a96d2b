"""Resumable training checkpoints: written atomically, verified by sha256, the previous one kept.

Layout::

    RUN_DIR/checkpoints/last/        the newest checkpoint
    RUN_DIR/checkpoints/previous/    the one before it, used when ``last`` is damaged

Each holds ``trainable.safetensors`` (the trained parameters), ``optimizer.pt`` and ``scheduler.pt``
(state dicts, read with ``weights_only=True``), ``rng_rank<R>.json`` (python, numpy and torch RNG states
of process R), ``trainer_state.json`` (:class:`TrainerState`: data position, best WER, patience, counters)
and ``checksums.sha256``: the
sha256 of every other file in ``sha256sum`` format (``sha256sum -c checksums.sha256`` checks it by hand).

Writing: every file goes to ``checkpoints/.last.tmp``, the checksums last (:func:`write_files`,
:func:`finish`); then ``previous`` is moved aside and deleted, ``last`` becomes ``previous`` and the temp
directory becomes ``last``. Each step is a rename, so a kill at any moment leaves a complete ``last`` or
``previous``.

Resuming: :func:`resume_conflicts` lists options that differ from the run's saved config (``out`` never
does: a moved run resumes; paths are compared resolved), :func:`trim_log` drops log lines after the
checkpoint.

Loading (:func:`load_usable`): ``last``, then ``previous``, then ``last.old`` (the fallback directory of
older versions); each is checked against its checksums and parsed, and the first usable one is returned
with a warning naming the file that ruled out a newer one. CheckpointError names every bad file when none
is usable. A checkpoint written without ``checksums.sha256`` (older versions) is parsed but cannot be
verified. A damaged checkpoint that was passed over is renamed ``<name>.damaged`` (:func:`set_aside`), so
the next save keeps the good one as ``previous``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from kidwhisper.config import ConfigError
from kidwhisper.files import atomic_write_text, sha256_file, write_bytes

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST, PREVIOUS, LEGACY = "last", "previous", "last.old"  # newest first; last.old: older versions' fallback
TMP = ".last.tmp"
DAMAGED_SUFFIX = ".damaged"  # a damaged checkpoint that was passed over is kept under this name
WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
STATE_FILE = "trainer_state.json"
CHECKSUMS_FILE = "checksums.sha256"  # written last: lists every other file of the checkpoint
STATE_KEYS = ("global_step", "epoch", "step_in_epoch", "world_size", "windows_fingerprint")  # required in the file
RESUME_MAY_CHANGE = {"progress", "num_workers", "device", "eval_batch_size", "eval_pack", "eval_precision",
                     "report_to"}  # others must match
RESUME_PATHS = {"model", "train", "dev"}  # compared as resolved paths (a name or Hub id: as written)


class CheckpointError(ConfigError):
    """No checkpoint of the run can be used; the message names each bad file and the way out."""


@dataclass(kw_only=True)
class TrainerState:
    """Where a run is and what it has done so far: saved as ``trainer_state.json`` in every checkpoint
    (:meth:`to_dict`, a flat JSON object with one key per field) and restored on resume (:meth:`from_dict`)."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch being trained (0-based)
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    order: list[int] | None = None  # that epoch's window order (None: not drawn yet)
    best_wer: float | None = None  # lowest dev WER so far (a fraction; None before the first evaluation)
    best_step: int | None = None  # the step that reached it (its weights are RUN_DIR/adapter or model)
    bad_evals: int = 0  # evaluations since the best one, compared with patience
    evals: list[dict] = field(default_factory=list)  # every evaluation so far: {"step", "dev_wer"}
    elapsed_s: float = 0.0  # wall seconds of the run, over every resume
    train_s: float = 0.0  # seconds in optimizer steps
    eval_s: float = 0.0  # seconds decoding the dev set
    windows_seen: int = 0  # training windows trained on by this process
    clips_seen: int = 0  # training clips in them
    stopped_early: bool = False  # patience ran out
    world_size: int  # processes the run trains with; a resume must use as many
    windows_fingerprint: str  # hash of the planned training windows; a resume must plan the same
    mixed_precision: str | None = None  # what the steps so far ran in (no, bf16, fp16); None: not recorded

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["mixed_precision"] is None:  # a state from before it was recorded is written back as it was read
            del d["mixed_precision"]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TrainerState:
        """The state saved in ``data``; KeyError naming the missing keys of :data:`STATE_KEYS`. Optional keys
        that are missing take their defaults and unknown keys are ignored, so states written by other
        versions load."""
        missing = [k for k in STATE_KEYS if k not in data]
        if missing:
            raise KeyError(f"lacks {missing}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Checkpoint:
    """A verified, parsed checkpoint, ready to be put into the model, optimizer, scheduler and RNGs."""

    path: Path
    weights: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    state: TrainerState
    rng: dict
    passed_over: list[Path] = field(default_factory=list)  # newer checkpoints that were damaged


class _Damaged(Exception):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.json"


def rng_state() -> dict:
    """The python, numpy, torch (and CUDA) RNG states as JSON-ready lists."""
    v, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    d = {"python": [v, list(state), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached],
         "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        d["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return d


def set_rng_state(d: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    v, state, gauss = d["python"]
    random.setstate((v, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = d["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(d["torch"], dtype=torch.uint8))
    if "cuda" in d and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in d["cuda"]])


# ------------------------------------------------------------------------------------------ writing
def tmp_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS / TMP


def write_rng(tmp: Path, rank: int) -> None:
    """This process's RNG states into the temp checkpoint ``tmp`` (every process writes its own)."""
    write_bytes(tmp / rng_file(rank), json.dumps(rng_state()).encode())


def write_files(tmp: Path, weights: dict[str, torch.Tensor], optimizer: dict, scheduler: dict) -> None:
    """The trained parameters, optimizer and scheduler state into ``tmp`` (main process)."""
    from safetensors.torch import save

    write_bytes(tmp / WEIGHTS_FILE, save({k: v.to("cpu").contiguous() for k, v in weights.items()}))
    for name, obj in ((OPTIMIZER_FILE, optimizer), (SCHEDULER_FILE, scheduler)):
        buf = io.BytesIO()
        torch.save(obj, buf)
        write_bytes(tmp / name, buf.getbuffer())


def finish(tmp: Path, state: TrainerState) -> Path:
    """Write the trainer state and the checksums into ``tmp``, then make it ``last`` (the old ``last``
    becomes ``previous``); returns the new ``last``."""
    write_bytes(tmp / STATE_FILE, json.dumps(state.to_dict()).encode())
    sums = "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(tmp.iterdir()) if p.name != CHECKSUMS_FILE)
    write_bytes(tmp / CHECKSUMS_FILE, sums.encode())
    root = tmp.parent
    last, previous, trash = root / LAST, root / PREVIOUS, root / ".previous.del"
    if last.exists():
        if previous.exists():
            _remove_dir(trash)
            os.replace(previous, trash)  # a kill from here on leaves last (and then previous) complete
        os.replace(last, previous)
    os.replace(tmp, last)
    _remove_dir(trash)
    _remove_dir(root / LEGACY)
    return last


def _remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------ loading
def candidates(run_dir: Path) -> list[Path]:
    """The checkpoint directories of a run, newest first."""
    return [d for d in (run_dir / CHECKPOINTS / n for n in (LAST, PREVIOUS, LEGACY)) if d.is_dir()]


def has_checkpoint(run_dir: Path) -> bool:
    return bool(candidates(run_dir))


def _read_checksums(d: Path) -> dict[str, str]:
    path = d / CHECKSUMS_FILE
    sums = {}
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            digest, name = line.split("  ", 1)
            if len(digest) != 64 or "/" in name:
                raise ValueError(line[:80])
            sums[name] = digest
    except (OSError, ValueError) as e:
        raise _Damaged(path, f"unreadable ({e})") from e
    return sums


def _verify(d: Path, rank: int) -> None:
    """Raise _Damaged naming the first file that is missing or differs from its recorded sha256."""
    required = [WEIGHTS_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, STATE_FILE, rng_file(rank)]
    if not (d / CHECKSUMS_FILE).exists():
        missing = [n for n in required if not (d / n).is_file()]
        if missing:
            raise _Damaged(d / missing[0], "missing")
        log.info("%s has no %s (written by an older kidwhisper): its files are parsed but not verified",
                 d, CHECKSUMS_FILE)
        return
    sums = _read_checksums(d)
    for name in required:
        if name not in sums:
            raise _Damaged(d / name, f"not listed in {CHECKSUMS_FILE}")
    for name, digest in sums.items():  # every process checks every file, so all choose the same checkpoint
        path = d / name
        if not path.is_file():
            raise _Damaged(path, "missing")
        if sha256_file(path) != digest:
            raise _Damaged(path, f"its sha256 differs from the one in {CHECKSUMS_FILE} (truncated or damaged)")


def _parse(path: Path, read):
    from safetensors import SafetensorError

    try:
        return read(path)
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        raise _Damaged(path, f"unreadable ({type(e).__name__}: {detail})") from e


def _json(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def load(d: Path, rank: int = 0) -> Checkpoint:
    """Verify and parse checkpoint directory ``d`` for process ``rank``; raises _Damaged naming the file."""
    from safetensors.torch import load_file

    _verify(d, rank)
    saved = _parse(d / STATE_FILE, _json)
    try:
        state = TrainerState.from_dict(saved)
    except KeyError as e:
        raise _Damaged(d / STATE_FILE, e.args[0]) from e

    def torch_load(p: Path):
        return torch.load(p, weights_only=True)

    return Checkpoint(d, _parse(d / WEIGHTS_FILE, lambda p: load_file(str(p))), _parse(d / OPTIMIZER_FILE, torch_load),
                      _parse(d / SCHEDULER_FILE, torch_load), state, _parse(d / rng_file(rank), _json))


def load_usable(run_dir: Path, rank: int = 0) -> Checkpoint:
    """The newest usable checkpoint of ``run_dir`` (see the module docstring); CheckpointError when none is."""
    problems: list[_Damaged] = []
    for d in candidates(run_dir):
        try:
            ckpt = load(d, rank)
        except _Damaged as e:
            problems.append(e)
            continue
        for p in problems:
            log.warning("checkpoint %s is not usable: %s; resuming from %s instead", p.path.parent, p, d)
        ckpt.passed_over = [p.path.parent for p in problems]
        return ckpt
    where = run_dir / CHECKPOINTS
    if not problems:
        raise CheckpointError(f"--resume: no checkpoint in {where}; start the run without --resume")
    raise CheckpointError(f"--resume: no usable checkpoint in {where}: {'; '.join(map(str, problems))}; "
                          f"start the run again in a new --out (or delete {where} to restart in this one)")


def set_aside(damaged: list[Path]) -> None:
    """Rename checkpoints that were passed over to ``<name>.damaged`` (replacing an earlier one), so the
    next save does not turn a damaged ``last`` into ``previous``; they stay there for inspection."""
    for d in damaged:
        target = d.with_name(d.name + DAMAGED_SUFFIX)
        _remove_dir(target)
        os.replace(d, target)
        log.warning("moved the damaged checkpoint %s to %s", d, target)


# ------------------------------------------------------------------------------------------ resuming
def _same_option(key: str, saved, now) -> bool:
    """Whether a saved option and the one given now agree for --resume: ``out`` always does (the run is
    where its checkpoint is), paths that resolve to the same file do."""
    if key == "out" or saved == now:
        return True
    if key in RESUME_PATHS and isinstance(saved, str) and isinstance(now, str):
        a, b = Path(saved).expanduser(), Path(now).expanduser()
        return a.exists() and b.exists() and a.resolve() == b.resolve()
    return False


def resume_conflicts(saved_config: Path, now: dict) -> list[str]:
    """The options of ``now`` (a TrainConfig as a dict) that a resume may not change but that differ from the
    run's saved ``train_config.yaml`` (none when the run saved no config)."""
    if not saved_config.exists():
        return []
    import yaml

    saved = yaml.safe_load(saved_config.read_text()) or {}
    return sorted(k for k in now if k not in RESUME_MAY_CHANGE and not _same_option(k, saved.get(k), now[k]))


def _logged_step(line: str) -> float:
    """The step of a log.jsonl line; a line cut short by a kill counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def trim_log(path: Path, step: int) -> None:
    """Keep only the log.jsonl lines of steps up to ``step`` (those after it are redone on resume)."""
    lines = path.read_text().splitlines() if path.exists() else []
    atomic_write_text(path, "".join(x + "\n" for x in lines if x.strip() and _logged_step(x) <= step))
