"""kidwhisper.report.model_card: Hugging Face model cards from result files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from test_report import write_eval

from kidwhisper.config import ConfigError
from kidwhisper.report import compare
from kidwhisper.report.model_card import MARKER, read_card, write_card_from_results, write_model_card

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "models" / "whisper-base-kids"
RUN = REPO / "results" / "ablation" / "lora-isolated-specaug"
BASELINE = REPO / "results" / "baseline" / "whisper-base-en"


# The head of the empty card peft's save_pretrained writes beside an adapter.
PEFT_CARD = ("---\nbase_model: whisper-base\nlibrary_name: peft\n---\n\n# Model Card for Model ID\n\n"
             "- **Developed by:** [More Information Needed]\n")


def check_model_index(text: str, summaries: dict[str, dict]) -> dict:
    """The header parses with yaml.safe_load, follows the Hub's model-index schema (huggingface_hub reads it
    back into EvalResults) and holds each summary's WER and CI; returns the header."""
    meta, _ = read_card_text(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])
    (entry,) = meta["model-index"]
    assert set(entry) == {"name", "results"}
    results = {r["dataset"]["name"].split(" (")[0].split()[-1]: r for r in entry["results"]}  # "... kids-test (620"
    assert set(results) == set(summaries) and len(entry["results"]) == len(summaries)  # one entry per set
    for name, r in results.items():
        assert r["task"]["type"] == "automatic-speech-recognition" and {"name", "type"} <= set(r["dataset"])
        (metric,) = r["metrics"]
        w = summaries[name]["wer"]["whisper"]
        assert metric["type"] == "wer" and metric["value"] == round(100 * w["wer"], 2)
        assert f"95 % CI {100 * w['ci_low']:.1f}-{100 * w['ci_high']:.1f}" in metric["name"]
    evals = ModelCard(text).data.eval_results
    assert sorted(e.dataset_name for e in evals) == sorted(r["dataset"]["name"] for r in entry["results"])
    assert all(e.metric_type == "wer" and e.task_type == "automatic-speech-recognition" for e in evals)
    return meta


def read_card_text(text: str) -> tuple[dict, str]:
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


@pytest.mark.parametrize("model, run", [("whisper-base-kids", "ablation/lora-isolated-specaug"),
                                        ("whisper-base-kids-lora", "tuned/whisper-base-lora")])
def test_committed_model_cards_are_the_ones_the_committed_results_give(tmp_path, monkeypatch, model, run):
    """models/MODEL/README.md == `kidwhisper model-card models/MODEL results/RUN results/baseline/whisper-base-en`
    run now (the command that regenerates it)."""
    target = tmp_path / "models" / model
    target.mkdir(parents=True)
    for name in ("adapter_config.json", "kidwhisper_adapter.json"):
        shutil.copy(REPO / "models" / model / name, target / name)
    monkeypatch.chdir(tmp_path)  # the card shows the path as given: models/MODEL
    path = write_card_from_results(Path("models") / model, [REPO / "results" / run, BASELINE])
    text = path.read_text()
    assert text == (REPO / "models" / model / "README.md").read_text(), "regenerate it with the command above"
    summaries = {s: json.loads((REPO / "results" / run / s / "summary.json").read_text())
                 for s in ("kids-test", "adults-test", "kids-dev")}
    check_model_index(text, summaries)


def test_committed_model_card_content():
    text = (COMMITTED / "README.md").read_text()
    summaries = {s: json.loads((RUN / s / "summary.json").read_text()) for s in ("kids-test", "adults-test", "kids-dev")}
    meta = check_model_index(text, summaries)
    assert meta["base_model"] == "openai/whisper-base" and meta["library_name"] == "peft"
    assert meta["language"] == ["en"] and meta["datasets"] == ["mispeech/speechocean762"]
    assert {"whisper", "children", "lora"} <= set(meta["tags"])
    body = read_card(COMMITTED / "README.md")[1]
    assert "| kids-test | 620 (31) | 21.5 (17.0-27.5) | 57.8 (42.1-80.6) |" in body  # tuned vs whisper-base (en)
    assert "1,179,648 of 72,593,920 (1.62 %)" in body and "r=16, alpha=32" in body
    assert 'PeftModel.from_pretrained(base, "models/whisper-base-kids")' in body
    assert "--format ct2" in body and "Mandarin-L1 children" in body and "read speech" in body
    assert text.rstrip().endswith(MARKER)


def test_compare_writes_the_card_of_every_run_it_finds(tmp_path):
    run = tmp_path / "runs" / "lora-r4"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "README.md").write_text(PEFT_CARD)
    write_eval(run / "eval" / "kids-test", adapter=str(run / "adapter"), wer=0.31053)
    write_eval(tmp_path / "baseline" / "kids-test", wer=0.41404)
    (run / "train_config.yaml").write_text(yaml.safe_dump({"model": "whisper-base", "strategy": "lora", "language": "en",
                                                           "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
                                                                    "target_modules": ["q_proj"]}}))
    (run / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 1e-3, "dev_wer": 0.3}) + "\n")
    (run / "summary.json").write_text(json.dumps({"trainable_params": 1000, "total_params": 100_000,
                                                  "best_dev_wer": 0.3, "best_step": 1}))
    result = compare([tmp_path / "runs", tmp_path / "baseline"], tmp_path / "report")
    assert result["model_cards"] == [str(run / "adapter" / "README.md")]  # peft's empty template is replaced
    text = (run / "adapter" / "README.md").read_text()
    summary = json.loads((run / "eval" / "kids-test" / "summary.json").read_text())
    meta = check_model_index(text, {"kids-test": summary})
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 31.05
    assert "| kids-test | 20 (4) | 31.1 (28.6-33.6) | 41.4 (38.9-43.9) |" in text  # baseline beside it
    assert "1,000 of 100,000 (1.00 %)" in text and "r=4, alpha=8" in text


def _beams(eval_dir: Path, n_fallback: int) -> None:
    summary = json.loads((eval_dir / "summary.json").read_text())
    summary["decoding"].update(beam_size=5, fallback="greedy")
    summary["n_fallback"] = n_fallback
    (eval_dir / "summary.json").write_text(json.dumps(summary))


def test_beam_search_results_get_their_own_table(tmp_path):
    """The same weights decoded with beams: a second table (beside the stock model's beams, with the clips
    decoded again), the --beam-size usage line, and a model-index that keeps the greedy results."""
    run = tmp_path / "runs" / "lora-r4"
    (run / "adapter").mkdir(parents=True)
    write_eval(run / "eval" / "kids-test", adapter=str(run / "adapter"), wer=0.31053)
    _beams(write_eval(run / "eval" / "kids-test-beam5", adapter=str(run / "adapter"), wer=0.29), 2)
    write_eval(tmp_path / "baseline" / "kids-test", wer=0.41404)
    _beams(write_eval(tmp_path / "baseline" / "kids-test-beam5", wer=0.38), 5)
    (run / "train_config.yaml").write_text(yaml.safe_dump({"model": "whisper-base", "strategy": "lora"}))
    (run / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 1e-3}) + "\n")
    (run / "summary.json").write_text(json.dumps({"trainable_params": 1000, "total_params": 100_000}))
    assert compare([tmp_path / "runs", tmp_path / "baseline"], tmp_path / "report")["model_cards"] == \
        [str(run / "adapter" / "README.md")]
    text = (run / "adapter" / "README.md").read_text()
    greedy = json.loads((run / "eval" / "kids-test" / "summary.json").read_text())
    check_model_index(text, {"kids-test": greedy})  # greedy only in the model-index
    head, tail = text.split("With 5 beams + greedy fallback (`--beam-size 5`")
    assert "| kids-test | 20 (4) | 31.1 (28.6-33.6) | 41.4 (38.9-43.9) | 20.0 | 0 |\n" in head
    assert "| kids-test | 20 (4) | 29.0 (26.5-31.5) | 38.0 (35.5-40.5) | 20.0 | 0 | 2 |" in tail
    assert f"--adapter {run / 'adapter'} my_child.wav --beam-size 5" in tail


def test_weights_claimed_by_two_configurations_get_no_card(tmp_path, caplog):
    """Two result copies whose runs saved to the same directory in turn: which one the weights are is unknown."""
    adapter = tmp_path / "models" / "kids"
    adapter.mkdir(parents=True)
    for name in ("v1", "v2"):
        run = tmp_path / "results" / name
        write_eval(run / "kids-test", adapter=str(adapter))
        (run / "train_config.yaml").write_text(yaml.safe_dump({"model": "whisper-base", "strategy": "lora"}))
        (run / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 1e-3}) + "\n")
    assert compare([tmp_path / "results"], tmp_path / "report")["model_cards"] == []
    assert not (adapter / "README.md").exists() and "no model card written" in caplog.text


def test_a_readme_kidwhisper_did_not_write_is_kept(tmp_path, caplog):
    (tmp_path / "README.md").write_text("# my own notes\n")
    assert write_model_card(tmp_path, "---\n{}\n---\n" + MARKER) is None
    assert (tmp_path / "README.md").read_text() == "# my own notes\n" and "was not written by kidwhisper" in caplog.text
    (tmp_path / "README.md").write_text("old card\n" + MARKER + "\n")
    assert write_model_card(tmp_path, "new card\n" + MARKER) == tmp_path / "README.md"
    assert (tmp_path / "README.md").read_text().startswith("new card")


def test_model_card_cli_errors(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "kidwhisper", "model-card", *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    r = run(tmp_path, RUN)
    assert r.returncode == 2 and "neither an adapter (adapter_config.json) nor a model" in r.stderr
    (tmp_path / "adapter_config.json").write_text("{}")
    r = run(tmp_path, BASELINE)  # zero-shot results only
    assert r.returncode == 2 and "0 trained configurations" in r.stderr and "--label" in r.stderr
    with pytest.raises(ConfigError, match="no base model recorded"):
        from kidwhisper.report.model_card import model_card

        model_card(tmp_path, {}, {})
