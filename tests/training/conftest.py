"""Shared fixtures: small Markov data sets (SPEC 1 defaults: V=32, L=32, 8 successors) and tiny configs."""

from __future__ import annotations

import pytest

from basinlab.config import Config, DataConfig
from basinlab.data import build_dataset


def markov_config(tmp_path, **train) -> Config:
    """A Config on Markov data with a 1-layer, 32-wide model: for plumbing tests that only need speed."""
    cfg = Config()
    cfg.data = DataConfig(source="markov", seq_len=32, n_train=64, n_test=64, markov_pool=1064,
                          cache_dir=str(tmp_path / "cache"))
    cfg.model.preset = "micro"
    cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head, cfg.model.d_cond = 1, 32, 2, 16
    cfg.train.batch_size = 16
    cfg.train.steps = 6
    cfg.train.warmup_steps = 2
    cfg.train.log_every = 1
    cfg.train.ckpt_every = 100
    cfg.train.progress = False
    cfg.train.device = "cpu"
    cfg.out_dir = str(tmp_path / "run")
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.fixture(scope="session")
def markov_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("markov-cache")


@pytest.fixture(scope="session")
def markov_data(markov_cache):
    """5000 Markov sequences (500 of them the test set), built once per session."""
    return build_dataset(DataConfig(source="markov", seq_len=32, n_train=4500, n_test=500, markov_pool=5000,
                                    cache_dir=str(markov_cache)))
