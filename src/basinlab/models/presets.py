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
Any field of ``ModelConfig`` that is not ``None`` overrides the preset. ``time_conditioning`` (default on) is not
a size: every preset has it, and ``model.time_conditioning: false`` turns it off (SPEC 2b).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from basinlab.errors import BasinlabError
from basinlab.models.dit import DiT

if TYPE_CHECKING:
    from basinlab.config import ModelConfig

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


def build(model_cfg: ModelConfig | dict[str, Any] | str, vocab_size: int, seq_len: int,
          process: Any = None) -> DiT:
    """A freshly initialised :class:`DiT` for ``model_cfg`` (a ``ModelConfig``, a preset name, or a dict such as a
    checkpoint's ``arch``), over ``vocab_size`` clean tokens of the forward ``process`` (a
    :class:`~basinlab.diffusion.forward.ForwardProcess` or its name; default uniform): the network has
    ``process.n_outputs`` inputs and outputs. The one place a network is built (training, checkpoints, interop)."""
    from basinlab.diffusion.forward import ForwardProcess, get_process

    if not isinstance(process, ForwardProcess):
        process = get_process(process or "uniform", vocab_size)
    arch = resolve_arch(model_cfg)
    return DiT(vocab_size=process.n_outputs, seq_len=seq_len, time_conditioning=time_conditioning(model_cfg), **arch)


#: the former name of :func:`build`
build_model = build
