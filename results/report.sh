#!/usr/bin/env bash
# Build results/report (report.md, report.html, comparison.csv, plots) from the committed result files
# only, and copy its main table into README.md between the results markers. The report holds the baselines,
# the strategies of results/tuned, the two ablation rows scored on test (lora-isolated and the recommended
# lora-isolated-specaug, committed as models/whisper-base-kids) and the ablation table as its own section.
set -euo pipefail
cd "$(dirname "$0")/.."
python results/ablation.py
kidwhisper compare results/baseline results/tuned results/ablation/lora-isolated results/ablation/lora-isolated-specaug \
  --sections results/ablation/ablation.md --out results/report -q
python - <<'PY'
import re
from pathlib import Path

report = Path("results/report/report.md").read_text()
# The report's first section (its main table and plot), with links made relative to the repo root.
section = report.split("## Results", 1)[1].split("\n## ", 1)[0].strip()
section = re.sub(r"\]\((?!https?:)([^)]+\.png)\)", r"](results/report/\1)", section)
readme = Path("README.md").read_text()
start = readme.index("<!-- results:start")
start = readme.index("-->", start) + 3
end = readme.index("<!-- results:end -->")
Path("README.md").write_text(readme[:start] + "\n" + section + "\n\nFull report: [results/report/report.md]"
                             "(results/report/report.md).\n" + readme[end:])
PY
