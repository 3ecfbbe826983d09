"""Behaviour pin (issue 11): one small sweep's ``results.csv`` and restoration examples; and the CLI (``basinlab
probe all``), the sweep and the Python API (``probes.run_suite``) give the same rows.

Since issue 18 the numbers are compared within the tolerance of tests/study/_golden.py (float32 work rounds
differently on other CPUs and ATen kernel sets; its docstring gives the measurements), everything else exactly:
keys, counts, ``n``, model names, the examples' tokens. The session's reference sweep (``toy_sweep``, in
tests/conftest.py) is compared with the pinned file here, once; the fault tests (tests/reliability) compare their
resumed sweeps with that reference byte for byte. The same sweep also runs under ``ATEN_CPU_CAPABILITY=default``
and ``avx2`` here.

History of the pinned files: written by the sweep as it stood before the probe suite was restructured (commit
8018832, after the DiT change); the merge of main then added, on purpose, the ``membership_auc`` rows (issue 8).
Two later changes, on purpose: the memoriser's faster exact computation (issue 9.1) moved ``oracle:empirical``
rows in the 8th digit, and each example gained a ``surface`` field (issue 7.1). Issue 17 added, without changing
any number, ``tpr_at_fpr_0.01`` / ``tpr_at_fpr_0.001`` rows beside each ``membership_auc`` row and per-token
``entropy`` (compared within the tolerance) and ``token_text`` on every example plus ``train_examples`` in
examples.json. Any change to a number here must be deliberate: regenerate the files with ``python
tests/study/test_golden.py --write`` and say in the commit which item changed which number and why.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`--write`): the tests folder is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import pytest
import torch

import basinlab
from basinlab.cli import main
from basinlab.config import load_config
from basinlab.data import build_dataset
from basinlab.oracles.build import build_oracle
from basinlab.probes import probes_for, run_suite
from basinlab.study.store import ResultStore, RunKey
from study._golden import (
    ATOL,
    COUNT_TOLERANT,
    GOLDEN_CSV,
    PAIR_FLIPS,
    RTOL,
    TOY,
    assert_examples_pinned,
    assert_results_close,
    child_env,
    compare_results,
    run_toy_sweep,
    sweep_cmd,
    toy_config,
    write_golden,
)

#: ATen kernel sets the pinned sweep is also run on, in a child process, inside the normal suite (issue 18).
KERNEL_SETS = ("default", "avx2")


def test_toy_sweep_results_are_pinned(toy_sweep):
    """This session's reference sweep (tests/conftest.py) equals the pinned file: numbers within tolerance."""
    assert_results_close(toy_sweep / "results.csv", GOLDEN_CSV)
    assert_examples_pinned(toy_sweep)


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_toy_sweep_is_pinned_on_other_kernel_sets(tmp_path, kernels):
    """The same sweep through the CLI with ATen's ``default`` (no SIMD) or ``avx2`` kernels: the float32 work
    rounds differently, the pinned numbers still hold within tolerance (``make test-kernels`` runs more)."""
    out = tmp_path / "sweep"
    done = subprocess.run(sweep_cmd(toy_config(tmp_path), out), env=child_env(ATEN_CPU_CAPABILITY=kernels),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_results_close(out / "results.csv", GOLDEN_CSV)
    assert_examples_pinned(out)


def _rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def _write(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    return path


def _first(rows: list[list[str]], column: str, pick) -> tuple[int, int]:
    head = rows[0]
    j = head.index(column)
    for i, r in enumerate(rows[1:], start=1):
        if r[j] and pick(dict(zip(head, r, strict=True))):
            return i, j
    raise AssertionError(f"no row for {column}")


def _float_row(r: dict) -> bool:
    return (r["model"], r["probe"], r["metric"]) not in COUNT_TOLERANT and float(r["value"]) > 0.1


def test_one_changed_number_fails_the_comparison(tmp_path):
    """The comparison is not vacuous: an unchanged copy passes, a number moved within the tolerance passes, one
    moved beyond it fails (naming the row), and so does a changed ``n``, a changed key and a missing row."""
    rows = _rows(GOLDEN_CSV)
    assert compare_results(_write(tmp_path / "same.csv", rows), GOLDEN_CSV) == []
    i, j = _first(rows, "value", _float_row)
    w = float(rows[i][j])
    for factor, ok in ((1 + 0.5 * RTOL, True), (1 + 10 * RTOL + 10 * ATOL / w, False), (1 - 1e-3, False)):
        changed = [list(r) for r in rows]
        changed[i][j] = repr(w * factor)
        problems = compare_results(_write(tmp_path / "changed.csv", changed), GOLDEN_CSV)
        assert (problems == []) is ok, (factor, problems)
        assert ok or (len(problems) == 1 and f"line {i + 1} " in problems[0]), problems
    k, n = _first(rows, "n", lambda r: True)
    for col, new in (("n", str(int(rows[k][n]) + 1)), ("metric", "other"), ("t", "0.3")):
        changed = [list(r) for r in rows]
        changed[k][rows[0].index(col)] = new
        assert compare_results(_write(tmp_path / "key.csv", changed), GOLDEN_CSV), col
    assert compare_results(_write(tmp_path / "short.csv", rows[:-1]), GOLDEN_CSV)


def test_count_tolerant_rows_allow_a_few_swapped_pairs_only(tmp_path):
    """A ``membership_auc`` of noise-tied scores may move by up to PAIR_FLIPS / pairs, no further."""
    rows = _rows(GOLDEN_CSV)
    i, j = _first(rows, "value", lambda r: (r["model"], r["probe"], r["metric"]) in COUNT_TOLERANT)
    m = int(rows[i][rows[0].index("n")]) // 2
    for flips, ok in ((1, True), (PAIR_FLIPS, True), (PAIR_FLIPS + 1, False)):
        changed = [list(r) for r in rows]
        changed[i][j] = repr(float(rows[i][j]) - flips / m**2 + (1e-9 if ok else 0.0))
        assert (compare_results(_write(tmp_path / "auc.csv", changed), GOLDEN_CSV) == []) is ok, flips


def _key(r: dict) -> tuple:
    t = r["t"]
    return (r["probe"], r["set"], None if t is None or (isinstance(t, float) and math.isnan(t)) else float(t),
            r["metric"])


def _num(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _table(rows) -> dict[tuple, tuple]:
    out = {}
    for r in rows:
        assert _key(r) not in out, _key(r)
        out[_key(r)] = tuple(_num(r[k]) for k in ("value", "std", "ci_low", "ci_high", "n"))
    return out


@pytest.mark.parametrize("model", ["micro", "oracle:empirical", "oracle:markov"])
def test_cli_sweep_and_api_give_the_same_rows(toy_sweep, tmp_path, capsys, model):
    """One suite: the rows the sweep recorded for N=8 are the rows of `basinlab probe all` and of run_suite."""
    key = RunKey(8, 0, model)
    with ResultStore(toy_sweep) as store:
        swept = [r for r in store.rows() if (r["N"], r["seed"], r["model"]) == (key.N, key.seed, key.model)]
    cfg = load_config(None, [*TOY, f"data.cache_dir={toy_sweep.parent / 'cache'}", "data.n_train=8"])
    data = build_dataset(cfg.data)
    out = tmp_path / "cli"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if model == "micro":
            run_dir = toy_sweep / "runs" / key.name
            denoiser = basinlab.load(str(run_dir), batch_size=cfg.probe.batch_size).denoiser
            argv = ["probe", "all", "--checkpoint", str(run_dir)]
        else:
            kind = model.split(":")[1]
            denoiser = build_oracle(kind, data, 8, cfg)
            argv = ["probe", "all", "--oracle", kind, *TOY, f"data.cache_dir={cfg.data.cache_dir}", "data.n_train=8"]
        assert main([*argv, "--quiet", "--device", "cpu", "--out", str(out)]) == 0
        api = run_suite(denoiser, data, cfg.probe, n_train=8, seed=0, probes=probes_for(denoiser)).rows
    finally:
        torch.set_num_threads(before)
    cli = pd.read_csv(out / "results.csv").astype(object).where(lambda d: d.notna(), None).to_dict("records")
    assert len(swept) > 20
    assert _table(swept) == _table(api) == _table(cli)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_golden(run_toy_sweep(Path(tmp)))
