"""``kidwhisper export``: a tuned model as a standalone merged Hugging Face model or a CTranslate2 model.

``merged``
    The base model with the LoRA adapter folded into its weights (``merge_and_unload``), saved as
    safetensors with its processor (``tokenizer.json``, ``preprocessor_config.json``) and a generation
    config that decodes the way the model was tuned: for a multilingual model ``language="en"`` and
    ``task="transcribe"`` are the saved defaults, so ``transformers.pipeline("automatic-speech-recognition",
    model=OUT)`` transcribes English with no ``generate_kwargs`` (it would otherwise detect the language per
    clip). Loads with ``WhisperForConditionalGeneration.from_pretrained(OUT)`` and needs no PEFT.
``ct2``
    A CTranslate2 directory for faster-whisper (``WhisperModel(OUT)``): the merged model converted by
    ``ctranslate2.converters.TransformersConverter`` with ``quantization`` (``int8``, ``float16``, ...;
    None keeps float32). A built-in model without an adapter and without quantization is a copy of the
    faster-whisper weights it ships as. faster-whisper takes the language per call
    (``model.transcribe(audio, language="en")``); CTranslate2 models carry no default language.
    Fed the same log-mel input (audio zero-padded to 30 s, as :mod:`kidwhisper.decode` does), the float32
    export decodes exactly like the PyTorch model (``tests/test_export.py`` checks identical greedy
    transcripts on kids-test clips). faster-whisper's own front end instead pads the *log-mel* of a short clip
    with zeros (as openai-whisper's ``transcribe`` does), which changes the text of many short clips
    (docs/benchmarks.md), and a tuned model more than a stock one (it only ever saw padded audio). :func:`faster_whisper_model`
    loads an export into faster-whisper with kidwhisper's front end (audio zero-padded to whole 30 s
    windows), so ``transcribe`` reproduces ``kidwhisper evaluate``; ``tests/test_export.py`` checks it.
    A quantized export (``int8`` ...) is for faster-whisper; to evaluate with kidwhisper use the merged
    export or a float32 ct2 export as ``--model``.

Every export is written to a temporary directory next to ``OUT`` and renamed into place when complete,
with ``export_info.json`` (source model, adapter, format, quantization, generation defaults, versions).
An existing ``OUT`` is replaced only if it is empty or an earlier export (has ``export_info.json``);
otherwise ExportError (a ValueError) says so and nothing is touched. ``OUT`` is checked before any model
is loaded (OutputError for a file, a path under a file or an unwritable directory); a full disk while
writing is a DiskFullError naming ``OUT``, and the temporary directory is removed.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from kidwhisper.config import package_versions
from kidwhisper.decode import is_multilingual
from kidwhisper.files import check_output_dir, temp_dir, writing
from kidwhisper.models.builtin import (
    BUILTIN_MODELS,
    CACHE_MARKER,
    ModelError,
    builtin_ct2_dir,
    builtin_path,
)
from kidwhisper.models.load import load_model

log = logging.getLogger(__name__)

ExportFormat = Literal["merged", "ct2"]
EXPORT_FORMATS: tuple[str, ...] = ("merged", "ct2")
# What ctranslate2's converter accepts for --quantization (weights type of model.bin).
QUANTIZATIONS: tuple[str, ...] = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                                  "float16", "bfloat16", "float32")
INFO_FILE = "export_info.json"
# ctranslate2 copies these next to model.bin; faster-whisper reads them (tokenizer, mel settings).
CT2_COPY_FILES = ["tokenizer.json", "preprocessor_config.json"]


class ExportError(ValueError):
    """An export target that cannot be written; the message says what to do."""


def export(model: str, adapter: str | None, fmt: ExportFormat, out: str | Path,
           quantization: str | None = None, language: str = "en") -> Path:
    """Export ``model`` (+ LoRA ``adapter``) to ``out`` as ``fmt`` ("merged" or "ct2"); returns ``out``.

    ``quantization`` applies to ``ct2`` only. ``language`` is the default saved for multilingual models
    (the language the model was tuned on; English).
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format {fmt}: choose one of {', '.join(EXPORT_FORMATS)}")
    if quantization is not None and fmt != "ct2":
        raise ExportError(f"--quantization {quantization} applies to --format ct2 only; a merged model is "
                          f"saved in float32")
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ExportError(f"--quantization {quantization}: choose one of {', '.join(QUANTIZATIONS)}")
    out = Path(out)
    _check_target(out)
    with writing(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(f".{out.name}.", out.parent)  # renamed to OUT: the mode mkdir would give
    with writing(out, cleanup=tmp):  # any failure removes tmp; a full disk is a DiskFullError naming OUT
        info = {"source_model": model, "adapter": str(adapter) if adapter else None, "format": fmt,
                "quantization": quantization}
        if fmt == "merged":
            info.update(_write_merged(model, adapter, tmp, language))
        elif adapter is None and quantization is None and model in BUILTIN_MODELS:
            info.update(_copy_builtin_ct2(model, tmp))
        else:
            info.update(_write_ct2(model, adapter, tmp, quantization, language))
        info["versions"] = package_versions()
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        if out.exists():
            os.replace(out, old)  # an earlier export: out of the way first, deleted once the new one is in
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    log.info("exported %s%s as %s to %s", model, f" + {adapter}" if adapter else "", fmt, out)
    return out


def _check_target(out: Path) -> None:
    check_output_dir(out, "OUT")
    if out.is_dir() and any(out.iterdir()) and not (out / INFO_FILE).exists():
        raise ExportError(f"{out} exists and is not an earlier kidwhisper export (no {INFO_FILE}); "
                              f"choose a new OUT directory or remove it")


def _write_merged(model: str, adapter: str | None, out: Path, language: str = "en") -> dict:
    """Merged float32 HF model + processor + generation config in ``out`` (which exists)."""
    net, processor = load_model(model, adapter, device="cpu", merge=True)
    gen = net.generation_config
    if is_multilingual(net):
        known = getattr(gen, "lang_to_id", None) or {}
        if known and f"<|{language}|>" not in known:
            raise ModelError(f"language {language!r} is not one {model} knows")
        gen.language, gen.task = language, "transcribe"
    gen.return_timestamps = False
    for cfg in (gen, net.config):  # Hub configs carry forced_decoder_ids; language/task supersede them
        if getattr(cfg, "forced_decoder_ids", None) is not None:
            cfg.forced_decoder_ids = None
    net.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    # transformers 5 folds the feature extractor into processor_config.json; ctranslate2, faster-whisper
    # and older transformers read preprocessor_config.json.
    processor.feature_extractor.save_pretrained(out)
    missing = [f for f in ("model.safetensors", "config.json", "generation_config.json", *CT2_COPY_FILES)
               if not (out / f).exists()]
    if missing:
        raise ModelError(f"merged export in {out} lacks {', '.join(missing)}; the installed transformers "
                         f"({md.version('transformers')}) saves differently from what kidwhisper expects")
    return {"multilingual": is_multilingual(net),
            "generation": {"language": getattr(gen, "language", None), "task": getattr(gen, "task", None),
                           "timestamps": False},
            "parameters": sum(p.numel() for p in net.parameters()),
            "adapter_meta": _adapter_meta(adapter)}


def _write_ct2(model: str, adapter: str | None, out: Path, quantization: str | None, language: str) -> dict:
    """Merge into a scratch HF directory, then convert it with ctranslate2 into ``out``."""
    import ctranslate2

    scratch = Path(tempfile.mkdtemp(prefix=".merged.", dir=out.parent))
    try:
        info = _write_merged(model, adapter, scratch, language)
        log.info("converting the merged model to CTranslate2 (quantization=%s)", quantization or "none")
        converter = ctranslate2.converters.TransformersConverter(str(scratch), copy_files=CT2_COPY_FILES)
        try:
            converter.convert(str(out), quantization=quantization, force=True)
        except (ValueError, KeyError, RuntimeError) as e:
            raise ModelError(f"ctranslate2 {ctranslate2.__version__} could not convert {model}: {e}") from e
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info["generation"] = {"language": "passed per call (faster-whisper transcribe(language=...))",
                          "task": "transcribe", "timestamps": False}
    return info


def _copy_builtin_ct2(model: str, out: Path) -> dict:
    """A built-in model with no adapter is already a faster-whisper model: copy it (+ mel settings)."""
    from transformers import WhisperFeatureExtractor

    src = builtin_ct2_dir(model)
    for f in src.iterdir():
        wanted = f.name == "model.bin" or f.suffix in (".json", ".txt")
        if f.is_file() and wanted and f.name != CACHE_MARKER:
            shutil.copy2(f, out / f.name)
    WhisperFeatureExtractor.from_pretrained(builtin_path(model)).save_pretrained(out)
    multilingual = bool(json.loads((src / "config.json").read_text()).get("lang_ids"))
    return {"copied_from": str(src), "multilingual": multilingual,
            "generation": {"language": "passed per call (faster-whisper transcribe(language=...))",
                           "task": "transcribe", "timestamps": False}}


class PaddedAudioFeatureExtractor:
    """faster-whisper's ``FeatureExtractor`` fed audio zero-padded to a whole number of 30 s windows, so
    each window's log-mel is computed on real silence, as in training and ``kidwhisper evaluate``
    (faster-whisper pads the log-mel with zeros instead). Everything else is delegated unchanged."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, waveform, *args, **kwargs):
        import numpy as np

        from kidwhisper.audio import N_SAMPLES

        short = -len(waveform) % N_SAMPLES
        if short:
            waveform = np.pad(waveform, (0, short))
        return self.inner(waveform, *args, **kwargs)


def faster_whisper_model(path: str | Path, **kwargs):
    """``faster_whisper.WhisperModel(path, **kwargs)`` with kidwhisper's front end (see the module
    docstring): transcripts then match ``kidwhisper evaluate`` on the same model. Pass
    ``language="en"`` to ``transcribe`` (CTranslate2 models carry no default language)."""
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(path), **kwargs)
    fw.feature_extractor = PaddedAudioFeatureExtractor(fw.feature_extractor)
    return fw


def _adapter_meta(adapter: str | None) -> dict | None:
    """The adapter's kidwhisper_adapter.json (base model, strategy, step, dev WER) if it has one."""
    if not adapter:
        return None
    meta = Path(adapter) / "kidwhisper_adapter.json"
    return json.loads(meta.read_text()) if meta.exists() else None


