"""Faults during a sweep (issue 10): SIGKILL and SIGINT at random points, two sweeps on one directory, a killed
multi-worker launcher, shards merged from separate directories. Each ends with the ``results.csv`` of the same toy
sweep run uninterrupted on this machine in this session (``toy_sweep``, tests/conftest.py), byte for byte: resume
is exact, nothing lost, nothing recorded twice. That reference equals the pinned file (tests/study/golden) within
the tolerance of tests/study/_golden.py, checked once in tests/study/test_golden.py (issue 18)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from study._golden import child_env, sweep_cmd, toy_config

from basinlab.cli import main
from basinlab.errors import BasinlabError
from basinlab.study.merge import merge_sweeps
from basinlab.study.store import ResultStore, RunKey

#: (signal, trials): kill points drawn from a fixed generator, so a failure can be replayed.
KILLS = [(signal.SIGKILL, 2), (signal.SIGINT, 2)]
KILL_TRIALS = [(sig, i) for sig, n in KILLS for i in range(n)]
_config, _env, _sweep_cmd = toy_config, child_env, sweep_cmd


def _metrics_steps(out: Path) -> dict[str, list[str]]:
    """Each trained run's metrics.csv step column: a run trained twice would repeat steps."""
    found = {}
    for path in sorted((out / "runs").glob("*/metrics.csv")):
        lines = path.read_text().splitlines()[1:]
        found[path.parent.name] = [line.split(",")[0] for line in lines]
    return found


@pytest.mark.parametrize(("sig", "trial"), KILL_TRIALS, ids=[f"{s.name}-{i}" for s, i in KILL_TRIALS])
def test_killed_sweep_resumes_to_the_uninterrupted_results(toy_sweep, tmp_path, sig, trial):
    config = _config(tmp_path)
    out = tmp_path / "sweep"
    delay = random.Random(f"{sig.name}-{trial}").uniform(0.0, 6.0)  # after start-up (imports: seconds on a busy CPU)
    proc = subprocess.Popen(_sweep_cmd(config, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not (out / "sweep_config.yaml").exists() and proc.poll() is None:
        time.sleep(0.05)
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=600)  # a busy machine: Ctrl-C finishes the step and saves first
        assert b"Traceback" not in err
    done = subprocess.run(_sweep_cmd(config, out), env=_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert (out / "results.csv").read_bytes() == (toy_sweep / "results.csv").read_bytes()
    for steps in _metrics_steps(out).values():
        assert len(steps) == len(set(steps))


def test_two_sweeps_on_one_directory_run_each_run_once(toy_sweep, tmp_path):
    config = _config(tmp_path)
    out = tmp_path / "sweep"
    procs = [subprocess.Popen(_sweep_cmd(config, out), env=_env(), stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read().decode()[-2000:]
    subprocess.run(_sweep_cmd(config, out), env=_env(), check=True, timeout=300)  # exports whatever is left
    assert (out / "results.csv").read_bytes() == (toy_sweep / "results.csv").read_bytes()
    for run, steps in _metrics_steps(out).items():
        assert steps == sorted(set(steps), key=int), run  # trained once: no step logged twice


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_workers_die_with_their_killed_launcher(tmp_path):
    config = _config(tmp_path)
    out = tmp_path / "sweep"
    launcher = subprocess.Popen(_sweep_cmd(config, out, "--devices=cpu,cpu"), env=_env(), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = _children(launcher.pid)
        assert len(workers) == 2
        time.sleep(3.0)  # let them start (imports, claims)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
    finally:
        for w in _children(launcher.pid) if launcher.poll() is None else []:
            os.kill(w, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()


def test_shards_in_separate_directories_merge_to_the_uninterrupted_results(toy_sweep, tmp_path, capsys):
    config = _config(tmp_path)
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    procs = [subprocess.Popen(_sweep_cmd(config, d, f"--shard={i}/2"), env=_env()) for i, d in enumerate(shards)]
    for p in procs:
        assert p.wait(300) == 0
    merged = tmp_path / "merged"
    assert main(["merge", *map(str, shards), "--out", str(merged)]) == 0
    assert (merged / "results.csv").read_bytes() == (toy_sweep / "results.csv").read_bytes()
    assert main(["report", str(merged)]) == 0
    # merging again, or a shard into its own merge, records nothing twice
    merge_sweeps(shards, merged)
    assert (merged / "results.csv").read_bytes() == (toy_sweep / "results.csv").read_bytes()
    # a run recorded twice with different results is refused, and nothing is written
    with ResultStore(shards[1]) as store:
        key = sorted(store.done_keys())[0]
        rows = [r for r in store.rows() if RunKey(r["N"], r["seed"], r["model"]) == key]
        rows[0]["value"] = (rows[0]["value"] or 0) + 1
        store.record_run(key, rows, {})
    before = (merged / "results.sqlite").read_bytes()
    with pytest.raises(BasinlabError, match=key.name):
        merge_sweeps(shards, merged)
    assert (merged / "results.sqlite").read_bytes() == before
