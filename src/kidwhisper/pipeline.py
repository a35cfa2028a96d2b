"""``kidwhisper run CONFIG.yaml``: prepare -> baseline evaluate -> train -> evaluate -> compare.

Every step writes under ``RunConfig.out`` and is skipped when its output is already complete, so a run
that was interrupted continues where it stopped (training itself resumes from its last checkpoint). The
output directory and the languages are checked against the model before any step runs.
The shipped configs are ``configs/quick.yaml`` (~15 minutes on 2 CPU cores: subsets, few steps) and
``configs/reference.yaml`` (the recommended recipe on the full kids train set).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from kidwhisper.config import ConfigError, from_dict, read_config_file, save_config
from kidwhisper.data.manifest import audio_path, read_manifest, write_manifest
from kidwhisper.files import check_output_dir, writing

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """One whole job.

    out: output directory. data: root of the raw corpora; ``train_set``, ``dev_set`` and the values of
    ``test_sets`` are corpus directories relative to it (anything ``kidwhisper prepare`` reads). The
    OUT_DIR of ``kidwhisper recipe speechocean762`` holds the same set directories as ``../shared/data``.
    limit_*: evaluate/train on a seeded random subset of that many clips (None = all); with ``limit_test``
    the report says that its numbers come from subsets and points to the reference numbers.
    baseline_languages: decoding languages for the stock model (``auto`` reproduces the broken setup).
    train: options of ``kidwhisper train`` (TrainConfig fields except model/train/dev/out).
    eval_batch_size: clips per decoding batch.
    beam_size: above 1, the stock model (each forced baseline language; ``auto`` stays greedy) and the tuned
    model are also evaluated on every test set with this many beams and the greedy fallback
    (``evaluate --beam-size``), beside greedy, into ``eval/baseline-LANG-beamN/SET/`` and ``run/eval-beamN/SET/``.
    """

    out: str
    data: str = "../shared/data"
    model: str = "whisper-base"
    train_set: str = "speechocean762-kids/train"
    dev_set: str = "speechocean762-kids/dev"
    test_sets: dict[str, str] = field(default_factory=lambda: {"kids-test": "speechocean762-kids/test",
                                                               "adults-test": "speechocean762-adults/test"})
    limit_train: int | None = None
    limit_dev: int | None = None
    limit_test: int | None = None
    baseline_languages: list[str] = field(default_factory=lambda: ["en"])
    train: dict = field(default_factory=dict)
    eval_batch_size: int = 16
    beam_size: int = 1
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        bad = {"model", "train", "dev", "out"} & set(self.train)
        if bad:
            raise ConfigError(f"run config: set {sorted(bad)} at the top level of the run config, not under `train:`")
        if not self.test_sets:
            raise ConfigError("run config: `test_sets` must name at least one test set")
        if self.beam_size < 1:
            raise ConfigError(f"run config: beam_size must be 1 (greedy only) or more, not {self.beam_size}")


def _subset(manifest: Path, n: int | None, out_dir: Path, seed: int) -> Path:
    """A seeded random subset of ``n`` clips (kept in manifest order, audio paths made absolute)."""
    if n is None:
        return manifest
    clips = read_manifest(manifest)
    if n >= len(clips):
        return manifest
    keep = set(random.Random(seed).sample(range(len(clips)), n))
    chosen = [c for i, c in enumerate(clips) if i in keep]
    for c in chosen:
        c.audio = str(audio_path(c, manifest))
    target = out_dir / f"{manifest.parent.name}-{n}" / "manifest.jsonl"
    if not target.exists():
        write_manifest(chosen, target)
    return target


def _prepare(cfg: RunConfig, name: str, rel: str, limit: int | None) -> Path:
    from kidwhisper.data.prepare import PrepareConfig, prepare

    out = Path(cfg.out) / "data" / name
    if not (out / "manifest.jsonl").exists():
        source = Path(cfg.data) / rel
        if not source.exists():
            raise ConfigError(f"{source}: not found; `data:` ({cfg.data}) must be the directory that holds {rel}. "
                              f"Build the speechocean762 sets with `kidwhisper recipe speechocean762 CORPUS_DIR "
                              f"OUT_DIR` and pass `--data OUT_DIR` (or set `data: OUT_DIR` in the run config)")
        prepare(source, out, PrepareConfig(progress=cfg.progress))
    return _subset(out / "manifest.jsonl", limit, Path(cfg.out) / "data", cfg.seed)


def _evaluate(cfg: RunConfig, model: str, adapter: str | None, manifest: Path, out: Path, language: str,
              beam_size: int = 1) -> dict:
    from kidwhisper.evaluate import EvalConfig, evaluate

    if (out / "summary.json").exists():
        log.info("kept existing evaluation %s", out)
        return json.loads((out / "summary.json").read_text())
    return evaluate(EvalConfig(model=model, adapter=adapter, data=str(manifest), out=str(out), language=language,
                               batch_size=cfg.eval_batch_size, beam_size=beam_size, progress=cfg.progress))


def run(cfg: RunConfig) -> dict:
    """Run the whole job; returns the compare() result."""
    from kidwhisper.models.load import check_language
    from kidwhisper.report import CompareConfig, compare
    from kidwhisper.train import TrainConfig, train
    from kidwhisper.train.checkpoint import has_checkpoint

    out = check_output_dir(cfg.out, "--out")
    for lang in cfg.baseline_languages:
        check_language(cfg.model, lang, flag="baseline_languages")
    check_language(cfg.model, cfg.train.get("language", "en"), allow_auto=False, flag="train.language")
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "run_config.yaml")
    train_manifest = _prepare(cfg, "train", cfg.train_set, cfg.limit_train)
    dev_manifest = _prepare(cfg, "dev", cfg.dev_set, cfg.limit_dev)
    tests = {name: _prepare(cfg, name, rel, cfg.limit_test) for name, rel in cfg.test_sets.items()}

    beams = f"-beam{cfg.beam_size}"
    for lang in cfg.baseline_languages:
        for name, manifest in tests.items():
            _evaluate(cfg, cfg.model, None, manifest, out / "eval" / f"baseline-{lang}" / name, lang)
            if cfg.beam_size > 1 and lang != "auto":
                _evaluate(cfg, cfg.model, None, manifest, out / "eval" / f"baseline-{lang}{beams}" / name, lang,
                          cfg.beam_size)

    run_dir = out / "run"
    tcfg = from_dict(TrainConfig, {**cfg.train, "model": cfg.model, "train": str(train_manifest),
                                   "dev": str(dev_manifest), "out": str(run_dir), "progress": cfg.progress},
                     where="run config `train:`")
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        log.info("kept existing training run %s", run_dir)
    else:
        train(tcfg, resume=has_checkpoint(run_dir))
    model, adapter = tuned_model(cfg.model, run_dir)
    for name, manifest in tests.items():
        _evaluate(cfg, model, adapter, manifest, run_dir / "eval" / name, tcfg.language)
        if cfg.beam_size > 1:
            _evaluate(cfg, model, adapter, manifest, run_dir / f"eval{beams}" / name, tcfg.language,
                      cfg.beam_size)
    return compare([out / "eval", run_dir], out / "report", CompareConfig(subset=cfg.limit_test is not None))


def tuned_model(base: str, run_dir: Path) -> tuple[str, str | None]:
    """(model, adapter) arguments that load a run's best weights."""
    if (run_dir / "adapter" / "adapter_config.json").exists():
        return base, str(run_dir / "adapter")
    if (run_dir / "model" / "config.json").exists():
        return str(run_dir / "model"), None
    raise ConfigError(f"{run_dir}: holds neither adapter/ nor model/; did the training finish?")


def load_run_config(path: str | Path, overrides: dict | None = None) -> RunConfig:
    data = read_config_file(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(RunConfig, data, where=str(path))



