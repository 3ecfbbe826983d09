"""``basinlab probe``: oracles and a trained checkpoint, output files, --show, and one-line errors."""

import json

import pandas as pd
import pytest

from basinlab.cli import main
from basinlab.probes.results import ROW_KEYS


def _data_args(tmp_path) -> list[str]:
    return ["data.source=markov", "data.seq_len=16", "data.n_train=64", "data.n_test=32", "data.markov_pool=200",
            f"data.cache_dir={tmp_path / 'cache'}"]


def test_probe_all_with_the_markov_oracle(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["probe", "all", *_data_args(tmp_path), "--oracle", "markov", "--n", "8", "--steps", "5",
               "--ts", "0.1,0.5", "--samples", "4", "--out", str(out), "--show", "2", "--quiet"])
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == list(ROW_KEYS)
    assert set(df["set"]) == {"train", "test", "random", "generated", "train_vs_test"}  # + membership AUC rows
    assert {"recovery_rate", "fixed_point_rate", "entropy", "nelbo", "copy_rate", "basin_radius"} <= set(df["metric"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["denoiser"] == "oracle:markov" and summary["sets"] == {"train": 8, "test": 8, "random": 8}
    assert summary["probe_config"]["steps"] == 5 and summary["probe_config"]["ts"] == [0.1, 0.5]
    for png in ("recovery.png", "fixed_points.png", "entropy_hist.png"):
        assert (out / png).stat().st_size > 1000
    ex = json.loads((out / "examples.json").read_text())
    assert len(ex["examples"]) == 2 and ex["t"] == 0.25
    text = capsys.readouterr().out
    assert "recovery_rate" in text and "original :" in text and "restored :" in text


def test_probe_basins_with_the_memoriser_on_one_set(tmp_path, capsys):
    rc = main(["probe", "basins", *_data_args(tmp_path), "--oracle", "empirical", "--set", "train", "--n", "8",
               "--steps", "5", "--ts", "0.05", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "train" in text and "test" not in text.split("\n")[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data.source=brown", "--oracle", "markov"], "Markov data"),
        (["--oracle", "markov", "--ts", "0,2"], "--ts"),
        (["a.yaml", "b.yaml", "--oracle", "markov"], "at most one CONFIG"),
        (["data.nope=1", "--oracle", "markov"], "unknown config key"),
        (["--oracle", "markov", "--n", "0"], "probe.m"),
    ],
)
def test_probe_errors_are_one_line(tmp_path, capsys, argv, message):
    # CONFIG and key=value overrides come right after the test's name, as for `basinlab train`.
    rc = main(["probe", "basins", *_data_args(tmp_path), *argv])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_probe_a_trained_checkpoint(tmp_path, capsys):
    from basinlab.config import load_config
    from basinlab.training.trainer import train

    cfg = load_config(None, [*_data_args(tmp_path), "model.n_layer=1", "model.d_model=32", "model.n_head=2",
                             "model.d_cond=16", "train.steps=2", "train.batch_size=8", "train.warmup_steps=1",
                             "train.device=cpu", "train.progress=false", f"out_dir={tmp_path / 'run'}"])
    train(cfg, out_dir=tmp_path / "run", progress=False)
    out = tmp_path / "probes"
    rc = main(["probe", "fixed-points", "probe.batch_size=2", "--checkpoint", str(tmp_path / "run"), "--device",
               "cpu", "--n", "4", "--steps", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["metric"]) == {"fixed_point_rate"} and set(df["set"]) == {"train", "test", "random"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["denoiser"].startswith("checkpoint:") and summary["probe_config"]["batch_size"] == 2
    rc = main(["probe", "basins", "data.n_train=5", "--checkpoint", str(tmp_path / "run")])
    assert rc == 2 and "probe.*" in capsys.readouterr().err


def test_probe_weights_follow_the_protocol(tmp_path):
    """``probe.weights``: EMA under exact, raw under paper, ``--raw`` forces raw; recorded in summary.json. The
    seeded NELBO estimate is the same on the same weights and differs between EMA and raw (2 steps apart)."""
    from basinlab.config import load_config
    from basinlab.training.trainer import train

    cfg = load_config(None, [*_data_args(tmp_path), "model.n_layer=1", "model.d_model=32", "model.n_head=2",
                             "model.d_cond=16", "train.steps=3", "train.batch_size=8", "train.warmup_steps=1",
                             "train.device=cpu", "train.progress=false", f"out_dir={tmp_path / 'run'}"])
    train(cfg, out_dir=tmp_path / "run", progress=False)
    got = {}
    for name, extra in (("exact", []), ("paper", ["probe.protocol=paper"]), ("exact_raw", ["probe.weights=raw"]),
                        ("flag_raw", ["--raw"]), ("paper_ema", ["probe.protocol=paper", "probe.weights=ema"])):
        out = tmp_path / name
        assert main(["probe", "likelihood", *extra, "--checkpoint", str(tmp_path / "run"), "--device", "cpu",
                     "--n", "4", "--set", "test", "--out", str(out), "--quiet"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        df = pd.read_csv(out / "results.csv")
        got[name] = (summary["probe_config"]["weights"], float(df[df["metric"] == "nelbo_diffusion"]["value"].iloc[0])
                     if name.startswith("exact") or name == "flag_raw" else None)
    assert [got[k][0] for k in got] == ["ema", "raw", "raw", "raw", "ema"]
    assert got["exact_raw"][1] == got["flag_raw"][1] != got["exact"][1]
