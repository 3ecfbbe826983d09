"""What each config section accepts (ranges, registered names, devices, seeds): :func:`validate` checks and
normalises a whole config in place, once (``Config.validate``)."""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING, Any

from basinlab.config.coerce import _bad, _normalise, _show
from basinlab.config.names import (
    DATA_MODES,
    DATA_SOURCES,
    LR_DECAYS,
    OBJECTIVES,
    PRECISIONS,
    QUICK_M,
    QUICK_SAMPLES,
    QUICK_STEPS,
    SAMPLERS,
    SEED_LIMIT,
    TRACKERS,
)
from basinlab.config.presets import resolve_arch, time_conditioning
from basinlab.config.sizes import resolve_sizes
from basinlab.errors import BasinlabError
from basinlab.registry import FAMILIES, PROCESSES, PROTOCOLS, SCHEDULES, WEIGHTS

if TYPE_CHECKING:
    from basinlab.config.schema import Config, DataConfig, ModelConfig, ProbeConfig, SweepConfig, TrainConfig


def validate(cfg: Config) -> None:
    """Normalise ``cfg`` in place and check every section; one :class:`BasinlabError` line naming the key."""
    _normalise(cfg, "")
    if not cfg.out_dir:
        raise _bad("out_dir", "a directory path", cfg.out_dir)
    _check_data(cfg.data)
    _check_model(cfg.model)
    _check_train(cfg.train)
    _check_probe(cfg.probe)
    _check_sweep(cfg.sweep)


def _require(ok: bool, name: str, what: str, value: Any) -> None:
    if not ok:
        raise _bad(name, what, value)


def _at_least(section: Any, prefix: str, keys: tuple[str, ...], low: int) -> None:
    for key in keys:
        v = getattr(section, key)
        _require(v >= low, f"{prefix}.{key}", f"an integer >= {low}", v)


def _seed(name: str, value: int) -> None:
    _require(0 <= value < SEED_LIMIT, name, "an integer in [0, 2^32)", value)


def _device(name: str, value: str) -> None:
    _require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value) is not None, name, "auto, cpu, cuda or cuda:N", value)


def _unit(name: str, value: float, closed_low: bool, closed_high: bool) -> None:
    lo = 0.0 <= value if closed_low else 0.0 < value
    hi = value <= 1.0 if closed_high else value < 1.0
    _require(lo and hi, name, f"a number in {'[' if closed_low else '('}0, 1{']' if closed_high else ')'}", value)


def _choice(name: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise BasinlabError(f"unknown {name} {_show(value)}; choose one of {', '.join(choices)}")


def validate_data(dc: DataConfig) -> DataConfig:
    """The ``data`` part of :meth:`Config.validate`, for callers holding a ``DataConfig`` alone."""
    _normalise(dc, "data.")
    _check_data(dc)
    return dc


def _check_data(dc: DataConfig) -> None:
    from basinlab.memory import require_fits

    _choice("data.source", dc.source, DATA_SOURCES)
    if dc.path is not None and dc.source in ("brown", "markov"):  # read only by the text and datasets sources
        raise BasinlabError(f"data.path is read only for data.source=text or datasets; data.source={dc.source} would "
                            "ignore it: drop data.path, or set data.source=text (or datasets)")
    if dc.source != "markov":
        _choice("data.mode", dc.mode, DATA_MODES)
    min_len = 2 if dc.source == "markov" else 3
    _require(dc.seq_len >= min_len, "data.seq_len", f"an integer >= {min_len} for data.source={dc.source}", dc.seq_len)
    _at_least(dc, "data", ("n_test", "markov_vocab"), 1)
    _at_least(dc, "data", ("n_train",), 0)
    _require(dc.vocab_size > 4, "data.vocab_size", "an integer > 4 (4 special tokens + 1)", dc.vocab_size)
    _require(dc.markov_vocab >= 2, "data.markov_vocab", "an integer >= 2", dc.markov_vocab)
    _require(1 <= dc.markov_successors <= dc.markov_vocab, "data.markov_successors",
             f"an integer in [1, data.markov_vocab={dc.markov_vocab}]", dc.markov_successors)
    _seed("data.seed", dc.seed)
    _seed("data.markov_seed", dc.markov_seed)
    if dc.source == "markov":
        _require(dc.markov_pool > dc.n_test, "data.markov_pool", f"an integer > data.n_test={dc.n_test}",
                 dc.markov_pool)
        # P [V, V] float64 with its cumulative rows and the lazy chain of the stationary distribution: 4 copies
        require_fits(4 * 8 * dc.markov_vocab**2, f"data.markov_vocab={dc.markov_vocab}")
        require_fits(24 * dc.markov_pool * dc.seq_len, f"data.markov_pool={dc.markov_pool}")


def _check_model(mc: ModelConfig) -> None:
    FAMILIES.check(mc.family, "model.family")
    resolve_arch(mc)
    time_conditioning(mc)


@functools.lru_cache(maxsize=64)
def _warn_once(message: str) -> None:
    """A config warning, logged once per process however often the config is validated."""
    logging.getLogger(__name__).warning("%s", message)


def _check_train(tc: TrainConfig) -> None:
    _at_least(tc, "train", ("steps", "warmup_steps", "ce_warmup_steps"), 0)
    _at_least(tc, "train", ("batch_size", "grad_accum", "log_every", "ckpt_every"), 1)
    _require(tc.batch_size % tc.grad_accum == 0, "train.batch_size",
             f"a multiple of train.grad_accum={tc.grad_accum}", tc.batch_size)
    _require(tc.lr > 0, "train.lr", "a positive number", tc.lr)
    _require(tc.weight_decay >= 0, "train.weight_decay", "a number >= 0", tc.weight_decay)
    _require(tc.grad_clip >= 0, "train.grad_clip", "a number >= 0 (0 turns clipping off)", tc.grad_clip)
    for key in ("beta1", "beta2", "ema", "eps", "t_eps"):
        _unit(f"train.{key}", getattr(tc, key), closed_low=True, closed_high=False)
    _choice("train.objective", tc.objective, OBJECTIVES)
    if tc.objective != "ce_redrawn" and 0 < tc.steps <= tc.ce_warmup_steps:
        _warn_once(f"train.ce_warmup_steps={tc.ce_warmup_steps} >= train.steps={tc.steps}: every step is a "
                   f"warm-up step of ce_redrawn and the {tc.objective} objective never runs")
    _choice("train.lr_decay", tc.lr_decay, LR_DECAYS)
    SCHEDULES.check(tc.schedule, "train.schedule")
    PROCESSES.check(tc.process, "train.process")
    _at_least(tc, "train", ("lora_rank",), 0)
    _choice("train.precision", tc.precision, PRECISIONS)
    _choice("train.tracker", tc.tracker, TRACKERS)
    _device("train.device", tc.device)
    _seed("train.seed", tc.seed)


def _check_probe(pc: ProbeConfig) -> None:
    PROTOCOLS.check(pc.protocol, "probe.protocol")
    _require(pc.sampler in SAMPLERS, "probe.sampler", " | ".join(SAMPLERS), pc.sampler)
    if pc.weights is not None:
        WEIGHTS.check(pc.weights, "probe.weights")
    _at_least(pc, "probe", ("m", "steps", "batch_size"), 1)
    if pc.n_samples is not None:
        _at_least(pc, "probe", ("n_samples",), 0)
    _require(len(pc.ts) > 0, "probe.ts", "a non-empty list of numbers in (0, 1]", pc.ts)
    for i, t in enumerate(pc.ts):
        _unit(f"probe.ts[{i}]", t, closed_low=False, closed_high=True)
    _unit("probe.t_start", pc.t_start, closed_low=False, closed_high=True)
    _unit("probe.entropy_t", pc.entropy_t, closed_low=False, closed_high=True)
    _unit("probe.remask", pc.remask, closed_low=True, closed_high=True)
    apply_quick(pc)


def apply_quick(pc: ProbeConfig) -> ProbeConfig:
    """The one place ``probe.quick`` acts (in place): ``m <= QUICK_M``, ``steps <= QUICK_STEPS``, ``n_samples <=
    QUICK_SAMPLES`` (``null``, the protocol's default, becomes ``QUICK_SAMPLES``)."""
    if pc.quick:
        pc.m, pc.steps = min(pc.m, QUICK_M), min(pc.steps, QUICK_STEPS)
        pc.n_samples = QUICK_SAMPLES if pc.n_samples is None else min(pc.n_samples, QUICK_SAMPLES)
    return pc


def _check_sweep(sc: SweepConfig) -> None:
    sc.sizes = resolve_sizes(sc.sizes)  # parsed once: a sorted list of ints from here on
    for i, p in enumerate(sc.processes):
        PROCESSES.check(p, f"sweep.processes[{i}]")
    _require(len(set(sc.processes)) == len(sc.processes), "sweep.processes", "a list without repeats",
             sc.processes)
    _require(len(sc.seeds) > 0, "sweep.seeds", "a non-empty list of integers", sc.seeds)
    for i, s in enumerate(sc.seeds):
        _seed(f"sweep.seeds[{i}]", s)
    _unit("sweep.transition_t", sc.transition_t, closed_low=False, closed_high=True)
    _unit("sweep.transition_tol", sc.transition_tol, closed_low=True, closed_high=True)
    for i, d in enumerate(sc.devices):  # DEV or DEV*K: K workers on one device (study.sweep.expand_devices)
        dev, star, k = str(d).partition("*")
        _require(not star or (k.isdigit() and int(k) >= 1), f"sweep.devices[{i}]", "DEVICE or DEVICE*K, K >= 1", d)
        _device(f"sweep.devices[{i}]", dev)
