"""Model size presets of the DiT (``models.build`` sizes it from these; SPEC 5 "Protocols" for tiny/small/medium),
their validation, and the packaged preset configs (``study/presets/*.yaml``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from basinlab.errors import BasinlabError

if TYPE_CHECKING:
    from basinlab.config.schema import ModelConfig

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
