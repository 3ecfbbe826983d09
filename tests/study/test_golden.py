"""Behaviour pin (issue 11): one small sweep's ``results.csv`` and restoration examples, byte for byte; and the
CLI (``basinlab probe all``), the sweep and the Python API (``probes.run_suite``) give the same rows.

The golden files were written by the sweep as it stood before the probe suite was restructured (commit 8018832,
after the DiT change); the merge of main then added, on purpose, the ``membership_auc`` rows (issue 8), checked
equal byte for byte to main's own sweep before this file was updated. Two later changes, on purpose: the
memoriser's faster exact computation (issue 9.1) moves ``oracle:empirical`` rows in the 8th digit and its
near-zero entropies (float32 work with a per-query shift; log-probabilities agree to 1e-6 relative above -30), and
each example gains a ``surface`` field (decoded text pieces; null for Markov data, issue 7.1). Issue 17 adds,
without changing any number: ``tpr_at_fpr_0.01`` / ``tpr_at_fpr_0.001`` rows beside each ``membership_auc`` row,
and per-token ``entropy`` and ``token_text`` on every example plus ``train_examples`` in examples.json. Any change to a
number here must be deliberate: regenerate the files with ``python tests/study/test_golden.py --write`` and say
in the commit which item changed which number and why.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import basinlab
from basinlab.cli import main
from basinlab.config import load_config
from basinlab.data import build_dataset
from basinlab.oracles.build import build_oracle
from basinlab.probes import probes_for, run_suite
from basinlab.study.store import ResultStore, RunKey
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


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory) -> Path:
    return run_toy_sweep(tmp_path_factory.mktemp("golden"))


def test_toy_sweep_results_are_pinned(toy_sweep):
    out = toy_sweep
    assert (out / "results.csv").read_bytes() == (GOLDEN / "toy_sweep_results.csv").read_bytes()
    pinned = sorted(p.name for p in (GOLDEN / "examples").glob("*.json"))
    assert pinned == sorted(f"{d.name}.json" for d in (out / "runs").iterdir())
    for name in pinned:
        got = (out / "runs" / name[: -len(".json")] / "examples.json").read_bytes()
        assert got == (GOLDEN / "examples" / name).read_bytes(), name


def _key(r: dict) -> tuple:
    t = r["t"]
    return (r["probe"], r["set"], None if t is None or (isinstance(t, float) and math.isnan(t)) else float(t),
            r["metric"])


def _num(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _table(rows) -> dict[tuple, tuple]:
    out = {}
    for r in rows:
        assert _key(r) not in out, _key(r)
        out[_key(r)] = tuple(_num(r[k]) for k in ("value", "std", "ci_low", "ci_high", "n"))
    return out


@pytest.mark.parametrize("model", ["micro", "oracle:empirical", "oracle:markov"])
def test_cli_sweep_and_api_give_the_same_rows(toy_sweep, tmp_path, capsys, model):
    """One suite: the rows the sweep recorded for N=8 are the rows of `basinlab probe all` and of run_suite."""
    key = RunKey(8, 0, model)
    with ResultStore(toy_sweep) as store:
        swept = [r for r in store.rows() if (r["N"], r["seed"], r["model"]) == (key.N, key.seed, key.model)]
    cfg = load_config(None, [*TOY, f"data.cache_dir={toy_sweep.parent / 'cache'}", "data.n_train=8"])
    data = build_dataset(cfg.data)
    out = tmp_path / "cli"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if model == "micro":
            run_dir = toy_sweep / "runs" / key.name
            denoiser = basinlab.load(str(run_dir), batch_size=cfg.probe.batch_size).denoiser
            argv = ["probe", "all", "--checkpoint", str(run_dir)]
        else:
            kind = model.split(":")[1]
            denoiser = build_oracle(kind, data, 8, cfg)
            argv = ["probe", "all", "--oracle", kind, *TOY, f"data.cache_dir={cfg.data.cache_dir}", "data.n_train=8"]
        assert main([*argv, "--quiet", "--device", "cpu", "--out", str(out)]) == 0
        api = run_suite(denoiser, data, cfg.probe, n_train=8, seed=0, probes=probes_for(model)).rows
    finally:
        torch.set_num_threads(before)
    cli = pd.read_csv(out / "results.csv").astype(object).where(lambda d: d.notna(), None).to_dict("records")
    assert len(swept) > 20
    assert _table(swept) == _table(api) == _table(cli)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = run_toy_sweep(Path(tmp))
        shutil.copyfile(out / "results.csv", GOLDEN / "toy_sweep_results.csv")
        for d in (out / "runs").iterdir():
            shutil.copyfile(d / "examples.json", GOLDEN / "examples" / f"{d.name}.json")
