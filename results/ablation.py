"""Write the accuracy ablation (results/ablation/ablation.json, ablation.md) and its README table from committed
files.

Rows are the training runs copied to ``results/ablation/<row>/`` by ``results/ablation.sh`` (their
``summary.json``, ``train_config.yaml`` and evaluations). Every row is paired with the previous reference
(``results/tuned/whisper-base-lora``, the committed adapter) on kids dev, clip by clip, with a speaker-
bootstrap 95 % CI; rows evaluated on kids test and adults test also show those WERs, adults paired with the
stock model. Replaces the text between ``<!-- ablation:start`` and ``<!-- ablation:end -->`` in README.md,
and the headline table (stock model against ``RECOMMENDED``, the row committed as models/whisper-base-kids)
between ``<!-- headline:start`` and ``<!-- headline:end -->``. ``ablation.md`` holds the same table as a
section of results/report/report.md (``results/report.sh`` passes it to ``compare --sections``).

    python results/ablation.py
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kidwhisper.report.render import paired_eval_difference
from kidwhisper.train.config import LoraConfig

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "results" / "ablation"
REFERENCE = ROOT / "results" / "tuned" / "whisper-base-lora"
BASELINE = ROOT / "results" / "baseline" / "whisper-base-en"
SETS = ("kids-dev", "kids-test", "adults-test")
BEAM_DECODINGS = ("beam5", "beam5-fallback")  # evaluation dir suffixes: <set>-beam5, <set>-beam5-fallback
RECOMMENDED = "lora-isolated-specaug"  # the row whose weights are committed as models/whisper-base-kids
BUILDS_ON = {  # row -> the row it changes one lever of (its "previous reference"), in table order
    "lora-isolated": "reference",
    "encoder-isolated": "lora-isolated",
    "encoder-specaug": "encoder-isolated",
    "full-isolated": "lora-isolated-specaug",
    "lora-isolated-aug": "lora-isolated",
    "lora-isolated-specaug": "lora-isolated",
    "lora-all-specaug": "lora-isolated-specaug",
    "lora-specaug-strong": "lora-isolated-specaug",
    "lora-specaug-aug": "lora-isolated-specaug",
    "lora-r8-alpha128": "lora-isolated-specaug",
    "lora-specaug-ls": "lora-isolated-specaug",
    "lora-specaug-avg": "lora-isolated-specaug",
    "seed-recipe": "lora-isolated",
}


def _wer(eval_dir: Path) -> dict | None:
    f = eval_dir / "summary.json"
    if not f.is_file():
        return None
    s = json.loads(f.read_text())
    w = s["wer"][s.get("headline") or "whisper"]
    return {"wer": w["wer"], "ci": [w["ci_low"], w["ci_high"]], "n_utts": s["n_utts"],
            "hallucinations": s["flags"]["hallucination"], "truncated": s.get("n_truncated", 0),
            "beam_size": s["decoding"]["beam_size"], "fallback": s["decoding"].get("fallback"),
            "n_fallback": s.get("n_fallback", 0)}


def _paired(a: Path, b: Path) -> list[float] | None:
    if not all((d / f).is_file() for d in (a, b) for f in ("utterances.jsonl", "summary.json")):
        return None  # not evaluated, or an evaluation still running
    return list(paired_eval_difference(a, b))


def recipe(cfg: dict) -> str:
    """The options that tell the rows apart, in flag form."""
    parts = [cfg["strategy"]]
    if cfg["strategy"].startswith("lora"):
        lora = cfg["lora"]
        modules = lora.get("target_modules") or LoraConfig().target_modules
        on = "" if modules == LoraConfig().target_modules else " on " + ",".join(modules)
        parts.append(f"r={lora['r']} alpha={lora['alpha']}{on}")
    parts.append(f"lr {cfg['lr']:g}, {cfg['epochs']} epochs, {cfg['batch_size']} windows/step")
    parts.append(f"{cfg.get('pack_mode', 'joined')} {cfg['pack_seconds']:g} s" if cfg["pack"] else "unpacked")  # joined: before pack modes
    if cfg.get("spec_augment"):
        t, f = cfg.get("mask_time_prob", 0.05), cfg.get("mask_feature_prob", 0.05)
        parts.append("SpecAugment" if (t, f) == (0.05, 0.05) else f"SpecAugment {100 * t:g} % / {100 * f:g} %")
    if cfg.get("speed_perturb"):
        parts.append(f"speed x{1 - cfg['speed_perturb']:g}-{1 + cfg['speed_perturb']:g}")
    if cfg.get("pitch_perturb"):
        parts.append(f"pitch +-{cfg['pitch_perturb']:g} st")
    if cfg.get("label_smoothing"):
        parts.append(f"label smoothing {cfg['label_smoothing']:g}")
    if cfg.get("average_best"):
        parts.append(f"average of the {cfg['average_best']} best evaluations")
    return ", ".join(parts)


def _decodings(run: Path) -> dict:
    """Each set's greedy WER, and where evaluated its beam-search WERs (``<set>-beam5``: 5 beams as
    transformers decodes them; ``<set>-beam5-fallback``: runaways decoded again greedily), each paired with
    the greedy one."""
    out = {}
    for s in SETS:
        out[s] = _wer(run / s)
        for dec in BEAM_DECODINGS:
            out[f"{s}-{dec}"] = _wer(run / f"{s}-{dec}")
            out[f"{s}-{dec}_minus_greedy"] = _paired(run / f"{s}-{dec}", run / s)
    return out


def row(name: str, run: Path, label: str | None = None) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    cfg = yaml.safe_load((run / "train_config.yaml").read_text())
    out = {"row": name, "recipe": label or recipe(cfg), "trainable_params": summary["trainable_params"],
           "trainable_pct": summary["trainable_pct"], "best_dev_wer_in_training": summary["best_dev_wer"],
           "best_step": summary["best_step"], "steps": summary["steps"],
           "train_minutes": round(summary["train_seconds"] / 60, 1),
           "wall_minutes": round(summary["wall_seconds"] / 60, 1), "clips_per_s": summary["clips_per_s"],
           "mixed_precision": summary.get("mixed_precision")}
    out.update(_decodings(run))
    out["kids-dev_minus_reference"] = _paired(run / "kids-dev", REFERENCE / "kids-dev")
    out["kids-test_minus_reference"] = _paired(run / "kids-test", REFERENCE / "kids-test")
    for s in ("kids-test", "adults-test"):  # against the stock model decoding the same way
        for d in ("", "-beam5-fallback"):
            out[f"{s}{d}_minus_stock"] = _paired(run / f"{s}{d}", BASELINE / f"{s}{d}")
    if summary.get("average"):  # --average-best: the average against the run's own best single checkpoint
        out["average"] = {**summary["average"], "kids-dev": _wer(run / "kids-dev-average"),
                          "best_checkpoint_kids_dev": _wer(run / "kids-dev-best-checkpoint"),
                          "kids-dev_minus_best_checkpoint": _paired(run / "kids-dev-average",
                                                                    run / "kids-dev-best-checkpoint")}
    parent = BUILDS_ON.get(name, None if name in (RECOMMENDED, "reference") else RECOMMENDED)
    if parent not in (None, "reference"):
        out["builds_on"] = parent
        out["kids-dev_minus_builds_on"] = _paired(run / "kids-dev", ABLATION / parent / "kids-dev")
    return out


def collect() -> dict:
    rows = [row("reference", REFERENCE, "committed reference adapter: " + recipe(
        yaml.safe_load((REFERENCE / "train_config.yaml").read_text())))]
    order = list(BUILDS_ON)
    runs = sorted((d for d in ABLATION.iterdir() if (d / "summary.json").is_file()),
                  key=lambda d: (order.index(d.name) if d.name in order else len(order), d.name))
    rows += [row(d.name, d) for d in runs]
    stock = _decodings(BASELINE)
    return {"reference": str(REFERENCE.relative_to(ROOT)), "recommended": RECOMMENDED, "stock": stock, "rows": rows,
            "command": "bash results/ablation.sh (then python results/ablation.py)"}


def _pct(w: dict | None) -> str:
    return "-" if w is None else f"{100 * w['wer']:.1f} ({100 * w['ci'][0]:.1f}-{100 * w['ci'][1]:.1f})"


def _diff(d: list[float] | None) -> str:
    if d is None:
        return "-"
    text = f"{100 * d[0]:+.1f} ({100 * d[1]:+.1f} to {100 * d[2]:+.1f})"
    return f"**{text}**" if d[1] > 0 or d[2] < 0 else text


def _lever(x: dict) -> str:
    if "builds_on" not in x:
        return "-"
    text = f"{x['builds_on']}: {_diff(x['kids-dev_minus_builds_on'])}"
    if x.get("average"):
        text += f"; average of its best epochs vs its best single epoch: {_diff(x['average']['kids-dev_minus_best_checkpoint'])}"
    return text


def table(r: dict) -> str:
    stock = r["stock"]
    lines = [
        "Each row trains whisper-base on the 1040 kids-train clips (`configs/ablation/<row>.yaml`) and keeps the "
        "checkpoint with the best kids-dev WER; WER is Whisper-normalized, in %, greedy, with its speaker-bootstrap "
        "95 % CI. *vs reference* is the row's WER minus the committed reference adapter's on the same clips "
        "(paired 95 % CI; bold where it excludes 0); *lever* is the row's WER minus that of the row it changes one "
        f"lever of. The recommended row, committed as `models/whisper-base-kids`, is **{RECOMMENDED}**. Kids test "
        f"and adults test are scored only for the final candidates. Stock whisper-base: kids dev {_pct(stock['kids-dev'])}, kids test {_pct(stock['kids-test'])}, "
        f"adults test {_pct(stock['adults-test'])}. Times are on this machine's 2 CPU cores, several runs sharing "
        "them (see the notes below the table).",
        "",
        "| row | recipe | trainable params | kids-dev WER % | vs reference, points | "
        "lever: vs the row it builds on, points | kids-test WER % | "
        "vs reference, points | kids-test hallucinations | adults-test WER % | adults vs stock, points | train min "
        "| clips/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        name = f"**{x['row']}**" if x["row"] == RECOMMENDED else x["row"]
        lines.append(
            f"| {name} | {x['recipe']} | {x['trainable_params'] / 1e6:.2f} M ({x['trainable_pct']:.1f} %) | "
            f"{_pct(x['kids-dev'])} | {'-' if x['row'] == 'reference' else _diff(x['kids-dev_minus_reference'])} | "
            f"{_lever(x)} | "
            f"{_pct(x['kids-test'])} | {'-' if x['row'] == 'reference' else _diff(x['kids-test_minus_reference'])} | "
            f"{'-' if x['kids-test'] is None else x['kids-test']['hallucinations']} | "
            f"{_pct(x['adults-test'])} | {_diff(x['adults-test_minus_stock'])} | "
            f"{x['train_minutes']:.0f} | {x['clips_per_s']:.2f} |")
    beams = [(name, s, x) for name, x in [("stock whisper-base", stock)] + [(x["row"], x) for x in r["rows"]]
             for s in SETS if any(x.get(f"{s}-{dec}") for dec in BEAM_DECODINGS)]
    if beams:
        lines += ["", "Beam search (5 beams) against greedy decoding of the same model, paired on the same clips. "
                  "*5 beams*: transformers' beam search as it comes; *+ greedy fallback*: a clip whose beam output "
                  "runs away (no end within the 224-token budget, or a gzip compression ratio above 2.4, Whisper's "
                  "own test) is decoded again greedily (`evaluate --beam-size 5`; `--no-fallback` gives the first).",
                  "", "| model | set | greedy WER % | 5 beams | minus greedy, points | 5 beams + greedy fallback | "
                  "minus greedy, points | clips decoded again |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for name, s, x in beams:
            fb = x[f"{s}-beam5-fallback"]
            lines.append(f"| {name} | {s} | {_pct(x[s])} | {_pct(x[f'{s}-beam5'])} | "
                         f"{_diff(x[f'{s}-beam5_minus_greedy'])} | {_pct(fb)} | "
                         f"{_diff(x[f'{s}-beam5-fallback_minus_greedy'])} | {'-' if fb is None else fb['n_fallback']} |")
    return "\n".join(lines)


def headline(r: dict) -> str:
    """The README's opening table: stock whisper-base against the committed recommended model, greedy and,
    once the recommended model is scored on kids test with it, 5 beams with the greedy fallback ("-" where a
    set is not scored that way)."""
    best = next(x for x in r["rows"] if x["row"] == r["recommended"])
    stock = r["stock"]
    n = {s: (best[s] or stock[s] or {}).get("n_utts", "?") for s in SETS}
    decodings = [("", "greedy")]
    if best["kids-test-beam5-fallback"]:
        decodings.append(("-beam5-fallback", "5 beams + greedy fallback"))
    top = min((best[f"kids-test{d}"]["wer"], d) for d, _ in decodings)[1]  # the lower kids-test WER goes bold
    lines = [f"| whisper-base, normalized WER % (95 % CI) | decoding | kids test ({n['kids-test']} clips) | "
             f"kids dev ({n['kids-dev']}) | adults test ({n['adults-test']}) | kids-test hallucinations |",
             "|---|---|---:|---:|---:|---:|"]
    for who, x in (("stock, English forced", stock),
                   (f"+ `models/whisper-base-kids` ({best['trainable_params'] / 1e6:.2f} M trained weights)", best)):
        for d, name in decodings:
            kids = _pct(x[f"kids-test{d}"])
            lines.append(f"| {who} | {name} | {f'**{kids}**' if x is best and d == top else kids} | "
                         f"{_pct(x[f'kids-dev{d}'])} | {_pct(x[f'adults-test{d}'])} | "
                         f"{(x[f'kids-test{d}'] or {}).get('hallucinations', '-')} |")
    for d, name in decodings:
        if best[f"kids-test{d}_minus_stock"] is None and best[f"adults-test{d}_minus_stock"] is None:
            continue  # the stock model is not scored on the test sets this way
        lines.append(f"| tuned minus stock, points (paired 95 % CI) | {name} | "
                     f"{_diff(best[f'kids-test{d}_minus_stock'])} | | {_diff(best[f'adults-test{d}_minus_stock'])} | |")
    return "\n".join(lines)


def _replace(text: str, marker: str, body: str) -> str:
    if f"<!-- {marker}:start" not in text:
        return text
    start = text.index("-->", text.index(f"<!-- {marker}:start")) + 3
    end = text.index(f"<!-- {marker}:end -->")
    return text[:start] + "\n" + body + "\n" + text[end:]


def main() -> None:
    r = collect()
    ABLATION.mkdir(parents=True, exist_ok=True)
    (ABLATION / "ablation.json").write_text(json.dumps(r, indent=2) + "\n")
    (ABLATION / "ablation.md").write_text(  # a section of results/report/report.md (results/report.sh)
        "## What each accuracy lever buys\n\n" + table(r) + "\n\nThe notes on each row (what pays, what does not, how the "
        "rows were run) are in the README, section *What each accuracy lever buys*.\n")
    readme = ROOT / "README.md"
    text = _replace(readme.read_text(), "ablation", table(r))
    readme.write_text(_replace(text, "headline", headline(r)))


if __name__ == "__main__":
    main()
