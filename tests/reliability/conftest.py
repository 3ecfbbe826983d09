"""Shared pieces of the reliability suite: a tiny Markov run and a way to run training in a child process."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

import pytest
import torch

from basinlab.config import Config, DataConfig

TINY = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16", "train.batch_size=16",
        "train.log_every=1", "train.device=cpu", "train.progress=false", "data.source=markov", "data.n_train=64",
        "data.n_test=64", "data.markov_pool=1064"]


def tiny_config(tmp_path, **train) -> Config:
    """Markov data (V=32, L=32), a 1-layer 32-wide DiT with dropout (its RNG must resume too), CPU."""
    cfg = Config()
    cfg.data = DataConfig(source="markov", seq_len=32, n_train=64, n_test=64, markov_pool=1064,
                          cache_dir=str(tmp_path / "cache"))
    cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head, cfg.model.d_cond = 1, 32, 2, 16
    cfg.model.dropout = 0.1
    cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.progress, cfg.train.device = 16, 2, False, "cpu"
    cfg.out_dir = str(tmp_path / "run")
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


def fork_child(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a forked child (torch already imported: no start-up cost); return its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            fn()
            code = 0
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # shown in the test's captured output
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of tests/reliability/ is marked ``reliability`` (make test runs them with the rest)."""
    for item in items:
        if "tests/reliability/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.reliability)
