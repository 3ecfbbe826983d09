"""Every command block of README.md and docs/*.md runs, at toy size (issue 10, item 3): documentation cannot rot.

The rules (also in docs/ARCHITECTURE.md, "Documentation is tested"):

- Blocks fenced as ```bash (or ```sh / ```shell) run with ``bash -e``, block after block in document order, in one
  scratch directory per document that links every top-level entry of the repository except ``runs/`` (so
  ``src/...`` and ``bench/...`` paths work and ``runs/`` stays out of the repository). ```python blocks run
  with the same interpreter, in the same directory. Other blocks (output, YAML, tables) are text.
- ``BASINLAB_DOCS_TOY=1`` is set: ``basinlab.config.apply_docs_toy`` shrinks every config (and the probe command's
  flags) to seconds on a CPU; ``BASINLAB_CACHE`` points to a scratch cache shared by the documents.
- ``make demo`` runs its Makefile recipe (``basinlab demo --out runs/demo``, with basinlab from this interpreter).
  ``make test``, ``make install``, ``make lint``, ``make bench`` and ``make clean`` are skipped: they build a
  virtual environment or run this suite itself.
- Cluster variables are given stand-in values: ``SLURM_ARRAY_TASK_ID=0``, ``SCRATCH`` = a scratch directory.
- A block preceded by the HTML comment ``<!-- docs-test: skip (reason) -->`` is not run; the reason is reported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell"}
SKIP_MAKE = {"test", "install", "lint", "bench", "clean"}
_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b(.*?)-->")


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    text: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.doc.name}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc`` with their language and skip marker."""
    out, lang, start, body, skip, pending = [], None, 0, [], None, None
    for i, line in enumerate(doc.read_text().splitlines(), 1):
        m = _FENCE.match(line.strip())
        if lang is None:
            if m:
                lang, start, body, skip, pending = m.group(1) or "text", i, [], pending, None
            elif _SKIP.search(line):
                pending = _SKIP.search(line).group(1).strip(" ()") or "no reason given"
            elif line.strip():
                pending = None
        elif m and not m.group(1):
            out.append(Block(doc, start, lang, "\n".join(body) + "\n", skip))
            lang = None
        else:
            body.append(line)
    return out


def shell_script(text: str) -> str:
    """The block as run: ``make demo`` replaced by its recipe, the skipped ``make`` targets dropped."""
    lines = []
    for line in text.splitlines():
        m = re.match(r"^\s*make\s+(\w+)\b(.*)$", line)
        if m and m.group(1) in SKIP_MAKE:
            continue
        if m and m.group(1) == "demo":
            line = "basinlab demo --out runs/demo"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _scratch(tmp: Path) -> Path:
    work = tmp / "work"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"runs", ".git"}:
            (work / entry.name).symlink_to(entry)
    return work


def _env(cache: Path, scratch: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return dict(
        os.environ, BASINLAB_DOCS_TOY="1", BASINLAB_CACHE=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg", PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), SLURM_ARRAY_TASK_ID="0",
        SCRATCH=str(scratch), PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )


def _run(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    if block.lang == "python":
        cmd = [sys.executable, "-c", block.text]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", shell_script(block.text)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_blocks_are_found_and_skips_have_reasons():
    found = [b for d in DOCS for b in blocks(d)]
    assert any(b.lang == "bash" for b in found)
    assert all(b.skip != "no reason given" for b in found), [b.name for b in found if b.skip == "no reason given"]
    assert shell_script("make test  # x\nmake demo   # y\nbasinlab report runs/demo\n") == (
        "basinlab demo --out runs/demo\nbasinlab report runs/demo\n")


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_command_block_runs(doc, tmp_path_factory):
    runnable = [b for b in blocks(doc) if (b.lang in SHELL or b.lang == "python") and b.skip is None]
    if not runnable:
        pytest.skip(f"{doc.name} has no command blocks")
    tmp = tmp_path_factory.mktemp(doc.stem)
    work = _scratch(tmp)
    env = _env(tmp_path_factory.getbasetemp() / "basinlab-cache", tmp / "scratch")
    for block in runnable:
        res = _run(block, work, env)
        tail = f"{res.stdout[-1500:]}\n{res.stderr[-3000:]}"
        assert res.returncode == 0, f"{block.name} failed ({res.returncode}):\n{tail}"
    assert not (ROOT / "runs").exists() or not any(
        p.stat().st_mtime > tmp.stat().st_mtime for p in (ROOT / "runs").rglob("*")
    ), "a documented command wrote into the repository's runs/"
