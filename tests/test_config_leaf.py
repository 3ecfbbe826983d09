"""``config.py`` is a leaf (issue 15 item 7): it imports nothing from ``models`` or ``diffusion``, and the names it
accepts agree with those packages' registries."""

from __future__ import annotations

import ast
from pathlib import Path

import basinlab.config as config
from basinlab.diffusion.forward import PROCESSES
from basinlab.diffusion.schedules import SCHEDULES
from basinlab.models import PRESETS, resolve_arch
from basinlab.models.denoiser import PRECISIONS


def test_config_imports_nothing_from_models_or_diffusion():
    tree = ast.parse(Path(config.__file__).read_text())
    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert names and not [m for m in names if m.startswith(("basinlab.models", "basinlab.diffusion"))]


def test_config_names_agree_with_the_registries():
    assert config.SCHEDULES == tuple(SCHEDULES)
    assert config.PROCESSES == PROCESSES
    assert config.PRECISIONS == PRECISIONS
    assert PRESETS is config.PRESETS and resolve_arch is config.resolve_arch
