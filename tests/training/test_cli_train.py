"""``basinlab train | sample | nll``: they work, and every bad input is one line on stderr with exit code 2."""

from __future__ import annotations

import json

import pytest
import yaml

from basinlab.cli import main
from basinlab.training.checkpoint import find_checkpoint

TINY = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16", "train.batch_size=16",
        "train.log_every=1", "train.device=cpu", "data.source=markov", "data.n_train=64", "data.n_test=64",
        "data.markov_pool=1064"]


def _config(tmp_path) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": {"cache_dir": str(tmp_path / "cache")}, "train": {"steps": 3}}))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    assert main(["train", _config(tmp), *TINY, "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp


def _one_line_error(capsys, argv, match: str) -> None:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("basinlab: error:"), err
    assert match in err, err


def test_train_sample_nll(trained, capsys) -> None:
    run = trained / "run"
    capsys.readouterr()
    assert main(["train", _config(trained), *TINY, "--out", str(run), "--quiet"]) == 0
    assert "already trained to step 3" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(run), "--n", "3", "--steps", "5", "--device", "cpu",
                 "--out", str(trained / "s.txt")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(len(line.split()) == 32 for line in lines)
    assert all(0 <= int(tok) < 32 for tok in lines[0].split())
    assert (trained / "s.txt").read_text().strip().splitlines() == lines
    assert main(["nll", "--checkpoint", str(run), "--set", "train", "--n", "16", "--times", "2"]) == 0
    out = capsys.readouterr().out
    assert "train: 16 sequences, 512 real tokens" in out and "perplexity bound" in out


def test_help_is_useful(capsys) -> None:
    for cmd, word in (("train", "resume"), ("sample", "noise"), ("nll", "NELBO")):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert word in capsys.readouterr().out


def test_cli_errors_are_one_line(trained, tmp_path, capsys) -> None:
    cfg = _config(tmp_path)
    _one_line_error(capsys, ["train", str(tmp_path / "missing.yaml")], "not found")
    _one_line_error(capsys, ["train", cfg, *TINY, "model.preset=huge", "--out", str(tmp_path / "r")],
                    "unknown model preset 'huge'")
    _one_line_error(capsys, ["train", cfg, *TINY, "data.n_train=100000", "--out", str(tmp_path / "r")],
                    "training pool")
    _one_line_error(capsys, ["train", cfg, "train.stepz=3"], "unknown config key 'train.stepz'")
    _one_line_error(capsys, ["sample", "--checkpoint", str(tmp_path / "nope")], "does not exist")
    _one_line_error(capsys, ["nll", "--checkpoint", str(tmp_path)], "no checkpoint in")
    _one_line_error(capsys, ["sample", "--checkpoint", str(trained / "run"), "--n", "0"], "--n must be >= 1")
    # resuming with a changed config
    _one_line_error(capsys, ["train", _config(trained), *TINY, "train.lr=0.01", "--out", str(trained / "run")],
                    "cannot resume")


def test_cli_checkpoint_problems(trained, tmp_path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    ckpt = find_checkpoint(run)
    # the data config now gives another vocabulary than the checkpoint's (manifest kept consistent)
    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    cfg["data"]["markov_vocab"] = 16
    (ckpt / "config.yaml").write_text(yaml.safe_dump(cfg))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    import hashlib

    data = (ckpt / "config.yaml").read_bytes()
    manifest["files"]["config.yaml"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(capsys, ["nll", "--checkpoint", str(run), "--n", "4"], "vocab size 32")
    # a corrupt weight file
    w = ckpt / "ema.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    _one_line_error(capsys, ["sample", "--checkpoint", str(run), "--n", "1", "--steps", "2"],
                    "corrupt or truncated (sha256 mismatch in ema.safetensors)")
