"""docs/ARCHITECTURE.md's guide "Add a probe", followed literally: its code goes where the guide says, and the
new probe runs through the suite (Python API, CLI) with the right numbers."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from basinlab.cli import main
from basinlab.config import load_config
from basinlab.data import build_dataset
from basinlab.oracles.build import build_oracle
from basinlab.probes import draw_sets, run_suite
from basinlab.registry import PROBES

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"
TOY = ["data.source=markov", "data.seq_len=10", "data.markov_vocab=6", "data.markov_successors=2",
       "data.markov_pool=200", "data.n_test=20", "data.n_train=16",
       "probe.m=8", "probe.steps=3", "probe.ts=[0.5]", "probe.n_samples=2", "probe.batch_size=8"]


def guide_blocks() -> list[str]:
    """The python blocks of the section "Add a probe", dedented."""
    text = GUIDE.read_text()
    section = text.split("## Add a probe", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return [re.sub(r"(?m)^   ", "", b) for b in blocks]


@pytest.fixture
def toy_probe(tmp_path, monkeypatch):
    """Step 1: the probe's module (here in a temporary directory on sys.path rather than in src/); step 2: the
    registration, run as the guide gives it, with the module's function in scope."""
    step1, step2 = guide_blocks()
    (tmp_path / "repeat_rate_probe.py").write_text(step1)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("repeat_rate_probe")
    exec(step2, {"repeat_rate": module.repeat_rate})
    yield module
    PROBES.unregister("repeat_rate")
    sys.modules.pop("repeat_rate_probe", None)


def _expected(seqs: torch.Tensor) -> float:
    return float((seqs[:, 1:] == seqs[:, :-1]).double().mean())


def test_the_guide_adds_a_probe_to_the_suite(toy_probe, tmp_path):
    cfg = load_config(None, [*TOY, f"data.cache_dir={tmp_path / 'cache'}"])
    data = build_dataset(cfg.data)
    oracle = build_oracle("markov", data, 16, cfg)
    rows = run_suite(oracle, data, cfg.probe, n_train=16, seed=0).rows
    mine = {r["set"]: r["value"] for r in rows if r["probe"] == "repeat_rate"}
    sets = draw_sets(data, 16, cfg.probe.m, 0)
    assert mine == pytest.approx({"train": _expected(sets["train"]), "test": _expected(sets["test"])}, abs=1e-15)
    assert {r["probe"] for r in rows} >= {"basins", "fixed_points", "entropy", "novelty", "likelihood"}
    # the CLI offers it too, by name and in `all`
    out = tmp_path / "cli"
    assert main(["probe", "repeat-rate", "--oracle", "markov", *TOY, f"data.cache_dir={tmp_path / 'cache'}",
                 "--quiet", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["probe"]) == {"repeat_rate"} and set(df["set"]) == {"train", "test"}
