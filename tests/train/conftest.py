"""Fixtures for the training tests: a tiny random Whisper with the real processor, real kids' clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from shared_data import KIDS


def _write_manifest(src: Path, out: Path, n: int) -> Path:
    texts = dict(line.split(maxsplit=1) for line in (src / "text").read_text().splitlines() if line.strip())
    wavs = dict(line.split(maxsplit=1) for line in (src / "wav.scp").read_text().splitlines() if line.strip())
    lines = []
    for utt in sorted(texts)[:n]:
        path = (src / wavs[utt].strip()).resolve()
        lines.append(json.dumps({"id": utt, "audio": str(path), "duration": sf.info(str(path)).duration,
                                 "text": texts[utt].strip()}))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def kids_manifests(tmp_path_factory) -> tuple[Path, Path]:
    """(train manifest of 12 real clips, dev manifest of 3 real clips), absolute audio paths."""
    if not (KIDS / "train" / "text").is_file():
        pytest.skip(f"{KIDS} not found (the shared corpus lives beside the repository)")
    root = tmp_path_factory.mktemp("manifests")
    return (_write_manifest(KIDS / "train", root / "train" / "manifest.jsonl", 12),
            _write_manifest(KIDS / "dev", root / "dev" / "manifest.jsonl", 3))


@pytest.fixture
def copy_dir():
    def copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst

    return copy
