"""export: merged HF model (= PEFT model, loads in a plain pipeline) and CTranslate2 (faster-whisper, WER parity)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kidwhisper.audio import SAMPLE_RATE, load_audio
from kidwhisper.decode import features, transcribe_arrays
from kidwhisper.export import INFO_FILE, export
from kidwhisper.metrics import corpus_wer
from kidwhisper.models.load import load_model
from kidwhisper.text import normalize

# Decode like kidwhisper.decode: greedy, English, no timestamps, one window, and no temperature
# fallback or no-speech skipping (faster-whisper's defaults resample at T=0.2.. when avg logprob < -1).
FW_OPTIONS = dict(beam_size=1, language="en", without_timestamps=True, condition_on_previous_text=False,
                  vad_filter=False, temperature=0.0, compression_ratio_threshold=None, log_prob_threshold=None,
                  no_speech_threshold=None)


def make_adapter(model: str, out: Path, scale: float = 0.02, seed: int = 0):
    """A LoRA adapter (r=4 on q_proj, v_proj) with random lora_B, so merging changes the weights.

    Returns (PEFT model in eval mode, processor).
    """
    from peft import LoraConfig, get_peft_model

    net, processor = load_model(model, device="cpu")
    torch.manual_seed(seed)  # lora_A's initialisation
    peft = get_peft_model(net, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    peft.save_pretrained(str(out))
    return peft.eval(), processor


def fw_texts(model_dir: Path, audios) -> list[str]:
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=2)
    return [" ".join(s.text.strip() for s in fw.transcribe(a, **FW_OPTIONS)[0]) for a in audios]


def _logits(net, processor, audio, text: str) -> torch.Tensor:
    tok = processor.tokenizer
    ids = tok(text).input_ids  # <|startoftranscript|><|notimestamps|> text <|endoftext|> for tiny.en
    feats = features(processor, [audio], torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        return net(input_features=feats, decoder_input_ids=torch.tensor([ids[:-1]])).logits[0]


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft, processor = make_adapter("whisper-tiny.en", out)
    return out, peft, processor


@pytest.mark.slow
def test_merged_equals_peft_and_runs_in_a_plain_pipeline(tiny_adapter, kids_test_clips, tmp_path):
    from transformers import WhisperForConditionalGeneration, pipeline

    adapter, peft, processor = tiny_adapter
    out = export("whisper-tiny.en", str(adapter), "merged", tmp_path / "merged")
    files = sorted(p.name for p in out.iterdir())
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "preprocessor_config.json", INFO_FILE} <= set(files)
    assert not any("adapter" in f for f in files)  # standalone: no PEFT files
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temp dirs left behind
    info = json.loads((out / INFO_FILE).read_text())
    assert info["source_model"] == "whisper-tiny.en" and info["adapter"] == str(adapter)
    assert info["format"] == "merged" and info["versions"]["peft"] and info["versions"]["transformers"]

    _, path, ref = kids_test_clips[0]
    audio = load_audio(path)
    merged = WhisperForConditionalGeneration.from_pretrained(out).eval()
    with peft.disable_adapter():
        base = _logits(peft, processor, audio, ref.capitalize())
    tuned = _logits(peft, processor, audio, ref.capitalize())
    assert (tuned - base).abs().max() > 0.05  # the adapter really changes the model
    torch.testing.assert_close(_logits(merged, processor, audio, ref.capitalize()), tuned, atol=1e-4, rtol=1e-4)

    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    text = asr({"raw": audio, "sampling_rate": SAMPLE_RATE})["text"]  # no generate_kwargs needed
    assert "elephant" in normalize(text)
    assert normalize(text) == normalize(transcribe_arrays(peft, processor, [audio], progress=False)[0].text)


def test_merged_multilingual_defaults_to_english(tiny_random_whisper, kids_test_clips, tmp_path):
    """A source whose generation config has no language still exports one that transcribes English."""
    from transformers import WhisperForConditionalGeneration

    net, processor = load_model(str(tiny_random_whisper), device="cpu")
    net.generation_config.language = None
    net.generation_config.task = None
    src = tmp_path / "src"
    net.save_pretrained(src)
    processor.save_pretrained(src)
    out = export(str(src), None, "merged", tmp_path / "out")
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["language"] == "en" and gen["task"] == "transcribe"
    merged = WhisperForConditionalGeneration.from_pretrained(out)
    feats = features(processor, [load_audio(kids_test_clips[0][1])], torch.device("cpu"), torch.float32)
    seq = merged.generate(input_features=feats, max_new_tokens=2)  # what the pipeline calls, no kwargs
    tok = processor.tokenizer
    assert tok.convert_ids_to_tokens(seq[0, 1:3].tolist()) == ["<|en|>", "<|transcribe|>"]
    assert json.loads((out / INFO_FILE).read_text())["generation"]["language"] == "en"


def test_builtin_ct2_export_is_a_copy_that_faster_whisper_loads(kids_test_clips, tmp_path):
    out = export("whisper-tiny.en", None, "ct2", tmp_path / "ct2")
    assert {"model.bin", "tokenizer.json", "config.json", "preprocessor_config.json", INFO_FILE} <= \
        {p.name for p in out.iterdir()}
    assert "copied_from" in json.loads((out / INFO_FILE).read_text())
    (text,) = fw_texts(out, [load_audio(kids_test_clips[0][1])])
    assert "elephant" in normalize(text)


def test_bad_arguments_fail_before_loading(tmp_path):
    with pytest.raises(ValueError, match="--format"):
        export("whisper-tiny.en", None, "onnx", tmp_path / "x")
    with pytest.raises(ValueError, match="--quantization"):
        export("whisper-tiny.en", None, "merged", tmp_path / "x", quantization="int8")
    with pytest.raises(ValueError, match="--quantization int3"):
        export("whisper-tiny.en", None, "ct2", tmp_path / "x", quantization="int3")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an earlier kidwhisper export"):
        export("whisper-tiny.en", None, "ct2", busy)
    assert (busy / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_ct2_export_matches_pytorch_wer(kids_test_clips, tmp_path):
    """whisper-base + a LoRA adapter: PyTorch (decode.py) and faster-whisper on the ct2 export agree."""
    clips = kids_test_clips[:10]
    audios = [load_audio(p) for _, p, _ in clips]
    refs = [normalize(t) for _, _, t in clips]
    peft, processor = make_adapter("whisper-base", tmp_path / "adapter", scale=0.01)
    torch_hyps = [d.text for d in transcribe_arrays(peft, processor, audios, batch_size=10, progress=False)]
    del peft
    out = export("whisper-base", str(tmp_path / "adapter"), "ct2", tmp_path / "ct2")
    assert {"model.bin", "tokenizer.json", "preprocessor_config.json", INFO_FILE} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "ct2"]  # scratch dirs removed
    ct2_hyps = fw_texts(out, audios)
    wer_torch = corpus_wer(zip(refs, [normalize(h) for h in torch_hyps], strict=True))
    wer_ct2 = corpus_wer(zip(refs, [normalize(h) for h in ct2_hyps], strict=True))
    print(f"normalized WER on {len(clips)} kids clips: PyTorch {100 * wer_torch:.2f} %, ct2 {100 * wer_ct2:.2f} %")
    for t, c in zip(torch_hyps, ct2_hyps, strict=True):
        print(f"  torch: {t!r}\n  ct2:   {c!r}")
    assert abs(wer_ct2 - wer_torch) <= 0.005
    assert wer_torch < 0.8  # the small adapter leaves a working model
