"""The results store (SPEC 7 plumbing): one transaction per run, idempotent, concurrent writers, exports."""

from __future__ import annotations

import multiprocessing as mp

import pandas as pd
import pytest

from basinlab.errors import BasinlabError
from basinlab.study.store import COLUMNS, ResultStore, RunKey, read_results


def _rows(k: int = 3, base: float = 0.5) -> list[dict]:
    rows = [
        {"probe": "basins", "set": "train", "t": t, "metric": "recovery_rate", "value": base + i * 0.1,
         "std": 0.1, "ci_low": base + i * 0.1 - 0.05, "ci_high": base + i * 0.1 + 0.05, "n": 64}
        for i, t in enumerate([0.1, 0.25, 0.5][:k])
    ]
    rows.append({"probe": "basins", "set": "train", "t": None, "metric": "basin_radius", "value": 0.3,
                 "std": None, "ci_low": None, "ci_high": None, "n": 64})
    return rows


def test_record_is_idempotent_and_exports(tmp_path):
    key = RunKey(16, 0, "micro")
    with ResultStore(tmp_path) as store:
        assert store.status(key) is None
        store.mark_running(key)
        assert store.status(key) == "running"
        assert store.record_run(key, _rows()) == 4
        store.record_run(key, _rows())  # recording again replaces, never duplicates
        store.mark_running(key)  # never downgrades a finished run
        assert store.is_done(key)
        assert len(store.rows()) == 4
        csv_path, pq_path = store.export()
    df = pd.read_csv(csv_path)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 4 and set(df["N"]) == {16} and set(df["model"]) == {"micro"}
    assert df["t"].isna().sum() == 1
    pq = pd.read_parquet(pq_path)
    assert len(pq) == 4 and pq["n"].tolist() == [64] * 4
    assert len(read_results(tmp_path)) == 4


def test_failed_transaction_leaves_nothing(tmp_path):
    key = RunKey(32, 1, "micro")
    with ResultStore(tmp_path) as store:
        store.record_run(key, _rows())
        bad = _rows() + [{"probe": "x", "set": "test", "metric": None}]  # metric is NOT NULL
        with pytest.raises(BasinlabError):
            store.record_run(RunKey(64, 1, "micro"), bad)
        assert not store.is_done(RunKey(64, 1, "micro"))
        assert {r["N"] for r in store.rows()} == {32}


def test_export_order_independent_of_insertion(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    keys = [RunKey(16, 0, "micro"), RunKey(64, 0, "micro"), RunKey(16, 0, "oracle:empirical")]
    with ResultStore(a) as s:
        for k in keys:
            s.record_run(k, _rows(base=k.N / 100))
        s.export()
    with ResultStore(b) as s:
        for k in reversed(keys):
            s.record_run(k, list(reversed(_rows(base=k.N / 100))))
        s.export()
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()


def _writer(path: str, n: int) -> None:
    with ResultStore(path) as s:
        for seed in range(5):
            s.record_run(RunKey(n, seed, "micro"), _rows())


def test_concurrent_writers(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), n)) for n in (16, 32, 64)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with ResultStore(tmp_path) as s:
        assert len(s.done_keys()) == 15
        assert len(s.rows()) == 60
