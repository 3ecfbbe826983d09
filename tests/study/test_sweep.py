"""The sweep of SPEC 7 end to end at toy scale: results, report, resume after a kill, shards, CLI errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from basinlab.cli import main
from basinlab.config import load_config
from basinlab.errors import BasinlabError
from basinlab.oracles.build import ORACLE_EMPIRICAL, ORACLE_MARKOV
from basinlab.study.report import write_report
from basinlab.study.store import ResultStore, RunKey
from basinlab.study.sweep import (
    expand_devices,
    geometric_sizes,
    parse_shard,
    plan_runs,
    resolve_sizes,
    run_sweep,
    shard_runs,
)
from tests.study._golden import TOY as GOLDEN_TOY

#: A toy study: two sizes, a one-layer DiT, a few steps, tiny probe settings (seconds per run on a CPU); the same
#: overrides as the pinned golden sweep (sweep.oracles=true there is the default).
TOY = GOLDEN_TOY


@pytest.fixture(autouse=True)
def one_thread():
    """Toy models are dominated by per-op overhead: one thread is as fast, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_cfg(tmp_path: Path, extra: list[str] = ()):
    return load_config(None, [*TOY, f"data.cache_dir={tmp_path / 'cache'}", *extra])


def test_grid_helpers():
    assert geometric_sizes(16, 32768) == [2**k for k in range(4, 16)]
    assert resolve_sizes("16:256:4") == [16, 64, 256]
    assert resolve_sizes({"start": 8, "stop": 32}) == [8, 16, 32]
    assert resolve_sizes([64, 16, 16]) == [16, 64]
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) is None
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(BasinlabError):
            parse_shard(bad)
    with pytest.raises(BasinlabError):
        resolve_sizes("16")


def test_shards_cover_grid_exactly_once(tmp_path):
    cfg = toy_cfg(tmp_path, ["sweep.sizes=[8, 16, 32, 64, 128]", "sweep.seeds=[0, 1, 2]"])
    runs = plan_runs(cfg)
    # 5 sizes x (3 seeds + memoriser + Markov oracle)
    assert len(runs) == 25 and len(set(runs)) == 25
    assert {k.model for k in runs} == {"micro", ORACLE_EMPIRICAL, ORACLE_MARKOV}
    for n in (1, 2, 3, 4, 7, 30):
        parts = [shard_runs(runs, (i, n)) for i in range(n)]
        flat = [k for p in parts for k in p]
        assert sorted(flat) == sorted(runs)  # every run once, none twice
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        # nested sub-shards (one worker per device inside a job-array shard) still partition the shard
        for i in range(n):
            sub = [k for w in range(2) for k in shard_runs(parts[i], (w, 2))]
            assert sorted(sub) == sorted(parts[i])
    assert plan_runs(cfg) == runs  # deterministic


def test_mini_sweep_end_to_end_and_report(tmp_path):
    cfg = toy_cfg(tmp_path)
    out = run_sweep(cfg, tmp_path / "sweep", progress=False)
    df = pd.read_csv(out / "results.csv")
    assert set(df["N"]) == {8, 32}
    assert set(df["model"]) == {"micro", ORACLE_EMPIRICAL, ORACLE_MARKOV}
    for metric in ("recovery_rate", "fixed_point_rate", "entropy", "entropy_recovered", "entropy_gap",
                   "copy_rate", "nelbo"):
        assert (df["metric"] == metric).any(), metric
    micro = df[df["model"] == "micro"]
    assert set(micro[micro["metric"] == "recovery_rate"]["set"]) == {"train", "test", "random"}  # issue 16
    assert set(micro[micro["metric"] == "fixed_point_rate"]["set"]) == {"train", "test", "random"}
    assert not ((df["model"] == ORACLE_EMPIRICAL) & (df["metric"] == "nelbo")).any()
    auc = df[df["metric"] == "membership_auc"]
    assert set(auc["model"]) == {"micro", ORACLE_EMPIRICAL, ORACLE_MARKOV} and set(auc["set"]) == {"train_vs_test"}
    assert set(auc[auc["model"] == "micro"]["probe"]) == {"basins", "fixed_points", "entropy", "likelihood"}
    mem = auc[(auc["model"] == ORACLE_EMPIRICAL) & (auc["probe"] == "entropy")]
    assert (mem["value"] > 0.9).all()  # the memoriser: zero entropy on D_N (and near-copies of it)
    assert (out / "results.parquet").exists() and len(pd.read_parquet(out / "results.parquet")) == len(df)
    ex = json.loads((out / "runs" / "N8-s0" / "examples.json").read_text())
    ex2 = json.loads((out / "runs" / "N32-s0" / "examples.json").read_text())
    assert ex["examples"][0]["corrupted"] == ex2["examples"][0]["corrupted"]  # same corrupted sentence
    assert (out / "runs" / "N8-s0" / "config.yaml").exists()

    page = write_report(out)
    html = page.read_text()
    assert page == out / "report.html"
    assert "data:image/png;base64," in html and "<img" in html
    assert "fixed step budget" in html and "redrawn" in html
    assert "N*" in html
    for name in ("transition", "recovery", "fixed_points", "entropy", "nelbo", "membership", "basins_random",
                 "t_grid", "trajectory"):  # the last three: issue 16's section (study/report_probes.py)
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert json.loads((out / "transition.json").read_text())[0]["model"] == "micro"

    # rerunning a finished sweep does nothing and changes nothing
    before = (out / "results.csv").read_bytes()
    run_sweep(cfg, out, progress=False)
    assert (out / "results.csv").read_bytes() == before


class _Stop(Exception):
    pass


def test_killed_sweep_resumes_to_the_same_results(tmp_path):
    cfg = toy_cfg(tmp_path, ["sweep.oracles=false", "sweep.sizes=[8, 16, 32]"])
    straight = run_sweep(cfg, tmp_path / "straight", progress=False)

    def stop_after_first(key: RunKey) -> None:
        raise _Stop(key)

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(_Stop):
        run_sweep(cfg, resumed_dir, progress=False, on_run_done=stop_after_first)
    with ResultStore(resumed_dir) as store:
        assert store.done_keys() == {RunKey(8, 0, "micro")}
    # a training interrupted mid-way: a run dir holding only the checkpoint of step 3 of 6
    from basinlab.study.sweep import _run_config
    from basinlab.training.trainer import train

    key = RunKey(16, 0, "micro")
    partial = _run_config(cfg, key, resumed_dir / "runs" / key.name)
    partial.train.steps = 3
    train(partial, out_dir=resumed_dir / "runs" / key.name, progress=False)
    run_sweep(cfg, resumed_dir, progress=False)
    with ResultStore(resumed_dir) as store:
        info = {(r["N"], r["model"]): r["info"] for r in store.runs()}
    assert info[(16, "micro")]["resumed"] is True
    assert (resumed_dir / "results.csv").read_bytes() == (straight / "results.csv").read_bytes()


def test_sharded_sweep_equals_whole(tmp_path):
    cfg = toy_cfg(tmp_path, ["sweep.sizes=[8, 16]"])
    whole = run_sweep(cfg, tmp_path / "whole", progress=False)
    shared = tmp_path / "shards"
    for i in range(3):
        run_sweep(cfg, shared, shard=(i, 3), progress=False)
    assert (shared / "results.csv").read_bytes() == (whole / "results.csv").read_bytes()


def test_resume_with_other_settings_is_refused(tmp_path):
    cfg = toy_cfg(tmp_path, ["sweep.sizes=[8]", "sweep.oracles=false"])
    run_sweep(cfg, tmp_path / "s", progress=False)
    other = toy_cfg(tmp_path, ["sweep.sizes=[8]", "sweep.oracles=false", "train.steps=7"])
    with pytest.raises(BasinlabError, match="train.steps"):
        run_sweep(other, tmp_path / "s", progress=False)


def test_cli_errors_exit_2(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["sweep", "--out", out]) == 2
    assert main(["sweep", "--preset", "nosuchpreset", "--out", out]) == 2
    assert main(["sweep", "--preset", "demo", "--out", out, "--shard", "2/2"]) == 2
    assert main(["sweep", "--preset", "demo", "--out", out, "sweep.nokey=1"]) == 2
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", out]) == 2
    assert main(["report", str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("basinlab: error:") == 7
    assert all(len(line) < 400 for line in err.splitlines())


def test_cli_sweep_and_report(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["sweep", "--preset", "demo", *TOY, f"data.cache_dir={tmp_path / 'cache'}", "sweep.sizes=[8]",
            "sweep.oracles=false", "sweep.devices=[]", "--out", str(out), "--quiet", "--report"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "results.csv" in printed and "report.html" in printed
    assert (out / "report.html").exists()
    assert main(["report", str(out)]) == 0


def test_device_lists_expand():
    assert expand_devices(["cuda:0*3", "cuda:1"], check=False) == ["cuda:0"] * 3 + ["cuda:1"]  # --plan: form only
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(BasinlabError, match=f"cuda:{n_gpu} is not available"):
        expand_devices([f"cuda:{n_gpu}"])  # a device this machine lacks: refused before any worker starts
    assert expand_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    auto = expand_devices(["auto*64"])
    if torch.cuda.is_available():
        assert auto == ["cuda:0"] * 64
    else:
        assert auto == ["cpu"] * min(64, os.cpu_count() or 1)  # at most one CPU worker per core
    assert expand_devices(["auto"]) == ["cuda:0" if torch.cuda.is_available() else "cpu"]
    for bad in ("cpu*0", "cpu*x", "*2"):
        with pytest.raises(BasinlabError, match="DEVICE\\*K"):
            expand_devices([bad])


def test_two_cpu_workers_equal_one_process(tmp_path):
    cfg = toy_cfg(tmp_path, ["sweep.sizes=[8, 16]", "sweep.oracles=false"])
    one = run_sweep(cfg, tmp_path / "one", progress=False)
    two = run_sweep(cfg, tmp_path / "two", progress=False, devices=["cpu*2"])
    assert (two / "results.csv").read_bytes() == (one / "results.csv").read_bytes()
    assert (two / "worker-0.log").exists() and (two / "worker-1.log").exists()


def test_plan_lists_runs_with_train_commands(tmp_path, capsys):
    out = tmp_path / "p"
    args = ["sweep", "--preset", "demo", *TOY, f"data.cache_dir={tmp_path / 'cache'}", "--out", str(out), "--plan"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("N8-s0 ") and "todo" in lines[0]
    assert f"data.n_train=8 train.seed=0 --out {out / 'runs' / 'N8-s0'}" in lines[0]
    assert (out / "sweep_config.yaml").exists()


def test_text_data_sweep_and_report(tmp_path):
    """Brown sentences (PAD/BOS/EOS never counted): the memoriser alone, no Markov oracle, readable examples."""
    text = [o for o in TOY if not o.startswith("data.")] + [
        "data.source=brown", "data.mode=sentence", "data.seq_len=16", "data.tokenizer=wordpiece",
        "data.vocab_size=512", "data.n_test=40", f"data.cache_dir={tmp_path / 'cache'}", "sweep.sizes=[8, 16]",
    ]
    cfg = load_config(None, text)
    out = run_sweep(cfg, tmp_path / "text", progress=False)
    df = pd.read_csv(out / "results.csv")
    assert set(df["model"]) == {"micro", ORACLE_EMPIRICAL}
    ex = json.loads((out / "runs" / "N8-s0" / "examples.json").read_text())["examples"][0]
    assert ex["text"]["original"] and not ex["real"][0]  # BOS is not a real token
    assert len(ex["tokens"]["original"]) == 16 and all(isinstance(t, str) for t in ex["tokens"]["original"])
    html = write_report(out).read_text()
    assert "brown corpus" in html and "oracle" not in html.split("<h2>Setup")[0]
