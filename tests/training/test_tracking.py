"""``train.tracker`` (issue 26; training/tracking.py): what each tracker receives is read back with that tracker's
own reader and compared with ``metrics.csv`` (the record) and the sweep's ``results.csv``. TensorBoard's through
``EventAccumulator``, MLflow's through its client on the local file store, W&B's offline run file. Each test skips,
saying which package is missing, without its extra."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from basinlab.config import load_config
from basinlab.errors import BasinlabError
from basinlab.training.trainer import train
from tests.training.conftest import markov_config


def _needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"the {module} package is absent: pip install 'basinlab[{module}]'")


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@_needs("tensorboard")
def test_tensorboard_gets_the_curves_of_metrics_csv_and_a_resume_drops_nothing(tmp_path):
    cfg = markov_config(tmp_path, steps=4, log_every=2, ckpt_every=2, tracker="tensorboard")
    train(cfg, progress=False)
    cfg.train.steps = 6  # continue from the checkpoint at step 4
    train(cfg, progress=False)
    csv = pd.read_csv(tmp_path / "run" / "metrics.csv")
    got = _scalars(tmp_path / "run" / "tb")
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/epoch"} <= set(got)
    for key in ("loss", "lr", "grad_norm", "epoch"):
        steps, values = zip(*got[f"train/{key}"], strict=True)
        assert list(steps) == csv["step"].tolist() == [2, 4, 6]  # purged at the resume: no step twice
        assert list(values) == pytest.approx(csv[key].tolist(), rel=1e-4, abs=1e-6)
    assert all(v > 0 for _, v in got["train/tokens_per_s"])


@_needs("tensorboard")
def test_a_sweep_logs_one_tensorboard_run_per_n_with_its_probe_results(tmp_path):
    from basinlab.study.sweep import run_sweep
    from tests.study._golden import TOY

    cfg = load_config(None, [*TOY, "sweep.oracles=false", "train.tracker=tensorboard",
                             f"data.cache_dir={tmp_path / 'cache'}"])
    out = run_sweep(cfg, tmp_path / "sweep", progress=False)
    results = pd.read_csv(out / "results.csv")
    runs = sorted(p.parent.name for p in (out / "runs").glob("*/tb"))
    assert runs == ["N32-s0", "N8-s0"]
    for name, n in (("N8-s0", 8), ("N32-s0", 32)):
        got = _scalars(out / "runs" / name / "tb")
        assert [s for s, _ in got["train/loss"]] == [3, 6]
        mine = results[results["N"] == n]
        rec = mine[(mine["probe"] == "basins") & (mine["set"] == "test") & (mine["metric"] == "recovery_rate")]
        assert len(rec) == 2  # t = 0.25 and 0.5
        for _, row in rec.iterrows():
            assert got[f"probe/basins/test/recovery_rate@{row['t']:g}"] == [(6, pytest.approx(row["value"]))]
        nelbo = mine[(mine["probe"] == "likelihood") & (mine["set"] == "test") & (mine["metric"] == "nelbo")]
        assert got["probe/likelihood/test/nelbo"] == [(6, pytest.approx(nelbo["value"].item(), rel=1e-6))]


@_needs("mlflow")
def test_mlflow_local_store_gets_the_curves_and_one_run_per_directory(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the tracker sets for its local store; undone after
    cfg = markov_config(tmp_path, steps=4, log_every=2, ckpt_every=2, tracker="mlflow")
    train(cfg, progress=False)
    cfg.train.steps = 6
    train(cfg, progress=False)
    client = MlflowClient(tracking_uri=(tmp_path / "run" / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("basinlab")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "run"  # the resume continued the same run
    assert runs[0].data.params["train.steps"] in ("4", "6") and runs[0].data.params["data.source"] == "markov"
    hist = sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "train/loss"))
    csv = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert [s for s, _ in hist] == csv["step"].tolist() == [2, 4, 6]
    assert [v for _, v in hist] == pytest.approx(csv["loss"].tolist(), rel=1e-5)


@_needs("wandb")
def test_wandb_runs_offline_and_writes_the_curves(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = markov_config(tmp_path, steps=4, log_every=2, tracker="wandb")
    train(cfg, progress=False)
    files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1  # offline: nothing sent, one run file to `wandb sync` later
    blob = files[0].read_bytes()
    for tag in (b"train/loss", b"train/lr", b"train/tokens_per_s"):
        assert tag in blob


def test_unknown_or_missing_trackers_are_one_line(tmp_path):
    with pytest.raises(BasinlabError, match="unknown train.tracker 'comet'"):
        load_config(None, ["train.tracker=comet"])
    from basinlab.training.tracking import TRACKERS, check_tracker

    assert TRACKERS[0] == "none" and check_tracker("none") == "none"
    for name in TRACKERS[1:]:
        module = "tensorboard" if name == "tensorboard" else name
        if importlib.util.find_spec(module) is None:
            with pytest.raises(BasinlabError, match=rf"needs the {module} package: pip install 'basinlab\[{name}\]'"):
                check_tracker(name)
