"""Finding and reading result directories: evaluations and training runs -> labelled configurations.

See :mod:`kidwhisper.report` for what counts as an evaluation or a run and how configurations are labelled.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kidwhisper.config import ConfigError

log = logging.getLogger(__package__)  # one "kidwhisper.report" logger for the whole package

DEFAULT_SETS = ["kids-test", "adults-test", "kids-dev"]
SET_NAME = re.compile(r"(^|[-_/])(test|dev|train|valid|validation|eval)([-_]|$)")


class CompareError(FileNotFoundError):
    """No usable result under the given paths; the message names them and what to pass instead."""


@dataclass
class CompareConfig:
    """Options of ``kidwhisper compare``.

    baseline: label of the configuration that relative changes are computed against (e.g.
    ``"whisper-base (en)"``); None or ``"first"`` = the first configuration in table order (zero-shot models
    first, English forced before ``auto``). sets: display order of test sets; sets not listed follow
    alphabetically, and the first one present is the headline set (main table columns, WER-by-age). title:
    heading of report.md / report.html. dpi: resolution of the PNG plots. small_set: a test set scored on
    fewer clips than this (or on a ``--limit`` subset) gets a caveat paragraph: wide CIs, not the reference
    numbers. subset: the test sets are subsets of larger ones (``kidwhisper run`` with ``limit_test``), which
    gets the caveat whatever their size. sections: Markdown files (e.g. an ablation table) appended to the
    report before its *Inputs* list, verbatim in report.md and converted to HTML in report.html.
    """

    baseline: str | None = None  # label of the baseline configuration (e.g. "whisper-base (en)"); None = the first
    sets: list[str] = field(default_factory=lambda: list(DEFAULT_SETS))  # display order of the test sets
    title: str = "kidwhisper: Whisper on children's speech"  # heading of report.md / report.html
    dpi: int = 120  # resolution of the PNG plots
    small_set: int = 200  # test sets with fewer clips (or a --limit subset) get the small-subsets caveat
    subset: bool = False  # the test sets are subsets (kidwhisper run with limit_test): the caveat whatever their size
    sections: list[str] = field(default_factory=list)  # Markdown files appended to the report as their own sections

    def __post_init__(self) -> None:
        if isinstance(self.sets, str):
            self.sets = [s for s in self.sets.replace(",", " ").split() if s]
        if not all(isinstance(s, str) and s for s in self.sets):
            raise ConfigError(f"`--sets` must be a list of test set names such as kids-test; got {self.sets!r}")
        if isinstance(self.sections, str):
            self.sections = [s for s in self.sections.split(",") if s.strip()]
        if not all(isinstance(s, str) and s for s in self.sections):
            raise ConfigError(f"`--sections` must be a list of Markdown file paths; got {self.sections!r}")
        if not 50 <= self.dpi <= 600:
            raise ConfigError(f"`--dpi` must be in 50..600; got {self.dpi}")


@dataclass
class Run:
    """A training run directory: its config, summary (empty while still running) and log lines."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    log: list[dict[str, Any]]
    label: str = ""

    @property
    def model(self) -> str:
        return str(self.config.get("model") or self.summary.get("model") or "?")

    @property
    def strategy(self) -> str:
        return str(self.config.get("strategy") or self.summary.get("strategy") or "tuned")


@dataclass
class Configuration:
    """One model setup as decoded: test set name -> (evaluation dir, summary.json)."""

    key: tuple
    model: str
    adapter: str | None
    strategy: str | None  # None = zero-shot
    language: str
    run: Run | None
    label: str = ""
    results: dict[str, tuple[Path, dict]] = field(default_factory=dict)
    decoding: str = ""  # how it decoded when not the default greedy one-clip-per-window ("5 beams", "packed", ...)

    @property
    def trainable(self) -> tuple[int | None, float | None]:
        """(trainable parameters, % of the base model); (0, 0.0) for zero-shot, (None, None) if unknown."""
        if self.strategy is None:
            return 0, 0.0
        s = self.run.summary if self.run else {}
        n, total = s.get("trainable_params"), s.get("total_params")
        pct = 100.0 * n / total if n is not None and total else s.get("trainable_pct")
        return n, pct


def discover(inputs: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """(evaluation dirs, run dirs) found recursively under ``inputs``; hidden and checkpoint dirs skipped."""
    evals: dict[Path, None] = {}
    runs: dict[Path, None] = {}
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise CompareError(f"{p}: not found; pass directories written by `kidwhisper evaluate --out` "
                               f"or `kidwhisper train --out`")
        for root, dirs, files in os.walk(p if p.is_dir() else p.parent):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "checkpoints")
            if {"summary.json", "utterances.jsonl"} <= set(files):
                evals[Path(root).resolve()] = None
            if {"log.jsonl", "train_config.yaml"} <= set(files):
                runs[Path(root).resolve()] = None
    return list(evals), list(runs)


def load_run(path: Path) -> Run:
    """Read a run directory; log lines that are not JSON (a run being written) are skipped."""
    config = yaml.safe_load((path / "train_config.yaml").read_text(encoding="utf-8")) or {}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else {}
    rows, bad = [], 0
    for line in (path / "log.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            row, bad = None, bad + 1
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    if bad:
        log.warning("%s: skipped %d log.jsonl line(s) that are not JSON", path / "log.jsonl", bad)
    if not isinstance(config, dict) or not isinstance(summary, dict):
        raise ValueError("train_config.yaml / summary.json is not a mapping")
    return Run(path, config, summary, rows)


def short_model_name(model: str) -> str:
    """``openai/whisper-base`` -> ``whisper-base``; ``runs/full/model`` -> ``full/model``."""
    parts = [p for p in str(model).replace("\\", "/").split("/") if p]
    if not parts:
        return "?"
    return "/".join(parts[-2:]) if parts[-1] in ("model", "adapter") and len(parts) > 1 else parts[-1]


def _data_names(data: Any) -> list[str]:
    """Candidate set names of a manifest/corpus path: ``data/kids-test/manifest.jsonl`` -> ``kids-test``;
    ``.../speechocean762-kids/test`` -> ``test``, ``speechocean762-kids-test``."""
    p = Path(str(data or ""))
    p = p.parent if p.suffix == ".jsonl" else p
    if not data or p.name == "prepared":  # evaluate prepares corpus dirs into OUT/prepared: no name there
        return []
    return [p.name, f"{p.parent.name}-{p.name}"]


def _match_set(cands: list[str], known: list[str]) -> str | None:
    """A known set that a candidate is or ends with (``speechocean762-kids-test``), else a set-like name."""
    for c in cands:
        for k in known:
            if c == k or c.endswith("-" + k) or c.endswith("_" + k):
                return k
    return next((c for c in cands if SET_NAME.search(c)), None)


def set_name(eval_dir: Path, summary: dict, known: list[str]) -> str:
    """Test set of an evaluation: a known set (dir name, then manifest path), else a set-like name, else the
    evaluation directory's name."""
    data = _data_names((summary.get("config") or {}).get("data")) + _data_names(summary.get("data"))
    return _match_set([eval_dir.name, *data], known) or eval_dir.name


def _recorded_out(run: Run) -> Path | None:
    """The directory a run was trained into (``out`` of its config), resolved; None if not recorded."""
    out = run.config.get("out") or run.summary.get("out")
    return Path(str(out)).resolve() if out else None


def _find_run(eval_dir: Path, summary: dict, runs: dict[Path, Run]) -> Run | None:
    """The run whose adapter/model was evaluated (``RUN/adapter``, ``RUN/model``), or that holds ``eval_dir``."""
    for key in ("adapter", "model"):
        weights = Path(str(summary.get(key) or ""))
        if not summary.get(key) or weights.parent == Path("."):  # a built-in name such as whisper-base
            continue
        if weights.exists():
            run_dir = weights.resolve().parent
            copy = [r for r in runs.values() if _recorded_out(r) == run_dir]
            if copy:  # the run's files were copied into the inputs (results/...): that copy is the run
                return copy[0]
            if run_dir not in runs and (run_dir / "train_config.yaml").exists() and (run_dir / "log.jsonl").exists():
                runs[run_dir] = load_run(run_dir)  # a run outside the inputs
            if run_dir in runs:
                return runs[run_dir]
        else:  # a relative path from another working directory: match the end of a known run's path
            tail = weights.parent.parts
            match = [r for p, r in runs.items() if p.parts[-len(tail):] == tail]
            if len(match) == 1:
                return match[0]
    return next((runs[p] for p in eval_dir.parents if p in runs), None)


def decoding_tag(summary: dict) -> str:
    """How an evaluation decoded, when that is not the default (greedy, one clip per window, PyTorch or
    CTranslate2 float32, both token-identical): "5 beams" (+ "greedy fallback" for runaways), "packed",
    "ct2 int8", joined by ", "."""
    d = summary.get("decoding") or {}
    tags = []
    if int(d.get("beam_size") or 1) > 1:
        tags.append(f"{d['beam_size']} beams" + (f" + {d['fallback']} fallback" if d.get("fallback") else ""))
    if (summary.get("config") or {}).get("pack"):
        tags.append("packed")
    if d.get("backend") == "ct2" and d.get("compute_type", "float32") != "float32":
        tags.append(f"ct2 {d['compute_type']}")
    return ", ".join(tags)


def _configuration(eval_dir: Path, summary: dict, runs: dict[Path, Run]) -> Configuration:
    """The configuration an evaluation belongs to: its model (+ run or adapter), language and decoding."""
    language = str((summary.get("decoding") or {}).get("language") or summary.get("language") or "?")
    tag = decoding_tag(summary)
    adapter = summary.get("adapter")
    run = _find_run(eval_dir, summary, runs)
    if run is not None:
        return Configuration(("run", str(run.path), language, tag), run.model, adapter, run.strategy, language, run,
                             decoding=tag)
    model = str(summary.get("model") or "?")
    if adapter:
        meta_file = Path(str(adapter)) / "kidwhisper_adapter.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        return Configuration(("adapter", str(adapter), language, tag), str(meta.get("base_model") or model), adapter,
                             str(meta.get("strategy") or "adapter"), language, None, decoding=tag)
    return Configuration(("model", model, language, tag), model, None, None, language, None, decoding=tag)


def _source_name(c: Configuration) -> str:
    """The directory a trained configuration is named by when its model + strategy is not unique: the run's,
    else the adapter's (its parent's when the adapter sits in a run's ``adapter/`` or ``model/``)."""
    if c.run is not None:
        return c.run.path.name
    path = Path(str(c.adapter))
    return path.parent.name if path.name in ("adapter", "model") else path.name


def _label(c: Configuration) -> str:
    base = short_model_name(c.model)
    if c.strategy is None:
        if base.endswith(".en") and c.language == "en":
            return base + (f" ({c.decoding})" if c.decoding else "")
        return f"{base} ({', '.join(filter(None, [c.language, c.decoding]))})"
    train_lang = str((c.run.config.get("language") if c.run else None) or "en")
    notes = [c.language if c.language != train_lang else "", c.decoding]
    return f"{base} + {c.strategy}" + (f" ({', '.join(filter(None, notes))})" if any(notes) else "")


def read_sections(paths: list[str]) -> list[str]:
    """The Markdown texts of :attr:`CompareConfig.sections`; ConfigError naming the first unreadable file."""
    texts = []
    for p in paths:
        try:
            texts.append(Path(p).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
            raise ConfigError(f"--sections: cannot read {p} ({why}); pass Markdown files, comma-separated") from None
    return texts


def collect(inputs: list[str | Path], config: CompareConfig) -> tuple[list[Configuration], list[Run], list[str]]:
    """Configurations (table order), runs and test sets (display order) found under ``inputs``."""
    eval_dirs, run_dirs = discover(inputs)
    runs: dict[Path, Run] = {}
    skipped = 0
    for d in run_dirs:
        try:
            runs[d] = load_run(d)
        except (OSError, ValueError, yaml.YAMLError) as e:
            skipped += 1
            log.warning("skipping training run %s: %s", d, e)
    confs: dict[tuple, Configuration] = {}
    for d in eval_dirs:
        try:
            summary = json.loads((d / "summary.json").read_text())
            if not isinstance(summary.get("wer"), dict):
                raise ValueError("summary.json has no 'wer' mapping (not written by `kidwhisper evaluate`?)")
            conf = _configuration(d, summary, runs)
        except (OSError, ValueError, yaml.YAMLError) as e:
            skipped += 1
            log.warning("skipping evaluation %s: %s", d, e)
            continue
        conf = confs.setdefault(conf.key, conf)
        name = set_name(d, summary, config.sets)
        if name in conf.results:
            old = conf.results[name][0]
            newer = max((old, d), key=lambda p: (p / "summary.json").stat().st_mtime)
            log.warning("%s on %s found twice (%s, %s); using the newer %s", conf.key, name, old, d, newer)
            if newer == old:
                continue
        conf.results[name] = (d, summary)
    if skipped:
        log.warning("skipped %d unreadable result director%s", skipped, "y" if skipped == 1 else "ies")
    if not confs and not runs:
        where = ", ".join(str(p) for p in inputs) or "(no paths given)"
        raise CompareError(f"no evaluation (summary.json + utterances.jsonl) or training run (log.jsonl + "
                           f"train_config.yaml) under {where}{f'; {skipped} unreadable' if skipped else ''}; "
                           f"pass the --out directories of `kidwhisper evaluate` / `kidwhisper train`")
    ordered = sorted(confs.values(), key=lambda c: (c.strategy is not None, c.model, c.strategy or "",
                                                    c.language != "en", c.language, c.decoding, str(c.key)))
    for c in ordered:
        c.label = _label(c)
    sources: dict[tuple[str, str], set[str]] = {}  # model + strategy -> the runs / adapters trained that way
    for c in ordered:
        if c.strategy is not None:
            sources.setdefault((c.model, c.strategy), set()).add(c.key[1])
    for c in ordered:  # two runs (or adapters) with the same model + strategy: name them, every decoding, by directory
        if c.strategy is not None and len(sources[(c.model, c.strategy)]) > 1:
            c.label += f" [{_source_name(c)}]"
    for r in runs.values():
        r.label = next((c.label for c in ordered if c.run is r and c.language == "en"), None) or \
            next((c.label for c in ordered if c.run is r), None) or f"{short_model_name(r.model)} + {r.strategy}"
    if len({r.label for r in runs.values()}) < len(runs):
        for r in runs.values():
            r.label += f" [{r.path.name}]" if f"[{r.path.name}]" not in r.label else ""
    present = {s for c in ordered for s in c.results}
    sets = [s for s in config.sets if s in present] + sorted(present - set(config.sets))
    log.info("found %d configuration(s) on %d test set(s) and %d training run(s)", len(ordered), len(sets),
             len(runs))
    return ordered, sorted(runs.values(), key=lambda r: r.label), sets
