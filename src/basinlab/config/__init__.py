"""Dataclass configs, YAML in/out and ``key=value`` overrides, split by concern:

- :mod:`.schema`: the five sections (``data``, ``model``, ``train``, ``probe``, ``sweep``) and ``out_dir``;
- :mod:`.loading`: YAML files, presets, overrides, a checkpoint's ``config.yaml``; what may differ on resume;
- :mod:`.checks` (what each key accepts, the registered names of :mod:`basinlab.registry`), :mod:`.coerce` (one
  coercion of YAML values into each field's type), :mod:`.sizes` (the sweep's grid of ``N``);
- :mod:`.presets`: the DiT's size presets and the packaged preset configs; :mod:`.toy`: the documentation's toy mode.

A config is parsed once: :meth:`Config.validate` normalises it in place (numbers, ``sweep.sizes`` as a list of
ints, ``probe.quick``) and is not repeated while the config is unchanged. A leaf: imports nothing from ``models`` or
``diffusion``.
"""

from basinlab.config.checks import apply_quick, validate_data
from basinlab.config.coerce import SHOWN_CHARS
from basinlab.config.loading import (
    YAML_MAX_VALUES,
    config_differences,
    config_from_dict,
    load_config,
    load_yaml,
    parse_overrides,
    resumable_keys,
)
from basinlab.config.names import (
    DATA_MODES,
    DATA_SOURCES,
    LR_DECAYS,
    OBJECTIVES,
    PRECISIONS,
    QUICK_M,
    QUICK_SAMPLES,
    QUICK_STEPS,
    RESUMABLE_KEYS,
    SAMPLERS,
    SEED_LIMIT,
    SWEEP_FIXED_KEYS,
    TRACKERS,
)
from basinlab.config.presets import PRESETS, preset_path, preset_path_or_none, resolve_arch, time_conditioning
from basinlab.config.schema import (
    Config,
    DataConfig,
    ModelConfig,
    ProbeConfig,
    SweepConfig,
    TrainConfig,
)
from basinlab.config.sizes import geometric_sizes, resolve_sizes
from basinlab.config.toy import DOCS_TOY_ENV, apply_docs_toy, apply_docs_toy_probe, docs_toy
from basinlab.registry import PROCESSES, SCHEDULES

__all__ = [
    "DATA_MODES",
    "DATA_SOURCES",
    "DOCS_TOY_ENV",
    "LR_DECAYS",
    "OBJECTIVES",
    "PRECISIONS",
    "PRESETS",
    "PROCESSES",
    "QUICK_M",
    "QUICK_SAMPLES",
    "QUICK_STEPS",
    "RESUMABLE_KEYS",
    "SAMPLERS",
    "SCHEDULES",
    "SEED_LIMIT",
    "SHOWN_CHARS",
    "SWEEP_FIXED_KEYS",
    "TRACKERS",
    "YAML_MAX_VALUES",
    "Config",
    "DataConfig",
    "ModelConfig",
    "ProbeConfig",
    "SweepConfig",
    "TrainConfig",
    "apply_docs_toy",
    "apply_docs_toy_probe",
    "apply_quick",
    "config_differences",
    "config_from_dict",
    "docs_toy",
    "geometric_sizes",
    "load_config",
    "load_yaml",
    "parse_overrides",
    "preset_path",
    "preset_path_or_none",
    "resolve_arch",
    "resolve_sizes",
    "resumable_keys",
    "time_conditioning",
    "validate_data",
]
