"""report.compare: fixture evaluation and run directories -> CSV, Markdown, HTML, PNGs."""

from __future__ import annotations

import csv
import json
import logging
import struct
from pathlib import Path

import pytest
import yaml

from kidwhisper.config import ConfigError
from kidwhisper.report import CompareConfig, CompareError, compare, set_name, short_model_name


def rate(wer: float, ci: float = 0.025, s: int = 0, d: int = 0, i: int = 0, ref_words: int = 100) -> dict:
    return {"wer": wer, "ci_low": wer - ci, "ci_high": wer + ci, "substitutions": s, "deletions": d,
            "insertions": i, "hits": ref_words - s - d, "errors": s + d + i, "ref_words": ref_words, "n_utts": 20,
            "n_skipped_empty_ref": 0}


def age_group(wer: float, ci: float | None, n_speakers: int) -> dict:
    return {"n_utts": 10, "n_scored": 10, "n_speakers": n_speakers, "ref_words": 50, "substitutions": 5,
            "deletions": 0, "insertions": 0, "wer": wer, "ci_low": None if ci is None else wer - ci,
            "ci_high": None if ci is None else wer + ci, "digits_wer": wer, "orthographic_wer": 1.0,
            "n_hallucinations": 0}


def write_eval(d: Path, *, model="whisper-base", adapter=None, language="en", wer=0.4, ortho=1.02,
               ortho_sdi=(95, 3, 4), cer=0.2, halluc=0, non_english=0, ages=None, data="data/kids-test") -> Path:
    d.mkdir(parents=True)
    s, dl, i = ortho_sdi
    summary = {
        "n_utts": 20, "n_speakers": 4, "audio_seconds": 60.0, "headline": "whisper",
        "wer": {"orthographic": rate(ortho, 0.01, s, dl, i), "whisper": rate(wer, s=20, d=2, i=3),
                "digits": rate(wer - 0.05)},
        "cer": {"cer": cer, "ci_low": cer - 0.02, "ci_high": cer + 0.02},
        "flags": {"empty": 0, "repetition": 0, "long": 0, "non_english": non_english, "hallucination": halluc,
                  "any": halluc},
        "breakdown": {"speaker": {}, "age": ages or {}, "gender": {}},
        "languages": {"en": 20}, "model": model, "adapter": adapter, "data": f"{data}/manifest.jsonl",
        "manifest_sha256": "ab" * 32, "decoding": {"language": language}, "wall_seconds": 6.0, "rtf": 0.1,
        "config": {"data": data},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    utts = [{"id": "u1", "ref": "MARK IS GOING TO SEE ELEPHANT", "hyp": "Mark is going to see elephant.",
             "words": {"orthographic": {"substitutions": 6, "deletions": 0, "insertions": 0},
                       "whisper": {"substitutions": 0, "deletions": 0, "insertions": 0}}},
            {"id": "u2", "ref": "I like it", "hyp": "I like it",
             "words": {"orthographic": {"substitutions": 0}, "whisper": {"substitutions": 0}}}]
    (d / "utterances.jsonl").write_text("".join(json.dumps(u) + "\n" for u in utts))
    (d / "eval_config.yaml").write_text(yaml.safe_dump({"model": model, "language": language}))
    return d


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Two zero-shot baselines (en, auto) and one LoRA run with its own evaluations."""
    root = tmp_path_factory.mktemp("results")
    kid_ages = {"6": age_group(0.50, None, 1), "8": age_group(0.40, 0.05, 2), "11": age_group(0.30, 0.04, 3)}
    tuned_ages = {"6": age_group(0.35, None, 1), "8": age_group(0.28, 0.04, 2), "11": age_group(0.20, 0.03, 3)}
    write_eval(root / "baseline/whisper-base-en/kids-test", wer=0.41404, ages=kid_ages)
    write_eval(root / "baseline/whisper-base-en/adults-test", wer=0.12345, ortho=0.9, data="data/adults-test")
    write_eval(root / "baseline/whisper-base-auto/kids-test", language="auto", wer=0.9, ortho=1.6,
               ortho_sdi=(90, 5, 65), halluc=3, non_english=7, ages=kid_ages)
    write_eval(root / "baseline/whisper-base-auto/adults-test", language="auto", wer=0.2, data="data/adults-test")
    run = root / "runs/lora-r16"
    write_eval(run / "eval/kids-test", adapter=str(run / "adapter"), wer=0.31053, ortho=1.01, cer=0.15,
               ages=tuned_ages)
    write_eval(run / "eval/adults-test", adapter=str(run / "adapter"), wer=0.13, data="data/adults-test")
    (run / "adapter").mkdir()
    (run / "train_config.yaml").write_text(yaml.safe_dump({"model": "whisper-base", "strategy": "lora",
                                                           "language": "en", "dev": "data/kids-dev"}))
    lines = [{"step": k, "epoch": k / 40, "loss": 2.0 / k ** 0.5, "lr": 1e-3, "elapsed_s": 3.0 * k} for k in range(1, 81)]
    for k, w in ((20, 0.40), (40, 0.33), (60, 0.30), (80, 0.305)):
        lines[k - 1]["dev_wer"] = w
    (run / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "summary.json").write_text(json.dumps({
        "model": "whisper-base", "strategy": "lora", "trainable_params": 1_179_648, "total_params": 72_593_920,
        "trainable_pct": 1.625, "best_dev_wer": 0.30, "best_step": 60, "steps": 80, "epochs_run": 2.0,
        "wall_seconds": 3725.0, "clips_per_s": 4.5, "stopped_early": False}))
    return root


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    return compare([results], out), out


def csv_rows(out: Path) -> dict[tuple[str, str], dict]:
    with open(out / "comparison.csv", newline="") as f:
        return {(r["configuration"], r["test_set"]): r for r in csv.DictReader(f)}


def md_row(md: str, label: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_configurations_sets_and_baseline(report):
    result, _ = report
    assert result["configurations"] == ["whisper-base (en)", "whisper-base (auto)", "whisper-base + lora"]
    assert result["sets"] == ["kids-test", "adults-test"]
    assert result["baseline"] == "whisper-base (en)"
    assert result["runs"] == ["whisper-base + lora"]


def test_csv_rows_and_values(report):
    _, out = report
    rows = csv_rows(out)
    assert len(rows) == 6
    tuned = rows[("whisper-base + lora", "kids-test")]
    assert tuned["strategy"] == "lora" and tuned["language"] == "en" and tuned["model"] == "whisper-base"
    assert float(tuned["wer_pct"]) == pytest.approx(31.05)
    assert float(tuned["wer_ci_low_pct"]) == pytest.approx(28.55)
    assert float(tuned["rel_change_pct"]) == pytest.approx(100 * (0.31053 - 0.41404) / 0.41404, abs=0.01)
    assert float(tuned["cer_pct"]) == 15.0 and float(tuned["orthographic_wer_pct"]) == 101.0
    assert int(tuned["trainable_params"]) == 1_179_648
    assert float(tuned["trainable_pct"]) == pytest.approx(1.625)
    assert (tuned["substitutions"], tuned["deletions"], tuned["insertions"]) == ("20", "2", "3")
    auto = rows[("whisper-base (auto)", "kids-test")]
    assert auto["hallucinations"] == "3" and auto["non_english"] == "7" and auto["trainable_params"] == "0"
    base = rows[("whisper-base (en)", "kids-test")]
    assert base["rel_change_pct"] == "0.0" and base["strategy"] == "zero-shot" and base["adapter"] == ""
    assert float(rows[("whisper-base (en)", "adults-test")]["wer_pct"]) == pytest.approx(12.35)


def test_markdown_table_rounding_ci_and_relative_change(report):
    _, out = report
    md = (out / "report.md").read_text()
    header = md_row(md, "Configuration")
    assert header[:5] == ["Configuration", "Trainable params", "Trainable %", "kids-test WER % (95 % CI)",
                          "vs baseline"]
    assert "adults-test WER % (95 % CI)" in header
    base = md_row(md, "whisper-base (en)")
    assert base[1:5] == ["0", "0.0 %", "41.4 (38.9-43.9)", "baseline"]
    assert base[header.index("adults-test WER % (95 % CI)")] == "12.3 (9.8-14.8)"
    tuned = md_row(md, "whisper-base + lora")
    assert tuned[1:5] == ["1.18 M", "1.6 %", "31.1 (28.6-33.6)", "-25.0 %"]  # (31.053 - 41.404) / 41.404
    assert tuned[header.index("kids-test CER %")] == "15.0"
    assert tuned[header.index("kids-test orthographic WER %")] == "101.0"
    adults = header.index("adults-test WER % (95 % CI)")
    assert tuned[adults:adults + 2] == ["13.0 (10.5-15.5)", "+5.3 %"]  # (13.0 - 12.345) / 12.345
    assert md_row(md, "whisper-base (auto)")[header.index("kids-test hallucinations")] == "3"
    # WER by age: tuned vs baseline per age, CI only where the age has more than one speaker
    age6 = md_row(md, "6")
    assert age6[1:] == ["1", "10", "50.0", "50.0", "35.0"]
    assert md_row(md, "8")[1:] == ["2", "10", "40.0 (35.0-45.0)", "40.0 (35.0-45.0)", "28.0 (24.0-32.0)"]
    # training summary
    run = md_row(md, "whisper-base + lora")  # first match is the results table; the run row comes later
    assert run[0] == "whisper-base + lora"
    assert "| whisper-base + lora | lora | 1.18 M | 1.6 % | 30.0 | 60 | 80 | 2.00 | 1 h 02 min | 4.50 | finished |" in md
    for png in ("wer_by_config.png", "wer_by_age.png", "learning_curves.png"):
        assert f"]({png})" in md


def test_orthographic_explanation_uses_the_numbers(report):
    _, out = report
    md = (out / "report.md").read_text()
    para = md.split("## Why orthographic WER exceeds 100 %")[1].split("##")[0]
    assert "whisper-base (auto) scores 160.0 %" in para
    assert "90 substitutions, 5 deletions and 65 insertions over 100 reference words" in para
    assert "7 of 20 clips" in para
    assert "whisper-base (en) scores 102.0 %" in para
    assert "with Whisper's English normalizer on both sides, 41.4 % (digit-aware: 36.4 %)" in para
    assert "95.0 % of the reference words of whisper-base (en) count as substitutions" in para
    assert "1 of 2 references are all upper-case and 1 of 2 hypotheses carry punctuation" in para
    assert "'MARK IS GOING TO SEE ELEPHANT' vs 'Mark is going to see elephant.' is all errors raw" in para
    assert "The 65 inserted words of whisper-base (auto) on top of those substitutions take it to 160.0 %" in para


def test_html_is_self_contained(report):
    _, out = report
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 3
    assert "src='wer_by" not in page and "<link" not in page and "<style>" in page
    assert "<td>31.1 (28.6-33.6)</td>" in page and "<td>-25.0 %</td>" in page
    assert "<b>whisper-base (en)</b>" in page


def test_markdown_sections_go_into_both_reports_before_inputs(results, tmp_path, monkeypatch):
    """--sections: a Markdown file (results/ablation.py's table) lands verbatim in report.md and as a real
    HTML table in report.html, before the Inputs list; Inputs name directories relative to the working dir."""
    section = tmp_path / "ablation.md"
    section.write_text("## What each lever buys\n\nRows *train* whisper-base; **bold**: CI excludes 0.\n\n"
                       "| row | kids-dev WER % |\n|---|---:|\n| lora-isolated | 27.6 (17.7-38.5) |\n")
    monkeypatch.chdir(results)
    compare([results], tmp_path / "out", CompareConfig(sections=f"{section},"))
    md = (tmp_path / "out/report.md").read_text()
    assert section.read_text().strip() in md
    assert md.index("## What each lever buys") < md.index("## Inputs") and md.count("## What each lever buys") == 1
    assert "| whisper-base (en) | kids-test | baseline/whisper-base-en/kids-test |" in md
    page = (tmp_path / "out/report.html").read_text()
    assert "<h2>What each lever buys</h2>" in page and "<strong>bold</strong>" in page
    assert '<td style="text-align: right;">27.6 (17.7-38.5)</td>' in page
    assert page.index("What each lever buys") < page.index("<h2>Inputs</h2>")
    assert yaml.safe_load((tmp_path / "out/compare_config.yaml").read_text())["sections"] == [str(section)]


def test_unreadable_section_is_a_clear_error_before_writing(results, tmp_path):
    with pytest.raises(ConfigError, match=r"--sections: cannot read .*missing\.md \(No such file or directory\)"):
        compare([results], tmp_path / "out", CompareConfig(sections=[str(tmp_path / "missing.md")]))
    assert not (tmp_path / "out").exists()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_pngs_are_real_plots(report):
    result, out = report
    for name in ("wer_by_config.png", "wer_by_age.png", "learning_curves.png"):
        width, height = png_size(out / name)
        assert width >= 600 and height >= 400, name
        assert (out / name).stat().st_size > 15_000, name
        assert result["files"][name] == str(out / name)
    saved = yaml.safe_load((out / "compare_config.yaml").read_text())
    assert saved["baseline"] is None and saved["sets"][0] == "kids-test"


def test_baseline_by_label_and_unknown_label(results, tmp_path):
    result = compare([results], tmp_path / "a", CompareConfig(baseline="whisper-base (auto)", sets=["adults-test"]))
    assert result["baseline"] == "whisper-base (auto)" and result["sets"] == ["adults-test", "kids-test"]
    rows = csv_rows(tmp_path / "a")
    assert float(rows[("whisper-base (en)", "kids-test")]["rel_change_pct"]) == pytest.approx(-54.0, abs=0.01)
    with pytest.raises(ConfigError, match=r"whisper-base \(en\).*whisper-base \+ lora"):
        compare([results], tmp_path / "b", CompareConfig(baseline="whisper-large"))


def test_empty_input_dir_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match=r"no evaluation \(summary.json \+ utterances.jsonl\).*empty.*kidwhisper "
                                           r"evaluate"):
        compare([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(CompareError, match="missing: not found"):
        compare([tmp_path / "missing"], tmp_path / "out")


def test_unreadable_dir_is_skipped_with_count(tmp_path, caplog):
    write_eval(tmp_path / "in/whisper-tiny.en/kids-test", model="whisper-tiny.en", wer=0.5)
    bad = tmp_path / "in/broken/kids-test"
    bad.mkdir(parents=True)
    (bad / "summary.json").write_text("{not json")
    (bad / "utterances.jsonl").write_text("")
    with caplog.at_level(logging.WARNING, logger="kidwhisper.report"):
        result = compare([tmp_path / "in"], tmp_path / "out")
    assert result["configurations"] == ["whisper-tiny.en"] and result["runs"] == []
    assert any(str(bad) in r.getMessage() for r in caplog.records)
    assert "skipped 1 unreadable result directory" in caplog.text
    assert not (tmp_path / "out/learning_curves.png").exists() and (tmp_path / "out/wer_by_config.png").exists()


def test_set_and_model_names():
    known = ["kids-test", "adults-test"]
    assert set_name(Path("/r/ev1"), {"data": "/tmp/man/speechocean762-kids-test/manifest.jsonl"}, known) == "kids-test"
    assert set_name(Path("/r/ev1"), {"config": {"data": "../shared/data/speechocean762-adults/test"},
                                     "data": "/r/ev1/prepared/manifest.jsonl"}, known) == "adults-test"
    assert set_name(Path("/r/other-dev"), {}, known) == "other-dev"
    assert set_name(Path("/r/ev1"), {"data": "x/elsewhere/manifest.jsonl"}, known) == "ev1"
    assert short_model_name("openai/whisper-base") == "whisper-base"
    assert short_model_name("runs/full/model") == "full/model"


def test_eval_of_run_outside_inputs_and_label_clash(results, tmp_path):
    """An evaluation elsewhere whose adapter lives in a run dir belongs to that run; two lora runs get [dir]."""
    other = tmp_path / "runs/lora-r8"
    (other / "adapter").mkdir(parents=True)
    (other / "train_config.yaml").write_text(yaml.safe_dump({"model": "whisper-base", "strategy": "lora"}))
    (other / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n{partial")
    write_eval(tmp_path / "evals/r8/kids-test", adapter=str(other / "adapter"), wer=0.35)
    result = compare([results, tmp_path / "evals"], tmp_path / "out")
    assert result["configurations"][-2:] == ["whisper-base + lora [lora-r16]", "whisper-base + lora [lora-r8]"]
    md = (tmp_path / "out/report.md").read_text()
    assert "| whisper-base + lora [lora-r8] | lora | ? | ? | - | - | 1 |" in md
    assert "incomplete (no summary.json)" in md


def test_every_decoding_of_a_clashing_run_is_named_by_its_directory(results, tmp_path):
    """Two lora runs, one also decoded with 5 beams: the beam row names its run too (it was "whisper-base + lora
    (5 beams)", unique among beam rows, so a reader could not tell which lora it was); adapters outside a run
    are named by their own directory."""
    other = tmp_path / "runs/lora-r8"
    (other / "adapter").mkdir(parents=True)
    (other / "train_config.yaml").write_text(yaml.safe_dump({"model": "whisper-base", "strategy": "lora"}))
    (other / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    write_eval(tmp_path / "evals/r8/kids-test", adapter=str(other / "adapter"), wer=0.35)
    beam = write_eval(tmp_path / "evals/r8-beam5/kids-test", adapter=str(other / "adapter"), wer=0.45)
    summary = json.loads((beam / "summary.json").read_text())
    summary["decoding"]["beam_size"] = 5
    (beam / "summary.json").write_text(json.dumps(summary))
    result = compare([results, tmp_path / "evals"], tmp_path / "out")
    assert result["configurations"][-3:] == ["whisper-base + lora [lora-r16]", "whisper-base + lora [lora-r8]",
                                             "whisper-base + lora (5 beams) [lora-r8]"]
    kids = tmp_path / "models/whisper-base-kids"
    kids.mkdir(parents=True)
    (kids / "kidwhisper_adapter.json").write_text(json.dumps({"base_model": "whisper-base", "strategy": "lora"}))
    write_eval(tmp_path / "evals2/kids/kids-test", adapter=str(kids), wer=0.2)
    result = compare([results, tmp_path / "evals2"], tmp_path / "out2")
    assert set(result["configurations"][-2:]) == {"whisper-base + lora [lora-r16]",
                                                  "whisper-base + lora [whisper-base-kids]"}


def test_run_copied_into_results_is_not_counted_twice(results, tmp_path):
    """results/strategies.sh copies a run's log/summary/config into results/ and evaluates the weights still
    in runs/: with runs/ present, the copy and the original are one run (one row, one learning curve)."""
    import shutil

    original = tmp_path / "runs/kids-decoder"
    (original / "model").mkdir(parents=True)
    (original / "model" / "config.json").write_text("{}")
    (original / "train_config.yaml").write_text(yaml.safe_dump({"model": "whisper-base", "strategy": "decoder",
                                                                "out": str(original)}))
    (original / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "dev_wer": 0.4}) + "\n")
    (original / "summary.json").write_text(json.dumps({"strategy": "decoder", "out": str(original)}))
    copy = tmp_path / "tuned/whisper-base-decoder"
    copy.mkdir(parents=True)
    for f in ("train_config.yaml", "log.jsonl", "summary.json"):
        shutil.copy(original / f, copy / f)
    write_eval(copy / "kids-test", model=str(original / "model"), wer=0.32)
    result = compare([results, tmp_path / "tuned"], tmp_path / "out")
    assert [c for c in result["configurations"] if "decoder" in c] == ["whisper-base + decoder"]
    assert "[kids-decoder]" not in (tmp_path / "out/report.md").read_text()  # no second, clashing run


def test_relative_adapter_path_and_dev_baseline_line(results, tmp_path, monkeypatch):
    """An adapter path relative to another working directory still finds its run; the baseline's kids-dev
    WER becomes the reference line of the dev-WER panel."""
    from kidwhisper.report import collect, dev_references, resolve_baseline

    monkeypatch.chdir(tmp_path)
    write_eval(tmp_path / "more/tuned-on-dev", adapter="runs/lora-r16/adapter", wer=0.29, data="data/kids-dev")
    write_eval(tmp_path / "more/base-on-dev", wer=0.38, data="data/kids-dev")
    config = CompareConfig()
    confs, runs, sets = collect([results, tmp_path / "more"], config)
    assert sets == ["kids-test", "adults-test", "kids-dev"]
    tuned = next(c for c in confs if c.label == "whisper-base + lora")
    assert tuned.results["kids-dev"][0].name == "tuned-on-dev"
    base = resolve_baseline(confs, None)
    assert dev_references(runs, confs, base, config.sets) == [("whisper-base (en) on kids-dev (baseline)", 0.38)]


def test_case_evidence_without_references(tmp_path):
    """Committed results carry no corpus transcripts: the explanation keeps only what it can count."""
    from kidwhisper.report.render import case_evidence

    d = write_eval(tmp_path / "e")
    lines = [json.loads(x) for x in (d / "utterances.jsonl").read_text().splitlines()]
    (d / "utterances.jsonl").write_text("".join(json.dumps({k: v for k, v in u.items() if k != "ref"}) + "\n"
                                                for u in lines))
    assert case_evidence(d) == {"n": 2, "upper": None, "punct": 1, "example": None}


def _scored_eval(d: Path, errors: list[int], ids: list[str] | None = None, **kw) -> Path:
    """An evaluation whose utterances have 10 reference words and ``errors[k]`` substitutions each."""
    write_eval(d, **kw)
    ids = ids or [f"u{k:02d}" for k in range(len(errors))]
    utts = [{"id": i, "speaker": f"kid{k % 5}", "words": {"whisper": {
        "substitutions": e, "deletions": 0, "insertions": 0, "hits": 10 - e, "ref_words": 10}}}
        for k, (i, e) in enumerate(zip(ids, errors, strict=True))]
    (d / "utterances.jsonl").write_text("".join(json.dumps(u) + "\n" for u in utts))
    return d


def test_paired_differences_against_the_baseline(tmp_path, caplog):
    base_errors = [k % 7 for k in range(40)]  # children differ a lot ...
    _scored_eval(tmp_path / "baseline/whisper-base-en/kids-test", base_errors)
    _scored_eval(tmp_path / "baseline/whisper-base-auto/kids-test", base_errors[::-1], language="auto")
    _scored_eval(tmp_path / "baseline/whisper-tiny.en/kids-test", [e + 1 for e in base_errors[:39]],
                 model="whisper-tiny.en")  # one clip fewer: not the same clips
    run = tmp_path / "runs/lora"
    _scored_eval(run / "eval/kids-test", [max(e - 1, 0) if e else 0 for e in base_errors],
                 adapter=str(run / "adapter"))  # ... and tuning removes one error wherever there is one
    with caplog.at_level(logging.WARNING, logger="kidwhisper.report"):
        compare([tmp_path], tmp_path / "out")
    assert "did not score the same clips" in caplog.text
    md = (tmp_path / "out/report.md").read_text()
    assert "## Differences against whisper-base (en)" in md
    fewer = sum(1 for e in base_errors if e) / (10 * len(base_errors))  # 34 errors fewer in 400 words
    tuned = md_row(md.split("## Differences")[1], "whisper-base + adapter")
    low, high = (float(x) for x in tuned[1].split("(")[1].rstrip(")*").split(" to "))
    assert tuned[1].startswith(f"**{-100 * fewer:+.1f} (") and low < -100 * fewer < high < 0  # bold: CI below 0
    auto = md_row(md.split("## Differences")[1], "whisper-base (auto)")
    assert auto[1].startswith("+0.0 (") and not auto[1].startswith("**")  # same errors on other clips: no difference
    assert md_row(md.split("## Differences")[1], "whisper-tiny.en")[1] == "-"
    rows = csv_rows(tmp_path / "out")
    r = rows[("whisper-base + adapter", "kids-test")]
    assert float(r["wer_diff_pct"]) == pytest.approx(-100 * fewer, abs=0.01)
    assert float(r["wer_diff_ci_low_pct"]) < float(r["wer_diff_pct"]) < float(r["wer_diff_ci_high_pct"]) < 0
    assert rows[("whisper-base (en)", "kids-test")]["wer_diff_pct"] == ""


def test_small_test_sets_get_a_caveat_pointing_to_the_reference_numbers(results, tmp_path):
    compare([results], tmp_path / "small")  # every fixture set has 20 clips, below the default 200
    md = (tmp_path / "small" / "report.md").read_text()
    caveat = next(p for p in md.split("\n\n") if p.startswith("**Small test sets.**"))
    assert "(kids-test: 20 clips, adults-test: 20 clips; fewer than 200" in caveat
    assert "whisper-base (auto) 3" in caveat and "whisper-base (en) 0" in caveat  # hallucinated clips, both sets
    assert "README's *Results* section" in caveat and "wide" in caveat
    assert "<b>Small test sets.</b>" in (tmp_path / "small" / "report.html").read_text()

    compare([results], tmp_path / "full", CompareConfig(small_set=20))
    assert "Small test sets" not in (tmp_path / "full" / "report.md").read_text()

    limited = tmp_path / "limited"
    write_eval(limited / "kids-test")
    summary = json.loads((limited / "kids-test" / "summary.json").read_text())
    summary["config"]["limit"] = 20
    (limited / "kids-test" / "summary.json").write_text(json.dumps(summary))
    compare([limited], tmp_path / "limited-report", CompareConfig(small_set=20))
    assert "**Small test sets.** These results come from small subsets (kids-test: 20 clips;" in (tmp_path / "limited-report" / "report.md").read_text()


def test_a_run_on_subsets_gets_the_caveat_whatever_their_size(results, tmp_path):
    compare([results], tmp_path / "r", CompareConfig(small_set=20, subset=True))  # kidwhisper run's limit_test
    assert "**Small test sets.** These results come from small subsets (kids-test: 20 clips" in \
        (tmp_path / "r" / "report.md").read_text()


def test_beam_search_evaluations_are_their_own_configuration():
    """An evaluation with 5 beams beside the greedy one of the same model is a separate row, never the greedy
    result replaced by the newer file (the committed stock baseline has both on kids dev)."""
    from kidwhisper.report.collect import CompareConfig, collect

    base = Path(__file__).resolve().parents[1] / "results" / "baseline" / "whisper-base-en"
    confs, _, _ = collect([base], CompareConfig())
    by_label = {c.label: c for c in confs}
    assert set(by_label) == {"whisper-base (en)", "whisper-base (en, 5 beams)",
                             "whisper-base (en, 5 beams + greedy fallback)"}
    assert by_label["whisper-base (en, 5 beams + greedy fallback)"].results["kids-dev"][1]["n_fallback"] == 5
    greedy, beams = by_label["whisper-base (en)"], by_label["whisper-base (en, 5 beams)"]
    assert confs[0] is greedy and set(beams.results) == {"kids-dev"}
    assert greedy.results["kids-dev"][0].name == "kids-dev"
    assert beams.results["kids-dev"][1]["decoding"]["beam_size"] == 5


def test_decoding_tags_tell_beam_search_with_and_without_fallback_apart():
    from kidwhisper.report.collect import decoding_tag

    assert decoding_tag({"decoding": {"beam_size": 5}}) == "5 beams"  # results written before the fallback
    assert decoding_tag({"decoding": {"beam_size": 5, "fallback": None}}) == "5 beams"
    assert decoding_tag({"decoding": {"beam_size": 5, "fallback": "greedy"}}) == "5 beams + greedy fallback"
    assert decoding_tag({"decoding": {"beam_size": 1, "fallback": None}, "config": {"pack": True}}) == "packed"
