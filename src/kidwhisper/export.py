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
writing is a DiskFullError naming ``OUT``, and the temporary directory is removed. The conversion itself
is :mod:`kidwhisper.models.convert` (shared with the CTranslate2 decoder); this module checks the request
and the target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kidwhisper.files import check_output_dir
from kidwhisper.models.convert import INFO_FILE, write_model_dir

log = logging.getLogger(__name__)

ExportFormat = Literal["merged", "ct2"]
EXPORT_FORMATS: tuple[str, ...] = ("merged", "ct2")
# What ctranslate2's converter accepts for --quantization (weights type of model.bin).
QUANTIZATIONS: tuple[str, ...] = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                                  "float16", "bfloat16", "float32")


class ExportError(ValueError):
    """An export request or target that cannot work; the message says what to do."""


@dataclass
class ExportConfig:
    """Options of ``kidwhisper export`` (each field is the flag of the same name)."""

    model: str  # the base model: built-in name, HF/CTranslate2 directory or Hub id
    format: ExportFormat  # merged = HF weights with the adapter folded in; ct2 = CTranslate2 for faster-whisper
    adapter: str | None = None  # LoRA adapter directory (RUN_DIR/adapter) to fold in
    quantization: str | None = None  # ct2 only: int8, float16, ... (None keeps float32)
    language: str = "en"  # the default language saved in a merged multilingual model (the one it was tuned on)

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise ExportError(f"--format {self.format}: choose one of {', '.join(EXPORT_FORMATS)}")
        if self.quantization is not None and self.format != "ct2":
            raise ExportError(f"--quantization {self.quantization} applies to --format ct2 only; a merged "
                              f"model is saved in float32")
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ExportError(f"--quantization {self.quantization}: choose one of {', '.join(QUANTIZATIONS)}")


def export(config: ExportConfig, out: str | Path) -> Path:
    """Export ``config.model`` (+ LoRA ``config.adapter``) to ``out`` as ``config.format``; returns ``out``."""
    out = Path(out)
    _check_target(out)
    c = config
    write_model_dir(c.model, c.adapter, c.format, out, c.quantization, c.language)
    log.info("exported %s%s as %s to %s", c.model, f" + {c.adapter}" if c.adapter else "", c.format, out)
    return out


def _check_target(out: Path) -> None:
    check_output_dir(out, "OUT")
    if out.is_dir() and any(out.iterdir()) and not (out / INFO_FILE).exists():
        raise ExportError(f"{out} exists and is not an earlier kidwhisper export (no {INFO_FILE}); "
                              f"choose a new OUT directory or remove it")


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
