"""Dataclass configs, YAML in/out and ``key=value`` overrides.

A config has five sections, ``data``, ``model``, ``train``, ``probe`` and ``sweep``, plus ``out_dir``.
YAML files hold any subset of the keys; ``section.key=value`` overrides are parsed as YAML scalars.
An unknown key is an error that names the valid keys (SPEC-independent plumbing).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from basinlab.errors import BasinlabError


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


@dataclass
class TrainConfig:
    """Optimisation (SPEC 4 for the objective and the time sampling)."""

    steps: int = 2000
    batch_size: int = 64  # global batch (all ranks, all accumulation micro-steps)
    grad_accum: int = 1
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    ema: float = 0.9999  # decay; warmed up as min(ema, (1 + k) / (10 + k))
    grad_clip: float = 1.0
    objective: str = "nelbo"  # nelbo | ce_redrawn
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
    quick: bool = False  # m=256, steps=100
    protocol: str = "exact"  # exact (SPEC 5) | paper (the published study's code: SPEC 5 "Protocols")


@dataclass
class SweepConfig:
    """The study of SPEC 7."""

    sizes: list[int] | str | dict = field(default_factory=lambda: [16, 64, 256, 1024])  # or "16:32768[:factor]"
    seeds: list[int] = field(default_factory=lambda: [0])
    oracles: bool = True
    transition_t: float = 0.25
    transition_tol: float = 0.05  # N* = first N where train - test recovery at transition_t is <= this
    devices: list[str] = field(default_factory=list)  # one worker process per entry, e.g. [cuda:0, cuda:1]


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

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from basinlab.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise BasinlabError(
                f"unknown config key '{where}{key}'; valid keys here: {', '.join(sorted(names))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise BasinlabError(f"config key '{where}{key}' is a section: give a mapping, not {value!r}")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _coerce(value, typing.get_type_hints(type(obj))[key], f"{where}{key}"))


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string: give float (and int) fields numbers, or fail with a clear line."""
    if not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool) and _accepts(hint, float) and not _accepts(hint, int):
            return float(value)
        return value
    for kind in (int, float):
        if _accepts(hint, kind) and not _accepts(hint, str):
            try:
                return kind(value) if kind is float else int(value)
            except ValueError:
                if kind is int and _accepts(hint, float):
                    continue
                raise BasinlabError(f"config key '{name}' needs a number, got {value!r}") from None
    return value


def _accepts(hint: Any, kind: type) -> bool:
    return hint is kind or kind in typing.get_args(hint)


def preset_path(name: str) -> Path:
    """Path of a preset YAML shipped in the package (``demo``, ``markov``, ``paper``...)."""
    root = resources.files("basinlab") / "study" / "presets"
    path = Path(str(root / f"{name}.yaml"))
    if not path.exists():
        names = sorted(p.stem for p in Path(str(root)).glob("*.yaml"))
        raise BasinlabError(f"unknown preset '{name}'; available: {', '.join(names) or 'none'}")
    return path


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.steps=10", "data.seq_len=16"]`` -> nested dict, values parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise BasinlabError(f"override '{item}' is not of the form section.key=value (e.g. train.steps=100)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_config(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from a YAML path (or a preset name), then apply ``key=value`` overrides."""
    cfg = Config()
    if source is not None:
        path = Path(source)
        if not path.exists() and path.suffix == "" and "/" not in str(source):
            path = preset_path(str(source))
        if not path.exists():
            raise BasinlabError(f"config file '{source}' not found; give a YAML path or a preset name")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            line = str(exc).splitlines()[0]
            raise BasinlabError(f"config file '{path}' is not valid YAML: {line}") from None
        if not isinstance(values, dict):
            raise BasinlabError(f"config file '{path}' must hold a mapping of sections (data:, model:, train:...)")
        _apply(cfg, values, "")
    _apply(cfg, parse_overrides(overrides), "")
    cfg.probe = _resolved_probe(cfg.probe)
    if docs_toy():
        apply_docs_toy(cfg)
    return cfg


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
    if probe.quick:
        probe.m = min(probe.m, 256)
        probe.steps = min(probe.steps, 100)
    return probe


def config_from_dict(values: dict[str, Any]) -> Config:
    cfg = Config()
    _apply(cfg, values, "")
    return cfg
