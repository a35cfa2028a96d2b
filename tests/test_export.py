"""export: merged HF model (= the PEFT model, runs in a pipeline) and CTranslate2 (faster-whisper parity)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kidwhisper.audio import N_SAMPLES, SAMPLE_RATE, load_audio
from kidwhisper.config import DiskFullError
from kidwhisper.decode import features, transcribe_arrays
from kidwhisper.export import (
    INFO_FILE,
    ExportConfig,
    ExportError,
    PaddedAudioFeatureExtractor,
    export,
    faster_whisper_model,
)
from kidwhisper.metrics import corpus_wer
from kidwhisper.models.load import load_model
from kidwhisper.text import normalize

# Decode like kidwhisper.decode: greedy, English, no timestamps, one window, and no temperature
# fallback or no-speech skipping (faster-whisper's defaults resample at T=0.2.. when avg logprob < -1).
FW_OPTIONS = dict(beam_size=1, language="en", without_timestamps=True, condition_on_previous_text=False,
                  vad_filter=False, temperature=0.0, compression_ratio_threshold=None,
                  log_prob_threshold=None, no_speech_threshold=None)


def make_adapter(model: str, out: Path, scale: float = 0.02, seed: int = 0):
    """A LoRA adapter (r=4 on q_proj, v_proj) with random lora_B, so merging changes the weights.

    Returns (PEFT model in eval mode, processor).
    """
    from peft import LoraConfig, get_peft_model

    net, processor = load_model(model, device="cpu")
    torch.manual_seed(seed)  # lora_A's initialisation
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    peft = get_peft_model(net, lora)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    peft.save_pretrained(str(out))
    return peft.eval(), processor


def fw_texts(model_dir: Path, audios, pad: bool = False) -> list[str]:
    """faster-whisper texts; ``pad``: loaded with kidwhisper's front end (export.faster_whisper_model)."""
    from faster_whisper import WhisperModel

    load = faster_whisper_model if pad else WhisperModel
    fw = load(str(model_dir), device="cpu", compute_type="float32", cpu_threads=2)
    return [" ".join(s.text.strip() for s in fw.transcribe(a, **FW_OPTIONS)[0]) for a in audios]


def _logits(net, processor, audio, text: str) -> torch.Tensor:
    tok = processor.tokenizer
    ids = tok(text).input_ids  # <|startoftranscript|><|notimestamps|> text <|endoftext|> for tiny.en
    feats = features(processor, [audio], torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        return net(input_features=feats, decoder_input_ids=torch.tensor([ids[:-1]])).logits[0]


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, kids_test_clips):
    """whisper-tiny.en + a random LoRA adapter, and the PEFT model's transcripts of 10 kids clips."""
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft, processor = make_adapter("whisper-tiny.en", out)
    clips = kids_test_clips[:10]
    audios = [load_audio(p) for _, p, _ in clips]
    texts = [d.text for d in transcribe_arrays(peft, processor, audios, batch_size=10, progress=False)]
    return {"dir": out, "peft": peft, "processor": processor, "audios": audios, "texts": texts,
            "refs": [t for _, _, t in clips]}


@pytest.mark.slow
def test_merged_equals_peft_and_runs_in_a_plain_pipeline(tiny_adapter, tmp_path):
    from safetensors.torch import load_file
    from transformers import WhisperForConditionalGeneration, pipeline

    from kidwhisper.models.builtin import builtin_path

    adapter, peft, processor = tiny_adapter["dir"], tiny_adapter["peft"], tiny_adapter["processor"]
    out = export(ExportConfig("whisper-tiny.en", "merged", str(adapter)), tmp_path / "merged")
    files = sorted(p.name for p in out.iterdir())
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "preprocessor_config.json", INFO_FILE} <= set(files)
    assert not any("adapter" in f for f in files)  # standalone: no PEFT files
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temp dirs left behind
    info = json.loads((out / INFO_FILE).read_text())
    assert info["source_model"] == "whisper-tiny.en" and info["adapter"] == str(adapter)
    assert info["format"] == "merged" and info["versions"]["peft"] and info["versions"]["transformers"]

    weights = load_file(str(out / "model.safetensors"))
    base = load_file(str(builtin_path("whisper-tiny.en") / "model.safetensors"))
    attn = "model.decoder.layers.0.self_attn"
    assert (weights[f"{attn}.q_proj.weight"] - base[f"{attn}.q_proj.weight"]).abs().max() > 1e-3  # merged in
    assert torch.equal(weights[f"{attn}.k_proj.weight"], base[f"{attn}.k_proj.weight"])  # not targeted

    audio, ref = tiny_adapter["audios"][0], tiny_adapter["refs"][0].capitalize()
    merged = WhisperForConditionalGeneration.from_pretrained(out).eval()
    torch.testing.assert_close(_logits(merged, processor, audio, ref), _logits(peft, processor, audio, ref),
                               atol=1e-4, rtol=1e-4)

    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    text = asr({"raw": audio, "sampling_rate": SAMPLE_RATE})["text"]  # no generate_kwargs needed
    assert "elephant" in normalize(text)
    assert text.strip() == tiny_adapter["texts"][0]


def test_merged_multilingual_defaults_to_english(tiny_model_dir, kids_test_clips, tmp_path):
    """A source whose generation config has no language still exports one that transcribes English."""
    from transformers import WhisperForConditionalGeneration

    net, processor = load_model(str(tiny_model_dir), device="cpu")
    net.generation_config.language = None
    net.generation_config.task = None
    src = tmp_path / "src"
    net.save_pretrained(src)
    processor.save_pretrained(src)
    out = export(ExportConfig(str(src), "merged"), tmp_path / "out")
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["language"] == "en" and gen["task"] == "transcribe"
    merged = WhisperForConditionalGeneration.from_pretrained(out)
    feats = features(processor, [load_audio(kids_test_clips[0][1])], torch.device("cpu"), torch.float32)
    # What the pipeline calls, with no language/task kwargs (the dict output keeps the decoder prompt).
    seq = merged.generate(input_features=feats, max_new_tokens=1, return_dict_in_generate=True).sequences
    tok = processor.tokenizer
    assert tok.convert_ids_to_tokens(seq[0, 1:3].tolist()) == ["<|en|>", "<|transcribe|>"]
    assert json.loads((out / INFO_FILE).read_text())["generation"]["language"] == "en"


def test_builtin_ct2_export_is_a_copy_that_faster_whisper_loads(kids_test_clips, tmp_path):
    out = export(ExportConfig("whisper-tiny.en", "ct2"), tmp_path / "ct2")
    assert {"model.bin", "tokenizer.json", "config.json", "preprocessor_config.json", INFO_FILE} <= \
        {p.name for p in out.iterdir()}
    assert "copied_from" in json.loads((out / INFO_FILE).read_text())
    (text,) = fw_texts(out, [load_audio(kids_test_clips[0][1])])
    assert "elephant" in normalize(text)
    (out / "model.bin").write_bytes(b"stale")
    assert export(ExportConfig("whisper-tiny.en", "ct2"), out) == out  # an earlier export is replaced whole
    assert (out / "model.bin").stat().st_size > 1e6 and [p.name for p in tmp_path.iterdir()] == ["ct2"]


def test_bad_arguments_fail_before_loading(tmp_path):
    with pytest.raises(ValueError, match="--format"):
        export(ExportConfig("whisper-tiny.en", "onnx"), tmp_path / "x")
    with pytest.raises(ValueError, match="--quantization"):
        export(ExportConfig("whisper-tiny.en", "merged", quantization="int8"), tmp_path / "x")
    with pytest.raises(ValueError, match="--quantization int3"):
        export(ExportConfig("whisper-tiny.en", "ct2", quantization="int3"), tmp_path / "x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an earlier kidwhisper export"):
        export(ExportConfig("whisper-tiny.en", "ct2"), busy)
    assert (busy / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_ct2_export_matches_pytorch_wer(tiny_adapter, tmp_path):
    """whisper-tiny.en + LoRA: faster-whisper on the ct2 export decodes like the PyTorch PEFT model."""
    out = export(ExportConfig("whisper-tiny.en", "ct2", str(tiny_adapter["dir"])), tmp_path / "ct2")
    files = {p.name for p in out.iterdir()}
    assert {"model.bin", "tokenizer.json", "preprocessor_config.json", INFO_FILE} <= files
    assert [p.name for p in tmp_path.iterdir()] == ["ct2"]  # scratch dirs removed
    assert json.loads((out / INFO_FILE).read_text())["format"] == "ct2"
    _check_parity(out, tiny_adapter["audios"], tiny_adapter["refs"], tiny_adapter["texts"])


def _check_parity(ct2_dir: Path, audios, refs, torch_texts) -> None:
    """With kidwhisper's front end (export.faster_whisper_model: audio zero-padded to 30 s): same WER.
    faster-whisper's own front end (log-mel padded with zeros instead of the audio, as openai-whisper's
    transcribe does) is reported, not asserted."""
    refs = [normalize(r) for r in refs]

    def wer(hyps):
        return corpus_wer(zip(refs, [normalize(h) for h in hyps], strict=True))

    padded, native = fw_texts(ct2_dir, audios, pad=True), fw_texts(ct2_dir, audios)
    print(f"\nnormalized WER on {len(refs)} kids clips: PyTorch {100 * wer(torch_texts):.2f} %, "
          f"ct2 (faster_whisper_model: audio padded to 30 s) {100 * wer(padded):.2f} %, ct2 (faster-whisper front end) "
          f"{100 * wer(native):.2f} %; identical texts "
          f"{sum(a == b for a, b in zip(padded, torch_texts, strict=True))}/{len(refs)}")
    assert abs(wer(padded) - wer(torch_texts)) <= 0.005
    assert "elephant" in normalize(native[0])


@pytest.mark.slow
def test_ct2_export_of_the_committed_adapter_matches_pytorch_on_50_clips(tmp_path):
    """The shipped whisper-base LoRA: faster-whisper on its ct2 export is within 0.5 WER points of PyTorch."""
    repo = Path(__file__).resolve().parents[1]
    adapter, kids = repo / "models" / "whisper-base-kids-lora", repo.parent / "shared" / "data" / "speechocean762-kids" / "test"
    if not kids.exists():
        pytest.skip(f"{kids} not found")
    texts = dict(line.split(" ", 1) for line in (kids / "text").read_text().splitlines()[:50])
    wavs = dict(line.split() for line in (kids / "wav.scp").read_text().splitlines())
    audios = [load_audio(kids / wavs[u]) for u in texts]
    net, processor = load_model("whisper-base", str(adapter), device="cpu", merge=True)
    torch_texts = [d.text for d in transcribe_arrays(net, processor, audios, batch_size=16, progress=False)]
    del net
    out = export(ExportConfig("whisper-base", "ct2", str(adapter)), tmp_path / "ct2")
    _check_parity(out, audios, list(texts.values()), torch_texts)


def test_padded_feature_extractor_gives_the_training_front_end(kids_test_clips):
    """faster-whisper's mel on audio padded to 30 s equals transformers' (kidwhisper's) front end; its own
    front end (mel padded with zeros) does not."""
    import numpy as np
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperFeatureExtractor

    from kidwhisper.models.builtin import builtin_path

    audio = load_audio(kids_test_clips[0][1])
    hf = WhisperFeatureExtractor.from_pretrained(builtin_path("whisper-tiny.en"))(
        audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    fw = FeatureExtractor()
    padded = PaddedAudioFeatureExtractor(fw)(audio)[:, :3000]
    native = np.pad(fw(audio), ((0, 0), (0, 3000)))[:, :3000]  # what faster-whisper's pad_or_trim does
    assert np.abs(padded - hf).max() < 1e-3
    assert np.abs(native - hf).max() > 0.1
    assert PaddedAudioFeatureExtractor(fw).sampling_rate == fw.sampling_rate  # the rest is delegated
    long = np.zeros(N_SAMPLES + SAMPLE_RATE, np.float32)  # 31 s -> two whole windows
    assert PaddedAudioFeatureExtractor(fw)(long).shape[-1] // 3000 == 2


@pytest.mark.parametrize("failure", ["bug", "full disk"])
def test_a_failed_export_keeps_the_earlier_one_and_leaves_no_temp_dir(tmp_path, monkeypatch, full_disk, failure):
    from kidwhisper.files import write_bytes
    from kidwhisper.models import convert

    def fake_merged(model, adapter, out, language="en"):  # what save_pretrained would write, without a model
        write_bytes(out / "model.safetensors", f"weights of {adapter}".encode())
        if adapter == "second":
            if failure == "bug":
                raise RuntimeError("a bug in the middle of the export")
            write_bytes(out / "config.json", b"{}")
        return {}

    monkeypatch.setattr(convert, "write_merged", fake_merged)
    out = tmp_path / "out"
    export(ExportConfig(model="whisper-tiny.en", adapter="first", format="merged"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert before["model.safetensors"] == b"weights of first"
    if failure == "full disk":
        full_disk(tmp_path, when=lambda p: p.name == "config.json")
    expected = RuntimeError if failure == "bug" else DiskFullError
    with pytest.raises(expected):
        export(ExportConfig(model="whisper-tiny.en", adapter="second", format="merged"), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier export, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dir left behind
