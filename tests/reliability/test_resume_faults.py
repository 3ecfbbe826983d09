"""Faults during training: SIGINT (Ctrl-C) and SIGKILL at random points, then a rerun; the result must equal an
uninterrupted run bit for bit (weights, EMA, optimiser, RNG) and metrics.csv row for row."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import torch

from basinlab.data import build_dataset
from basinlab.training.checkpoint import find_checkpoint, load_train_state, load_weights
from basinlab.training.trainer import train

from .conftest import fork_child, tiny_config

pytestmark = pytest.mark.reliability

STEPS, CKPT_EVERY, LOG_EVERY = 12, 5, 2  # checkpoints between metrics rows: the window must resume too
TRIALS = 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    cfg = tiny_config(tmp, steps=STEPS, ckpt_every=CKPT_EVERY, log_every=LOG_EVERY)
    data = build_dataset(cfg.data)
    train(cfg, data)
    return cfg, data, tmp / "run"


def _rows_logged(run) -> int:
    try:
        return max(0, len((run / "metrics.csv").read_bytes().splitlines()) - 1)
    except OSError:
        return 0


def _signal_at_random_point(pid: int, run, sig: int, rng: random.Random) -> int:
    """Wait until the child has logged a random number of rows, then a random fraction of a step; signal it.
    Returns the child's exit code."""
    rows = rng.randint(1, STEPS // LOG_EVERY - 1)
    deadline = time.monotonic() + 120
    while _rows_logged(run) < rows and time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.03))
    os.kill(pid, sig)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _assert_same_run(a, b) -> None:
    ca, cb = find_checkpoint(a), find_checkpoint(b)
    assert ca.name == cb.name
    for ema in (False, True):
        wa, wb = load_weights(ca, ema), load_weights(cb, ema)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"weights differ (ema={ema})"
    sa, sb = load_train_state(ca), load_train_state(cb)
    for key in ("noise", "torch"):
        assert torch.equal(sa["rng"][0][key], sb["rng"][0][key])
    ma, mb = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert all(torch.equal(ma[i]["exp_avg_sq"], mb[i]["exp_avg_sq"]) for i in ma)

    def rows(run):
        lines = (run / "metrics.csv").read_bytes().split(b"\n")
        return [line.split(b",")[:6] for line in lines if line]  # step, epoch, objective, loss, lr, grad_norm

    assert rows(a) == rows(b)
    assert b"\r" not in (b / "metrics.csv").read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_training_resumes_bit_identically(reference, tmp_path, sig) -> None:
    cfg, data, ref_run = reference
    rng = random.Random(int(sig))
    interrupted = 0
    for trial in range(TRIALS):
        run = tmp_path / f"trial{trial}"
        pid = fork_child(lambda run=run: train(cfg, data, out_dir=run))
        code = _signal_at_random_point(pid, run, sig, rng)
        assert code in (0, 130, -signal.SIGKILL), f"the child failed with {code}"
        interrupted += code != 0
        res = train(cfg, data, out_dir=run)
        assert res.steps == STEPS
        _assert_same_run(ref_run, run)
    print(f"{sig.name}: {interrupted}/{TRIALS} trials interrupted training, all resumed bit-identically")
