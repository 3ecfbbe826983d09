"""docs/RELIABILITY.md's counts are the ones scripts/reliability_counts.py computes from the suite now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reliability_counts_are_current():
    doc = (ROOT / "docs" / "RELIABILITY.md").read_text()
    shown = doc.split("<!-- counts:start -->\n", 1)[1].split("<!-- counts:end -->", 1)[0].strip()
    res = subprocess.run([sys.executable, "scripts/reliability_counts.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert shown == res.stdout.strip(), "rerun `python scripts/reliability_counts.py` and paste its table"
