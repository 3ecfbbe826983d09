"""What the bad-input tables share (test_bad_inputs_cli.py, test_bad_inputs_hostile.py): expanding a case's argv
over the fixtures, a snapshot of what exists, and the one check of a refusal: exit 2, one line, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

from basinlab.cli import main


def expand_argv(argv: list[str], fx: dict, toy: list[str]) -> list[str]:
    """``{T}`` becomes the toy overrides (with the fixtures' cache); every ``{NAME}`` its fixture path."""
    out = []
    for a in argv:
        if a == "{T}":
            out += [*toy, f"data.cache_dir={fx['cache']}"]
            continue
        for k, v in fx.items():
            if k.startswith("{"):
                a = a.replace(k, v)
        out.append(a)
    return out


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of everything below ``roots`` (links not followed; caches left out)."""
    snap = {}
    for root in roots:
        for p in root.rglob("*"):
            if "cache" in p.relative_to(root).parts:
                continue
            st = p.lstat()
            snap[str(p)] = (st.st_size, st.st_mtime_ns if p.is_file() else 0)
    return snap


def assert_refused_in_one_line(argv, words, fixtures, toy, tmp_path, monkeypatch, capsys) -> None:
    """The CLI run on ``argv`` exits 2 with one ``basinlab: error:`` line holding every word of ``words``, no
    traceback, and writes nothing (neither in the working directory nor among the fixtures)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("BASINLAB_CACHE", fixtures["cache"])
    before = snapshot(tmp_path, fixtures["base"])
    try:
        rc = main(expand_argv(argv, fixtures, toy))
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("basinlab: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(tmp_path, fixtures["base"]) == before, "a refused command wrote something"
    assert not os.listdir(tmp_path)
