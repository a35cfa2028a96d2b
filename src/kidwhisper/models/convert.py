"""Model conversion between formats, used by ``kidwhisper export`` and by the CTranslate2 decoder.

:func:`write_model_dir` writes a model (+ LoRA adapter) as a merged Hugging Face directory or a
CTranslate2 directory, atomically (a temporary directory next to the target, renamed into place when
complete, with ``export_info.json``); :func:`cached_ct2_dir` gives a CTranslate2 directory for any model
(+ adapter), converting it once into the kidwhisper cache. The CTranslate2 -> Hugging Face direction (the
built-in models) is :mod:`kidwhisper.models.ct2` and :mod:`kidwhisper.models.builtin`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import shutil
from pathlib import Path

from kidwhisper.config import package_versions
from kidwhisper.files import replacing_dir, temp_dir, write_bytes
from kidwhisper.models.builtin import (
    BUILTIN_MODELS,
    CACHE_MARKER,
    ModelError,
    builtin_ct2_dir,
    builtin_path,
    cache_dir,
)
from kidwhisper.models.load import is_multilingual, load_model

log = logging.getLogger(__name__)

INFO_FILE = "export_info.json"
# ctranslate2 copies these next to model.bin; faster-whisper reads them (tokenizer, mel settings).
CT2_COPY_FILES = ["tokenizer.json", "preprocessor_config.json"]


def write_model_dir(model: str, adapter: str | None, fmt: str, out: Path, quantization: str | None = None,
                    language: str = "en") -> Path:
    """Write ``model`` (+ ``adapter``) as ``fmt`` ("merged" or "ct2") to ``out``, replacing it atomically.

    The caller has checked the arguments and that ``out`` may be replaced. A failure (a full disk is a
    DiskFullError naming ``out``) leaves ``out`` as it was and no temporary directory behind.
    """
    with replacing_dir(out) as tmp:
        info = {"source_model": model, "adapter": str(adapter) if adapter else None, "format": fmt,
                "quantization": quantization}
        if fmt == "merged":
            info.update(write_merged(model, adapter, tmp, language))
        elif adapter is None and quantization is None and model in BUILTIN_MODELS:
            info.update(copy_builtin_ct2(model, tmp))
        else:
            info.update(write_ct2(model, adapter, tmp, quantization, language))
        info["versions"] = package_versions()
        write_bytes(tmp / INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())
    return out


def cached_ct2_dir(model: str, adapter: str | None) -> Path:
    """A CTranslate2 directory for model (+ adapter): the built-in's own, a given one, or a cached conversion
    (``cache_dir()/ct2-export/<hash of the model and adapter weights>``)."""
    if adapter is None and model in BUILTIN_MODELS:
        return builtin_ct2_dir(model)
    if adapter is None and (Path(model) / "model.bin").exists():
        return Path(model)
    h = hashlib.sha256(str(Path(model).resolve() if Path(model).exists() else model).encode())
    if adapter:
        weights = Path(adapter) / "adapter_model.safetensors"
        h.update(weights.read_bytes() if weights.exists() else str(adapter).encode())
    target = cache_dir() / "ct2-export" / h.hexdigest()[:16]
    if not (target / "model.bin").exists():
        write_model_dir(model, adapter, "ct2", target)
    return target


def write_merged(model: str, adapter: str | None, out: Path, language: str = "en") -> dict:
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


def write_ct2(model: str, adapter: str | None, out: Path, quantization: str | None, language: str) -> dict:
    """Merge into a scratch HF directory, then convert it with ctranslate2 into ``out``."""
    import ctranslate2

    scratch = temp_dir(".merged.", out.parent)
    try:
        info = write_merged(model, adapter, scratch, language)
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


def copy_builtin_ct2(model: str, out: Path) -> dict:
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


def _adapter_meta(adapter: str | None) -> dict | None:
    """The adapter's kidwhisper_adapter.json (base model, strategy, step, dev WER) if it has one."""
    if not adapter:
        return None
    meta = Path(adapter) / "kidwhisper_adapter.json"
    return json.loads(meta.read_text()) if meta.exists() else None
