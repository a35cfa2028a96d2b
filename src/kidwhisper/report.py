"""``kidwhisper compare``: tables, plots and an HTML page from result files only (never runs a model).

Inputs are directories, searched recursively:

* an **evaluation** is a directory holding ``summary.json`` + ``utterances.jsonl`` (``kidwhisper evaluate``);
* a **training run** is a directory holding ``log.jsonl`` + ``train_config.yaml`` (``kidwhisper train``).

Evaluations are grouped into **configurations** (base model + adapter/run + training strategy + decoding
language) and **test sets**. Labels: ``whisper-base (en)`` and ``whisper-base (auto)`` for zero-shot models
(English-only ``*.en`` models drop the redundant ``(en)``); ``whisper-base + lora`` for a model trained by a
run (the strategy comes from the run's ``train_config.yaml``; ``(auto)`` is added when it was decoded
without forcing the training language); ``[run-dir-name]`` is appended when two runs would share a label.
An evaluation belongs to a run when its adapter or model path lies in the run directory, or when the
evaluation directory is inside the run directory (``RUN/eval/kids-test``). The test set is the evaluation
directory's name (``kids-test``) or, when that does not look like a set name, the manifest's directory.

Written to ``OUT``: ``comparison.csv`` (one row per configuration x test set), ``report.md``,
``report.html`` (self-contained), ``wer_by_config.png``, ``wer_by_age.png``, ``learning_curves.png`` (the
last two only when there is something to draw) and ``compare_config.yaml``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kidwhisper.config import ConfigError, save_config
from kidwhisper.data.manifest import atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_SETS = ["kids-test", "adults-test", "kids-dev"]
SET_NAME = re.compile(r"(^|[-_/])(test|dev|train|valid|validation|eval)([-_]|$)")
CSV_COLUMNS = ["configuration", "model", "adapter", "strategy", "language", "test_set", "n_utts", "n_speakers",
               "wer_pct", "wer_ci_low_pct", "wer_ci_high_pct", "rel_change_pct", "digits_wer_pct",
               "orthographic_wer_pct", "cer_pct", "substitutions", "deletions", "insertions", "ref_words",
               "hallucinations", "non_english", "rtf", "trainable_params", "trainable_pct", "eval_dir"]


class CompareError(FileNotFoundError):
    """No usable result under the given paths; the message names them and what to pass instead."""


@dataclass
class CompareConfig:
    """Options of ``kidwhisper compare``.

    baseline: label of the configuration that relative changes are computed against (e.g.
    ``"whisper-base (en)"``); None or ``"first"`` = the first configuration in table order (zero-shot models
    first, English forced before ``auto``). sets: display order of test sets; sets not listed follow
    alphabetically, and the first one present is the headline set (main table columns, WER-by-age). title:
    heading of report.md / report.html. dpi: resolution of the PNG plots.
    """

    baseline: str | None = None
    sets: list[str] = field(default_factory=lambda: list(DEFAULT_SETS))
    title: str = "kidwhisper: Whisper on children's speech"
    dpi: int = 120

    def __post_init__(self) -> None:
        if isinstance(self.sets, str):
            self.sets = [s for s in self.sets.replace(",", " ").split() if s]
        if not all(isinstance(s, str) and s for s in self.sets):
            raise ConfigError(f"`--sets` must be a list of test set names such as kids-test; got {self.sets!r}")
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

    @property
    def trainable(self) -> tuple[int | None, float | None]:
        """(trainable parameters, % of the base model); (0, 0.0) for zero-shot, (None, None) if unknown."""
        if self.strategy is None:
            return 0, 0.0
        s = self.run.summary if self.run else {}
        n, total = s.get("trainable_params"), s.get("total_params")
        pct = 100.0 * n / total if n is not None and total else s.get("trainable_pct")
        return n, pct


# ------------------------------------------------------------------------------------------- discovery
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


def _find_run(eval_dir: Path, summary: dict, runs: dict[Path, Run]) -> Run | None:
    """The run whose adapter/model was evaluated (``RUN/adapter``, ``RUN/model``), or that holds ``eval_dir``."""
    for key in ("adapter", "model"):
        weights = Path(str(summary.get(key) or ""))
        if not summary.get(key) or weights.parent == Path("."):  # a built-in name such as whisper-base
            continue
        if weights.exists():
            run_dir = weights.resolve().parent
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


def _configuration(eval_dir: Path, summary: dict, runs: dict[Path, Run]) -> Configuration:
    language = str((summary.get("decoding") or {}).get("language") or summary.get("language") or "?")
    adapter = summary.get("adapter")
    run = _find_run(eval_dir, summary, runs)
    if run is not None:
        return Configuration(("run", str(run.path), language), run.model, adapter, run.strategy, language, run)
    model = str(summary.get("model") or "?")
    if adapter:
        meta_file = Path(str(adapter)) / "kidwhisper_adapter.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        return Configuration(("adapter", str(adapter), language), str(meta.get("base_model") or model), adapter,
                             str(meta.get("strategy") or "adapter"), language, None)
    return Configuration(("model", model, language), model, None, None, language, None)


def _label(c: Configuration) -> str:
    base = short_model_name(c.model)
    if c.strategy is None:
        return base if base.endswith(".en") and c.language == "en" else f"{base} ({c.language})"
    train_lang = str((c.run.config.get("language") if c.run else None) or "en")
    return f"{base} + {c.strategy}" + ("" if c.language == train_lang else f" ({c.language})")


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
                                                    c.language != "en", c.language, str(c.key)))
    for c in ordered:
        c.label = _label(c)
    clash = {c.label for c in ordered if sum(o.label == c.label for o in ordered) > 1}
    for c in ordered:  # two runs (or adapters) with the same model + strategy: name them by directory
        if c.label in clash and c.strategy is not None:
            c.label += f" [{c.run.path.name if c.run else Path(str(c.adapter)).parent.name}]"
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


# --------------------------------------------------------------------------------------------- numbers
def _pct(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{nd}f}"


def _wer_ci(w: dict | None) -> str:
    if not w or w.get("wer") is None:
        return "-"
    ci = f" ({_pct(w['ci_low'])}-{_pct(w['ci_high'])})" if w.get("ci_low") is not None else ""
    return _pct(w["wer"]) + ci


def _rel(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f} %"


def _params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def _share(p: float | None) -> str:
    """Trainable share: one decimal, two below 1 % so LoRA's 0.6 % does not print as 0.0."""
    return "?" if p is None else f"{p:.1f} %" if p >= 1 or p == 0 else f"{p:.2f} %"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s" if s >= 60 \
        else f"{s} s"


def headline(summary: dict) -> dict:
    wer = summary.get("wer") or {}
    return wer.get(summary.get("headline") or "whisper") or wer.get("whisper") or {}


def resolve_baseline(confs: list[Configuration], baseline: str | None) -> Configuration | None:
    if not confs:
        return None
    if baseline in (None, "first"):
        return confs[0]
    for c in confs:
        if c.label.lower() == str(baseline).lower():
            return c
    raise ConfigError(f"`--baseline {baseline}` matches no configuration; choose one of "
                      f"{[c.label for c in confs]} (or 'first')")


def relative_change(c: Configuration, base: Configuration | None, test_set: str) -> float | None:
    """100 x (WER - baseline WER) / baseline WER on ``test_set``; None if either is missing."""
    if base is None or test_set not in c.results or test_set not in base.results:
        return None
    w, b = headline(c.results[test_set][1]).get("wer"), headline(base.results[test_set][1]).get("wer")
    return None if w is None or not b else 100.0 * (w - b) / b


def rows(confs: list[Configuration], sets: list[str], base: Configuration | None) -> list[dict[str, Any]]:
    """The comparison.csv rows (percentages rounded to 2 decimals)."""

    def r2(x):
        return None if x is None else round(100 * x, 2)

    out = []
    for c in confs:
        n_train, pct = c.trainable
        for s in sets:
            if s not in c.results:
                continue
            d, summ = c.results[s]
            w, wer = headline(summ), summ.get("wer") or {}
            flags = summ.get("flags") or {}
            rel = relative_change(c, base, s)
            out.append({
                "configuration": c.label, "model": c.model, "adapter": c.adapter, "strategy": c.strategy or "zero-shot",
                "language": c.language, "test_set": s, "n_utts": summ.get("n_utts"),
                "n_speakers": summ.get("n_speakers"), "wer_pct": r2(w.get("wer")),
                "wer_ci_low_pct": r2(w.get("ci_low")), "wer_ci_high_pct": r2(w.get("ci_high")),
                "rel_change_pct": None if rel is None else round(rel, 2),
                "digits_wer_pct": r2((wer.get("digits") or {}).get("wer")),
                "orthographic_wer_pct": r2((wer.get("orthographic") or {}).get("wer")),
                "cer_pct": r2((summ.get("cer") or {}).get("cer")), "substitutions": w.get("substitutions"),
                "deletions": w.get("deletions"), "insertions": w.get("insertions"), "ref_words": w.get("ref_words"),
                "hallucinations": flags.get("hallucination"), "non_english": flags.get("non_english"),
                "rtf": summ.get("rtf"), "trainable_params": n_train,
                "trainable_pct": None if pct is None else round(pct, 4), "eval_dir": str(d),
            })
    return out


def write_csv(table: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: "" if v is None else v for k, v in r.items()} for r in table)
    atomic_write_text(path, buf.getvalue())


def _ages(summ: dict) -> dict[float, dict]:
    out = {}
    for k, v in ((summ.get("breakdown") or {}).get("age") or {}).items():
        try:
            out[float(k)] = v
        except (TypeError, ValueError):
            continue  # "unknown" / None ages are not on an age axis
    return out


def _ortho(summ: dict) -> dict:
    return (summ.get("wer") or {}).get("orthographic") or {}


def case_evidence(eval_dir: Path) -> dict[str, Any] | None:
    """From utterances.jsonl: clips, all-upper-case references, punctuated hypotheses, and one clip that is
    wrong raw but right after normalization (``None`` when the file cannot be read)."""
    try:
        lines = [json.loads(x) for x in (eval_dir / "utterances.jsonl").read_text().splitlines() if x.strip()]
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s: cannot read utterances.jsonl for the orthographic example (%s)", eval_dir, e)
        return None
    refs, hyps = [str(u.get("ref") or "") for u in lines], [str(u.get("hyp") or "") for u in lines]
    words = [u.get("words") or {} for u in lines]
    example = next(((r, h) for r, h, w in zip(refs, hyps, words, strict=True)
                    if (w.get("orthographic") or {}).get("substitutions") and w.get("whisper")
                    and not sum(w["whisper"].get(k, 0) for k in ("substitutions", "deletions", "insertions"))), None)
    return {"n": len(lines), "upper": sum(r.isupper() for r in refs),
            "punct": sum(bool(re.search(r"[.,!?;:]", h)) for h in hyps), "example": example}


def explain_orthographic(confs: list[Configuration], base: Configuration | None, test_set: str) -> str | None:
    """Why raw (orthographic) WER can exceed 100 %, told with this comparison's own numbers: the zero-shot
    ``auto`` configuration raw, the same model with English forced raw, then Whisper-normalized."""
    zero = [c for c in confs if c.strategy is None and test_set in c.results]
    model = base.model if base else None
    auto = next((c for c in zero if c.language == "auto" and c.model == model), None) or \
        next((c for c in zero if c.language == "auto"), None)
    forced = next((c for c in zero if c.language == "en" and c.model == (auto or base or c).model), None) or base
    if forced is None or test_set not in forced.results or _ortho(forced.results[test_set][1]).get("wer") is None:
        return None
    fdir, fs = forced.results[test_set]
    fo = _ortho(fs)
    text = ("WER = (S + D + I) / N counts inserted words, so it has no upper bound: a hypothesis longer than its "
            f"reference scores above 100 %. On {test_set}, compared raw (orthographic: case and punctuation kept, "
            "as the original setup compared), ")
    if auto:
        s = auto.results[test_set][1]
        o = _ortho(s)
        text += (f"{auto.label} scores {_pct(o.get('wer'))} % ({o.get('substitutions')} substitutions, "
                 f"{o.get('deletions')} deletions and {o.get('insertions')} insertions over {o.get('ref_words')} "
                 f"reference words; {(s.get('flags') or {}).get('non_english', 0)} of {s.get('n_utts')} clips "
                 f"flagged non-English); with English forced, ")
    text += (f"{forced.label} scores {_pct(fo['wer'])} %; with Whisper's English normalizer on both sides, "
             f"{_pct(headline(fs).get('wer'))} % (digit-aware: {_pct((fs['wer'].get('digits') or {}).get('wer'))} %).")
    if fo.get("ref_words"):
        text += (f" Before normalization {_pct(fo.get('substitutions', 0) / fo['ref_words'])} % of the reference "
                 f"words of {forced.label} count as substitutions")
        ev = case_evidence(fdir)
        if ev:
            text += (f": {ev['upper']} of {ev['n']} references are all upper-case and {ev['punct']} of {ev['n']} "
                     "hypotheses carry punctuation")
            if ev["example"]:
                text += f", so '{ev['example'][0]}' vs '{ev['example'][1]}' is all errors raw and none normalized"
        text += "."
    worst = max(zero or [forced], key=lambda c: _ortho(c.results[test_set][1]).get("wer") or 0)
    wo = _ortho(worst.results[test_set][1])
    if (wo.get("wer") or 0) > 1:
        text += (f" The {wo.get('insertions')} inserted words of {worst.label} on top of those substitutions take "
                 f"it to {_pct(wo['wer'])} %.")
    return text + " The headline numbers in this report are therefore Whisper-normalized WER."


# ----------------------------------------------------------------------------------------------- plots
def _save(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_wer_by_config(confs: list[Configuration], sets: list[str], path: Path, dpi: int) -> Path | None:
    """Grouped bars: one group per test set, one bar per configuration, 95 % CI error bars, values on top."""
    confs = [c for c in confs if any(s in c.results for s in sets)]
    if not confs:
        return None
    plt = _plt()
    n = len(confs)
    width = min(0.8 / n, 0.25)  # one or two configurations: no bars as wide as the plot
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 + 0.55 * n * len(sets)), 5))
    top = 0.0
    for i, c in enumerate(confs):
        xs, ys, lo, hi = [], [], [], []
        for j, s in enumerate(sets):
            w = headline(c.results[s][1]) if s in c.results else {}
            if w.get("wer") is None:
                continue
            v = 100 * w["wer"]
            xs.append(j + width * (i - (n - 1) / 2))
            ys.append(v)
            lo.append(max(v - 100 * w["ci_low"], 0) if w.get("ci_low") is not None else 0)
            hi.append(max(100 * w["ci_high"] - v, 0) if w.get("ci_high") is not None else 0)
        bars = ax.bar(xs, ys, width * 0.92, yerr=[lo, hi], capsize=3, label=c.label, color=f"C{i % 10}")
        for b, v, h in zip(bars, ys, hi, strict=True):
            ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v + h), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8,
                        rotation=90 if n > 4 else 0)
            top = max(top, v + h)
    ax.set_xticks(range(len(sets)), sets)
    ax.set_xlim(-0.6, len(sets) - 0.4)
    ax.set_xlabel("test set")
    ax.set_ylabel("WER (%), Whisper-normalized")
    ax.set_ylim(0, top * (1.25 if n > 4 else 1.12) + 1)
    ax.set_title("WER by configuration (error bars: 95 % speaker-bootstrap CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(n, 3), frameon=False)
    return _save(fig, path, dpi)


def plot_wer_by_age(confs: list[Configuration], test_set: str, path: Path, dpi: int) -> Path | None:
    """WER against age (years) per configuration on ``test_set``, CI bars where the age has >1 speaker."""
    data = [(c, _ages(c.results[test_set][1])) for c in confs if test_set in c.results]
    data = [(c, a) for c, a in data if a]
    if not data:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    ages = sorted({a for _, d in data for a in d})
    off = 0.08 if len(ages) > 1 and min(b - a for a, b in zip(ages, ages[1:], strict=False)) >= 0.5 else 0.0
    for i, (c, d) in enumerate(data):
        pts = sorted((a, g) for a, g in d.items() if g.get("wer") is not None)
        x = [a + off * (i - (len(data) - 1) / 2) for a, _ in pts]
        y = [100 * g["wer"] for _, g in pts]
        lo = [y_ - 100 * g["ci_low"] if g.get("ci_low") is not None else float("nan") for y_, (_, g) in zip(y, pts, strict=True)]
        hi = [100 * g["ci_high"] - y_ if g.get("ci_high") is not None else float("nan") for y_, (_, g) in zip(y, pts, strict=True)]
        ax.errorbar(x, y, yerr=[[max(v, 0) for v in lo], [max(v, 0) for v in hi]], marker="o", capsize=3,
                    label=c.label, color=f"C{i % 10}")
    spk = {a: g.get("n_speakers") for _, d in reversed(data) for a, g in d.items()}
    ax.set_xticks(ages, [f"{a:g}\n({spk[a]} spk)" if spk.get(a) else f"{a:g}" for a in ages])
    ax.set_xlabel("age (years); number of speakers below")
    ax.set_ylabel("WER (%), Whisper-normalized")
    ax.set_ylim(bottom=0)
    ax.set_title(f"WER by age on {test_set} (error bars: 95 % CI; none for a single speaker)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return _save(fig, path, dpi)


def _smooth(values: list[float], k: int) -> list[float]:
    """Centred moving average over ``k`` points (shorter at the ends), so it does not lag the curve."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    kernel = np.ones(max(k, 1))
    return list(np.convolve(v, kernel, "same") / np.convolve(np.ones_like(v), kernel, "same"))


def plot_learning_curves(runs: list[Run], path: Path, dpi: int,
                         references: list[tuple[str, float]] = ()) -> Path | None:
    """Two panels: training loss vs step (raw faint, centred moving average solid) and dev WER (%) vs step.

    references: (label, WER) horizontal lines on the dev panel, e.g. the zero-shot baseline on the dev set.
    """
    runs = [r for r in runs if r.log]
    if not runs:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, r in enumerate(runs):
        color = f"C{i % 10}"
        losses = [(x["step"], x["loss"]) for x in r.log if x.get("loss") is not None]
        if losses:
            steps, ys = zip(*losses, strict=True)
            ax1.plot(steps, ys, color=color, alpha=0.25, lw=0.8)
            ax1.plot(steps, _smooth(list(ys), max(1, len(ys) // 25)), color=color, lw=1.8, label=r.label)
        evals = [(x["step"], 100 * x["dev_wer"]) for x in r.log if x.get("dev_wer") is not None]
        if evals:
            best = min(evals, key=lambda e: e[1])
            ax2.plot(*zip(*evals, strict=True), "o-", color=color,
                     label=f"{r.label} (best {best[1]:.1f} % at step {best[0]})")
            ax2.plot(*best, "*", color=color, ms=14, mec="black", mew=0.6)
    for j, (label, wer) in enumerate(references):
        ax2.axhline(100 * wer, color="gray", ls=("--", ":", "-.")[j % 3], lw=1.2, label=label)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("training loss (cross-entropy, nats/token)")
    ax1.set_title("Training loss (faint: per step; solid: moving average)")
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("dev WER (%), Whisper-normalized")
    ax2.set_title("Dev WER during training (star: best, the weights kept)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")  # "best" also avoids the baseline line
    fig.tight_layout()
    return _save(fig, path, dpi)


def dev_references(runs: list[Run], confs: list[Configuration], base: Configuration | None,
                   known: list[str]) -> list[tuple[str, float]]:
    """The baseline's WER on each run's dev set (when it was evaluated there), as learning-curve references."""
    out = []
    for name in dict.fromkeys(_match_set(_data_names(r.config.get("dev")), known) for r in runs):
        w = headline(base.results[name][1]).get("wer") if base and name in base.results else None
        if w is not None:
            out.append((f"{base.label} on {name} (baseline)", w))
    return out


# --------------------------------------------------------------------------------------------- report
def build_report(confs: list[Configuration], runs: list[Run], sets: list[str], base: Configuration | None,
                 plots: dict[str, Path | None], config: CompareConfig) -> list[tuple[str, Any]]:
    """The report as blocks (``h1|h2|p|table|img``) that :func:`to_markdown` and :func:`to_html` render."""
    blocks: list[tuple[str, Any]] = [("h1", config.title)]
    if not sets:
        blocks.append(("p", "No evaluation results found: only training runs are summarised."))
    head, others = (sets[0], sets[1:]) if sets else (None, [])
    if head:
        blocks += [("h2", "Results"), ("p", (
            f"WER is Whisper-normalized (Whisper's English normalizer on reference and hypothesis), in %, with "
            f"its 95 % confidence interval from a bootstrap over speakers. Relative change is against the "
            f"baseline, **{base.label}**. Trainable parameters are those updated by training (0 = zero-shot)."))]
        hdr = ["Configuration", "Trainable params", "Trainable %", f"{head} WER % (95 % CI)", "vs baseline",
               f"{head} CER %", f"{head} orthographic WER %", f"{head} hallucinations"]
        for s in others:
            hdr += [f"{s} WER % (95 % CI)", "vs baseline"]
        table = []
        for c in confs:
            n, pct = c.trainable
            h = c.results[head][1] if head in c.results else {}
            line = [c.label, _params(n), _share(pct), _wer_ci(headline(h)), _rel(relative_change(c, base, head))
                    if c is not base else "baseline", _pct((h.get("cer") or {}).get("cer")),
                    _pct(((h.get("wer") or {}).get("orthographic") or {}).get("wer")),
                    str((h.get("flags") or {}).get("hallucination", "-")) if h else "-"]
            for s in others:
                line += [_wer_ci(headline(c.results[s][1])) if s in c.results else "-",
                         "baseline" if c is base and s in c.results else _rel(relative_change(c, base, s))]
            table.append(line)
        blocks += [("table", (hdr, table)), ("img", (plots.get("wer_by_config"), "WER by configuration"))]
        blocks += [("h2", "All results"), ("table", (
            ["Configuration", "Test set", "Clips (speakers)", "WER %", "Digit-aware WER %", "Orthographic WER %",
             "CER %", "S / D / I", "Hallucinations", "Non-English", "RTF"],
            [_detail_row(c, s) for c in confs for s in sets if s in c.results]))]
        blocks += _consistency_notes(confs, sets)
        aged = [c for c in confs if head in c.results and _ages(c.results[head][1])]
        if aged:
            ages = sorted({a for c in aged for a in _ages(c.results[head][1])})
            ref = _ages(aged[0].results[head][1])
            blocks += [("h2", f"WER by age on {head}"), ("p", "WER % (95 % CI over speakers; no CI for one speaker)."),
                       ("table", (["Age (years)", "Speakers", "Clips"] + [c.label for c in aged],
                                  [[f"{a:g}", _num((ref.get(a) or {}).get("n_speakers")),
                                    _num((ref.get(a) or {}).get("n_utts"))]
                                   + [_wer_ci(_ages(c.results[head][1]).get(a)) for c in aged] for a in ages])),
                       ("img", (plots.get("wer_by_age"), "WER by age"))]
    if runs:
        blocks += [("h2", "Training runs"), ("table", (
            ["Run", "Strategy", "Trainable params", "Trainable %", "Best dev WER %", "Best step", "Steps",
             "Epochs", "Wall time", "Clips/s", "Status"],
            [_run_row(r) for r in runs])), ("img", (plots.get("learning_curves"), "Learning curves"))]
    para = explain_orthographic(confs, base, head) if head else None
    if para:
        blocks += [("h2", "Why orthographic WER exceeds 100 %"), ("p", para)]
    blocks += [("h2", "Inputs"), ("table", (["Configuration", "Test set", "Directory", "Manifest sha256"], [
        [c.label, s, str(d), str(summ.get("manifest_sha256") or "-")[:12]]
        for c in confs for s in sets if s in c.results for d, summ in [c.results[s]]]))]
    return blocks


def _num(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _detail_row(c: Configuration, test_set: str) -> list[str]:
    """One "All results" line, formatted from the unrounded summary (no double rounding via the CSV)."""
    summ = c.results[test_set][1]
    w, wer, flags = headline(summ), summ["wer"], summ.get("flags") or {}
    return [c.label, test_set, f"{summ.get('n_utts')} ({summ.get('n_speakers')})", _pct(w.get("wer")),
            _pct((wer.get("digits") or {}).get("wer")), _pct(_ortho(summ).get("wer")),
            _pct((summ.get("cer") or {}).get("cer")),
            f"{w.get('substitutions')} / {w.get('deletions')} / {w.get('insertions')}",
            _num(flags.get("hallucination")), _num(flags.get("non_english")), _num(summ.get("rtf"), 3)]


def _run_row(r: Run) -> list[str]:
    s = r.summary
    evals = [x["dev_wer"] for x in r.log if x.get("dev_wer") is not None]
    best = s.get("best_dev_wer", min(evals) if evals else None)
    steps = s.get("steps") or (r.log[-1]["step"] if r.log else None)
    n, total = s.get("trainable_params"), s.get("total_params")
    pct = 100.0 * n / total if n is not None and total else s.get("trainable_pct")
    epochs = s.get("epochs_run", s.get("epochs", r.log[-1].get("epoch") if r.log else None))
    wall = s.get("wall_seconds", (r.log[-1].get("elapsed_s", r.log[-1].get("elapsed")) if r.log else None))
    status = "incomplete (no summary.json)" if not s else "stopped early" if s.get("stopped_early") else "finished"
    return [r.label, r.strategy, _params(n) if s else "?", _share(pct) if s else "?", _pct(best),
            _num(s.get("best_step")), _num(steps), _num(epochs, 2), _duration(wall),
            _num(s.get("clips_per_s", s.get("clips_per_second")), 2), status]


def _consistency_notes(confs: list[Configuration], sets: list[str]) -> list[tuple[str, Any]]:
    """Warn when one test set name covers different clips across configurations (WERs not comparable)."""
    notes = []
    for s in sets:
        seen = {(summ.get("manifest_sha256"), summ.get("n_utts")) for c in confs if s in c.results
                for summ in [c.results[s][1]]}
        if len(seen) > 1:
            msg = (f"Note: {s} results cover different clips across configurations (manifest sha256 / clip "
                   f"counts: {sorted((str(h)[:12], n) for h, n in seen)}); their WERs are not directly comparable.")
            log.warning(msg)
            notes.append(("p", msg))
    return notes


NUMERIC = re.compile(r"^([-+]?\d|-$|\?$|baseline$)")


def _numeric_columns(body: list[list[Any]], n: int) -> list[bool]:
    """Columns whose every cell is a number (or -, ?, baseline): right-aligned."""
    return [bool(body) and all(NUMERIC.match(str(r[i])) for r in body) for i in range(n)]


def to_markdown(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, val in blocks:
        if kind in ("h1", "h2"):
            out.append(f"{'#' if kind == 'h1' else '##'} {val}\n")
        elif kind == "p":
            out.append(f"{val}\n")
        elif kind == "table":
            hdr, body = val
            cell = [[str(x).replace("|", "\\|") for x in r] for r in [hdr, *body]]
            out.append("\n".join(["| " + " | ".join(cell[0]) + " |", "|" + "|".join(
                "---:" if num else "---" for num in _numeric_columns(body, len(hdr))) + "|"]
                + ["| " + " | ".join(r) + " |" for r in cell[1:]]) + "\n")
        elif kind == "img" and val[0]:
            out.append(f"![{val[1]}]({val[0].name})\n")
    return "\n".join(out)


HTML_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f2f2f2}
.l{text-align:left}img{max-width:100%;margin:1em 0}h2{margin-top:1.6em}"""


def to_html(blocks: list[tuple[str, Any]], title: str) -> str:
    """Self-contained page: inline CSS, PNGs embedded as base64 data URIs."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{HTML_CSS}</style></head><body>"]
    for kind, val in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(val)}</{kind}>")
        elif kind == "p":
            parts.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(val)) + "</p>")
        elif kind == "table":
            hdr, body = val
            left = ["" if num else " class='l'" for num in _numeric_columns(body, len(hdr))]
            parts.append("<table><tr>" + "".join(f"<th{a}>{html.escape(str(h))}</th>" for h, a in zip(hdr, left, strict=True))
                         + "</tr>" + "".join("<tr>" + "".join(f"<td{a}>{html.escape(str(x))}</td>" for x, a in
                                                              zip(r, left, strict=True)) + "</tr>" for r in body) + "</table>")
        elif kind == "img" and val[0]:
            data = base64.b64encode(val[0].read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(val[1])}' src='data:image/png;base64,{data}'>")
    return "\n".join(parts + ["</body></html>\n"])


def compare(inputs: list[str | Path], out: str | Path, config: CompareConfig | None = None) -> dict:
    """Compare evaluation results and training runs under ``inputs``; write tables, plots and reports to ``out``.

    Returns ``{"baseline", "configurations", "sets", "runs", "rows", "files"}`` (``rows`` = comparison.csv).
    Raises :class:`CompareError` when nothing usable is found, ConfigError for an unknown ``baseline``.
    """
    config = config or CompareConfig()
    confs, runs, sets = collect([inputs] if isinstance(inputs, str | Path) else list(inputs), config)
    base = resolve_baseline(confs, config.baseline)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = rows(confs, sets, base)
    write_csv(table, out / "comparison.csv")
    plots = {
        "wer_by_config": plot_wer_by_config(confs, sets, out / "wer_by_config.png", config.dpi),
        "wer_by_age": plot_wer_by_age(confs, sets[0], out / "wer_by_age.png", config.dpi) if sets else None,
        "learning_curves": plot_learning_curves(runs, out / "learning_curves.png", config.dpi,
                                                dev_references(runs, confs, base, config.sets)),
    }
    for name, p in plots.items():
        if p is None:
            log.info("no %s plot: nothing to draw", name)
            (out / f"{name}.png").unlink(missing_ok=True)  # never leave a stale plot from an earlier compare
    blocks = build_report(confs, runs, sets, base, plots, config)
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, config.title))
    save_config(config, out / "compare_config.yaml")
    files = ["comparison.csv", "report.md", "report.html", "compare_config.yaml"] + \
        [p.name for p in plots.values() if p is not None]
    log.info("compared %d configuration(s) on %s (baseline %s): wrote %s to %s", len(confs), ", ".join(sets) or "-",
             base.label if base else "-", ", ".join(files), out)
    return {"baseline": base.label if base else None, "configurations": [c.label for c in confs], "sets": sets,
            "runs": [r.label for r in runs], "rows": table, "files": {f: str(out / f) for f in files}}
