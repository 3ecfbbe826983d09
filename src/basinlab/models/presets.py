"""Model size presets and :func:`build`, the one place a network is constructed (the DiT of ``basinlab.models.dit``).

| preset | n_layer | d_model | n_head | d_cond | dropout | params (V=8192, L=32)        |
|--------|---------|---------|--------|--------|---------|------------------------------|
| micro  | 4       | 128     | 4      | 64     | 0.0     | 3.1M (2.1M without the input embedding) |
| tiny   | 8       | 256     | 8      | 128    | 0.1     | 12.2M (23.7M at V=30522, L=128) |
| small  | 12      | 768     | 12     | 128    | 0.1     | 105M (Duo/MDLM "small")        |
| medium | 24      | 1024    | 16     | 128    | 0.1     | 338M                          |

``tiny``, ``small`` and ``medium`` are the published study's sizes (SPEC 5 "Protocols": tiny 8 x 256 with 8 heads,
small 12 x 768, medium 24 x 1024 with 16 heads, ``cond_dim = 128``, dropout 0.1; small and medium are also the
public Duo/MDLM configs). ``micro`` is CPU-sized and drops dropout, since the memorisation study wants a model that
can memorise.
The presets and their validation (:func:`resolve_arch`) live in :mod:`basinlab.config`, which imports nothing
from here; any field of ``ModelConfig`` that is not ``None`` overrides the preset. ``time_conditioning`` (default
on) is not a size: every preset has it, and ``model.time_conditioning: false`` turns it off (SPEC 2b).
"""

from __future__ import annotations

from typing import Any

import torch

from basinlab.config import PRESETS, ModelConfig, resolve_arch, time_conditioning

__all__ = ["PRESETS", "build", "build_model", "resolve_arch", "time_conditioning"]


def build(model_cfg: ModelConfig | dict[str, Any] | str, vocab_size: int, seq_len: int,
          process: Any = None, family: Any = None) -> torch.nn.Module:
    """A freshly initialised network of ``family`` (a :class:`~basinlab.models.family.ModelFamily` or its registered
    name; default ``model_cfg.family``, else ``dit``) for ``model_cfg`` (a ``ModelConfig``, a preset name, or a dict
    such as a checkpoint's ``arch``), over ``vocab_size`` clean tokens of the forward ``process`` (a
    :class:`~basinlab.diffusion.forward.ForwardProcess` or its name; default uniform): the network has
    ``process.n_outputs`` inputs and outputs. The one place a network is built (training, checkpoints, interop)."""
    from basinlab.diffusion.forward import ForwardProcess, get_process
    from basinlab.models.family import ModelFamily, get_family
    from basinlab.registry import DEFAULT_PROCESS

    if not isinstance(process, ForwardProcess):
        process = get_process(process or DEFAULT_PROCESS, vocab_size)
    if not isinstance(family, ModelFamily):
        family = get_family(family or _family_name(model_cfg))
    return family.build(model_cfg, vocab_size, seq_len, process)


def _family_name(model_cfg: Any) -> str | None:
    if isinstance(model_cfg, dict):
        return model_cfg.get("family")
    return getattr(model_cfg, "family", None)


#: the former name of :func:`build`
build_model = build
