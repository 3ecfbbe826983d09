"""Duo/UDLM checkpoints in and out (basinlab.interop.duo): the converted model's log x_theta equals log_softmax of
an independent reference of Duo's DIT.forward (tests/interop/duo_reference.py) to 1e-4 for both source formats,
raw and EMA weights; convert -> export -> convert is bit for bit; bad input is one line and exit 2."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from safetensors.torch import load_file, save_file

import basinlab
from basinlab.cli import main
from basinlab.interop.duo import convert, export_duo_hf, sigma_of_t
from tests.interop.duo_reference import duo_forward, duo_param_names, random_duo_params

V, D, C, NB, NH, L = 37, 32, 24, 2, 4, 12


def _hf_config(model_type: str = "duo", **kw) -> dict:
    cfg = {"model_type": model_type, "vocab_size": V, "model_length": L, "hidden_dim": D, "cond_dim": C,
           "n_blocks": NB, "n_heads": NH, "dropout": 0.1}
    cfg.update(kw)
    return cfg


def write_hf(path, params, **cfg_kw):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(_hf_config(**cfg_kw)))
    save_file({f"backbone.{k}": v.contiguous() for k, v in params.items()}, str(path / "model.safetensors"))
    return path


def write_ckpt(path, raw, ema, hyper=None):
    shadow = [ema[n].clone() for n in duo_param_names(NB)]
    torch.save({
        "state_dict": {f"backbone.{k}": v for k, v in raw.items()},
        "ema": {"decay": 0.9999, "num_updates": 123, "shadow_params": shadow},
        "global_step": 7,
        "hyper_parameters": hyper if hyper is not None else {"config": {"model": {"n_heads": NH, "length": L}}},
    }, path)
    return path


def _check_matches(run, params, ema=True):
    tm = basinlab.load(run, ema=ema)
    g = torch.Generator().manual_seed(5)
    z = torch.randint(0, V, (6, L), generator=g)
    t = torch.tensor([1e-5, 0.01, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)
    got = tm.denoiser(z, t)
    want = torch.log_softmax(duo_forward(params, NH, z, sigma_of_t(t).float()), -1)
    assert got.dtype == torch.float32
    assert (got - want).abs().max().item() < 1e-4
    # not vacuous: the prediction depends on the input and on t
    assert (got[0] - got[-1]).abs().max().item() > 1e-2
    return tm


def test_hf_dir_matches_duo_forward(tmp_path):
    params = random_duo_params(V, D, C, NB, NH, seed=1)
    src = write_hf(tmp_path / "hf", params)
    convert(src, tmp_path / "run")
    tm = _check_matches(tmp_path / "run", params)
    assert tm.seq_len == L and tm.vocab_size == V and tm.tokenizer is None
    assert tm.schedule.name == "loglinear" and tm.schedule.eps == pytest.approx(1e-3)


def test_lightning_ckpt_ema_and_raw(tmp_path):
    raw = random_duo_params(V, D, C, NB, NH, seed=2)
    ema = random_duo_params(V, D, C, NB, NH, seed=3)
    src = write_ckpt(tmp_path / "last.ckpt", raw, ema)
    convert(src, tmp_path / "run")  # default: the EMA weights
    _check_matches(tmp_path / "run", ema)
    _check_matches(tmp_path / "run", raw, ema=False)  # the raw ones stay in model.safetensors
    assert main(["convert", str(src), "--out", str(tmp_path / "run_raw"), "--weights", "raw"]) == 0
    _check_matches(tmp_path / "run_raw", raw)


def test_convert_export_convert_is_bit_for_bit(tmp_path):
    params = random_duo_params(V, D, C, NB, NH, seed=4)
    src = write_hf(tmp_path / "hf", params, model_type="udlm")
    assert main(["convert", str(src), "--out", str(tmp_path / "a")]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "a"), "--out", str(tmp_path / "hf2"),
                 "--format", "duo-hf", "--model-type", "udlm"]) == 0
    exported = load_file(str(tmp_path / "hf2" / "model.safetensors"))
    original = load_file(str(src / "model.safetensors"))
    assert set(exported) == set(original)
    assert all(torch.equal(exported[k], original[k]) for k in original)
    cfg2 = json.loads((tmp_path / "hf2" / "config.json").read_text())
    assert {k: cfg2[k] for k in _hf_config()} == _hf_config("udlm")
    assert main(["convert", str(tmp_path / "hf2"), "--out", str(tmp_path / "b")]) == 0
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(next((tmp_path / "a").glob("ckpt-*")) / name))
        b = load_file(str(next((tmp_path / "b").glob("ckpt-*")) / name))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_trained_run_exports_and_converts_back(tmp_path):
    """A basinlab run -> Duo layout -> basinlab run keeps the config (data), tokenizer-free Markov data and the
    predictions exactly."""
    from basinlab.config import load_config
    from basinlab.data import build_dataset
    from basinlab.training.trainer import train

    cfg = load_config("demo", ["data.n_train=8", "train.steps=2", "train.batch_size=4", "train.progress=false",
                               f"data.cache_dir={tmp_path / 'cache'}", "data.markov_pool=200", "data.n_test=20",
                               "model.d_model=32", "model.n_head=2", "model.d_cond=16"])
    data = build_dataset(cfg.data)
    train(cfg, data, out_dir=tmp_path / "run", progress=False)
    export_duo_hf(tmp_path / "run", tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "back")
    a, b = basinlab.load(tmp_path / "run"), basinlab.load(tmp_path / "back")
    assert b.config.data == a.config.data
    z = data.test[:4]
    assert torch.equal(a.denoiser(z, torch.full((4,), 0.3, dtype=torch.float64)),
                       b.denoiser(z, torch.full((4,), 0.3, dtype=torch.float64)))


def test_metadata_globals_become_placeholders(tmp_path, monkeypatch):
    """A Lightning checkpoint whose hyper_parameters pickle an omegaconf-like object loads without running it."""
    mod = types.ModuleType("omegaconf.dictconfig")

    class DictConfig:
        def __init__(self, content):
            self._content = content

        def __reduce__(self):  # what runs at load time if the real class were used
            return (DictConfig, (self._content,))

    DictConfig.__module__, DictConfig.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    mod.DictConfig = DictConfig
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", mod)
    raw = random_duo_params(V, D, C, NB, NH, seed=6)
    src = write_ckpt(tmp_path / "x.ckpt", raw, raw, hyper={"config": DictConfig({"model": {"n_heads": NH}})})
    monkeypatch.delitem(sys.modules, "omegaconf.dictconfig")  # loading must not need (or run) the class
    assert main(["convert", str(src), "--out", str(tmp_path / "run")]) == 0
    _check_matches(tmp_path / "run", raw)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case", ["model_type", "shape", "missing", "pickle", "tokenizer"])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    params = random_duo_params(V, D, C, NB, NH, seed=7)
    args = []
    if case == "model_type":
        src = write_hf(tmp_path / "hf", params, model_type="gpt2")
        expect = "unknown model_type"
    elif case == "shape":
        src = write_hf(tmp_path / "hf", params, cond_dim=C + 1)
        expect = "has shape"
    elif case == "missing":
        del params["blocks.1.attn_qkv.weight"]
        src = write_hf(tmp_path / "hf", params)
        expect = "backbone.blocks.1.attn_qkv.weight"
    elif case == "pickle":
        src = tmp_path / "evil.ckpt"
        torch.save({"state_dict": {"backbone.x": torch.zeros(1)}, "ema": None, "hyper_parameters": Evil()}, src)
        expect = "needs code to unpickle"
    else:
        src = write_hf(tmp_path / "hf", params)
        args = ["--tokenizer", "bert-base-uncased"]
        expect = "30522 tokens but the model has vocab_size 37"
    rc = main(["convert", str(src), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr()
    assert rc == 2
    assert "pwned" not in err.out
    lines = err.err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("ckpt-*"))


def test_converted_dir_works_in_probe_sample_nll(tmp_path, capsys):
    params = random_duo_params(V, D, C, NB, NH, seed=8)
    src = write_hf(tmp_path / "hf", params)
    run = str(tmp_path / "run")
    assert main(["convert", str(src), "data.markov_pool=300", "data.n_test=30", "data.n_train=16",
                 f"data.cache_dir={tmp_path / 'cache'}", "--out", run]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", run, "--n", "2", "--steps", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["nll", "--checkpoint", run, "--set", "test", "--n", "4", "--times", "1"]) == 0
    assert "NELBO" in capsys.readouterr().out
    assert main(["probe", "all", "--checkpoint", run, "--n", "4", "--steps", "3", "--samples", "2", "--quiet",
                 "--out", str(tmp_path / "probes")]) == 0
    assert (tmp_path / "probes" / "results.csv").exists()
