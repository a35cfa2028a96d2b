"""Measure ``kidwhisper transcribe``'s timestamps on recordings built from real kids clips.

Each recording joins ``--clips`` kids-test clips (drawn without replacement, seeded) with 1.0-2.0 s of
silence between them. A clip's speech runs from the first to the last 10 ms frame of its runs of at
least 100 ms whose energy, averaged over 50 ms, is above -20 dB of the clip's loudest and 10 dB above
its noise floor. For every clip, its speech start and end are compared with the nearest
cue edge (segment start or end) of the transcript: the share within 0.5 s and the median error are
reported, for each model. Word times are checked for order (non-decreasing starts and ends, each word's
start <= end) and for lying inside the audio. Writes ``results/timestamps.json``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python results/timestamps.py --recordings 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from kidwhisper.audio import SAMPLE_RATE, load_audio
from kidwhisper.data.manifest import audio_path, read_manifest
from kidwhisper.files import atomic_write_text
from kidwhisper.transcribe import TranscribeConfig, transcribe

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = Path("/work/main/data/kids-test/manifest.jsonl")
MODELS = {"whisper-base": ("whisper-base", None),
          "whisper-base + models/whisper-base-kids": ("whisper-base", str(ROOT / "models" / "whisper-base-kids"))}
TOLERANCE = 0.5  # seconds between a clip boundary and the nearest cue edge


def speech_bounds(clip: np.ndarray) -> tuple[float, float]:
    """(start, end) in s of the clip's speech: the first and last 10 ms frame of the runs of at least 100 ms
    whose energy, averaged over 50 ms, is above -20 dB of the clip's loudest and 10 dB above its noise floor
    (10th percentile); a shorter burst (a click where the clip was cut) is not speech."""
    n = len(clip) // 160
    rms = np.sqrt(np.mean(clip[: n * 160].reshape(n, 160).astype(np.float64) ** 2, axis=1))
    rms = np.convolve(rms, np.ones(5) / 5, mode="same")
    loud = rms >= max(0.1 * rms.max(), np.sqrt(10) * np.percentile(rms, 10))
    sustained = np.convolve(loud, np.ones(10), mode="valid") == 10  # frames i..i+9 all loud
    first = int(np.argmax(sustained))
    last = len(sustained) - 1 - int(np.argmax(sustained[::-1])) + 9
    return first * 160 / SAMPLE_RATE, (last + 1) * 160 / SAMPLE_RATE


def build_recordings(manifest: Path, n: int, clips: int, seed: int, out: Path) -> list[dict]:
    """Write ``n`` recordings into ``out``; each: path, duration and the clips' speech bounds."""
    rows = read_manifest(manifest)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))[: n * clips]
    recordings = []
    for r in range(n):
        pieces, truth, t = [], [], 0
        for i in order[r * clips : (r + 1) * clips]:
            audio = load_audio(audio_path(rows[int(i)], manifest))
            s, e = speech_bounds(audio)
            truth.append((t / SAMPLE_RATE + s, t / SAMPLE_RATE + e))
            gap = np.zeros(int(rng.uniform(1.0, 2.0) * SAMPLE_RATE), np.float32)
            pieces += [audio, gap]
            t += len(audio) + len(gap)
        path = out / f"recording{r:02d}.flac"
        sf.write(path, np.concatenate(pieces), SAMPLE_RATE)
        recordings.append({"path": str(path), "duration": t / SAMPLE_RATE, "speech": truth})
    return recordings


def words_ordered(result: dict) -> bool:
    """Word times never go back, each word has start <= end, and all lie inside the audio."""
    times = [t for s in result["segments"] for w in s.get("words", []) for t in (w["start"], w["end"])]
    return times == sorted(times) and (not times or (times[0] >= 0 and times[-1] <= result["duration"] + 1e-6))


def score(recordings: list[dict], results: list[dict]) -> dict:
    errors, ordered, cue_seconds, n_cues = [], 0, [], 0
    for rec, res in zip(recordings, results, strict=True):
        segs = res["segments"]
        edges = np.array([s["start"] for s in segs] + [s["end"] for s in segs])
        for start, end in rec["speech"]:
            errors += [float(np.abs(edges - start).min()), float(np.abs(edges - end).min())]
        ordered += words_ordered(res)
        cue_seconds += [s["end"] - s["start"] for s in segs]
        n_cues += len(segs)
    errors_arr = np.array(errors)
    return {"boundaries": len(errors), "within_0.5s": round(float(np.mean(errors_arr <= TOLERANCE)), 3),
            "median_error_s": round(float(np.median(errors_arr)), 3),
            "p90_error_s": round(float(np.percentile(errors_arr, 90)), 3),
            "starts_within_0.5s": round(float(np.mean(errors_arr[0::2] <= TOLERANCE)), 3),
            "ends_within_0.5s": round(float(np.mean(errors_arr[1::2] <= TOLERANCE)), 3),
            "recordings_with_ordered_words": f"{ordered}/{len(recordings)}",
            "cues": n_cues, "longest_cue_s": round(max(cue_seconds), 2) if cue_seconds else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, default=MANIFEST)
    p.add_argument("--recordings", type=int, default=20)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--out", type=Path, default=ROOT / "results" / "timestamps.json")
    p.add_argument("--details", type=Path, help="also write every recording's truth and transcript here (JSON)")
    args = p.parse_args(argv)
    report = {"command": "python results/timestamps.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "manifest": str(args.manifest), "recordings": args.recordings, "clips_per_recording": args.clips,
              "silence_between_clips_s": [1.0, 2.0], "seed": args.seed, "tolerance_s": TOLERANCE,
              "speech_bounds": ("first/last 10 ms frame of >= 100 ms runs of 50 ms-averaged RMS above -20 dB of the "
                                "clip's loudest and 10 dB above its 10th percentile"), "models": {}}
    details: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        recordings = build_recordings(args.manifest, args.recordings, args.clips, args.seed, Path(tmp))
        report["audio_minutes"] = round(sum(r["duration"] for r in recordings) / 60, 2)
        for name in args.models:
            model, adapter = MODELS[name]
            t0 = time.time()
            config = TranscribeConfig(model=model, adapter=adapter, device="cpu", word_timestamps=True, progress=False)
            results = transcribe(config, [r["path"] for r in recordings])
            report["models"][name] = {**score(recordings, results), "seconds": round(time.time() - t0, 1)}
            print(name, json.dumps(report["models"][name]), flush=True)
            details[name] = [{**rec, "result": res} for rec, res in zip(recordings, results, strict=True)]
    if args.details:
        atomic_write_text(args.details, json.dumps(details, indent=1) + "\n")
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
