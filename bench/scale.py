"""Memory and speed of ``train`` and ``evaluate`` against corpus size: does peak RSS stay flat?

For each size (``--hours``), a synthetic manifest lists the clips of ``--train`` again and again under new ids
(``<id>-r<k>``, the same audio files by absolute path: no audio is copied) until it holds about that many
hours. On each manifest, in its own subprocess:

- ``kidwhisper train`` for ``--steps`` optimizer steps (dev WER once at the end on ``--dev-clips`` clips of
  ``--dev``), so every size trains the same amount and only the corpus it plans from grows;
- ``kidwhisper evaluate`` on the manifest's first ``--eval-clips`` clips.

Peak RSS is the command's own (``ru_maxrss`` from ``wait4``: the largest process of the run, DataLoader
workers included) and the peak of the summed RSS of its process tree, sampled every 0.1 s. clips/s is the
training summary's (clips trained per second of training) and, for evaluate, clips decoded per second of
decoding. The result JSON lists every run and the ratio of each size's peak RSS to the smallest size's.

    python bench/scale.py --train data/kids-train --dev data/kids-dev --model whisper-base \\
        --hours 1 10 100 --steps 20 --eval-clips 200 --out-dir runs/bench-scale --out bench/results/scale.json

``--before-src DIR/src --before-commit C`` runs the smallest size a second time with another version's code
(``git worktree add --detach DIR C``), side by side. Every audio file is read once before the first
measurement (``--cold`` skips that), so no size pays the disk reads the others find in the page cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("bench")

SAMPLE_EVERY_S = 0.1  # seconds between samples of the process tree's RSS


def write_repeated_manifest(src: Path, hours: float, out: Path) -> dict:
    """``src``'s clips listed ``copies`` times (ids ``<id>-r<k>``, absolute audio paths) into ``out``."""
    from kidwhisper.data.manifest import audio_path, iter_manifest, resolve_manifest_path

    src = resolve_manifest_path(src)
    seconds = sum(c.duration for c in iter_manifest(src))
    copies = max(1, round(hours * 3600 / seconds))
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for k in range(copies):
            for clip in iter_manifest(src):
                clip.id, clip.audio = f"{clip.id}-r{k}", str(audio_path(clip, src))
                f.write(json.dumps(clip.to_json(), ensure_ascii=False) + "\n")
                n += 1
    return {"manifest": str(out), "copies": copies, "n_clips": n, "hours": round(copies * seconds / 3600, 3)}


def warm_page_cache(manifest: Path) -> None:
    """Read every audio file of ``manifest`` once, so that the first size measured does not pay cold reads."""
    from kidwhisper.data.manifest import audio_path, iter_manifest, resolve_manifest_path

    src = resolve_manifest_path(manifest)
    for clip in iter_manifest(src):
        audio_path(clip, src).read_bytes()


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; its wall time, its own peak RSS (wait4) and the sampled peak RSS of its process tree."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak, done = [0], threading.Event()

    def sample() -> None:
        ps = psutil.Process(proc.pid)
        while not done.wait(SAMPLE_EVERY_S):
            try:
                peak[0] = max(peak[0], _tree_rss(ps))
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"bench: {' '.join(cmd)} failed with exit code {proc.returncode}")
    return {"wall_s": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "peak_tree_rss_mb": round(peak[0] / 2**20, 1)}


def run_size(args, hours: float, env: dict, label: str = "") -> dict:
    out = Path(args.out_dir) / f"{hours:g}h{label}"
    row = {"size_hours": hours, **write_repeated_manifest(Path(args.train), hours, out / "manifest.jsonl")}
    kw = ["-m", "kidwhisper"]
    train_cmd = [sys.executable, *kw, "train", "-q", "--model", args.model, "--train", row["manifest"], "--dev", args.dev,
                 "--out", str(out / "train"), "--max-steps", str(args.steps), "--eval-every", str(args.steps),
                 "--dev-max-clips", str(args.dev_clips), "--batch-size", str(args.batch_size)]
    if args.num_workers is not None:
        train_cmd += ["--num-workers", str(args.num_workers)]
    log.info("%g h (%d clips): train %d steps", hours, row["n_clips"], args.steps)
    row["train"] = measure(train_cmd, env)
    summary = json.loads((out / "train" / "summary.json").read_text())
    row["train"].update({k: summary[k] for k in ("clips_per_s", "steps", "n_windows", "train_seconds")})
    eval_cmd = [sys.executable, *kw, "evaluate", "-q", "--model", args.model, "--data", row["manifest"],
                "--out", str(out / "eval"), "--limit", str(args.eval_clips), "--batch-size", str(args.batch_size * 4)]
    log.info("%g h: evaluate %d clips", hours, args.eval_clips)
    row["evaluate"] = measure(eval_cmd, env)
    summary = json.loads((out / "eval" / "summary.json").read_text())
    row["evaluate"].update({"n_clips": summary["n_utts"],
                            "clips_per_s": round(summary["n_utts"] / max(summary["wall_seconds"], 1e-9), 3)})
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default="data/kids-train", help="manifest whose clips are repeated")
    p.add_argument("--dev", default="data/kids-dev")
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--hours", type=float, nargs="+", default=[1, 10, 100])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps trained at every size")
    p.add_argument("--batch-size", type=int, default=4, help="windows per step (evaluate decodes 4x as many clips)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers for train (default: its own default)")
    p.add_argument("--eval-clips", type=int, default=200, help="clips evaluated at every size")
    p.add_argument("--dev-clips", type=int, default=16, help="dev clips decoded once at the end of training")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the measured commands")
    p.add_argument("--before-src", help="a source tree (the src/ of a checkout of an earlier commit) whose "
                   "train/evaluate also run the smallest size, side by side: the comparison with that version")
    p.add_argument("--before-commit", default="", help="that tree's commit, recorded in the JSON")
    p.add_argument("--cold", action="store_true", help="do not read the audio files once before measuring")
    p.add_argument("--out-dir", default="runs/bench-scale")
    p.add_argument("--out", default="bench/results/scale.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if not args.cold:  # every size (and --before-src) then reads its audio from the page cache alike
        warm_page_cache(Path(args.train))
    rows = [run_size(args, h, env) for h in sorted(args.hours)]
    before = None
    if args.before_src:  # the smallest size again, trained and evaluated by another source tree
        before_env = {**env, "PYTHONPATH": str(Path(args.before_src).resolve())}
        before = {"src": args.before_src, "commit": args.before_commit,
                  **run_size(args, min(args.hours), before_env, label="-before")}
    for part in ("train", "evaluate"):
        base = rows[0][part]
        for r in rows:
            r[part]["rss_vs_smallest"] = round(r[part]["peak_rss_mb"] / base["peak_rss_mb"], 3)
            r[part]["tree_rss_vs_smallest"] = round(r[part]["peak_tree_rss_mb"] / base["peak_tree_rss_mb"], 3)
    result = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "model": args.model,
              "steps": args.steps, "batch_size": args.batch_size, "eval_clips": args.eval_clips,
              "threads": args.threads, "warm_page_cache": not args.cold, "rows": rows, "before": before}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'hours':>6} {'clips':>8} | {'train RSS MB':>12} {'tree MB':>8} {'x':>6} {'clips/s':>8} | "
          f"{'eval RSS MB':>11} {'tree MB':>8} {'x':>6} {'clips/s':>8}")
    for r in rows:
        t, e = r["train"], r["evaluate"]
        print(f"{r['hours']:>6.1f} {r['n_clips']:>8} | {t['peak_rss_mb']:>12.0f} {t['peak_tree_rss_mb']:>8.0f} "
              f"{t['rss_vs_smallest']:>6.2f} {t['clips_per_s']:>8.2f} | {e['peak_rss_mb']:>11.0f} "
              f"{e['peak_tree_rss_mb']:>8.0f} {e['rss_vs_smallest']:>6.2f} {e['clips_per_s']:>8.2f}")
    if before:
        t, e = before["train"], before["evaluate"]
        print(f"before ({args.before_commit or args.before_src}), {before['hours']:.1f} h: train RSS "
              f"{t['peak_rss_mb']:.0f} MB, {t['clips_per_s']:.2f} clips/s; evaluate RSS {e['peak_rss_mb']:.0f} MB, "
              f"{e['clips_per_s']:.2f} clips/s")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
