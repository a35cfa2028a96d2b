"""CTranslate2 -> Hugging Face conversion: token-for-token equal to CTranslate2 on real child clips."""

from __future__ import annotations

import json
import struct

import ctranslate2
import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from kidwhisper.audio import load_audio
from kidwhisper.decode_ct2 import ct2_max_length
from kidwhisper.models.builtin import builtin_ct2_dir, builtin_path
from kidwhisper.models.ct2 import N_TIMESTAMPS, CT2FormatError, read_model_bin

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_converted_model_generates_like_ctranslate2(name, kids_test_clips):
    hf_dir, ct_dir = builtin_path(name), builtin_ct2_dir(name)
    processor = WhisperProcessor.from_pretrained(hf_dir)
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    audios = [load_audio(path) for _, path, _ in kids_test_clips[:6]]
    feats = processor.feature_extractor(audios, sampling_rate=16000, return_tensors="np").input_features
    multilingual = model.generation_config.is_multilingual
    prompt = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"] if multilingual \
        else ["<|startoftranscript|>", "<|notimestamps|>"]
    ct = ctranslate2.models.Whisper(str(ct_dir), device="cpu", compute_type="float32")
    ct_out = ct.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)),
                         [prompt] * len(audios), beam_size=1, max_length=ct2_max_length(124, len(prompt)))
    kwargs = {"language": "en", "task": "transcribe"} if multilingual else {}
    with torch.inference_mode():
        hf_out = model.generate(torch.from_numpy(feats), do_sample=False, num_beams=1, return_timestamps=False,
                                max_new_tokens=124, return_dict_in_generate=True, **kwargs).sequences
    eot = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    texts = []
    for i in range(len(audios)):
        hf_tokens = [t for t in hf_out[i].tolist() if t < eot]
        assert hf_tokens == ct_out[i].sequences_ids[0], f"clip {i} differs"
        texts.append(processor.tokenizer.decode(hf_tokens).strip())
    assert sum(bool(t) for t in texts) >= 5  # real speech -> real words
    assert "elephant" in texts[0].lower()  # "MARK IS GOING TO SEE ELEPHANT"


@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_converted_directory_is_complete(name):
    d = builtin_path(name)
    gen = json.loads((d / "generation_config.json").read_text())
    cfg = json.loads((d / "config.json").read_text())
    processor = WhisperProcessor.from_pretrained(d)
    tok = processor.tokenizer
    assert len(tok) == cfg["vocab_size"]
    assert tok.convert_tokens_to_ids("<|0.00|>") == cfg["vocab_size"] - N_TIMESTAMPS
    assert tok.convert_tokens_to_ids("<|30.00|>") == cfg["vocab_size"] - 1
    assert gen["no_timestamps_token_id"] == tok.convert_tokens_to_ids("<|notimestamps|>")
    if name == "whisper-base":
        assert gen["is_multilingual"] and gen["lang_to_id"]["<|en|>"] == 50259
        assert gen["task_to_id"] == {"transcribe": 50359, "translate": 50358}
        assert gen["language"] == "<|en|>"  # a model never guesses the language unless asked to
    else:
        assert not gen["is_multilingual"]
    assert (d / "model.safetensors").exists() and not list(d.glob("*.bin"))


def _tiny_model_bin(tmp_path, corrupt=None):
    src = builtin_ct2_dir("whisper-tiny.en") / "model.bin"
    data = bytearray(src.read_bytes())
    if corrupt == "truncate":
        data = data[: len(data) // 2]
    elif corrupt == "name":
        data[12:14] = struct.pack("<H", 60000)  # first variable's name length runs past the end
    p = tmp_path / "model.bin"
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize("corrupt", ["truncate", "name"])
def test_reader_rejects_corrupt_model_bin(tmp_path, corrupt):
    with pytest.raises(CT2FormatError, match="model.bin"):
        read_model_bin(_tiny_model_bin(tmp_path, corrupt))


def test_reader_reads_scalars_and_aliases(tmp_path):
    m = read_model_bin(_tiny_model_bin(tmp_path))
    assert m.spec == "WhisperSpec"
    assert int(m.get("encoder/num_heads")) == 6
    assert m.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    assert m.get("decoder/embeddings/weight").shape == (51864, 384)


def test_quantized_models_are_rejected_with_the_fix(tmp_path):
    from kidwhisper.models.ct2 import hf_state_dict

    m = read_model_bin(_tiny_model_bin(tmp_path))
    m.variables["encoder/layer_0/self_attention/linear_0/weight_scale"] = np.ones(1152, np.float32)
    with pytest.raises(CT2FormatError, match="quantized CTranslate2 model.*without --quantization"):
        hf_state_dict(m)
