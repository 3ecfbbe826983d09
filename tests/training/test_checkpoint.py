"""Checkpoints: layout, atomic replacement, verified loads, load_trained (EMA vs raw), tokenizer checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import basinlab
from basinlab.data import build_dataset
from basinlab.data.tokenizer import train_tokenizer
from basinlab.diffusion import Denoiser
from basinlab.errors import BasinlabError
from basinlab.training.checkpoint import find_checkpoint, load_trained, verify_checkpoint
from basinlab.training.trainer import train

from .conftest import markov_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = markov_config(tmp, steps=4, ckpt_every=2)
    train(cfg, build_dataset(cfg.data))
    return tmp / "run"


def _copy(run_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst


def test_layout_and_pointer(run_dir) -> None:
    ckpt = find_checkpoint(run_dir)
    assert ckpt.name == "ckpt-00000004"
    assert (run_dir / "latest").read_text().strip() == "ckpt-00000004"
    assert not (run_dir / "ckpt-00000002").exists()  # older checkpoints are removed once the new one is live
    names = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "ema.safetensors", "state.pt", "config.yaml", "meta.json", "markov.safetensors",
            "manifest.json"} <= names
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert (run_dir / "config.yaml").exists() and (run_dir / "metrics.csv").exists()


def test_load_trained_run_dir_and_checkpoint_dir(run_dir) -> None:
    tm = basinlab.load(str(run_dir))
    tm2 = load_trained(find_checkpoint(run_dir), ema=False)
    assert isinstance(tm.denoiser, Denoiser)
    assert tm.vocab_size == 32 and tm.seq_len == 32 and tm.step == 4 and tm.tokenizer is None
    assert tm.source is not None and torch.allclose(tm.source.P, build_dataset(tm.config.data).source.P)
    z = torch.randint(0, 32, (3, 32))
    t = torch.full((3,), 0.5, dtype=torch.float64)
    a, b = tm.denoiser(z, t), tm2.denoiser(z, t)
    assert a.shape == (3, 32, 32) and not torch.allclose(a, b)  # EMA and raw weights differ
    assert tm.decode(z[:1])[0] == " ".join(map(str, z[0].tolist()))


def test_stale_temporary_directory_is_ignored(run_dir, tmp_path) -> None:
    run = _copy(run_dir, tmp_path)
    (run / ".ckpt-00000006.tmp-999").mkdir()  # a crash while writing the next checkpoint
    (run / ".ckpt-00000006.tmp-999" / "model.safetensors").write_bytes(b"partial")
    assert find_checkpoint(run).name == "ckpt-00000004"
    (run / "latest").unlink()  # a crash between the rename and the pointer: newest complete one wins
    assert find_checkpoint(run).name == "ckpt-00000004"
    assert load_trained(run).step == 4


@pytest.mark.parametrize("name", ["ema.safetensors", "meta.json", "model.safetensors"])
def test_corruption_and_truncation_detected(run_dir, tmp_path, name) -> None:
    run = _copy(run_dir, tmp_path)
    f = find_checkpoint(run) / name
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BasinlabError, match=rf"corrupt or truncated \(sha256 mismatch in {name}\)"):
        load_trained(run, ema=name != "model.safetensors")
    f.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(BasinlabError, match="corrupt or truncated"):
        verify_checkpoint(find_checkpoint(run))


def test_corrupt_checkpoint_refuses_resume(run_dir, tmp_path) -> None:
    run = _copy(run_dir, tmp_path)
    (find_checkpoint(run) / "state.pt").write_bytes(b"")
    cfg = markov_config(tmp_path, steps=6)
    with pytest.raises(BasinlabError, match=r"sha256 mismatch in state\.pt"):
        train(cfg, build_dataset(cfg.data), out_dir=run)


def test_missing_paths(tmp_path) -> None:
    with pytest.raises(BasinlabError, match="does not exist"):
        load_trained(tmp_path / "nope")
    with pytest.raises(BasinlabError, match="no checkpoint in"):
        load_trained(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(BasinlabError, match="corrupt or truncated"):
        load_trained(tmp_path / "bad")


def test_tokenizer_vocab_mismatch(run_dir, tmp_path) -> None:
    tok = train_tokenizer(["the cat sat on the mat", "a dog ran"] * 20, kind="wordpiece", vocab_size=40)
    assert tok.vocab_size != 32
    with pytest.raises(BasinlabError, match="vocab size .* but checkpoint .* trained with 32"):
        load_trained(run_dir, tokenizer=tok)
    path = tmp_path / "tok.json"
    tok.save(path)
    with pytest.raises(BasinlabError, match="vocab size"):
        load_trained(run_dir, tokenizer=str(path))


def test_text_run_saves_its_tokenizer(tmp_path) -> None:
    words = "the a cat dog sat ran on under mat log big small red blue".split()
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(words[i] for i in torch.randint(0, len(words), (6,), generator=g).tolist()) for _ in range(300)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines))
    cfg = markov_config(tmp_path, steps=2)
    cfg.data.source, cfg.data.path, cfg.data.vocab_size, cfg.data.seq_len = "text", str(tmp_path / "corpus.txt"), 60, 12
    cfg.data.n_train, cfg.data.n_test = 64, 32
    data = build_dataset(cfg.data)
    train(cfg, data)
    tm = load_trained(tmp_path / "run")
    assert (tm.path / "tokenizer.json").exists() and tm.source is None
    assert tm.tokenizer.vocab_size == tm.vocab_size == data.vocab_size and tm.seq_len == 12
    assert tm.decode(data.test[:2]) == data.decode(data.test[:2])
    assert tm.dataset().vocab_size == tm.vocab_size
