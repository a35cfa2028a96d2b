"""Where the tests find the real children's speech corpus: ``../shared/data`` beside the repository, or
the directory in ``KIDWHISPER_SHARED_DATA``. Tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KIDWHISPER_SHARED_DATA") or REPO.parent / "shared" / "data")
KIDS = SHARED_DATA / "speechocean762-kids"
KIDS_TRAIN, KIDS_DEV, KIDS_TEST = KIDS / "train", KIDS / "dev", KIDS / "test"
ADULTS_TEST = SHARED_DATA / "speechocean762-adults" / "test"
