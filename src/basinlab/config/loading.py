"""Configs in: YAML files and presets, ``section.key=value`` overrides (parsed as YAML scalars by :func:`load_yaml`:
YAML 1.1 less its base-60, hex, octal and ``1_000`` numbers; duplicate keys, empty files and alias bombs refused),
checkpoints' ``config.yaml``; and what may differ when a run or a sweep resumes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from basinlab.config.coerce import _apply, _show
from basinlab.config.names import RESUMABLE_KEYS, SWEEP_FIXED_KEYS
from basinlab.config.presets import preset_path, preset_path_or_none
from basinlab.config.schema import Config
from basinlab.config.toy import apply_docs_toy, docs_toy
from basinlab.errors import BasinlabError

#: a YAML document's values after its aliases are expanded: more is a "billion laughs" and is refused
YAML_MAX_VALUES = 100_000
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
