"""What ``basinlab audit`` checks of its input and output before it scores anything (issue 18, findings 5 and 6).

- text files: a directory, fifo, device or dangling link is named as such; a UTF-8 byte-order mark is dropped; a
  NUL byte is refused (its line is named); a file above :data:`MAX_FILE_BYTES`, or more than :data:`MAX_TEXTS`
  texts to score in all, is refused with the limit and how to split the file (memory grows with the texts);
- ``--out``: a file, ``/dev/null``, a link loop or a read-only place is refused before the scoring, and the
  ``auc.json`` / ``roc.png`` of an earlier audit that this one does not write are removed;
- warnings on stderr: an AUC from fewer than :data:`FEW` members or non-members, texts found among both the members
  and the non-members, and texts longer than the model's ``L - 2`` tokens (cut to fit: how many).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from basinlab.errors import BasinlabError
from basinlab.io import check_output_dir, input_file_error

logger = logging.getLogger(__name__)

#: the largest text file audit reads, and the most texts it scores in one run (members + non-members + texts)
MAX_FILE_BYTES = 64 * 2**20
MAX_TEXTS = 100_000
#: fewer members (or non-members) than this: the AUC and its interval are flagged as unreliable
FEW = 20
#: what an earlier audit wrote that a later one into the same --out may not rewrite
AUC_FILES = ("auc.json", "roc.png")


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, without a byte-order mark; one line for anything else."""
    why = input_file_error(path)
    if why is not None:
        raise BasinlabError(f"text file {why}")
    p = Path(path)
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise BasinlabError(f"'{path}' has {size / 2**20:,.0f} MB; audit reads at most {MAX_FILE_BYTES // 2**20} MB "
                            f"per file: split it (split -l {MAX_TEXTS} {path} part-) and audit each part")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BasinlabError(f"'{path}' is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise BasinlabError(f"'{path}' line {line} holds a NUL byte: not a text file; remove the NUL bytes")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise BasinlabError(f"'{path}' is empty; give one text per line")
    return lines


def check_count(lines: Mapping[str, Sequence[str]], files: Sequence[tuple[str, str]]) -> None:
    """Refuse more than :data:`MAX_TEXTS` texts to score, naming the limit and how to split."""
    total = sum(len(v) for v in lines.values())
    if total > MAX_TEXTS:
        biggest = max(files, key=lambda gf: len(lines[gf[0]]))[1]
        raise BasinlabError(f"{total:,} texts to score; audit scores at most {MAX_TEXTS:,} at once (its memory grows "
                            f"with them): split {biggest} (split -l {MAX_TEXTS // 2} {biggest} part-) and audit "
                            "each part")


def check_out(out: str | Path) -> None:
    """Refuse, before any scoring, an ``--out`` that cannot take the audit's files."""
    check_output_dir(out, "--out")


def remove_stale(out: Path, written: Sequence[str]) -> None:
    """Remove the ``auc.json`` / ``roc.png`` of an earlier audit that this one did not rewrite."""
    for name in AUC_FILES:
        if name not in written and (out / name).is_file():
            (out / name).unlink()
            logger.info("removed %s of an earlier audit (this one has no members and non-members)", out / name)


def check_train_vs_test(m: int, n_train: int, n_test: int) -> None:
    """``--train-vs-test M`` needs M training and M test sequences of the run."""
    if m > n_train or m > n_test:
        raise BasinlabError(f"--train-vs-test {m}: the run has N={n_train} training and {n_test} test sequences; "
                            f"give M <= {min(n_train, n_test)}")


def warn_groups(lines: Mapping[str, Sequence[str]]) -> None:
    """Warnings for a membership AUC that means little: few members/non-members, or texts in both groups."""
    members, nonmembers = lines.get("member"), lines.get("nonmember")
    if not members or not nonmembers:
        return
    if min(len(members), len(nonmembers)) < FEW:
        logger.warning("warning: %d members and %d non-members: an AUC from so few texts (and its interval) is "
                       "unreliable; give at least %d of each", len(members), len(nonmembers), FEW)
    both = set(members) & set(nonmembers)
    if both:
        shared = sum(t in both for t in members)
        logger.warning("warning: %d member texts also appear among the non-members; identical texts cannot be told "
                       "apart, so the AUC is pulled towards 0.5", shared)


def warn_cut(lines: Sequence[str], tokenizer: Any, seq_len: int, where: str) -> None:
    """Say how many texts are longer than the ``L - 2`` tokens a sequence holds (they are cut to fit)."""
    if tokenizer is None:
        return
    room = seq_len - 2
    cut = sum(len(ids) > room for ids in tokenizer.encode_batch(list(lines), max_tokens=room + 1))
    if cut:
        logger.warning("warning: %d of %d texts in %s are longer than the model's %d tokens (L - 2) and were cut to "
                       "fit", cut, len(lines), where, room)
