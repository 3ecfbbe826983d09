"""Dataclass configs, YAML in/out and ``key=value`` overrides.

A config has five sections, ``data``, ``model``, ``train``, ``probe`` and ``sweep``, plus ``out_dir``.
YAML files hold any subset of the keys; ``section.key=value`` overrides are parsed as YAML scalars, both by
:func:`load_yaml` (YAML 1.1 less its base-60, hex, octal and ``1_000`` numbers; duplicate keys, empty files and
alias bombs refused). An unknown key is an error that names the valid keys (SPEC-independent plumbing).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from basinlab.errors import BasinlabError
from basinlab.registry import FAMILIES, PROCESSES, PROTOCOLS, SCHEDULES, WEIGHTS

DATA_SOURCES = ("brown", "text", "datasets", "markov")
DATA_MODES = ("sentence", "wrap")
OBJECTIVES = ("nelbo", "ce_redrawn")
PRECISIONS = ("auto", "bf16", "fp32")
LR_DECAYS = ("none", "linear", "cosine")
#: seeds (``train.seed``, ``data.seed``, ``sweep.seeds``...) lie in ``[0, SEED_LIMIT)``: torch generators take 64 bits
#: and basinlab derives child seeds by small affine maps
SEED_LIMIT = 2**32
#: ``probe.quick``: about a minute of CPU for ``probe all`` on a ``micro`` model (Markov preset, L = 32): at most
#: 128 sequences per set, T = 25 and 64 generated samples (docs/STUDY.md, "Probe cost").
QUICK_M, QUICK_STEPS, QUICK_SAMPLES = 128, 25, 64
#: Keys that may change between a checkpoint (or a sweep directory) and its resumption: where files live and how
#: fast or verbosely the same numbers are computed, never what is computed. ``train.steps`` may grow for a single
#: run (training continues), not for a sweep (:data:`SWEEP_FIXED_KEYS`).
RESUMABLE_KEYS: dict[str, frozenset[str]] = {
    "data": frozenset({"cache_dir"}),
    "train": frozenset({"steps", "log_every", "ckpt_every", "progress", "device", "precision", "compile",
                        "grad_accum"}),
    "probe": frozenset({"batch_size"}),
}
#: keys a sweep directory keeps although a single run may change them (SPEC 7: one step budget for every N)
SWEEP_FIXED_KEYS: dict[str, frozenset[str]] = {"train": frozenset({"steps"})}


@dataclass
class DataConfig:
    """Where sequences come from and how they are cut (SPEC 1)."""

    source: str = "brown"  # brown | text | datasets | markov
    path: str | None = None  # text file (one sentence per line) or a local file/dir `datasets` reads
    text_field: str = "text"  # column holding the text in a `datasets` source
    mode: str = "sentence"  # sentence | wrap
    seq_len: int = 32  # L
    tokenizer: str = "wordpiece"  # wordpiece | bpe | bert-base-uncased | path to tokenizer.json or vocab.txt
    vocab_size: int = 8192  # for trained tokenizers
    n_train: int = 1024  # N, the size of the (nested) training subset
    n_test: int = 1000  # the fixed held-out test set
    seed: int = 0  # shuffles the pool once
    markov_vocab: int = 32  # V of the synthetic Markov source
    markov_successors: int = 8
    markov_seed: int = 0
    markov_pool: int = 100_000  # sequences drawn from the source to form the pool
    cache_dir: str | None = None  # processed data and tokenizers; default ~/.cache/basinlab


@dataclass
class ModelConfig:
    """The DiT denoiser; ``None`` fields take the preset's value."""

    preset: str = "micro"  # micro | tiny | small | medium
    n_layer: int | None = None
    d_model: int | None = None
    n_head: int | None = None
    d_cond: int | None = None
    dropout: float | None = None
    time_conditioning: bool = True  # condition on sigma_t (off: sigma = 0, as MDLM's OpenWebText model; SPEC 2b)
    family: str = "dit"  # the model family (basinlab.registry.FAMILIES; SPEC 2c)
    init: str | None = None  # a directory of a family's own format to start from (fine-tuning; its family decides)


@dataclass
class TrainConfig:
    """Optimisation (SPEC 4 for the objective and the time sampling)."""

    steps: int = 2000
    batch_size: int = 64  # global batch (all ranks, all accumulation micro-steps)
    grad_accum: int = 1
    lr: float = 3e-4
    warmup_steps: int = 100
    lr_decay: str = "none"  # none | linear | cosine: after the warm-up, constant or decayed to 0 at train.steps
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    ema: float = 0.9999  # decay; warmed up as min(ema, (1 + k) / (10 + k))
    grad_clip: float = 1.0
    process: str = "uniform"  # a registered forward process: uniform (SPEC 2) | masked (SPEC 2b) | ...
    objective: str = "nelbo"  # nelbo | ce_redrawn (masked process: cross-entropy on the masked positions)
    ce_warmup_steps: int = 0  # steps of ce_redrawn before switching to the NELBO
    schedule: str = "loglinear"  # loglinear | cosine
    eps: float = 1e-3  # schedule epsilon
    t_eps: float = 1e-3  # t ~ t_eps + (1 - t_eps) u
    antithetic: bool = True
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA) | bf16 | fp32
    compile: bool = False
    log_every: int = 50
    ckpt_every: int = 500
    progress: bool = True
    lora_rank: int = 0  # > 0: fine-tune LoRA adapters of this rank (peft) instead of every weight (model.init)


@dataclass
class ProbeConfig:
    """Associative-memory tests (SPEC 5). Defaults are the paper's; ``quick`` suits a CPU."""

    m: int = 5000  # sequences per set
    ts: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0])
    steps: int = 1000  # T, the grid over [t_min, 1]
    batch_size: int = 256
    t_start: float = 1.0  # fixed-point test
    entropy_t: float = 1e-5
    n_samples: int | None = None  # generated samples (novelty, entropy gap); None: 256, 20000 for paper on a GPU
    quick: bool = False  # m <= 128, steps <= 25, n_samples <= 64: about a CPU minute (QUICK_*)
    protocol: str = "exact"  # exact (SPEC 5) | paper (the published study's code: SPEC 5 "Protocols")
    remask: float = 0.0  # masked models: ReMDM's eta in the reverse chains (0: MDLM's sampler; SPEC 2b)
    weights: str | None = None  # ema | raw weights of a trained run; None: ema under exact, raw under paper
    sampler: str = "ancestral"  # ancestral (SPEC 3) | entropy_bound (the model's own, e.g. DiffusionGemma's; SPEC 2c)
    self_conditioning: bool = False  # chains feed each step's logits to the next (DiffusionGemma; SPEC 2c)
    t_grid: bool = True  # fixed points and entropy at every t of probe.ts (probes/t_grid.py)
    trajectory_stats: bool = True  # statistics of x_θ along the reverse chain from t = 1 (probes/trajectory.py)
    gen_ppl_model: str | None = None  # a local Hugging Face causal LM directory: generative perplexity of samples


@dataclass
class SweepConfig:
    """The study of SPEC 7."""

    sizes: list[int] | str | dict = field(default_factory=lambda: [16, 64, 256, 1024])  # or "16:32768[:factor]"
    seeds: list[int] = field(default_factory=lambda: [0])
    oracles: bool = True
    transition_t: float = 0.25
    transition_tol: float = 0.05  # N* = first N where train - test recovery at transition_t is <= this
    devices: list[str] = field(default_factory=list)  # one worker process per entry, e.g. [cuda:0, cuda:1]
    processes: list[str] = field(default_factory=list)  # processes to train, e.g. [uniform, masked]; []: train.process


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    out_dir: str = "runs/default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        """Check every value of every section and return ``self``, normalised in place: numbers given as strings
        become numbers, ``probe.quick`` caps ``m`` and ``steps``. Bad values raise one :class:`BasinlabError` line
        naming the key. Every command and the Python API (``train``, ``run_sweep``) call this; a config unchanged
        since its last validation is not checked again (the sweep hands its validated config down to the trainer)."""
        if getattr(self, "_validated", None) == self.to_dict():
            return self
        _normalise(self, "")
        if not self.out_dir:
            raise _bad("out_dir", "a directory path", self.out_dir)
        _check_data(self.data)
        _check_model(self.model)
        _check_train(self.train)
        _check_probe(self.probe)
        _check_sweep(self.sweep)
        self._validated = self.to_dict()
        return self

    def with_values(self, validate: bool = True, **values: Any) -> Config:
        """A validated copy with ``section__key=value`` (or ``out_dir=...``) set, e.g. ``train__seed=1``.

        ``validate=False`` for values taken from a validated config (a sweep's grid, its devices): the copy then
        counts as validated, and is not checked again on its way to the trainer."""
        new = copy.deepcopy(self)
        for name, value in values.items():
            section, _, key = name.rpartition("__")
            obj = getattr(new, section) if section else new
            if not hasattr(obj, key):
                raise BasinlabError(f"unknown config key '{name.replace('__', '.')}'")
            setattr(obj, key, value)
        if not validate:
            new._validated = new.to_dict()
            return new
        return new.validate()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from basinlab.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())


# ---- model presets (models.build sizes the DiT from these; SPEC 5 "Protocols" for tiny/small/medium) ----------

PRESETS: dict[str, dict[str, Any]] = {
    "micro": {"n_layer": 4, "d_model": 128, "n_head": 4, "d_cond": 64, "dropout": 0.0},
    "tiny": {"n_layer": 8, "d_model": 256, "n_head": 8, "d_cond": 128, "dropout": 0.1},
    "small": {"n_layer": 12, "d_model": 768, "n_head": 12, "d_cond": 128, "dropout": 0.1},
    "medium": {"n_layer": 24, "d_model": 1024, "n_head": 16, "d_cond": 128, "dropout": 0.1},
}

_FIELDS = ("n_layer", "d_model", "n_head", "d_cond", "dropout")


def resolve_arch(model_cfg: ModelConfig | dict[str, Any] | str) -> dict[str, Any]:
    """The preset's values with the config's non-``None`` fields on top, validated."""
    if isinstance(model_cfg, str):
        values: dict[str, Any] = {"preset": model_cfg}
    elif isinstance(model_cfg, dict):
        values = dict(model_cfg)
    else:
        values = {name: getattr(model_cfg, name) for name in ("preset", *_FIELDS)}
    name = values.get("preset") or "micro"
    if name not in PRESETS:
        raise BasinlabError(f"unknown model preset '{name}'; available: {', '.join(PRESETS)}")
    arch = dict(PRESETS[name])
    for key in _FIELDS:
        if values.get(key) is not None:
            arch[key] = values[key]
    for key in ("n_layer", "d_model", "n_head", "d_cond"):
        if not isinstance(arch[key], int) or isinstance(arch[key], bool) or arch[key] < 1:
            raise BasinlabError(f"model.{key} must be a positive integer, got {arch[key]!r}")
    if arch["d_model"] % arch["n_head"] or (arch["d_model"] // arch["n_head"]) % 2:
        raise BasinlabError(
            f"model.d_model={arch['d_model']} must be n_head={arch['n_head']} times an even head size (rotary)"
        )
    if not 0.0 <= float(arch["dropout"]) < 1.0:
        raise BasinlabError(f"model.dropout must lie in [0, 1), got {arch['dropout']!r}")
    arch["dropout"] = float(arch["dropout"])
    return arch


def time_conditioning(model_cfg: ModelConfig | dict[str, Any] | str) -> bool:
    """``model.time_conditioning`` (default on) of a config, a checkpoint's ``arch`` or a preset name."""
    if isinstance(model_cfg, str):
        return True
    tc = model_cfg.get("time_conditioning") if isinstance(model_cfg, dict) else model_cfg.time_conditioning
    if tc is not None and not isinstance(tc, bool):
        raise BasinlabError(f"model.time_conditioning must be true or false, got {tc!r}")
    return True if tc is None else tc


# ---- types: one coercion of YAML values into each field's type --------------------------------------------------


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    """Set ``values`` (a nested mapping) on the dataclass ``obj``; unknown keys are errors naming the valid ones."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise BasinlabError(
                f"unknown config key '{where}{key}'; valid keys here: {', '.join(sorted(names))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise BasinlabError(f"config key '{where}{key}' is a section: give a mapping, not {_show(value)}")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, value)


def _normalise(obj: Any, where: str) -> None:
    """Give every field of the dataclass ``obj`` its declared type (in place); one line for a value that has none."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _normalise(value, f"{where}{f.name}.")
        else:
            setattr(obj, f.name, _typed(value, hints[f.name], f"{where}{f.name}"))


def _bad(name: str, what: str, value: Any) -> BasinlabError:
    key = re.sub(r"\[\d+\]$", "", name)
    return BasinlabError(
        f"config key '{name}' must be {what}, got {_show(value)}; fix it in the config or with {key}=..."
    )


def _typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` as type ``hint``. YAML 1.1 reads ``1e-3`` as a string: numbers in strings become numbers here (the
    one place that coerces); ints become floats where a float is due; anything else of the wrong type is an error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if value is None and len(kinds) < len(args):
            return None
        if len(kinds) == 1:
            return _typed(value, kinds[0], name)
        for kind in kinds:  # a union of shapes (sweep.sizes): the member matching the value's shape
            shape = typing.get_origin(kind) or kind
            if isinstance(value, shape) or (shape is list and isinstance(value, tuple)):
                return _typed(value, kind, name)
        if list[int] in kinds and isinstance(value, int) and not isinstance(value, bool):
            return [value]
        raise _bad(name, " or ".join(_kind_name(k) for k in kinds), value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _bad(name, f"a list ({_kind_name(hint)})", value)
        return [_typed(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise _bad(name, "true or false", value)
        return value
    if hint in (int, float):
        return _number(value, hint, name)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a directory or device named by a number
        if not isinstance(value, str):
            raise _bad(name, "a string", value)
        return value
    if hint is dict and not isinstance(value, dict):
        raise _bad(name, "a mapping", value)
    return value


#: numbers written as text: plain ASCII decimals (no ``0x10``, ``010``, ``1_000`` or non-ASCII digits)
_INT_TEXT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?:inf|nan)", re.IGNORECASE)


def _number(value: Any, kind: type, name: str) -> int | float:
    what = "an integer" if kind is int else "a finite number"
    if isinstance(value, str):
        if (_INT_TEXT if kind is int else _FLOAT_TEXT).fullmatch(value.strip()) is None:
            raise _bad(name, f"{what} (plain decimal digits)", value)
        try:
            value = int(value.strip()) if kind is int else float(value.strip())
        except ValueError:
            raise _bad(name, what, value) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
        raise _bad(name, what, value)
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise _bad(name, what, value)
    return value


def _kind_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"list of {_kind_name(typing.get_args(hint)[0])}s"
    return {int: "integer", float: "number", str: "string", bool: "boolean", dict: "mapping"}.get(hint, str(hint))


# ---- ranges: what each section accepts -------------------------------------------------------------------------


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
    _choice("train.lr_decay", tc.lr_decay, LR_DECAYS)
    SCHEDULES.check(tc.schedule, "train.schedule")
    PROCESSES.check(tc.process, "train.process")
    _at_least(tc, "train", ("lora_rank",), 0)
    _choice("train.precision", tc.precision, PRECISIONS)
    _device("train.device", tc.device)
    _seed("train.seed", tc.seed)


#: the reverse chains a probe can run: basinlab's ancestral chain (SPEC 3) or a model's own sampler (SPEC 2c)
SAMPLERS = ("ancestral", "entropy_bound")


def _check_probe(pc: ProbeConfig) -> None:
    PROTOCOLS.check(pc.protocol, "probe.protocol")
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
    _require(pc.sampler in SAMPLERS, "probe.sampler", " | ".join(SAMPLERS), pc.sampler)
    apply_quick(pc)


def apply_quick(pc: ProbeConfig) -> ProbeConfig:
    """The one place ``probe.quick`` acts (in place): ``m <= QUICK_M``, ``steps <= QUICK_STEPS``, ``n_samples <=
    QUICK_SAMPLES`` (``null``, the protocol's default, becomes ``QUICK_SAMPLES``)."""
    if pc.quick:
        pc.m, pc.steps = min(pc.m, QUICK_M), min(pc.steps, QUICK_STEPS)
        pc.n_samples = QUICK_SAMPLES if pc.n_samples is None else min(pc.n_samples, QUICK_SAMPLES)
    return pc


def _check_sweep(sc: SweepConfig) -> None:
    resolve_sizes(sc.sizes)
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


# ---- the sweep's grid of N -------------------------------------------------------------------------------------


def geometric_sizes(start: int, stop: int, factor: float = 2.0) -> list[int]:
    """``start, start·f, start·f², ...`` up to ``stop`` inclusive, rounded to integers, e.g. ``2^4 .. 2^15``."""
    if start < 1 or stop < start or factor <= 1:
        raise BasinlabError(f"geometric grid needs 1 <= start <= stop and factor > 1, got {start}, {stop}, {factor}")
    out: list[int] = []
    k = 0
    while True:
        n = int(round(start * factor**k))
        if n > stop * (1 + 1e-9):
            break
        if not out or n != out[-1]:
            out.append(n)
        k += 1
    return out


def resolve_sizes(spec: Any) -> list[int]:
    """The grid of ``sweep.sizes``: a list of ints, ``"16:32768"`` / ``"16:32768:4"`` (geometric, factor 2 or
    given), or a mapping ``{start: 16, stop: 32768, factor: 2}``. Sorted, without duplicates."""
    if isinstance(spec, str):
        parts = spec.split(":")
        nums = [_number(p, int if i < 2 else float, "sweep.sizes") for i, p in enumerate(parts)] if len(parts) in (
            2, 3) else []
        if not nums:
            raise BasinlabError(f"sweep.sizes {_show(spec)} is not 'start:stop' or 'start:stop:factor'")
        sizes = geometric_sizes(int(nums[0]), int(nums[1]), float(nums[2]) if len(nums) == 3 else 2.0)
    elif isinstance(spec, dict):
        if "start" not in spec or "stop" not in spec or set(spec) - {"start", "stop", "factor"}:
            raise BasinlabError("sweep.sizes as a mapping needs 'start' and 'stop' (and optionally 'factor')")
        sizes = geometric_sizes(_number(spec["start"], int, "sweep.sizes.start"),
                                _number(spec["stop"], int, "sweep.sizes.stop"),
                                _number(spec.get("factor", 2.0), float, "sweep.sizes.factor"))
    elif isinstance(spec, (list, tuple)):
        sizes = sorted({_number(n, int, "sweep.sizes") for n in spec})
    elif isinstance(spec, int) and not isinstance(spec, bool):
        sizes = [spec]
    else:
        raise BasinlabError(f"sweep.sizes must be a list, 'start:stop[:factor]' or a mapping, got {_show(spec)}")
    if not sizes or sizes[0] < 1:
        raise BasinlabError(f"sweep.sizes must be positive integers, got {_show(spec)}")
    return sizes


# ---- resumption ------------------------------------------------------------------------------------------------


def resumable_keys(sweep: bool = False) -> dict[str, frozenset[str]]:
    """:data:`RESUMABLE_KEYS`; for a sweep directory without ``train.steps`` (SPEC 7: one step budget for every N)."""
    if not sweep:
        return dict(RESUMABLE_KEYS)
    return {s: frozenset(k - SWEEP_FIXED_KEYS.get(s, frozenset())) for s, k in RESUMABLE_KEYS.items()}


def config_differences(old: Config, new: Config, sections: tuple[str, ...], sweep: bool = False) -> list[str]:
    """``'section.key: old in the checkpoint, new now'`` for each key of ``sections`` that differs and may not."""
    a, b = old.to_dict(), new.to_dict()
    free = resumable_keys(sweep)
    return [
        f"{s}.{k}: {_show(a[s].get(k))} before, {_show(v)} now"
        for s in sections
        for k, v in b[s].items()
        if k not in free.get(s, ()) and a[s].get(k) != v
    ]

def preset_path_or_none(name: str) -> Path | None:
    """The packaged preset ``name``, or None when there is none."""
    path = Path(str(resources.files("basinlab") / "study" / "presets" / f"{name}.yaml"))
    return path if path.is_file() else None


def preset_path(name: str) -> Path:
    """Path of a preset YAML shipped in the package (``demo``, ``markov``, ``paper``...)."""
    root = resources.files("basinlab") / "study" / "presets"
    path = Path(str(root / f"{name}.yaml"))
    if not path.exists():
        names = sorted(p.stem for p in Path(str(root)).glob("*.yaml"))
        raise BasinlabError(f"unknown preset '{name}'; available: {', '.join(names) or 'none'}")
    return path


# ---- YAML: one reader for config files, overrides and checkpoints ------------------------------------------------

#: a YAML document's values after its aliases are expanded: more is a "billion laughs" and is refused
YAML_MAX_VALUES = 100_000
#: at most this many characters of a value in an error message
SHOWN_CHARS = 80


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader less YAML 1.1's surprises: integers are plain decimals (``16:32`` is no base-60 992,
    ``0x10``, ``010``, ``0b1`` and ``1_000`` are no numbers: they stay text and are refused where a number is due);
    floats have no ``_`` or base 60; a key given twice in one mapping is an error."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {_show(key.value)} given twice", key.start_mark)
                    seen.add(key.value)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rules if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for ch, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _show(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOWN_CHARS` characters, without expanding deep or shared structure."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, SHOWN_CHARS, SHOWN_CHARS
    text = short.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """How many values ``value`` holds once its YAML aliases (shared lists and mappings) are written out."""
    if not isinstance(value, (list, dict)):
        return 1
    if id(value) not in memo:
        memo[id(value)] = 0  # a recursive alias (`&a [*a]`) counts once
        items = list(value.values()) + list(value.keys()) if isinstance(value, dict) else value
        memo[id(value)] = 1 + sum(_expanded_size(v, memo) for v in items)
    return memo[id(value)]


def load_yaml(text: str, where: str) -> Any:
    """Parse ``text`` (the content of ``where``: a file, an override) with :class:`_Loader`; a syntax error, a
    duplicate key or aliases expanding to more than :data:`YAML_MAX_VALUES` values are one-line errors."""
    try:
        value = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise BasinlabError(f"{where} is not valid YAML: {problem}{at}") from None
    if _expanded_size(value, {}) > YAML_MAX_VALUES:
        raise BasinlabError(f"{where}: YAML aliases expand to more than {YAML_MAX_VALUES} values; write the values out")
    return value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.steps=10", "data.seq_len=16"]`` -> nested dict, values parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise BasinlabError(f"override '{item}' is not of the form section.key=value (e.g. train.steps=100)")
        key, raw = item.split("=", 1)
        value = load_yaml(raw, f"override '{_show(item)[1:-1]}'") if raw != "" else None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_config(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from a YAML path (or a preset name), then apply ``key=value`` overrides; validated."""
    cfg = Config()
    if source is not None:
        _apply(cfg, _read_yaml(source), "")
    _apply(cfg, parse_overrides(overrides), "")
    cfg = cfg.validate()
    if docs_toy():
        apply_docs_toy(cfg)
    return cfg


def _read_yaml(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    try:
        if path.suffix == "" and "/" not in str(source) and not path.is_file():
            # a preset name; a folder of that name in the working directory (e.g. a run's) does not hide it
            if path.exists() and not preset_path_or_none(str(source)):
                raise BasinlabError(f"config '{source}' is a directory, not a YAML file; give a YAML path or a "
                                    "preset name")
            path = preset_path(str(source))
        if not path.exists():
            raise BasinlabError(f"config file '{source}' not found; give a YAML path or a preset name")
        if not path.is_file():
            raise BasinlabError(f"config '{source}' is a directory, not a YAML file; give a YAML path or a preset name")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BasinlabError(f"config file '{path}' is not text (binary or not UTF-8); give a YAML file") from None
    except OSError as exc:
        raise BasinlabError(f"cannot read config file '{path}': {exc.strerror}") from None
    values = load_yaml(text, f"config file '{path}'")
    if values is None:
        raise BasinlabError(f"config file '{path}' is empty; give at least one section (data:, model:, train:...), "
                            "or no CONFIG for the defaults")
    if not isinstance(values, dict):
        raise BasinlabError(f"config file '{path}' must hold a mapping of sections (data:, model:, train:...)")
    return values


def config_from_dict(values: dict[str, Any]) -> Config:
    """A validated :class:`Config` from a nested mapping (e.g. a checkpoint's ``config.yaml``)."""
    cfg = Config()
    _apply(cfg, values, "")
    return cfg.validate()


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
    return probe


def _toy_sizes(sizes: Any) -> list[int]:
    """The first two sizes of a grid, at most 32."""
    if isinstance(sizes, str):
        start = sizes.split(":")[0]
        first = int(float(start)) if start.replace(".", "", 1).isdigit() else 16
    elif isinstance(sizes, dict):
        first = int(sizes.get("start", 16))
    elif isinstance(sizes, (list, tuple)) and sizes:
        first = int(sorted(sizes)[0])
    else:
        first = 16
    first = max(1, min(first, 16))
    return [first, 2 * first]


def _resolved_probe(probe: ProbeConfig) -> ProbeConfig:
    if probe.protocol not in ("exact", "paper"):
        raise BasinlabError(f"probe.protocol must be 'exact' or 'paper', got {probe.protocol!r}")
    return apply_quick(probe)
