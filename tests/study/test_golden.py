"""Behaviour pin (issue 11): one small sweep's ``results.csv`` and restoration examples, byte for byte.

The golden files were written by the sweep as it stood before the probe suite was restructured (commit 8018832,
after the DiT change). Any change to a number here must be deliberate: regenerate the files with
``python tests/study/test_golden.py --write`` and say in the commit which item changed which number and why.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from basinlab.config import load_config
from basinlab.study.sweep import run_sweep

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
#: Two sizes, a one-layer DiT, a few steps, tiny probe settings, both oracles on (the TOY sweep of test_sweep).
TOY = [
    "data.source=markov", "data.seq_len=12", "data.markov_vocab=12", "data.markov_successors=3",
    "data.markov_pool=600", "data.n_test=40",
    "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16",
    "train.steps=6", "train.batch_size=8", "train.warmup_steps=2", "train.ckpt_every=3", "train.log_every=3",
    "train.objective=ce_redrawn", "train.progress=false", "train.device=cpu",
    "probe.m=8", "probe.steps=4", "probe.ts=[0.25, 0.5]", "probe.n_samples=4", "probe.batch_size=8",
    "sweep.sizes=[8, 32]", "sweep.seeds=[0]", "sweep.transition_t=0.25", "sweep.oracles=true",
]


def run_toy_sweep(tmp: Path) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(None, [*TOY, f"data.cache_dir={tmp / 'cache'}"])
        return run_sweep(cfg, tmp / "sweep", progress=False)
    finally:
        torch.set_num_threads(before)


def test_toy_sweep_results_are_pinned(tmp_path):
    out = run_toy_sweep(tmp_path)
    assert (out / "results.csv").read_bytes() == (GOLDEN / "toy_sweep_results.csv").read_bytes()
    pinned = sorted(p.name for p in (GOLDEN / "examples").glob("*.json"))
    assert pinned == sorted(f"{d.name}.json" for d in (out / "runs").iterdir())
    for name in pinned:
        got = (out / "runs" / name[: -len(".json")] / "examples.json").read_bytes()
        assert got == (GOLDEN / "examples" / name).read_bytes(), name


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = run_toy_sweep(Path(tmp))
        shutil.copyfile(out / "results.csv", GOLDEN / "toy_sweep_results.csv")
        for d in (out / "runs").iterdir():
            shutil.copyfile(d / "examples.json", GOLDEN / "examples" / f"{d.name}.json")
