"""The results store under contention (issue 10, items 4 and 11): many processes on one store, one live claim
per run, dead claims taken over, network file systems detected."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import socket
import sqlite3
import time

from basinlab.study.store import ResultStore, RunKey, filesystem_type, warn_if_network_fs

KEYS = [RunKey(n, s, "micro") for n in (8, 16, 32, 64) for s in range(6)]


def _worker(path: str, token: str, q) -> None:
    """Open a fresh connection for every step (as the launcher's progress loop and the workers do), claim runs,
    record them, export, read: what a busy multi-worker sweep does, without the training."""
    taken = []
    for key in KEYS:
        with ResultStore(path, timeout=60) as store:
            if store.claim(key, token):
                time.sleep(0.05)  # "working": another worker must not take the run meanwhile
                rows = [{"probe": "basins", "set": "train", "t": 0.25, "metric": "recovery_rate", "value": key.N,
                         "n": key.seed}]
                store.record_run(key, rows, {"by": token})
                store.export()
                taken.append((key.N, key.seed))
        with ResultStore(path, timeout=60) as store:
            store.done_keys()
    q.put(taken)


def test_many_workers_on_one_store(tmp_path):
    """8 processes, 24 runs: no 'database is locked', every run recorded exactly once by one worker."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), f"w{i}", q)) for i in range(8)]
    for p in procs:
        p.start()
    taken = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    flat = [k for t in taken for k in t]
    assert sorted(flat) == sorted((k.N, k.seed) for k in KEYS)  # each run claimed by exactly one live worker
    with ResultStore(tmp_path) as store:
        assert store.done_keys() == set(KEYS)
        assert len(store.rows()) == len(KEYS)


def _dead_pid() -> int:
    ctx = mp.get_context("fork")
    p = ctx.Process(target=time.sleep, args=(0,))
    p.start()
    p.join()
    return int(p.pid)


def _set_holder(tmp_path, key: RunKey, info: dict, updated: float) -> None:
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    conn.execute("UPDATE runs SET info = ?, updated = ? WHERE size = ? AND seed = ? AND model = ?",
                 (json.dumps(info), updated, key.N, key.seed, key.model))
    conn.commit()
    conn.close()


def test_claims_of_live_processes_hold_and_dead_ones_are_taken_over(tmp_path):
    key = RunKey(8, 0, "micro")
    with ResultStore(tmp_path) as store:
        assert store.claim(key, "a")
        assert not store.claim(key, "a")  # same launch
        # held by a live process of this host (the test runner's parent): refused
        _set_holder(tmp_path, key, {"token": "x", "pid": os.getppid(), "host": socket.gethostname()}, time.time())
        assert not store.claim(key, "b")
        assert store.holders()[0]["pid"] == os.getppid()
        # held by a dead process: taken over
        _set_holder(tmp_path, key, {"token": "x", "pid": _dead_pid(), "host": socket.gethostname()}, time.time())
        assert store.claim(key, "b")
        # another host: alive while its heartbeat is recent, dead after STALE_S
        _set_holder(tmp_path, key, {"token": "y", "pid": 1, "host": "elsewhere"}, time.time())
        assert not store.claim(key, "c")
        store.heartbeat(key, "y")
        _set_holder(tmp_path, key, {"token": "y", "pid": 1, "host": "elsewhere"}, time.time() - 3600)
        assert store.claim(key, "c")
        store.record_run(key, [], {})
        assert not store.claim(key, "d")  # done


MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
server:/export/home /home nfs4 rw,vers=4.2 0 0
//nas/share /mnt/my\\040share cifs rw 0 0
"""


def test_network_file_systems_are_detected(tmp_path, caplog):
    assert filesystem_type("/home/alice/sweep", MOUNTS) == "nfs4"
    assert filesystem_type("/mnt/my share/x", MOUNTS) == "cifs"
    assert filesystem_type("/homework", MOUNTS) == "ext4"  # a prefix of the name is not a parent
    assert filesystem_type("/var/tmp", MOUNTS) == "ext4"
    with caplog.at_level(logging.WARNING, logger="basinlab"):
        assert warn_if_network_fs("/home/alice/sweep", MOUNTS)
        assert not warn_if_network_fs("/var/tmp", MOUNTS)
    assert len(caplog.records) == 1 and "basinlab merge" in caplog.records[0].getMessage()
    assert filesystem_type(tmp_path) is not None  # the real /proc/mounts of this machine
