"""Drop the corpus transcripts (``ref``, ``ref_norm``) from committed utterances.jsonl files.

The references are the corpus's own text (../shared/data), which must not be copied into this
repository; ids, hypotheses, error counts and flags stay, and ``summary.json`` is unaffected.
Usage: python results/strip_references.py [RESULTS_DIR]
"""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
for path in sorted(root.rglob("utterances.jsonl")):
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for d in lines:
        d.pop("ref", None)
        d.pop("ref_norm", None)
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in lines), encoding="utf-8")
    print(f"{path}: {len(lines)} lines without references")
