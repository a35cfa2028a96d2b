"""Built-in models: pinned checksums, atomic cache, corrupt cache rebuilt, clear errors."""

from __future__ import annotations

import shutil
import sys

import pytest

from kidwhisper.models import builtin
from kidwhisper.models.builtin import BuiltinModel, ModelError, builtin_ct2_dir, builtin_path
from kidwhisper.models.load import resolve_model_path

TINY_SHA = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KIDWHISPER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package 'kwfake' holding a copy of tiny.en split in two parts, registered as built-in 'fake'."""
    pkg = tmp_path / "site" / "kwfake"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    src = builtin_ct2_dir("whisper-tiny.en")
    data = (src / "model.bin").read_bytes()
    (pkg / "model.bin.part1").write_bytes(data[: len(data) // 2])
    (pkg / "model.bin.part2").write_bytes(data[len(data) // 2 :])
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(src / f, pkg / f)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("kwfake", None)
    model = BuiltinModel("fake", "test", ("kwfake",), ("kwfake:model.bin.part1", "kwfake:model.bin.part2"),
                         "kwfake:", TINY_SHA)
    monkeypatch.setitem(builtin.BUILTIN_MODELS, "fake", model)
    monkeypatch.setitem(builtin.PIP_NAMES, "kwfake", "kwfake")
    return pkg


def test_parts_are_joined_verified_and_cached(cache, fake_package):
    path = builtin_path("fake")
    assert path == cache / "hf" / "fake"
    assert (path / builtin.CACHE_MARKER).exists() and (path / "model.safetensors").exists()
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert builtin_path("fake") == path  # reused, not rebuilt
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_weights_give_clear_error_and_no_cache_entry(cache, fake_package, damage):
    part = fake_package / "model.bin.part2"
    data = bytearray(part.read_bytes())
    if damage == "flip":
        data[len(data) // 3] ^= 0xFF
    else:
        data = data[:-1000]
    part.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256 .* expected 1a5afae0.*pip install --force-reinstall kwfake"):
        builtin_path("fake")
    assert not (cache / "hf").exists() or not any((cache / "hf").iterdir())


def test_truncated_ct2_directory_gives_clear_error_and_no_cache_entry(cache, tmp_path):
    d = tmp_path / "my-ct2-model"
    d.mkdir()
    src = builtin_ct2_dir("whisper-tiny.en")
    data = (src / "model.bin").read_bytes()
    (d / "model.bin").write_bytes(data[: len(data) - 12345])
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(src / f, d / f)
    with pytest.raises(ModelError, match="not a valid CTranslate2 Whisper model.*truncated"):
        resolve_model_path(str(d))
    assert not any((cache / "hf").iterdir())  # neither the entry nor a temp dir is left behind


@pytest.mark.parametrize("damage", ["truncate", "marker"])
def test_corrupt_cache_is_detected_and_rebuilt(cache, fake_package, damage):
    path = builtin_path("fake")
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(good[: len(good) // 2])
    else:
        (path / builtin.CACHE_MARKER).unlink()  # a conversion interrupted before it finished
    assert builtin_path("fake") == path
    assert weights.read_bytes() == good
    assert builtin._cache_is_valid(path, TINY_SHA)


def test_unknown_model_names_the_builtins():
    with pytest.raises(ModelError, match=r"whisper-base.*whisper-tiny\.en"):
        resolve_model_path("./no-such-model-dir")
    with pytest.raises(ModelError, match="available models"):
        builtin_path("whisper-huge")


def test_weights_are_hashed_once_per_process_and_again_when_changed(cache, fake_package, monkeypatch):
    path = builtin_path("fake")
    calls = []
    real = builtin.sha256_file
    monkeypatch.setattr(builtin, "sha256_file", lambda p: calls.append(p) or real(p))
    builtin._VERIFIED.clear()
    for _ in range(3):
        assert builtin_path("fake") == path
    assert len(calls) == 1
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(bytes(len(good)))  # same size, new content (and mtime): checked again, rebuilt
    assert builtin_path("fake") == path and weights.read_bytes() == good
    assert len(calls) >= 2
