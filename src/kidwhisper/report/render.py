"""Numbers, tables and text of ``kidwhisper compare``: comparison.csv, the report blocks, Markdown and HTML."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

from kidwhisper.config import ConfigError
from kidwhisper.data.manifest import atomic_write_text
from kidwhisper.metrics import ErrorCounts, paired_difference
from kidwhisper.report.collect import CompareConfig, Configuration, Run

log = logging.getLogger(__package__)  # one "kidwhisper.report" logger for the whole package

CSV_COLUMNS = ["configuration", "model", "adapter", "strategy", "language", "test_set", "n_utts", "n_speakers",
               "wer_pct", "wer_ci_low_pct", "wer_ci_high_pct", "rel_change_pct", "wer_diff_pct",
               "wer_diff_ci_low_pct", "wer_diff_ci_high_pct", "digits_wer_pct",
               "orthographic_wer_pct", "cer_pct", "substitutions", "deletions", "insertions", "ref_words",
               "hallucinations", "non_english", "rtf", "trainable_params", "trainable_pct", "eval_dir"]



# --------------------------------------------------------------------------------------------- numbers
def fmt_pct(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{nd}f}"


def _wer_ci(w: dict | None) -> str:
    if not w or w.get("wer") is None:
        return "-"
    ci = f" ({fmt_pct(w['ci_low'])}-{fmt_pct(w['ci_high'])})" if w.get("ci_low") is not None else ""
    return fmt_pct(w["wer"]) + ci


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


def _utterance_counts(eval_dir: Path, normalizer: str) -> dict[str, tuple[str, ErrorCounts]]:
    out = {}
    with open(eval_dir / "utterances.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                u = json.loads(line)
                out[u["id"]] = (u.get("speaker"), ErrorCounts(**u["words"][normalizer]))
    return out


def paired_eval_difference(eval_a: str | Path, eval_b: str | Path,
                           normalizer: str = "whisper") -> tuple[float, float, float]:
    """WER of evaluation directory ``a`` minus ``b`` with a paired speaker-bootstrap 95 % CI
    (:func:`kidwhisper.metrics.paired_difference`); ValueError if they did not score the same clips."""
    a, b = _utterance_counts(Path(eval_a), normalizer), _utterance_counts(Path(eval_b), normalizer)
    if a.keys() != b.keys() or any(a[i][1].ref_words != b[i][1].ref_words for i in a):
        raise ValueError(f"{eval_a} and {eval_b} did not score the same clips")
    ids = sorted(a)
    return paired_difference([a[i][1] for i in ids], [b[i][1] for i in ids], [a[i][0] for i in ids])


def paired_change(c: Configuration, base: Configuration | None, test_set: str) -> tuple[float, float, float] | None:
    """(WER - baseline WER, 95 % CI low, high) on ``test_set`` (:func:`paired_eval_difference`); None if
    either is missing or they cannot be paired (logged)."""
    if base is None or c is base or test_set not in c.results or test_set not in base.results:
        return None
    (d, summ), (bd, _) = c.results[test_set], base.results[test_set]
    try:
        return paired_eval_difference(d, bd, summ.get("headline") or "whisper")
    except (OSError, KeyError, TypeError, ValueError) as e:
        log.warning("no paired difference for %s on %s: %s", c.label, test_set, e)
        return None


Paired = dict[tuple[str, str], tuple[float, float, float] | None]


def paired_changes(confs: list[Configuration], sets: list[str], base: Configuration | None) -> Paired:
    """:func:`paired_change` of every (configuration label, test set), computed once per compare."""
    return {(c.label, s): paired_change(c, base, s) for c in confs for s in sets if s in c.results}


def _diff(x: tuple[float, float, float] | None) -> str:
    """Points with CI, bold when the CI excludes 0 (a difference the data show)."""
    if x is None:
        return "-"
    d, lo, hi = (round(100 * v, 1) + 0.0 for v in x)  # + 0.0: no "-0.0"
    text = f"{d:+.1f} ({lo:+.1f} to {hi:+.1f})"
    return f"**{text}**" if x[1] > 0 or x[2] < 0 else text


def rows(confs: list[Configuration], sets: list[str], base: Configuration | None,
         paired: Paired | None = None) -> list[dict[str, Any]]:
    """The comparison.csv rows (percentages rounded to 2 decimals); ``paired`` from :func:`paired_changes`."""
    paired = paired_changes(confs, sets, base) if paired is None else paired

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
            diff = paired.get((c.label, s)) or (None, None, None)
            out.append({
                "configuration": c.label, "model": c.model, "adapter": c.adapter, "strategy": c.strategy or "zero-shot",
                "language": c.language, "test_set": s, "n_utts": summ.get("n_utts"),
                "n_speakers": summ.get("n_speakers"), "wer_pct": r2(w.get("wer")),
                "wer_ci_low_pct": r2(w.get("ci_low")), "wer_ci_high_pct": r2(w.get("ci_high")),
                "rel_change_pct": None if rel is None else round(rel, 2), "wer_diff_pct": r2(diff[0]),
                "wer_diff_ci_low_pct": r2(diff[1]), "wer_diff_ci_high_pct": r2(diff[2]),
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
    if not any("ref" in u for u in lines):  # committed results carry no corpus transcripts
        hyps = [str(u.get("hyp") or "") for u in lines]
        return {"n": len(lines), "upper": None, "punct": sum(bool(re.search(r"[.,!?;:]", h)) for h in hyps),
                "example": None}
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
        text += (f"{auto.label} scores {fmt_pct(o.get('wer'))} % ({o.get('substitutions')} substitutions, "
                 f"{o.get('deletions')} deletions and {o.get('insertions')} insertions over {o.get('ref_words')} "
                 f"reference words; {(s.get('flags') or {}).get('non_english', 0)} of {s.get('n_utts')} clips "
                 f"flagged non-English); with English forced, ")
    text += (f"{forced.label} scores {fmt_pct(fo['wer'])} %; with Whisper's English normalizer on both sides, "
             f"{fmt_pct(headline(fs).get('wer'))} % (digit-aware: {fmt_pct((fs['wer'].get('digits') or {}).get('wer'))} %).")
    if fo.get("ref_words"):
        text += (f" Before normalization {fmt_pct(fo.get('substitutions', 0) / fo['ref_words'])} % of the reference "
                 f"words of {forced.label} count as substitutions")
        ev = case_evidence(fdir)
        if ev:
            upper = "" if ev["upper"] is None else f"{ev['upper']} of {ev['n']} references are all upper-case and "
            text += f": {upper}{ev['punct']} of {ev['n']} hypotheses carry punctuation"
            if ev["example"]:
                text += f", so '{ev['example'][0]}' vs '{ev['example'][1]}' is all errors raw and none normalized"
        text += "."
    worst = max(zero or [forced], key=lambda c: _ortho(c.results[test_set][1]).get("wer") or 0)
    wo = _ortho(worst.results[test_set][1])
    if (wo.get("wer") or 0) > 1:
        text += (f" The {wo.get('insertions')} inserted words of {worst.label} on top of those substitutions take "
                 f"it to {fmt_pct(wo['wer'])} %.")
    return text + " The headline numbers in this report are therefore Whisper-normalized WER."

def _flagged(summ: dict) -> int:
    return int((summ.get("flags") or {}).get("hallucination") or 0)


def small_set_caveat(confs: list[Configuration], sets: list[str], small: int, subset: bool = False) -> str | None:
    """A warning paragraph when a test set was scored on fewer than ``small`` clips or on a subset (``--limit``,
    or ``subset``: a run config's ``limit_test``): wide CIs, and a few runaway clips decide the relative
    changes."""
    sizes: dict[str, set[int]] = {}
    limited = subset
    for c in confs:
        for s, (_, summ) in c.results.items():
            sizes.setdefault(s, set()).add(int(summ.get("n_utts") or 0))
            limited |= (summ.get("config") or {}).get("limit") is not None
    few = [s for s in sets if s in sizes and (min(sizes[s]) < small or limited)]
    if not few:
        return None
    runaway = [f"{c.label} {sum(_flagged(c.results[s][1]) for s in few if s in c.results)}" for c in confs]
    return (f"**Small test sets.** These results come from small subsets "
            f"({', '.join(f'{s}: {max(sizes[s])} clips' for s in few)}; fewer than {small}, or `--limit` / a run "
            f"config's `limit_*`), so the 95 % CIs are wide and a few clips that run away (repeated or "
            f"hallucinated words; clips flagged: {', '.join(runaway)}) can move a WER by tens of points. The "
            f"relative changes in this report show that the pipeline works, not how much fine-tuning helps; the "
            f"reference numbers, on the full test sets, are in the README's *Results* section "
            f"(results/report/report.md).")


# --------------------------------------------------------------------------------------------- report
def build_report(confs: list[Configuration], runs: list[Run], sets: list[str], base: Configuration | None,
                 plots: dict[str, Path | None], config: CompareConfig,
                 paired: Paired | None = None, sections: list[str] | None = None) -> list[tuple[str, Any]]:
    """The report as blocks (``h1|h2|p|table|img|md``) that :func:`to_markdown` and :func:`to_html` render;
    ``sections`` (Markdown texts) go in as ``md`` blocks before the *Inputs* list."""
    paired = paired_changes(confs, sets, base) if paired is None else paired
    blocks: list[tuple[str, Any]] = [("h1", config.title)]
    if not sets:
        blocks.append(("p", "No evaluation results found: only training runs are summarised."))
    head, others = (sets[0], sets[1:]) if sets else (None, [])
    if head:
        blocks += [("h2", "Results"), ("p", (
            f"WER is Whisper-normalized (Whisper's English normalizer on reference and hypothesis), in %, with "
            f"its 95 % confidence interval from a bootstrap over speakers. Relative change is against the "
            f"baseline, **{base.label}**. Trainable parameters are those updated by training (0 = zero-shot)."))]
        caveat = small_set_caveat(confs, sets, config.small_set, config.subset)
        if caveat:
            blocks.append(("p", caveat))
        hdr = ["Configuration", "Trainable params", "Trainable %", f"{head} WER % (95 % CI)", "vs baseline",
               f"{head} CER %", f"{head} orthographic WER %", f"{head} hallucinations"]
        for s in others:
            hdr += [f"{s} WER % (95 % CI)", "vs baseline"]
        table = []
        for c in confs:
            n, pct = c.trainable
            h = c.results[head][1] if head in c.results else {}
            line = [c.label, _params(n), _share(pct), _wer_ci(headline(h)), _rel(relative_change(c, base, head))
                    if c is not base else "baseline", fmt_pct((h.get("cer") or {}).get("cer")),
                    fmt_pct(((h.get("wer") or {}).get("orthographic") or {}).get("wer")),
                    str((h.get("flags") or {}).get("hallucination", "-")) if h else "-"]
            for s in others:
                line += [_wer_ci(headline(c.results[s][1])) if s in c.results else "-",
                         "baseline" if c is base and s in c.results else _rel(relative_change(c, base, s))]
            table.append(line)
        blocks += [("table", (hdr, table)), ("img", (plots.get("wer_by_config"), "WER by configuration"))]
        diffs = [[c.label] + [_diff(paired.get((c.label, t))) for t in sets] for c in confs if c is not base]
        if any(cell != "-" for line in diffs for cell in line[1:]):
            blocks += [("h2", f"Differences against {base.label}"), ("p", (
                "WER of each configuration minus the baseline's, in percentage points, on the same clips. The "
                "95 % CI is a paired bootstrap over speakers: each resample scores both configurations on the "
                "same children, so the spread between children that both share cancels. **Bold**: the CI "
                "excludes 0, the data show a difference.")),
                ("table", (["Configuration"] + [f"{t} (points, 95 % CI)" for t in sets], diffs))]
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
    blocks += [("md", text) for text in sections or []]
    blocks += [("h2", "Inputs"), ("table", (["Configuration", "Test set", "Directory", "Manifest sha256"], [
        [c.label, s, _shown_path(d), str(summ.get("manifest_sha256") or "-")[:12]]
        for c in confs for s in sets if s in c.results for d, summ in [c.results[s]]]))]
    return blocks


def _num(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _detail_row(c: Configuration, test_set: str) -> list[str]:
    """One "All results" line, formatted from the unrounded summary (no double rounding via the CSV)."""
    summ = c.results[test_set][1]
    w, wer, flags = headline(summ), summ["wer"], summ.get("flags") or {}
    return [c.label, test_set, f"{summ.get('n_utts')} ({summ.get('n_speakers')})", fmt_pct(w.get("wer")),
            fmt_pct((wer.get("digits") or {}).get("wer")), fmt_pct(_ortho(summ).get("wer")),
            fmt_pct((summ.get("cer") or {}).get("cer")),
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
    return [r.label, r.strategy, _params(n) if s else "?", _share(pct) if s else "?", fmt_pct(best),
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


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when under it (a committed report names no home directory)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


NUMERIC = re.compile(r"^([-+]?\d|-$|\?$|baseline$)")


def _numeric_columns(body: list[list[Any]], n: int) -> list[bool]:
    """Columns whose every cell is a number (or -, ?, baseline; bold or not): right-aligned."""
    return [bool(body) and all(NUMERIC.match(str(r[i]).strip("*")) for r in body) for i in range(n)]


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
        elif kind == "md":
            out.append(val.strip() + "\n")
    return "\n".join(out)


HTML_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f2f2f2}
.l,.md td,.md th{text-align:left}img{max-width:100%;margin:1em 0}h2{margin-top:1.6em}"""


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
        elif kind == "md":
            import markdown

            parts.append("<div class='md'>" + markdown.markdown(val, extensions=["tables"]) + "</div>")
        elif kind == "img" and val[0]:
            data = base64.b64encode(val[0].read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(val[1])}' src='data:image/png;base64,{data}'>")
    return "\n".join(parts + ["</body></html>\n"])
