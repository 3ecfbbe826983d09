"""The model-family seam (SPEC 2c): what kind of network stands behind a :class:`NetworkDenoiser`.

A *family* says how to build a network of its kind from a config, how to rebuild one from a basinlab checkpoint's
``arch``, how to load a directory of its own format *in place* (a deployed model: DiffusionGemma, LLaDA, Dream...),
how to optimise it and how to export it. Every network, whatever its family, is a ``torch.nn.Module`` with the one
calling convention the trainer, the denoiser and the checkpoints rely on:

- ``network(z_t: long [B, L], sigma: float32 [B]) -> logits [B, L, n_outputs]`` (``sigma = -log alpha_t``, SPEC 2;
  a family that is not time-conditioned ignores it);
- ``network.vocab_size``: ``n_outputs`` of its forward process; ``network.time_conditioning``: whether it reads
  ``sigma``;
- ``network.arch()``: a JSON-able dict that :meth:`ModelFamily.rebuild` turns back into the same network.

basinlab's DiT (:mod:`basinlab.models.dit`) is the first family, ``dit``; Duo and MDLM checkpoints are converted into
it (``basinlab.interop``). Families are registered in :data:`basinlab.registry.FAMILIES`; a checkpoint records its
family in ``meta.json`` (``family``, default ``dit``). Add one: docs/ARCHITECTURE.md, "Add a model family".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.registry import FAMILIES


class ModelFamily:
    """Base class of the model families; a subclass overrides what its networks do differently."""

    #: the registry name, saved in ``meta.json`` (``family``) and read from ``model.family``
    name = "family"
    #: ``config.json`` ``model_type`` values of a Hugging Face directory that this family loads in place
    model_types: tuple[str, ...] = ()
    #: whether :meth:`load_pretrained` takes a ``device_map`` (accelerate's placement over several devices)
    device_maps = False

    def build(self, model_cfg: Any, vocab_size: int, seq_len: int, process: Any) -> torch.nn.Module:
        """A freshly initialised network for ``model_cfg`` over ``process.n_outputs`` tokens (training)."""
        raise NotImplementedError(f"the {self.name} family builds no network from a config")

    def rebuild(self, arch: dict[str, Any], vocab_size: int, seq_len: int, process: Any) -> torch.nn.Module:
        """The network a basinlab checkpoint of this family describes (``meta.json`` ``arch``), to load into."""
        raise NotImplementedError(f"the {self.name} family cannot rebuild a network from a checkpoint")

    def load_pretrained(self, path: str | Path, **options: Any) -> Any:
        """A directory of this family's own format, loaded in place (SPEC 2c)."""
        raise NotImplementedError(f"the {self.name} family loads no directory in place")

    def size_estimate(self, model_cfg: Any, n_outputs: int) -> tuple[int, int, int] | None:
        """``(parameters, layers, width)`` of the network ``build`` would make, before building it (the trainer's
        memory check), or ``None`` when the family checks its own size."""
        return None

    def lora_parameters(self, model_cfg: Any, rank: int) -> int | None:
        """Parameters of the rank-``rank`` LoRA adapters (``train.lora_rank``) on the network of ``model_cfg``, for
        the trainer's memory check (only they carry gradients and optimiser state), or ``None`` when unknown."""
        return None

    def init_process(self, model_cfg: Any, data_vocab: int, seqs: torch.Tensor | None = None) -> Any | None:
        """The forward process that fine-tuning ``model.init`` must use (a deployed model's own, SPEC 2c), or
        ``None``: the run's ``train.process`` over the data's vocabulary. ``data_vocab``: the data's tokens;
        ``seqs``: the training sequences (checked against the process)."""
        return None

    def check_data(self, process: Any, data_vocab: int, seqs: torch.Tensor | None, where: str) -> None:
        """Refuse, in one line, data that cannot go through a network of this family under ``process`` (a
        deployed model's own vocabulary and mask, SPEC 2c); basinlab's own networks are built for their data."""

    def configure_optimizers(self, model: torch.nn.Module, lr: float, betas: tuple[float, float],
                             weight_decay: float, fused: bool = False) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters, weight decay on matrices only (nanoGPT's rule)."""
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class DiTFamily(ModelFamily):
    """basinlab's DiT (Duo's architecture; SPEC 5 "Protocols" sizes): built from ``model.preset`` and its fields."""

    name = "dit"

    def build(self, model_cfg: Any, vocab_size: int, seq_len: int, process: Any) -> torch.nn.Module:
        from basinlab.config import resolve_arch, time_conditioning
        from basinlab.models.dit import DiT

        return DiT(vocab_size=process.n_outputs, seq_len=seq_len, time_conditioning=time_conditioning(model_cfg),
                   **resolve_arch(model_cfg))

    def rebuild(self, arch: dict[str, Any], vocab_size: int, seq_len: int, process: Any) -> torch.nn.Module:
        return self.build(arch, vocab_size, seq_len, process)

    def size_estimate(self, model_cfg: Any, n_outputs: int) -> tuple[int, int, int] | None:
        from basinlab.config import resolve_arch

        arch = resolve_arch(model_cfg)
        d, n_layer, d_cond = arch["d_model"], arch["n_layer"], arch["d_cond"]
        return 2 * n_outputs * d + n_layer * (12 * d * d + 6 * d_cond * d) + 2 * d_cond * d, n_layer, d

    def configure_optimizers(self, model, lr, betas, weight_decay, fused=False):
        return model.configure_optimizers(lr, betas, weight_decay, fused=fused)


#: the DiT family (``FAMILIES["dit"]``)
DIT = DiTFamily()


def training_family(model_cfg: Any) -> ModelFamily:
    """The family a run trains: with ``model.init=DIR`` the family that loads ``DIR`` (``model.family`` is set to
    it; a different explicit family is refused), else ``model.family``."""
    init = getattr(model_cfg, "init", None)
    if not init:
        return get_family(model_cfg.family)
    if not Path(init).is_dir():
        raise BasinlabError(f"model.init={init}: not a directory; give a model's own directory (config.json + "
                            "safetensors)")
    family = require_family_dir(init)
    if model_cfg.family not in ("dit", family.name):
        raise BasinlabError(f"model.init={init} is a {family.name} checkpoint but model.family={model_cfg.family}; "
                            f"drop model.family or set it to {family.name}")
    model_cfg.family = family.name
    return family


def get_family(name: str | None) -> ModelFamily:
    """The registered family ``name`` (``None``: ``dit``)."""
    return FAMILIES.get(name or "dit")


def read_model_type(path: str | Path) -> str | None:
    """``model_type`` of a directory's ``config.json``, or ``None`` when it has no readable one."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        value = json.loads(cfg.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def family_for_dir(path: str | Path) -> ModelFamily | None:
    """The family that loads ``path`` in place (its ``config.json`` ``model_type``), or ``None`` when none does."""
    model_type = read_model_type(path)
    if model_type is None:
        return None
    for _, family in FAMILIES.items():
        if model_type in family.model_types:
            return family
    return None


def in_place_model_types() -> list[str]:
    """Every ``model_type`` some registered family loads in place (for messages)."""
    return [t for _, fam in FAMILIES.items() for t in fam.model_types]


def require_family_dir(path: str | Path) -> ModelFamily:
    """:func:`family_for_dir`, or one line naming the supported ``model_type`` values."""
    family = family_for_dir(path)
    if family is None:
        model_type = read_model_type(path)
        supported = ", ".join(in_place_model_types()) or "none registered"
        raise BasinlabError(f"{path}: config.json model_type {model_type!r} is not a family basinlab loads in place "
                            f"(supported: {supported}); convert Duo/MDLM checkpoints with `basinlab convert`")
    return family
