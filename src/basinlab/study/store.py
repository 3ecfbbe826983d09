"""The results store of a sweep (SPEC 7): an embedded SQLite database in the sweep directory.

One row of ``runs`` per run key ``(N, seed, model)`` with its status, and the tidy probe records of SPEC 5
(``probe, set, t, metric, value, std, ci_low, ci_high, n``) plus ``N, model, seed`` in ``results``.

Concurrency and resumption:

- The database is in WAL mode with a generous busy timeout, so several worker processes (one per GPU, or the
  shards of a job array sharing a file system that supports locking) can write at once. SQLite still answers
  "database is locked" at once in a few places its busy handler does not cover (opening a WAL database while
  another connection recovers or checkpoints it, switching the journal mode): every statement is retried with a
  growing pause until ``timeout`` seconds have passed (:func:`_retry`).
- A run is *claimed* before it starts (:meth:`ResultStore.claim`): one live claim per run, whoever holds it (a
  worker of the same launch, another sweep on the same directory, another machine), so a run is trained and
  probed once. A claim of a dead process (same host: its pid is gone or was reused; another host: no heartbeat
  for :data:`STALE_S` seconds) is taken over, so a rerun after a crash redoes exactly the unfinished runs.
- A store on a network file system (NFS, SMB, Lustre...) gets a warning: their locks are often unreliable.
- A finished run is written in **one transaction**: its old records (if any) are deleted, the new ones inserted,
  and its status set to ``done``. A run is therefore either fully recorded or not at all, and recording it twice
  leaves exactly one copy: resuming never duplicates or loses a record.
- ``results.csv`` and ``results.parquet`` are exports of the database, written atomically and sorted, so two
  stores holding the same records export byte-identical CSVs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from basinlab.errors import BasinlabError
from basinlab.io import atomic_write, atomic_write_text
from basinlab.labels import ModelLabel

#: The files of a sweep directory.
CONFIG_NAME = "sweep_config.yaml"
DB_NAME = "results.sqlite"
CSV_NAME = "results.csv"
PARQUET_NAME = "results.parquet"

#: Seconds without a heartbeat after which another host's claim counts as dead.
STALE_S = 600.0
#: File systems whose locks SQLite cannot rely on (``/proc/mounts`` types).
NETWORK_FS = ("nfs", "nfs4", "cifs", "smbfs", "smb3", "fuse.sshfs", "sshfs", "lustre", "gpfs", "beegfs", "ceph",
              "fuse.glusterfs", "glusterfs", "9p", "afs", "fuse.s3fs")

logger = logging.getLogger(__name__)
T = TypeVar("T")

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


def model_label(name: str, process: str | None = None) -> str:
    """The ``model`` column of a trained network's run (:class:`~basinlab.labels.ModelLabel`): ``micro`` for the
    default process, ``micro@masked`` for another, so that a sweep over ``sweep.processes`` keys its runs by
    process too and the default process's rows keep their names."""
    return str(ModelLabel.network(name, process))


def label_process(model: str) -> str:
    """The forward process of a ``model`` label, the default one spelt out."""
    return ModelLabel.parse(model).process_name


@dataclass(frozen=True, order=True)
class RunKey:
    """One run of a sweep: training-set size ``N``, seed, and ``model`` (a preset name or ``oracle:...``, with
    ``@PROCESS`` for a process other than uniform: :func:`model_label`)."""

    N: int
    seed: int
    model: str

    @property
    def label(self) -> ModelLabel:
        """``model`` parsed (:class:`~basinlab.labels.ModelLabel`)."""
        return ModelLabel.parse(self.model)

    @property
    def name(self) -> str:
        """Directory-safe name, e.g. ``N64-s0`` for a trained model, ``N64-s0-oracle-markov`` for an oracle,
        ``N64-s0-masked`` / ``N64-s0-oracle-markov-masked`` for the masked process."""
        label = self.label
        parts = [f"N{self.N}-s{self.seed}"] + (["oracle", label.name] if label.is_oracle else [])
        return "-".join(parts + ([label.process] if label.process else []))


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
        self.timeout = float(timeout)
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            _retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL"), self.timeout)
            self._conn.execute("PRAGMA synchronous = NORMAL")
            with self._transaction() as c:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
        except sqlite3.DatabaseError as exc:
            raise BasinlabError(f"cannot open the results store '{self.path}': {exc}") from None

    # -- plumbing -----------------------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return _retry(lambda: self._conn.execute(sql, params).fetchall(), self.timeout)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error): one writer at a time, all or nothing."""
        conn = self._conn
        _retry(lambda: conn.execute("BEGIN IMMEDIATE"), self.timeout)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _retry(lambda: conn.execute("COMMIT"), self.timeout)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------------------
    def status(self, key: RunKey) -> str | None:
        """``'done'``, ``'running'`` or ``None`` (never started)."""
        rows = self._query("SELECT status FROM runs WHERE size = ? AND seed = ? AND model = ?",
                           (key.N, key.seed, key.model))
        return None if not rows else str(rows[0][0])

    def is_done(self, key: RunKey) -> bool:
        return self.status(key) == "done"

    def done_keys(self) -> set[RunKey]:
        rows = self._query("SELECT size, seed, model FROM runs WHERE status = 'done'")
        return {RunKey(int(n), int(s), str(m)) for n, s, m in rows}

    def runs(self) -> list[dict[str, Any]]:
        """All run records: ``N, seed, model, status, updated, info`` (``info`` decoded from JSON)."""
        rows = self._query("SELECT size, seed, model, status, updated, info FROM runs ORDER BY size, seed, model")
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
        """Atomically take ``key`` for the worker launch ``token``: False if it is done or held by a live claim
        (a worker of this launch, another sweep on this directory, another host's worker with a recent heartbeat).
        A dead holder's claim is taken over, so a rerun after a crash redoes it."""
        with self._transaction() as c:
            row = c.execute(
                "SELECT status, updated, info FROM runs WHERE size = ? AND seed = ? AND model = ?",
                (key.N, key.seed, key.model),
            ).fetchone()
            if row is not None:
                status, updated, old = row
                if status == "done":
                    return False
                holder = json.loads(old or "{}")
                if status == "running" and (holder.get("token") == token or _claim_alive(holder, updated)):
                    return False
            payload = json.dumps({**dict(info or {}), **_me(), "token": token})
            c.execute(
                "INSERT INTO runs (size, seed, model, status, updated, info) VALUES (?, ?, ?, 'running', ?, ?) "
                "ON CONFLICT (size, seed, model) DO UPDATE SET status = 'running', updated = excluded.updated, "
                "info = excluded.info",
                (key.N, key.seed, key.model, time.time(), payload),
            )
        return True

    def heartbeat(self, key: RunKey, token: str) -> None:
        """Refresh the claim of ``key`` held by ``token`` (other hosts judge a claim alive by it)."""
        with self._transaction() as c:
            c.execute(
                "UPDATE runs SET updated = ? WHERE size = ? AND seed = ? AND model = ? AND status = 'running' "
                "AND json_extract(info, '$.token') = ?",
                (time.time(), key.N, key.seed, key.model, token),
            )

    def holders(self) -> list[dict[str, Any]]:
        """The live claims of unfinished runs held by other processes: ``N, seed, model, pid, host``."""
        mine = os.getpid()
        return [
            {"N": r["N"], "seed": r["seed"], "model": r["model"], "pid": r["info"].get("pid"),
             "host": r["info"].get("host")}
            for r in self.runs()
            if r["status"] == "running" and r["info"].get("pid") != mine and _claim_alive(r["info"], r["updated"])
        ]

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
        rows = self._query(
            'SELECT size, model, seed, probe, "set", t, metric, value, std, ci_low, ci_high, count FROM results '
            'ORDER BY size, model, seed, probe, "set", metric, t IS NOT NULL, t'
        )
        return [dict(zip(COLUMNS, r, strict=True)) for r in rows]

    def dataframe(self) -> Any:
        """The records as a ``pandas.DataFrame`` with the columns of :data:`COLUMNS`."""
        import pandas as pd  # here, not at the top: workers that only claim and record never pay for pandas

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


def _retry(fn: Callable[[], T], timeout: float) -> T:
    """``fn()``, retried with a growing pause (up to 1 s) while SQLite says the database is locked or busy, until
    ``timeout`` seconds have passed; then one line naming the store's state."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            msg = str(exc).lower()
            if "locked" not in msg and "busy" not in msg:
                raise
            if time.monotonic() >= deadline:
                raise BasinlabError(
                    f"the results store stayed locked for {timeout:.0f} s ({exc}); is another process stuck on it?"
                ) from None
            time.sleep(pause)
            pause = min(1.0, pause * 2)


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``), so that a reused pid is not taken for the old one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _me() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_start": _proc_start(pid)}


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, someone else's
    return start is None or _proc_start(pid) in (None, start)


def _claim_alive(holder: Mapping[str, Any], updated: float | None) -> bool:
    """Is the process that claimed a run still at it? Same host: its pid runs (and is the same process);
    another host: it sent a heartbeat in the last :data:`STALE_S` seconds. Old claims without a pid: dead."""
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    if holder.get("host") == socket.gethostname():
        # this very process with another token: a claim left by an earlier, interrupted sweep call in it
        return pid != os.getpid() and _pid_alive(pid, holder.get("pid_start"))
    return updated is not None and time.time() - float(updated) < STALE_S


def filesystem_type(path: str | Path, mounts: str | None = None) -> str | None:
    """The type of the file system holding ``path``, from ``/proc/mounts`` (``mounts``: its text), or None."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = str(Path(path).resolve())
    best, kind = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, kind = mnt, parts[2]
    return kind


def warn_if_network_fs(path: str | Path, mounts: str | None = None) -> bool:
    """Log a warning (and return True) when ``path`` sits on a network file system (:data:`NETWORK_FS`)."""
    kind = filesystem_type(path, mounts)
    if kind is None or kind not in NETWORK_FS:
        return False
    logger.warning(
        "'%s' is on a network file system (%s), whose locks SQLite cannot rely on: give each --shard its own "
        "directory there and combine them with `basinlab merge DIR... --out DIR`", path, kind,
    )
    return True


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
    import pandas as pd  # see ResultStore.dataframe

    out_dir = Path(out_dir)
    if (out_dir / DB_NAME).exists():
        with ResultStore(out_dir) as store:
            return store.dataframe()
    if (out_dir / CSV_NAME).exists():
        return _typed(pd.read_csv(out_dir / CSV_NAME))
    raise BasinlabError(f"'{out_dir}' holds no sweep results ({DB_NAME} or {CSV_NAME}); run `basinlab sweep` first")
