"""Config plumbing shared by every stage: dataclass <-> YAML/JSON, flags, saving next to outputs.

Each stage documents its own config dataclass (``PrepareConfig``, ``EvalConfig``, ``TrainConfig`` ...);
this module only turns files and flags into those dataclasses and writes the resolved config beside
every output, so a result always travels with what produced it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

PRECISIONS = ("float32", "bf16", "fp16", "auto")  # what a model's matrix products run in when decoding (evaluate --precision, train --eval-precision)

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or flag that cannot be used; the message names the key and the fix."""


class OutputError(Exception):
    """An output path that cannot be written (a file where a directory belongs, no permission); the message
    names the path and the fix."""


class DiskFullError(OutputError):
    """The disk (or quota) filled up while writing; the message names the file and what was kept."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """YAML or JSON file -> dict."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML/JSON ({e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of option: value")
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with the list of known ones.

    Nested dataclass fields are built recursively from nested dicts.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; known options are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        t = hints.get(k)
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = from_dict(t, v, f"{where}.{k}")
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that decide a result (recorded beside every output)."""
    import importlib.metadata as md
    import platform

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("kidwhisper", "torch", "transformers", "peft", "accelerate", "jiwer", "ctranslate2", "faster-whisper"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def machine_info() -> dict[str, Any]:
    """The hardware a result was measured on (recorded beside timings): CPU model, logical cores, whether the
    CPU runs bf16 natively (AVX512-BF16 / AMX), and the CUDA GPU if there is one."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    from kidwhisper.models.load import native_bf16

    return {"cpu": cpu, "cpu_count": os.cpu_count(), "cpu_native_bf16": native_bf16(torch.device("cpu")),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def save_config(obj: Any, path: str | Path) -> Path:
    """Write a resolved config (dataclass) as YAML (or JSON by suffix) atomically."""
    from kidwhisper.files import atomic_write_text

    p = Path(path)
    d = to_dict(obj)
    text = json.dumps(d, indent=2) + "\n" if p.suffix == ".json" else yaml.safe_dump(d, sort_keys=False)
    atomic_write_text(p, text)
    return p
