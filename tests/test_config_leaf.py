"""``config.py`` is a leaf (issue 15 item 7): it imports nothing from ``models`` or ``diffusion``, and the names it
accepts agree with those packages' registries."""

from __future__ import annotations

import ast
from pathlib import Path

import basinlab.config as config
from basinlab.models import PRESETS, resolve_arch
from basinlab.models.denoiser import PRECISIONS
from basinlab.registry import PROCESSES, SCHEDULES


def test_config_imports_nothing_from_models_or_diffusion():
    names = []
    for path in Path(config.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert names and not [m for m in names if m.startswith(("basinlab.models", "basinlab.diffusion"))]


def test_config_names_agree_with_the_registries():
    assert config.SCHEDULES is SCHEDULES and config.PROCESSES is PROCESSES
    assert config.PRECISIONS == PRECISIONS
    assert PRESETS is config.PRESETS and resolve_arch is config.resolve_arch


def test_a_validated_config_is_not_checked_again(monkeypatch):
    calls = []
    real = config.checks._check_data
    monkeypatch.setattr(config.checks, "_check_data", lambda dc: calls.append(1) or real(dc))
    cfg = config.load_config(None, ["data.source=markov", "train.steps=7"])
    assert len(calls) == 1
    cfg.validate()
    assert len(calls) == 1  # unchanged: not checked again
    run = cfg.with_values(data__n_train=16, train__seed=3, validate=False)  # a sweep's run, from its grid
    run.validate()
    assert len(calls) == 1 and run.data.n_train == 16 and cfg.data.n_train != 16
    cfg.train.steps = 8  # changed: checked again
    cfg.validate()
    assert len(calls) == 2
    cfg.with_values(train__seed=1)
    assert len(calls) == 3
