"""The PNG plots of ``kidwhisper compare`` and of a training run's ``learning_curve.png`` (matplotlib, Agg backend,
imported only when drawing)."""

from __future__ import annotations

import io
from pathlib import Path

from kidwhisper.files import atomic_write_bytes
from kidwhisper.report.collect import Configuration, Run, _data_names, _match_set
from kidwhisper.report.render import _ages, headline


# ----------------------------------------------------------------------------------------------- plots
def _save(fig, path: Path, dpi: int) -> Path:
    """Render ``fig`` as PNG and write it to ``path`` atomically (:func:`kidwhisper.files.atomic_write_bytes`)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getbuffer(), fsync=False)
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
        if ax.get_legend_handles_labels()[0]:  # below the panel: inside, it hides curves and points
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
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
