"""LoRA fine-tuning (``train.lora_rank``) of any model family, through ``peft`` (SPEC 2c, SPEC 4).

:func:`apply_lora` puts rank-``r`` adapters on the ``torch.nn.Linear`` layers whose name ends in one of the
family's ``lora_targets`` and freezes every other weight: the trainer then optimises (and averages in its EMA)
the adapters alone. Layers that share one base weight (a model whose decoder ties the encoder's layers, as
DiffusionGemma's does) share one adapter, so that merging stays one weight. A checkpoint holds the *merged* weights
(:func:`merged_state`: ``W + (alpha / r) B A``, under the plain architecture's names), so it loads, probes and
exports as a run trained in full; the adapters themselves (raw and EMA) go to ``state.pt`` for an exact resume.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from basinlab.errors import BasinlabError

ADAPTER = "default"


def target_names(network: torch.nn.Module, targets: Iterable[str]) -> list[str]:
    """Full names of the ``nn.Linear`` modules whose last name part is one of ``targets``."""
    targets = set(targets)
    return [name for name, module in network.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets]


def adapter_parameters(network: torch.nn.Module, rank: int, targets: Iterable[str]) -> int:
    """Parameters of the rank-``rank`` adapters :func:`apply_lora` would add (``rank x (in + out)`` per adapted
    layer, one adapter per shared base weight): countable on a network built on the ``meta`` device."""
    modules = dict(network.named_modules())
    seen: set[int] = set()
    total = 0
    for name in target_names(network, targets):
        layer = modules[name]
        if id(layer.weight) not in seen:
            seen.add(id(layer.weight))
            total += int(rank) * (layer.in_features + layer.out_features)
    return total


def apply_lora(network: torch.nn.Module, rank: int, targets: Iterable[str], alpha: float | None = None
               ) -> torch.nn.Module:
    """Inject LoRA adapters of ``rank`` (``lora_alpha = alpha or rank``) in place; only adapters stay trainable."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise BasinlabError("train.lora_rank needs peft: pip install 'basinlab[dlm]' (or [dgemma])") from None
    names = target_names(network, targets)
    if not names:
        raise BasinlabError(f"train.lora_rank={rank}: this network has no linear layer named {', '.join(targets)}; "
                            "set train.lora_rank=0 to train every weight")
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha or rank), lora_dropout=0.0, target_modules=names)
    inject_adapter_in_model(config, network)
    _share_adapters(network)
    for name, p in network.named_parameters():
        p.requires_grad_("lora_" in name)
    return network


def _lora_layers(network: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in network.named_modules() if isinstance(m, LoraLayer)]


def _share_adapters(network: torch.nn.Module) -> None:
    """Layers whose base weight is one tensor (tied) get the first such layer's adapter modules."""
    first: dict[int, torch.nn.Module] = {}
    for _, layer in _lora_layers(network):
        key = id(layer.get_base_layer().weight)
        if key in first:
            layer.lora_A, layer.lora_B = first[key].lora_A, first[key].lora_B
        else:
            first[key] = layer


def has_lora(network: torch.nn.Module) -> bool:
    """Whether ``network`` carries LoRA adapters."""
    return any("lora_" in name for name, _ in network.named_parameters())


@torch.no_grad()
def merged_state(network: torch.nn.Module, adapters: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
    """The plain architecture's ``state_dict`` with each adapter merged into its base weight; ``adapters`` (name
    -> tensor, e.g. the EMA) stand in for the adapters' current values while merging."""
    params = dict(network.named_parameters())
    saved = {}
    for name, value in (adapters or {}).items():
        saved[name] = params[name].detach().clone()
        params[name].copy_(value.to(params[name].dtype))
    try:
        state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        for name, layer in _lora_layers(network):
            key = f"{name}.base_layer.weight"
            state[key] = state[key] + layer.get_delta_weight(ADAPTER).to(state[key].dtype)
    finally:
        for name, value in saved.items():
            params[name].copy_(value)
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}
