"""Memory and speed of ``prepare``, ``train`` and ``evaluate`` against corpus size: does peak RSS stay flat?

For each size (``--hours``), a synthetic manifest lists the clips of ``--train`` again and again under new ids
(``<id>-r<k>``, the same audio files by absolute path: no audio is copied) until it holds about that many
hours. On each manifest, in its own subprocess:

- ``kidwhisper train`` for ``--steps`` optimizer steps (dev WER once at the end on ``--dev-clips`` clips of
  ``--dev``), so every size trains the same amount and only the corpus it plans from grows;
- ``kidwhisper evaluate`` on the manifest's first ``--eval-clips`` clips.

And, for each size in ``--prepare-hours``, ``kidwhisper prepare`` on a raw Kaldi directory that lists the
utterances of ``--prepare-input`` (a Kaldi directory of original recordings) again and again under new
ids, each pointing at the original audio file (``wav.scp`` with absolute paths: no audio is copied), into a
fresh output directory; clips/s is clips kept per second of the command's wall time.

Peak RSS is the command's own (``ru_maxrss`` from ``wait4``: the largest process of the run, DataLoader
workers included) and the peak of the summed RSS of its process tree, sampled every 0.1 s. clips/s is the
training summary's (clips trained per second of training) and, for evaluate, clips decoded per second of
decoding. The result JSON lists every run and the ratio of each size's peak RSS to the smallest size's
(``rows`` for train and evaluate, ``prepare.rows`` for prepare, each part with its own command line);
``--only`` runs one part and keeps the other part of an existing ``--out`` file.

    python bench/scale.py --train data/kids-train --dev data/kids-dev --model whisper-base \\
        --hours 1 10 100 --steps 20 --eval-clips 200 --prepare-hours 1 10 \\
        --out-dir runs/bench-scale --out bench/results/scale.json

``--before-src DIR/src --before-commit C`` runs the smallest size a second time with another version's code
(``git worktree add --detach DIR C``), side by side. Every audio file is read once before the first
measurement (``--cold`` skips that), so no size pays the disk reads the others find in the page cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
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


def _kaldi_table(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    return [tuple(line.split(maxsplit=1)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_repeated_kaldi(src: Path, hours: float, out: Path) -> dict:
    """The Kaldi directory ``src`` listed ``copies`` times into ``out`` (ids ``<id>-r<k>``, ``wav.scp`` with
    the absolute paths of the original files; speakers, ages and genders as in ``src``)."""
    import soundfile as sf

    scp = [(utt, str((src / path).resolve())) for utt, path in _kaldi_table(src / "wav.scp")]
    seconds = sum(sf.info(path).duration for _, path in scp)
    copies = max(1, round(hours * 3600 / seconds))
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("text", _kaldi_table(src / "text")), ("wav.scp", scp), ("utt2spk", _kaldi_table(src / "utt2spk"))):
        with open(out / name, "w", encoding="utf-8") as f:
            for k in range(copies):
                f.writelines(f"{utt}-r{k} {value}\n" for utt, value in rows)
    for name in ("spk2age", "spk2gender"):
        if (src / name).is_file():
            (out / name).write_text((src / name).read_text(encoding="utf-8"), encoding="utf-8")
    return {"input": str(out), "copies": copies, "n_utts": copies * len(scp), "hours": round(copies * seconds / 3600, 3)}


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
                 "--dev-max-clips", str(args.dev_clips), "--batch-size", str(args.batch_size),
                 "--no-spec-augment"]  # as measured before SpecAugment became the default
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


def run_prepare(args, hours: float, env: dict) -> dict:
    base = Path(args.out_dir) / f"prepare-{hours:g}h"
    row = {"size_hours": hours, **write_repeated_kaldi(Path(args.prepare_input), hours, base / "raw")}
    out = base / "prepared"
    shutil.rmtree(out, ignore_errors=True)  # a fresh output every time: the bench's own directory
    cmd = [sys.executable, "-m", "kidwhisper", "prepare", "-q", row["input"], str(out)]
    if args.prepare_jobs is not None:
        cmd += ["--jobs", str(args.prepare_jobs)]
    log.info("%g h (%d utterances): prepare", hours, row["n_utts"])
    row.update(measure(cmd, env))
    report = json.loads((out / "prepare_report.json").read_text())
    row.update({"kept": report["kept"], "workers": report["workers"], "clips_per_s": round(report["kept"] / row["wall_s"], 2)})
    return row


def _ratios(rows: list[dict]) -> None:
    """Each row's peak RSS over the first (smallest) row's."""
    for r in rows:
        r["rss_vs_smallest"] = round(r["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)
        r["tree_rss_vs_smallest"] = round(r["peak_tree_rss_mb"] / rows[0]["peak_tree_rss_mb"], 3)


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
    p.add_argument("--prepare-input", default="../shared/data/speechocean762-kids/train",
                   help="Kaldi directory whose utterances are repeated as prepare's raw input")
    p.add_argument("--prepare-hours", type=float, nargs="+", default=[1, 10], help="raw input sizes for prepare")
    p.add_argument("--prepare-jobs", type=int, help="prepare --jobs (default: its own default)")
    p.add_argument("--only", choices=["prepare", "train-evaluate"],
                   help="run one part; the other part of an existing --out file is kept")
    p.add_argument("--out-dir", default="runs/bench-scale")
    p.add_argument("--out", default="bench/results/scale.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    out = Path(args.out)
    result = json.loads(out.read_text()) if args.only and out.is_file() else {}
    if args.only != "prepare":
        result.update(train_evaluate(args, env, command))
    if args.only != "train-evaluate":
        if not args.cold:  # the smallest size then reads the recordings from the page cache as the others do
            for _, path in _kaldi_table(Path(args.prepare_input) / "wav.scp"):
                (Path(args.prepare_input) / path).read_bytes()
        prepared = [run_prepare(args, h, env) for h in sorted(args.prepare_hours)]
        _ratios(prepared)
        result["prepare"] = {"command": command, "input": args.prepare_input, "threads": args.threads,
                             "warm_page_cache": not args.cold, "rows": prepared}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.only != "prepare":
        print(f"{'hours':>6} {'clips':>8} | {'train RSS MB':>12} {'tree MB':>8} {'x':>6} {'clips/s':>8} | "
              f"{'eval RSS MB':>11} {'tree MB':>8} {'x':>6} {'clips/s':>8}")
        for r in result["rows"]:
            t, e = r["train"], r["evaluate"]
            print(f"{r['hours']:>6.1f} {r['n_clips']:>8} | {t['peak_rss_mb']:>12.0f} {t['peak_tree_rss_mb']:>8.0f} "
                  f"{t['rss_vs_smallest']:>6.2f} {t['clips_per_s']:>8.2f} | {e['peak_rss_mb']:>11.0f} "
                  f"{e['peak_tree_rss_mb']:>8.0f} {e['rss_vs_smallest']:>6.2f} {e['clips_per_s']:>8.2f}")
        if result["before"]:
            before = result["before"]
            t, e = before["train"], before["evaluate"]
            print(f"before ({args.before_commit or args.before_src}), {before['hours']:.1f} h: train RSS "
                  f"{t['peak_rss_mb']:.0f} MB, {t['clips_per_s']:.2f} clips/s; evaluate RSS {e['peak_rss_mb']:.0f} MB, "
                  f"{e['clips_per_s']:.2f} clips/s")
    if args.only != "train-evaluate":
        print(f"{'hours':>6} {'utts':>8} | {'prepare s':>9} {'clips/s':>8} {'RSS MB':>7} {'tree MB':>8} {'x':>6}")
        for r in result["prepare"]["rows"]:
            print(f"{r['hours']:>6.1f} {r['n_utts']:>8} | {r['wall_s']:>9.1f} {r['clips_per_s']:>8.1f} "
                  f"{r['peak_rss_mb']:>7.0f} {r['peak_tree_rss_mb']:>8.0f} {r['tree_rss_vs_smallest']:>6.2f}")
    print(f"written: {args.out}")


def train_evaluate(args, env: dict, command: str) -> dict:
    """The train and evaluate part: every size in ``--hours`` (and ``--before-src`` at the smallest)."""
    if not args.cold:  # every size (and --before-src) then reads its audio from the page cache alike
        warm_page_cache(Path(args.train))
    rows = [run_size(args, h, env) for h in sorted(args.hours)]
    before = None
    if args.before_src:  # the smallest size again, trained and evaluated by another source tree
        before_env = {**env, "PYTHONPATH": str(Path(args.before_src).resolve())}
        before = {"src": args.before_src, "commit": args.before_commit,
                  **run_size(args, min(args.hours), before_env, label="-before")}
    for part in ("train", "evaluate"):
        _ratios([r[part] for r in rows])
    return {"command": command, "model": args.model, "steps": args.steps, "batch_size": args.batch_size,
            "eval_clips": args.eval_clips, "threads": args.threads, "warm_page_cache": not args.cold, "rows": rows,
            "before": before}


if __name__ == "__main__":
    main()
