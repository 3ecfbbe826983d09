"""The results store of a sweep (SPEC 7): an embedded SQLite database in the sweep directory.

One row of ``runs`` per run key ``(N, seed, model)`` with its status, and the tidy probe records of SPEC 5
(``probe, set, t, metric, value, std, ci_low, ci_high, n``) plus ``N, model, seed`` in ``results``.

Concurrency and resumption:

- The database is in WAL mode with a generous busy timeout, so several worker processes (one per GPU, or the
  shards of a job array sharing a file system that supports locking) can write at once.
- A finished run is written in **one transaction**: its old records (if any) are deleted, the new ones inserted,
  and its status set to ``done``. A run is therefore either fully recorded or not at all, and recording it twice
  leaves exactly one copy: resuming never duplicates or loses a record.
- ``results.csv`` and ``results.parquet`` are exports of the database, written atomically and sorted, so two
  stores holding the same records export byte-identical CSVs.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basinlab.errors import BasinlabError
from basinlab.io import atomic_write, atomic_write_text

#: The files of a sweep directory.
CONFIG_NAME = "sweep_config.yaml"
DB_NAME = "results.sqlite"
CSV_NAME = "results.csv"
PARQUET_NAME = "results.parquet"

#: The tidy keys of a probe record (SPEC 5), in export order after ``N, model, seed``.
TIDY_KEYS = ("probe", "set", "t", "metric", "value", "std", "ci_low", "ci_high", "n")
#: Columns of ``results.csv``.
COLUMNS = ("N", "model", "seed", *TIDY_KEYS)

# SQLite column names are case-insensitive, so the training-set size ``N`` is stored as ``size`` and the
# probe's count ``n`` as ``count``; exports use the public names.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    size INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    updated REAL NOT NULL,
    info TEXT,
    PRIMARY KEY (size, seed, model)
);
CREATE TABLE IF NOT EXISTS results (
    size INTEGER NOT NULL,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    probe TEXT NOT NULL,
    "set" TEXT NOT NULL,
    t REAL,
    metric TEXT NOT NULL,
    value REAL,
    std REAL,
    ci_low REAL,
    ci_high REAL,
    count INTEGER
);
CREATE INDEX IF NOT EXISTS results_run ON results (size, seed, model);
"""


@dataclass(frozen=True, order=True)
class RunKey:
    """One run of a sweep: training-set size ``N``, seed, and ``model`` (a preset name or ``oracle:...``)."""

    N: int
    seed: int
    model: str

    @property
    def name(self) -> str:
        """Directory-safe name, e.g. ``N64-s0`` for a trained model, ``N64-s0-oracle-markov`` for an oracle."""
        base = f"N{self.N}-s{self.seed}"
        if self.model.startswith("oracle:"):
            return f"{base}-oracle-{self.model.split(':', 1)[1]}"
        return base


def _float(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _int(x: Any) -> int | None:
    v = _float(x)
    return None if v is None else int(round(v))


class ResultStore:
    """SQLite store at ``out_dir/results.sqlite``. Open one per process; every method is its own transaction."""

    def __init__(self, out_dir: str | Path, timeout: float = 300.0) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / DB_NAME
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            with self._transaction() as c:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
        except sqlite3.DatabaseError as exc:
            raise BasinlabError(f"cannot open the results store '{self.path}': {exc}") from None

    # -- plumbing -----------------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error): one writer at a time, all or nothing."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------------------
    def status(self, key: RunKey) -> str | None:
        """``'done'``, ``'running'`` or ``None`` (never started)."""
        row = self._conn.execute(
            "SELECT status FROM runs WHERE size = ? AND seed = ? AND model = ?", (key.N, key.seed, key.model)
        ).fetchone()
        return None if row is None else str(row[0])

    def is_done(self, key: RunKey) -> bool:
        return self.status(key) == "done"

    def done_keys(self) -> set[RunKey]:
        rows = self._conn.execute("SELECT size, seed, model FROM runs WHERE status = 'done'").fetchall()
        return {RunKey(int(n), int(s), str(m)) for n, s, m in rows}

    def runs(self) -> list[dict[str, Any]]:
        """All run records: ``N, seed, model, status, updated, info`` (``info`` decoded from JSON)."""
        rows = self._conn.execute(
            "SELECT size, seed, model, status, updated, info FROM runs ORDER BY size, seed, model"
        ).fetchall()
        return [
            {"N": n, "seed": s, "model": m, "status": st, "updated": u, "info": json.loads(i) if i else {}}
            for n, s, m, st, u, i in rows
        ]

    def mark_running(self, key: RunKey, info: Mapping[str, Any] | None = None) -> None:
        """Note that a worker started ``key`` (never downgrades a finished run)."""
        with self._transaction() as c:
            c.execute(
                "INSERT INTO runs (size, seed, model, status, updated, info) VALUES (?, ?, ?, 'running', ?, ?) "
                "ON CONFLICT (size, seed, model) DO UPDATE SET status = 'running', updated = excluded.updated, "
                "info = excluded.info WHERE runs.status != 'done'",
                (key.N, key.seed, key.model, time.time(), json.dumps(dict(info or {}))),
            )

    def claim(self, key: RunKey, token: str, info: Mapping[str, Any] | None = None) -> bool:
        """Atomically take ``key`` for the worker launch ``token``: False if it is done or already taken by a
        worker of the same launch. Claims of an earlier (dead) launch don't count, so a rerun redoes them."""
        with self._transaction() as c:
            row = c.execute(
                "SELECT status, info FROM runs WHERE size = ? AND seed = ? AND model = ?", (key.N, key.seed, key.model)
            ).fetchone()
            if row is not None:
                status, old = row
                if status == "done":
                    return False
                if status == "running" and json.loads(old or "{}").get("token") == token:
                    return False
            payload = json.dumps({**dict(info or {}), "token": token})
            c.execute(
                "INSERT INTO runs (size, seed, model, status, updated, info) VALUES (?, ?, ?, 'running', ?, ?) "
                "ON CONFLICT (size, seed, model) DO UPDATE SET status = 'running', updated = excluded.updated, "
                "info = excluded.info",
                (key.N, key.seed, key.model, time.time(), payload),
            )
        return True

    def record_run(self, key: RunKey, rows: Iterable[Mapping[str, Any]], info: Mapping[str, Any] | None = None) -> int:
        """Write all records of a finished run and mark it ``done``, in one transaction; returns the row count.

        Records already stored for ``key`` are replaced, so recording a run twice leaves one copy.
        """
        rows = list(rows)
        for r in rows:
            if not r.get("probe") or not r.get("metric"):
                raise BasinlabError(f"a probe record needs 'probe' and 'metric', got {dict(r)!r}")
        values = [
            (
                key.N,
                key.model,
                key.seed,
                str(r["probe"]),
                str(r.get("set") or ""),
                _float(r.get("t")),
                str(r["metric"]),
                _float(r.get("value")),
                _float(r.get("std")),
                _float(r.get("ci_low")),
                _float(r.get("ci_high")),
                _int(r.get("n")),
            )
            for r in rows
        ]
        with self._transaction() as c:
            c.execute("DELETE FROM results WHERE size = ? AND seed = ? AND model = ?", (key.N, key.seed, key.model))
            c.executemany(
                'INSERT INTO results (size, model, seed, probe, "set", t, metric, value, std, ci_low, ci_high, count) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            c.execute(
                "INSERT INTO runs (size, seed, model, status, updated, info) VALUES (?, ?, ?, 'done', ?, ?) "
                "ON CONFLICT (size, seed, model) DO UPDATE SET status = 'done', updated = excluded.updated, "
                "info = excluded.info",
                (key.N, key.seed, key.model, time.time(), json.dumps(dict(info or {}), default=str)),
            )
        return len(values)

    # -- reading and exporting ----------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """All records as dicts with the keys of :data:`COLUMNS`, in a fixed order."""
        cur = self._conn.execute(
            'SELECT size, model, seed, probe, "set", t, metric, value, std, ci_low, ci_high, count FROM results '
            'ORDER BY size, model, seed, probe, "set", metric, t IS NOT NULL, t'
        )
        return [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]

    def dataframe(self) -> Any:
        """The records as a ``pandas.DataFrame`` with the columns of :data:`COLUMNS`."""
        import pandas as pd

        df = pd.DataFrame(self.rows(), columns=list(COLUMNS))
        return _typed(df)

    def export(self) -> tuple[Path, Path]:
        """Write ``results.csv`` and ``results.parquet`` atomically; returns their paths."""
        df = self.dataframe()
        csv_path = self.out_dir / CSV_NAME
        pq_path = self.out_dir / PARQUET_NAME
        atomic_write_text(csv_path, df.to_csv(index=False, float_format="%.10g"))
        atomic_write(pq_path, lambda tmp: df.to_parquet(tmp, index=False))
        return csv_path, pq_path


def _typed(df: Any) -> Any:
    """Column dtypes of an export: ints for ``N``, ``seed``, nullable int for ``n``, floats for the numbers."""
    df["N"] = df["N"].astype("int64")
    df["seed"] = df["seed"].astype("int64")
    df["n"] = df["n"].astype("Int64")
    for col in ("t", "value", "std", "ci_low", "ci_high"):
        df[col] = df[col].astype("float64")
    return df


def read_results(out_dir: str | Path) -> Any:
    """The records of a sweep directory as a DataFrame: from the store when present, else ``results.csv``."""
    import pandas as pd

    out_dir = Path(out_dir)
    if (out_dir / DB_NAME).exists():
        with ResultStore(out_dir) as store:
            return store.dataframe()
    if (out_dir / CSV_NAME).exists():
        return _typed(pd.read_csv(out_dir / CSV_NAME))
    raise BasinlabError(f"'{out_dir}' holds no sweep results ({DB_NAME} or {CSV_NAME}); run `basinlab sweep` first")
