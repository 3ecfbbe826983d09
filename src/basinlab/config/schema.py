"""The config's schema: five dataclass sections, ``data``, ``model``, ``train``, ``probe`` and ``sweep``, plus
``out_dir``, and the fixed names some keys accept (the others are registries, :mod:`basinlab.registry`)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from basinlab.config import checks
from basinlab.config.names import RESUMABLE_KEYS, SWEEP_FIXED_KEYS  # noqa: F401  (importable from here)
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_text
from basinlab.registry import DEFAULT_PROCESS


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
    process: str = DEFAULT_PROCESS  # a registered forward process: uniform (SPEC 2) | masked (SPEC 2b) | ...
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
    tracker: str = "none"  # none | tensorboard | wandb | mlflow: training curves and a sweep's probe results
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
    t_grid: bool = True  # fixed points and entropy at every t of probe.ts (probes/t_grid.py)
    trajectory_stats: bool = True  # statistics of x_θ along the reverse chain from t = 1 (probes/trajectory.py)
    sampler: str = "ancestral"  # ancestral (SPEC 3) | entropy_bound (the model's own, e.g. DiffusionGemma's; SPEC 2c)
    self_conditioning: bool = False  # chains feed each step's logits to the next (DiffusionGemma; SPEC 2c)
    gen_ppl_model: str | None = None  # a local causal LM directory, smollm2 or auto: generative perplexity of samples


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
        """Check every value of every section and return ``self``, normalised in place (:func:`checks.validate`):
        numbers given as strings become numbers, ``sweep.sizes`` the list of ints it describes, ``probe.quick``
        caps ``m`` and ``steps``. Bad values raise one :class:`BasinlabError` line naming the key. A config unchanged
        since its last validation is not checked again (the sweep hands its validated config to the trainer)."""
        if getattr(self, "_validated", None) == self.to_dict():
            return self
        checks.validate(self)
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
        atomic_write_text(path, self.to_yaml())
