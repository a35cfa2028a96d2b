"""evaluate: real whisper-tiny.en on real child clips, and the files it writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kidwhisper.evaluate import EvalConfig, evaluate, guard_budget
from kidwhisper.metrics import UtteranceScore


@pytest.mark.slow
def test_evaluate_tiny_en_on_real_clips(kids_manifest, tmp_path):
    summary = evaluate(EvalConfig(model="whisper-tiny.en", data=str(kids_manifest), out=str(tmp_path),
                                  batch_size=6, progress=False))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["eval_config.yaml", "summary.json", "utterances.jsonl"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    lines = [json.loads(line) for line in (tmp_path / "utterances.jsonl").read_text().splitlines()]
    assert [d["id"] for d in lines] == [json.loads(x)["id"] for x in kids_manifest.read_text().splitlines()]
    first = lines[0]
    assert first["ref"] == "MARK IS GOING TO SEE ELEPHANT"
    assert "elephant" in first["hyp_norm"]["whisper"]
    UtteranceScore.from_json(first)  # lines round-trip into scores
    wer = summary["wer"]
    # Upper-case prompts vs Whisper's sentence case: raw comparison is hopeless, normalized is not.
    # (tiny.en on this 6-year-old: ~64 % normalized, ~100 % raw)
    assert wer["orthographic"]["wer"] > 0.8
    assert wer["whisper"]["wer"] < 0.8
    assert wer["orthographic"]["wer"] - wer["whisper"]["wer"] > 0.2
    assert wer["whisper"]["ci_low"] <= wer["whisper"]["wer"] <= wer["whisper"]["ci_high"]
    assert summary["n_utts"] == 12 and summary["n_speakers"] == 1
    assert summary["breakdown"]["age"].keys() == {"6"}
    assert summary["decoding"]["language"] == "en" and summary["decoding"]["timestamps"] is False
    assert summary["rtf"] > 0 and summary["manifest_sha256"]
    assert summary["guarded"]["wer"]["whisper"]["wer"] is not None


def test_guard_budget_grows_with_duration():
    assert guard_budget(1.0) == 24
    assert guard_budget(10.0) == 96


@pytest.mark.parametrize("kw, flag", [({"batch_size": 0}, "--batch-size"), ({"max_new_tokens": 500}, "--max-new-tokens"),
                                      ({"beam_size": 0}, "--beam-size")])
def test_config_validation_names_the_flag(kw, flag):
    with pytest.raises(ValueError, match=flag):
        EvalConfig(model="m", data="d", out="o", **kw)


@pytest.mark.slow
def test_ct2_backend_decodes_like_torch(kids_manifest, tmp_path):
    hyps = {}
    for backend in ("torch", "ct2"):
        evaluate(EvalConfig(model="whisper-tiny.en", data=str(kids_manifest), out=str(tmp_path / backend), limit=6,
                            backend=backend, progress=False))
        lines = (tmp_path / backend / "utterances.jsonl").read_text().splitlines()
        hyps[backend] = [json.loads(line)["hyp"] for line in lines]
    assert hyps["torch"] == hyps["ct2"]
    assert json.loads((tmp_path / "ct2" / "summary.json").read_text())["backend"] == "ct2"


@pytest.mark.slow
def test_ct2_backend_bounds_and_guards_runaway_decodes_like_torch(tmp_path):
    """Clips on which whisper-base runs away (the committed baseline's ``truncated`` clips): both backends stop
    at --max-new-tokens, flag it, and the duration guard cuts both to the same text."""
    import soundfile as sf

    from kidwhisper.data.manifest import Clip, write_manifest

    repo = Path(__file__).resolve().parents[1]
    kids = repo.parent / "shared" / "data" / "speechocean762-kids" / "test"
    if not kids.exists():
        pytest.skip(f"{kids} not found")
    baseline = repo / "results" / "baseline" / "whisper-base-en" / "kids-test" / "utterances.jsonl"
    runaway = [u for u in map(json.loads, baseline.read_text().splitlines()) if u["truncated"]][:2]
    wav = dict(line.split() for line in (kids / "wav.scp").read_text().splitlines())
    text = dict(line.split(" ", 1) for line in (kids / "text").read_text().splitlines())
    clips = [Clip(id=u["id"], audio=str(kids / wav[u["id"]]), duration=sf.info(str(kids / wav[u["id"]])).duration,
                  text=text[u["id"]], speaker=u["speaker"]) for u in runaway]
    manifest = write_manifest(clips, tmp_path / "manifest.jsonl")
    # 60 tokens: past the duration guard (~45 tokens for these 3-4 s clips), so the guard has text to cut.
    out = {}
    for backend in ("torch", "ct2"):
        summary = evaluate(EvalConfig(model="whisper-base", data=str(manifest), out=str(tmp_path / backend),
                                      max_new_tokens=60, backend=backend, progress=False))
        lines = [json.loads(line) for line in (tmp_path / backend / "utterances.jsonl").read_text().splitlines()]
        out[backend] = ([(d["hyp"], d["n_tokens"], d["truncated"]) for d in lines], summary["n_truncated"],
                        summary["guarded"])
    assert out["ct2"] == out["torch"]
    assert out["ct2"][1] == len(clips) and all(n == 60 for _, n, _ in out["ct2"][0])
    assert out["ct2"][2]["n_cut"] == len(clips)


def test_compute_type_needs_ct2_backend():
    with pytest.raises(ValueError, match="--compute-type applies to --backend ct2"):
        EvalConfig(model="m", data="d", out="o", compute_type="int8")


def test_corrupt_or_empty_clips_are_skipped_and_counted_not_decoded(kids_test_clips, tiny_model_dir, tmp_path,
                                                                     caplog):
    import numpy as np
    import soundfile as sf

    from kidwhisper.data.manifest import Clip, write_manifest

    (tmp_path / "noise.flac").write_bytes(np.random.default_rng(0).bytes(20000))  # opens, decodes to 0 samples
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000, subtype="PCM_16")
    good = [Clip(u, str(p), sf.info(str(p)).duration, t, speaker="s") for u, p, t in kids_test_clips[:2]]
    clips = [good[0], Clip("noise", "noise.flac", 2.0, "RANDOM BYTES", speaker="s"),
             Clip("empty", "empty.wav", 1.0, "NOTHING", speaker="s"), good[1]]
    manifest = write_manifest(clips, tmp_path / "manifest.jsonl")
    with caplog.at_level(logging.WARNING, logger="kidwhisper"):
        summary = evaluate(EvalConfig(model=str(tiny_model_dir), data=str(manifest), out=str(tmp_path / "eval"),
                                      batch_size=2, max_new_tokens=8, progress=False))
    assert f"skipped clip noise (unreadable or corrupt audio): {tmp_path / 'noise.flac'}" in caplog.text
    lines = [json.loads(x) for x in (tmp_path / "eval" / "utterances.jsonl").read_text().splitlines()]
    assert [d["id"] for d in lines] == [good[0].id, good[1].id] and summary["n_utts"] == 2
    assert summary["n_skipped"] == {"unreadable or corrupt audio": 1, "empty audio (no samples)": 1}
    assert summary["skipped_ids"] == {"unreadable or corrupt audio": ["noise"], "empty audio (no samples)": ["empty"]}
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["n_skipped"] == summary["n_skipped"]


@pytest.mark.parametrize("backend", ["torch", "ct2"])
def test_language_and_out_are_checked_before_anything_loads(kids_manifest, tmp_path, monkeypatch, backend):
    import kidwhisper.evaluate as evaluate_module
    from kidwhisper.config import ConfigError, OutputError

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded before the options were checked")

    for name in ("load_model", "probe_clips", "resolve_data"):
        monkeypatch.setattr(evaluate_module, name, must_not_load)
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match="--language xx: whisper-tiny.en is an English-only model; use --language en"):
        evaluate(EvalConfig(model="whisper-tiny.en", data=str(kids_manifest), out=str(out), language="xx",
                            backend=backend, progress=False))
    (tmp_path / "file").write_text("mine")
    for bad, match in ((tmp_path / "file", "is an existing file"), (tmp_path / "file" / "o", "is a file, so no directory")):
        with pytest.raises(OutputError, match=f"--out {bad}.*{match}"):
            evaluate(EvalConfig(model="whisper-tiny.en", data=str(kids_manifest), out=str(bad), backend=backend,
                                progress=False))
    if backend == "torch":
        with pytest.raises(ConfigError, match="--precision fp16 needs a GPU"):
            evaluate(EvalConfig(model="whisper-tiny.en", data=str(kids_manifest), out=str(out), precision="fp16",
                                device="cpu", progress=False))
    assert not out.exists() and (tmp_path / "file").read_text() == "mine"


def test_language_is_one_the_multilingual_model_knows(tiny_model_dir, kids_manifest, tmp_path):
    from kidwhisper.config import ConfigError
    from kidwhisper.models.load import check_language

    with pytest.raises(ConfigError, match=r"--language xx: not a language .* knows; use one of af, .* zh or auto"):
        evaluate(EvalConfig(model=str(tiny_model_dir), data=str(kids_manifest), out=str(tmp_path), language="xx"))
    for ok in ("en", "fr", "auto", None):
        check_language(str(tiny_model_dir), ok)


def test_a_full_disk_keeps_the_finished_decode_and_says_where(tiny_model_dir, kids_manifest, tmp_path, monkeypatch,
                                                             full_disk, capsys):
    import tempfile

    from kidwhisper.cli import main

    elsewhere = tmp_path / "elsewhere"  # the system temp dir, on another disk
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    out = tmp_path / "eval"
    refused = full_disk(out)
    rc = main(["evaluate", "--model", str(tiny_model_dir), "--data", str(kids_manifest), "--out", str(out),
               "--limit", "3", "--max-new-tokens", "8", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    (kept,) = elsewhere.iterdir()
    assert err == (f"kidwhisper evaluate: error: no space left on device writing {out / 'eval_config.yaml'}; free "
                   f"some space on that disk (or write to another directory) and run again. The finished decode of 3 "
                   f"clips is saved in {kept} (utterances.jsonl, summary.json, eval_config.yaml): move it to {out} "
                   f"once there is space")
    lines = [json.loads(x) for x in (kept / "utterances.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [json.loads(x)["id"] for x in kids_manifest.read_text().splitlines()[:3]]
    assert json.loads((kept / "summary.json").read_text())["n_utts"] == 3 and (kept / "eval_config.yaml").exists()
    assert refused and list(out.iterdir()) == []  # no temp file, and no summary.json that would look complete



class Killed(Exception):
    """Stands in for a kill in the middle of an evaluation."""


def test_an_interrupted_evaluation_continues_to_the_same_files(tiny_model_dir, kids_manifest, tmp_path, monkeypatch,
                                                              capsys):
    """Killed while decoding its third batch, an evaluation has written the two finished batches (6 clips) and
    no summary; run again into the same --out (half a line left by the kill is ignored) it decodes only the
    other 6 clips and ends with the utterances.jsonl and summary of an uninterrupted run; --resume with
    other options is refused in one line."""
    import kidwhisper.evaluate as evaluate_module
    from kidwhisper.cli import main

    opts = dict(model=str(tiny_model_dir), data=str(kids_manifest), batch_size=3, max_new_tokens=40, progress=False)
    whole = evaluate(EvalConfig(out=str(tmp_path / "whole"), **opts))
    real, decoded = evaluate_module.decode_batch, []

    def dies_in_third_batch(model, processor, audios, *args):
        if len(decoded) == 2:
            raise Killed
        decoded.append(len(audios))
        return real(model, processor, audios, *args)

    monkeypatch.setattr(evaluate_module, "decode_batch", dies_in_third_batch)
    cut = tmp_path / "cut"
    with pytest.raises(Killed):
        evaluate(EvalConfig(out=str(cut), **opts))
    finished = (cut / "utterances.jsonl").read_text()
    assert finished.count("\n") == 6 and not (cut / "summary.json").exists()
    with open(cut / "utterances.jsonl", "a") as f:
        f.write(finished[:50])  # a kill in the middle of a write
    decoded.clear()
    monkeypatch.setattr(evaluate_module, "decode_batch",
                        lambda model, processor, audios, *a: decoded.append(len(audios)) or real(model, processor, audios, *a))
    resumed = evaluate(EvalConfig(out=str(cut), **opts))
    assert sum(decoded) == 6 and resumed["resumed_clips"] == 6 and whole["resumed_clips"] == 0
    full = (tmp_path / "whole" / "utterances.jsonl").read_text()
    assert (cut / "utterances.jsonl").read_text() == full and full.count("\n") == 12
    timing = {"wall_seconds", "rtf", "resumed_clips", "config", "device"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}
    assert json.loads((cut / "summary.json").read_text()) == resumed

    capsys.readouterr()
    rc = main(["evaluate", "--model", str(tiny_model_dir), "--data", str(kids_manifest), "--out", str(cut),
               "--batch-size", "3", "--max-new-tokens", "40", "--beam-size", "2", "--resume", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (f"kidwhisper evaluate: error: --resume: option(s) ['beam_size'] differ from "
                               f"{cut / 'eval_config.yaml'}; resume with the evaluation's own options (or choose "
                               f"another --out)")
    assert (cut / "utterances.jsonl").read_text() == full  # untouched


def test_a_cut_hypothesis_is_kept_in_its_line_and_the_guarded_wer_is_computed_from_it():
    from kidwhisper.data.manifest import Clip
    from kidwhisper.decode import Decoded
    from kidwhisper.evaluate import summarize_lines, utterance_line

    class Words:
        def decode(self, ids, skip_special_tokens=True):
            return " ".join("word" for _ in ids)

    runaway = Decoded(Words().decode(range(100)), list(range(100)), "en", truncated=True)
    short = Decoded("word word", [0, 1], "en", truncated=False)
    lines = [utterance_line(Clip("a", "a.flac", 1.0, "WORD WORD", speaker="s"), runaway, Words()),
             utterance_line(Clip("b", "b.flac", 1.0, "WORD WORD", speaker="s"), short, Words())]
    assert json.loads(lines[0])["hyp_guarded"] == Words().decode(range(guard_budget(1.0)))  # 24 tokens
    assert "hyp_guarded" not in json.loads(lines[1])
    summary = summarize_lines(lines)
    assert summary["guarded"]["n_cut"] == 1 and summary["n_truncated"] == 1 and summary["languages"] == {"en": 2}
    assert summary["wer"]["whisper"]["insertions"] == 98 and summary["guarded"]["wer"]["whisper"]["insertions"] == 22


def test_precision_applies_to_the_torch_backend_only():
    with pytest.raises(ValueError, match="--precision applies to --backend torch"):
        EvalConfig(model="m", data="d", out="o", backend="ct2", precision="bf16")
    with pytest.raises(ValueError, match="--precision must be one of"):
        EvalConfig(model="m", data="d", out="o", precision="half")


def test_bf16_evaluation_says_so_in_its_summary(tiny_model_dir, kids_manifest, tmp_path):
    summary = evaluate(EvalConfig(model=str(tiny_model_dir), data=str(kids_manifest), out=str(tmp_path), limit=3,
                                  max_new_tokens=4, precision="bf16", pack=True, progress=False))
    assert summary["decoding"]["precision"] == "bf16" and summary["config"]["precision"] == "bf16"
    assert summary["n_utts"] == 3 and summary["machine"]["cpu_count"] >= 1  # the hardware beside the timings
    default = evaluate(EvalConfig(model=str(tiny_model_dir), data=str(kids_manifest), out=str(tmp_path / "f32"),
                                  limit=1, max_new_tokens=4, progress=False))
    assert default["decoding"]["precision"] == "float32"


def test_beam_search_falls_back_to_greedy_on_runaways_and_says_so(tiny_model_dir, kids_manifest, tmp_path):
    """evaluate --beam-size 2: clips whose beam output hits the budget are decoded again greedily; each line
    says so (``fallback``), the summary counts them and records the rule; --no-fallback keeps beam outputs.
    A greedy evaluation resumes whatever ``fallback`` says (it changes nothing there)."""
    opts = dict(model=str(tiny_model_dir), data=str(kids_manifest), limit=6, max_new_tokens=1, progress=False)
    greedy = evaluate(EvalConfig(out=str(tmp_path / "greedy"), **opts))
    plain = evaluate(EvalConfig(out=str(tmp_path / "plain"), beam_size=2, fallback=False, **opts))
    fell = evaluate(EvalConfig(out=str(tmp_path / "fell"), beam_size=2, **opts))
    lines = {k: [json.loads(x) for x in (tmp_path / k / "utterances.jsonl").read_text().splitlines()]
             for k in ("greedy", "plain", "fell")}
    assert plain["decoding"]["fallback"] is None and plain["n_fallback"] == 0
    assert fell["decoding"]["fallback"] == "greedy" and greedy["decoding"]["fallback"] is None
    runaways = [p["truncated"] for p in lines["plain"]]
    assert any(runaways) and fell["n_fallback"] == sum(runaways) == sum(u["fallback"] for u in lines["fell"])
    for g, p, f, ran in zip(lines["greedy"], lines["plain"], lines["fell"], runaways, strict=True):
        assert f["hyp"] == (g["hyp"] if ran else p["hyp"]) and f["fallback"] == ran
    resumed = evaluate(EvalConfig(out=str(tmp_path / "greedy"), fallback=False, **opts), resume=True)
    assert resumed["resumed_clips"] == 6 and resumed["wer"] == greedy["wer"]  # nothing decoded again
