"""Where and how a training run executes: the accelerator (device, mixed precision, processes, tracker),
DataLoader workers, activation checkpointing and peak memory. :mod:`kidwhisper.train.loop` trains on what
these set up.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from datetime import timedelta
from pathlib import Path

import torch

from kidwhisper.config import ConfigError
from kidwhisper.models.load import native_bf16, resolve_device
from kidwhisper.train.config import TrainConfig

log = logging.getLogger(__name__)


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing, non-reentrant, under the name this transformers version has
    (``gradient_checkpointing_enable`` is the deprecated alias in newer ones)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


TENSORBOARD_DIR = "tensorboard"  # RUN_DIR/tensorboard/: the event files of --report-to tensorboard


def check_tracker(report_to: str) -> None:
    """ConfigError naming the fix when ``--report-to`` asks for a tracker whose package is not installed."""
    if report_to == "tensorboard":
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            raise ConfigError("--report-to tensorboard needs the tensorboard package: pip install "
                              "'kidwhisper[tensorboard]' (or pip install tensorboard), or pass --report-to none")


def resolve_num_workers(num_workers: int | None, device: torch.device, world_size: int = 1) -> int:
    """``--num-workers``, or for None: 0 on CPU (training uses every core; reading and log-mels take a few
    percent of a step) and on an accelerator up to 4 per process from the cores this process may use."""
    if num_workers is not None:
        return num_workers
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(4, cores // world_size - 1))


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX); elsewhere bf16 autocast
    would be emulated and slower than float32."""
    return native_bf16(torch.device("cpu"))


def peak_memory_mb() -> dict[str, float | None]:
    """Peak resident memory of this process and peak CUDA memory allocated (None without CUDA), in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_rss_mb": round(rss, 1), "peak_cuda_mb": None if cuda is None else round(cuda, 1)}


def make_accelerator(config: TrainConfig, out: Path):
    """The ``accelerate.Accelerator`` of a run: ``--device``, ``--mixed-precision`` resolved for this hardware,
    a long process-group timeout (the main process decodes the dev set while the others wait), and the
    ``--report-to`` tracker writing under ``out``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs

    device = resolve_device(config.device)
    mp = config.mixed_precision
    if mp == "auto":
        native = (cpu_bf16_supported() if device.type == "cpu"
                  else device.type == "cuda" and torch.cuda.is_bf16_supported())
        mp = "bf16" if native else "no"
        log.info("--mixed-precision auto: %s on %s", mp if native else "float32", device.type)
    if mp != "no" and device.type == "cpu" and not (mp == "bf16" and cpu_bf16_supported()):
        log.info("--mixed-precision %s ignored on this CPU (bf16 needs AVX512-BF16 or AMX): training in "
                 "float32", mp)
        mp = "no"
    check_tracker(config.report_to)
    AcceleratorState._reset_state()  # several runs in one process (tests, pipeline) may differ in options
    # The other processes wait at a barrier while the main one decodes the dev set: allow for a slow one.
    wait = InitProcessGroupKwargs(timeout=timedelta(hours=4))
    tracking = {"log_with": "tensorboard", "project_dir": str(out)} if config.report_to == "tensorboard" \
        else {}
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mp, kwargs_handlers=[wait], **tracking)
