"""Write the speed tables of docs/benchmarks.md from the committed benchmark results (never typed by hand).

Reads the reference run's ``results/tuned/whisper-base-lora/summary.json``,
``bench/results/train_throughput*.json``, ``bench/results/eval_throughput*.json`` and
``bench/results/scale.json`` (train, evaluate and prepare) and replaces the text
between ``<!-- bench:start`` and ``<!-- bench:end -->`` in docs/benchmarks.md.

    python bench/readme_tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def machine(r: dict) -> str:
    """" Machine: ...", from the ``machine`` record newer results carry (kidwhisper.config.machine_info)."""
    m = r.get("machine")
    if not m:
        return ""
    bf16 = "native bf16" if m["cpu_native_bf16"] else "no native bf16, so float32 where the default is auto"
    return f" Machine: {m['cpu']}, {m['cpu_count']} logical cores, {bf16}{', ' + m['cuda'] if m.get('cuda') else ''}."


def eval_table(r: dict, name: str = "eval_throughput.json") -> str:
    first = r["results"][0]
    model = f"{r['model']} + `{r['adapter']}`" if r.get("adapter") else r["model"]
    lines = [
        f"Evaluation: `{r['command']}` (`bench/results/{name}`): {model}, {r['n_clips']} "
        f"kids-test clips, {r['audio_seconds']} s of audio, {r['torch_threads']} CPU threads, English, greedy. "
        f"*Clean WER* is the WER on the {first['n_clips_no_system_hallucinated']} clips on which no system "
        f"hallucinated; *same text* counts normalized transcripts equal to the first row's.{machine(r)}",
        "",
        "| system | decode s | RTF | clips/s | WER % | hallucinations | their errors | clean WER % | same text |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["results"]:
        lines.append(f"| {row['system']} | {row['decode_seconds']:.1f} | {row['rtf']:.3f} | "
                     f"{row['clips_per_second']:.2f} | {100 * row['wer']:.1f} | {row['n_hallucinations']} | "
                     f"{row['errors_in_hallucinations']} | {100 * row['wer_on_clips_no_system_hallucinated']:.1f} | "
                     f"{row['same_normalized_text_as_first']}/{r['n_clips']} |")
    return "\n".join(lines)


def scale_table(r: dict, name: str = "scale.json") -> str:
    cache = ("every audio file read once before the first run" if r.get("warm_page_cache") else
             "cold page cache: the first size read the audio from disk, later runs from the cache")
    lines = [
        f"Corpus size: `{r['command']}` (`bench/results/{name}`; {cache}): {r['model']}, the kids-train clips listed "
        f"again and again under new ids; `train` runs {r['steps']} steps of {r['batch_size']} windows at every "
        f"size, `evaluate` decodes {r['eval_clips']} clips; peak RSS of the command (its process tree in "
        f"brackets), on {r['threads']} CPU threads.",
        "",
        "| corpus | clips | train peak RSS MB | vs smallest | train clips/s | evaluate peak RSS MB | vs smallest "
        "| evaluate clips/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(f"{row['hours']:g} h", row) for row in r["rows"]]
    if r.get("before"):
        b = r["before"]
        rows.append((f"{b['hours']:g} h, before streaming (`{b['commit'] or b['src']}`)", b))
    base_t, base_e = r["rows"][0]["train"]["peak_rss_mb"], r["rows"][0]["evaluate"]["peak_rss_mb"]
    for label, row in rows:
        t, e = row["train"], row["evaluate"]
        lines.append(f"| {label} | {row['n_clips']} | {t['peak_rss_mb']:.0f} ({t['peak_tree_rss_mb']:.0f}) | "
                     f"{t['peak_rss_mb'] / base_t:.2f}x | {t['clips_per_s']:.2f} | {e['peak_rss_mb']:.0f} "
                     f"({e['peak_tree_rss_mb']:.0f}) | {e['peak_rss_mb'] / base_e:.2f}x | {e['clips_per_s']:.2f} |")
    return "\n".join(lines)


def prepare_table(p: dict, name: str = "scale.json") -> str:
    """The ``prepare`` part of a scale result: time, clips/s and peak RSS per raw input size."""
    cache = ("every recording read once before the first run" if p.get("warm_page_cache") else
             "cold page cache: the first size read the recordings from disk")
    lines = [
        f"Prepare: `{p['command']}` (`bench/results/{name}`, `prepare`; {cache}): `kidwhisper prepare` on a raw "
        f"Kaldi directory listing the utterances of `{p['input']}` again and again under new ids (the original "
        f"FLAC files by absolute path), into a fresh directory; clips/s is clips kept per second of the "
        f"command's wall time; peak RSS of the command (its process tree, workers included, in brackets).",
        "",
        "| raw input | utterances | workers | seconds | clips/s | peak RSS MB | vs smallest (tree) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in p["rows"]:
        lines.append(f"| {row['hours']:g} h | {row['n_utts']} | {row['workers']} | {row['wall_s']:.1f} | "
                     f"{row['clips_per_s']:.1f} | {row['peak_rss_mb']:.0f} ({row['peak_tree_rss_mb']:.0f}) | "
                     f"{row['rss_vs_smallest']:.2f}x ({row['tree_rss_vs_smallest']:.2f}x) |")
    return "\n".join(lines)


# What the "kidwhisper" rows of result files written before the bench recorded each row's resolved
# packing and precision (``row["pack"]``) trained, in today's option names.
EARLIER_DEFAULTS = {
    "train_throughput.json": "Its `kidwhisper` row ran the defaults before `mixed_precision` became `auto`: "
                             "`pack_mode=isolated`, 25 s windows, float32; today's default on the CPU it ran on "
                             "(native bf16) is the `kidwhisper-bf16` row. ",
    "train_throughput_full.json": "Measured before pack modes existed: its kidwhisper rows are today's "
                                  "`pack_mode=joined` (one joined transcript per window), in 30 s windows "
                                  "(and 20 s for kidwhisper-20s), float32. ",
}


def train_table(r: dict, name: str) -> str:
    lines = [
        f"{EARLIER_DEFAULTS.get(name, '') if not any('pack' in row for row in r['results']) else ''}"
        f"Training: `{r['command']}` (`bench/results/{name}`): LoRA r=16 on {r['model']}, the same "
        f"{r['n_train_clips']} kids-train clips for {r['epochs']} epochs at lr {r['lr']:g}, then every adapter "
        f"scored on the same {r['n_dev_clips']} kids-dev clips. The plain recipe steps on "
        f"{r['hf_batch_size']} clips (one per 30 s window); kidwhisper on {r['kidwhisper_windows_per_step']} "
        f"packed window(s) per step{pack_options(r)}. *Guarded* cuts runaway hypotheses to a duration budget; *1st word* is the "
        f"share of clips whose first word is wrong; *minus plain* is the row's dev WER minus the plain recipe's "
        f"on the same clips, with a paired speaker-bootstrap 95 % CI (a CI holding 0 shows no difference)."
        f"{machine(r)}",
        "",
        "| system | options | windows/epoch | clips/s | speed-up | steps | peak RSS MB | dev WER % (95 % CI) "
        "| minus plain, points (95 % CI) | guarded % | hallucinations | 1st word % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["results"]:
        lo, hi = row["dev_wer_ci"]
        options = ", ".join(f"{k}={v}" for k, v in row.get("options", {}).items()) or "-"
        windows = row.get("windows_per_epoch", r["n_train_clips"] if row["system"] == "hf-recipe" else "")
        d = row.get("dev_wer_minus_hf_recipe")
        minus = f"{100 * d[0]:+.1f} ({100 * d[1]:+.1f} to {100 * d[2]:+.1f})" if d else "-"
        lines.append(f"| {row['system']} | {options} | {windows} | {row['clips_per_second']:.2f} | "
                     f"{row.get('speedup_vs_hf_recipe', 1.0):.1f}x | {row['steps']} | {row['peak_rss_mb']:.0f} | "
                     f"{100 * row['dev_wer']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | {minus} | "
                     f"{100 * row['dev_wer_guarded']:.1f} | {row['dev_hallucinations']} | "
                     f"{100 * row['dev_first_word_error']:.1f} |")
    return "\n".join(lines)


def pack_options(r: dict) -> str:
    """How the kidwhisper rows packed, from the resolved configs the bench records (newer files only)."""
    rows = [row for row in r["results"] if "pack" in row]
    if not rows:
        return ""
    text = "; ".join(f"{row['system']}: {row['pack']['mode']}, {row['pack']['seconds']:g} s windows, "
                     f"{'float32' if row['pack']['precision'] == 'no' else row['pack']['precision']}" for row in rows)
    return f" ({text})"


def reference_run(s: dict) -> str:
    evals = len(s["evals"])
    return (f"The reference run (`results/tuned/whisper-base-lora/summary.json`) packed {s['n_train_clips']} clips "
            f"into {s['n_windows']} windows ({s['clips_per_window']:.1f} clips per 30 s window, "
            f"{100 * s['window_fill']:.0f} % full) and trained at {s['clips_per_s']:.1f} clips/s on "
            f"{s['torch_threads']} CPU threads ({s['seconds_per_step']:.1f} s per step of {s['windows_per_step']} "
            f"windows, {s['steps']} steps: {s['train_seconds'] / 60:.0f} min of training plus "
            f"{s['eval_seconds'] / 60:.0f} min for {evals} dev-WER evaluations, {s['wall_seconds'] / 60:.0f} min "
            f"in all; peak RSS {s['peak_rss_mb'] / 1024:.1f} GB).")


def main() -> None:
    parts = []
    ref = ROOT / "results" / "tuned" / "whisper-base-lora" / "summary.json"
    if ref.exists():
        parts.append(reference_run(json.loads(ref.read_text())))
    for path in sorted(RESULTS.glob("train_throughput*.json")):  # the 240-clip bench, then the full-data one
        parts.append(train_table(json.loads(path.read_text()), path.name))
    for name in ("eval_throughput.json", "eval_throughput_tuned.json"):  # stock model, then the tuned one
        if (RESULTS / name).exists():
            parts.append(eval_table(json.loads((RESULTS / name).read_text()), name))
    for name in ("scale.json", "scale_1h_warm.json"):  # 1-100 h, then 1 h again with a warm page cache
        if (RESULTS / name).exists():
            result = json.loads((RESULTS / name).read_text())
            if result.get("rows"):
                parts.append(scale_table(result, name))
            if result.get("prepare"):
                parts.append(prepare_table(result["prepare"], name))
    readme_path = ROOT / "docs" / "benchmarks.md"
    readme = readme_path.read_text()
    start = readme.index("<!-- bench:start")
    start = readme.index("-->", start) + 3
    end = readme.index("<!-- bench:end -->")
    readme_path.write_text(readme[:start] + "\n" + "\n\n".join(parts) + "\n" + readme[end:])


if __name__ == "__main__":
    main()
