"""The documentation's toy mode (``$BASINLAB_DOCS_TOY``): every documented command shrunk to seconds."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from basinlab.config.sizes import resolve_sizes

if TYPE_CHECKING:
    from basinlab.config.schema import Config, ProbeConfig

#: Set to 1 by the documentation tests (tests/test_docs.py): every command of README.md and docs/ runs at toy size.
DOCS_TOY_ENV = "BASINLAB_DOCS_TOY"


def docs_toy() -> bool:
    """True when ``$BASINLAB_DOCS_TOY`` is set (to anything but ``0``)."""
    return os.environ.get(DOCS_TOY_ENV, "0") not in ("", "0")


def apply_docs_toy(cfg: Config) -> Config:
    """Shrink ``cfg`` in place so that any documented command runs in seconds on a CPU, keeping what it does:
    a one-layer DiT, a few training steps, ``L <= 16``, a small pool and test set, two sizes and one seed per
    sweep, tiny probe settings, CPU devices. Used only under ``$BASINLAB_DOCS_TOY`` (the documentation tests)."""
    d, m, t, s = cfg.data, cfg.model, cfg.train, cfg.sweep
    d.seq_len, d.n_test, d.n_train = min(d.seq_len, 16), min(d.n_test, 32), min(d.n_train, 64)
    d.markov_pool, d.vocab_size = min(d.markov_pool, 400), min(d.vocab_size, 512)
    m.n_layer, m.d_model, m.n_head, m.d_cond = 1, 32, 2, 16
    t.steps, t.warmup_steps, t.ce_warmup_steps = min(t.steps, 4), min(t.warmup_steps, 2), min(t.ce_warmup_steps, 2)
    t.ckpt_every, t.log_every, t.batch_size = min(t.ckpt_every, 2), min(t.log_every, 2), min(t.batch_size, 8)
    t.grad_accum, t.device, t.compile = 1, "cpu", False
    apply_docs_toy_probe(cfg.probe)
    s.sizes, s.seeds = _toy_sizes(s.sizes), list(s.seeds)[:1]
    s.devices = ["cpu" for _ in s.devices][:2]
    return cfg


def apply_docs_toy_probe(probe: ProbeConfig) -> ProbeConfig:
    """The probe part of :func:`apply_docs_toy` (the ``probe`` command applies it after its flags too)."""
    probe.m, probe.steps, probe.n_samples = min(probe.m, 8), min(probe.steps, 4), min(probe.n_samples or 4, 4)
    probe.batch_size, probe.ts = min(probe.batch_size, 64), list(probe.ts)[:2]
    probe.gen_ppl_model = None if probe.gen_ppl_model == "auto" else probe.gen_ppl_model  # a preset's, not asked for
    return probe


def _toy_sizes(sizes: object) -> list[int]:
    """The first size of the grid (at most 16) and its double."""
    first = max(1, min(resolve_sizes(sizes)[0], 16))
    return [first, 2 * first]
