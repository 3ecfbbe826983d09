"""Count the reliability suite's cases for docs/RELIABILITY.md: bad inputs (tests/reliability/test_bad_inputs_*.py),
outputs that say what ran (test_says_*.py) and faults (every other test in tests/reliability/), per file, from
pytest's own collection.

    python scripts/reliability_counts.py          # counts of cases (collection only, seconds)
    python scripts/reliability_counts.py --run    # also runs them and counts the ones that pass

Prints the markdown table that docs/RELIABILITY.md holds between its ``counts`` markers (a test compares them).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pytest(*args: str) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability", *args]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return res.stdout.splitlines()


def counts(run: bool = False) -> dict[str, tuple[int, int | None]]:
    """file -> (cases, passed or None)."""
    ids = [line for line in _pytest("--collect-only") if "::" in line]
    cases = Counter(line.split("::")[0] for line in ids)
    passed: Counter[str] = Counter()
    if run:
        for line in _pytest("-rA"):
            m = re.match(r"PASSED (tests/reliability/\S+?)::", line)
            if m:
                passed[m.group(1)] += 1
    return {f: (n, passed[f] if run else None) for f, n in sorted(cases.items())}


#: the kinds of reliability tests, by file name: refusals, faults survived, outputs that say what ran
KINDS = ("bad inputs", "faults", "says what ran")


def _kind(name: str) -> str:
    if name.startswith("test_bad_inputs"):
        return "bad inputs"
    return "says what ran" if name.startswith("test_says") else "faults"


def table(found: dict[str, tuple[int, int | None]]) -> str:
    rows = ["| kind | test file | cases |", "| --- | --- | --- |"]
    total = Counter()
    for f, (n, ok) in found.items():
        kind = _kind(Path(f).name)
        total[kind] += n
        rows.append(f"| {kind} | `{f}` | {n}{'' if ok is None else f' ({ok} passed)'} |")
    shown = ", ".join(f"{k}: {total[k]}" for k in KINDS if total[k])
    rows.append(f"| **total** | {shown} | {sum(total.values())} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the cases too and count the passes")
    print(table(counts(parser.parse_args().run)), end="")


if __name__ == "__main__":
    main()
