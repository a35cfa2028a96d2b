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

Every configuration is also compared with the baseline clip by clip: its WER minus the baseline's, with a
paired speaker-bootstrap 95 % CI (:func:`kidwhisper.metrics.paired_difference`; the report's *Differences*
section, the CSV's ``wer_diff_*`` columns), when both scored the same clips.

Written to ``OUT``: ``comparison.csv`` (one row per configuration x test set), ``report.md``,
``report.html`` (self-contained), ``wer_by_config.png``, ``wer_by_age.png``, ``learning_curves.png`` (the
last two only when there is something to draw) and ``compare_config.yaml``; and to each trained adapter /
model directory found, its model card ``README.md`` (:mod:`~kidwhisper.report.model_card`).

Modules: :mod:`~kidwhisper.report.collect` (finding and reading result directories, labels),
:mod:`~kidwhisper.report.render` (numbers, CSV, report blocks, Markdown, HTML) and
:mod:`~kidwhisper.report.plots` (the PNGs); :func:`compare` below ties them together.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kidwhisper.config import save_config
from kidwhisper.files import atomic_write_text, check_output_dir, writing
from kidwhisper.report.collect import (
    DEFAULT_SETS,
    CompareConfig,
    CompareError,
    Configuration,
    Run,
    collect,  # the function; as a package attribute it shadows the submodule collect.py
    discover,
    load_run,
    read_sections,
    set_name,
    short_model_name,
)
from kidwhisper.report.model_card import update_cards
from kidwhisper.report.plots import (
    dev_references,
    plot_learning_curves,
    plot_wer_by_age,
    plot_wer_by_config,
)
from kidwhisper.report.render import (
    CSV_COLUMNS,
    build_report,
    case_evidence,
    explain_orthographic,
    headline,
    paired_changes,
    paired_eval_difference,
    relative_change,
    resolve_baseline,
    rows,
    to_html,
    to_markdown,
    write_csv,
)

__all__ = [
    "CSV_COLUMNS", "DEFAULT_SETS", "CompareConfig", "CompareError", "Configuration", "Run", "build_report",
    "case_evidence", "collect", "compare", "dev_references", "discover", "explain_orthographic", "headline",
    "load_run", "paired_eval_difference", "read_sections", "plot_learning_curves", "plot_wer_by_age", "plot_wer_by_config", "relative_change",
    "resolve_baseline", "rows", "set_name", "short_model_name", "to_html", "to_markdown", "write_csv",
]

log = logging.getLogger(__name__)


def compare(inputs: list[str | Path], out: str | Path, config: CompareConfig | None = None) -> dict:
    """Compare evaluation results and training runs under ``inputs``; write tables, plots and reports to ``out``.

    Every trained configuration whose weights are on this machine gets its model card (README.md) rewritten
    with these results (:mod:`kidwhisper.report.model_card`).

    Returns ``{"baseline", "configurations", "sets", "runs", "rows", "files", "model_cards"}`` (``rows`` =
    comparison.csv, ``model_cards`` = the README.md paths written).
    Raises :class:`CompareError` when nothing usable is found, ConfigError for an unknown ``baseline`` or
    an unreadable ``sections`` file (before writing anything), OutputError (before reading anything) when ``out`` cannot be a writable directory.
    """
    config = config or CompareConfig()
    out = check_output_dir(out, "--out")
    sections = read_sections(config.sections)
    confs, runs, sets = collect([inputs] if isinstance(inputs, str | Path) else list(inputs), config)
    base = resolve_baseline(confs, config.baseline)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    paired = paired_changes(confs, sets, base)
    table = rows(confs, sets, base, paired)
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
    blocks = build_report(confs, runs, sets, base, plots, config, paired, sections)
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, config.title))
    save_config(config, out / "compare_config.yaml")
    cards = update_cards(confs)
    files = ["comparison.csv", "report.md", "report.html", "compare_config.yaml"] + \
        [p.name for p in plots.values() if p is not None]
    log.info("compared %d configuration(s) on %s (baseline %s): wrote %s to %s", len(confs), ", ".join(sets) or "-",
             base.label if base else "-", ", ".join(files), out)
    return {"baseline": base.label if base else None, "configurations": [c.label for c in confs], "sets": sets,
            "runs": [r.label for r in runs], "rows": table, "files": {f: str(out / f) for f in files},
            "model_cards": [str(p) for p in cards]}
