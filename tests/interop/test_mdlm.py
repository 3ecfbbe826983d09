"""MDLM checkpoints in and out (basinlab.interop.mdlm): the converted model's log x_theta equals an independent
reference of MDLM's ``DIT.forward`` + ``_subs_parameterization`` (tests/interop/mdlm_reference.py) to 1e-4 in
float32, with time conditioning on and off, for both source formats and raw/EMA weights; convert -> export ->
convert is bit for bit; a GPT-2-style tokenizer (built here with ``tokenizers``) travels; bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import basinlab
from basinlab.cli import main
from basinlab.errors import BasinlabError
from basinlab.interop import convert, detect_family
from basinlab.interop.duo import sigma_of_t
from basinlab.interop.mdlm import export_mdlm_hf
from tests.interop.duo_reference import duo_param_names, random_duo_params
from tests.interop.mdlm_reference import NEG_INFINITY, mdlm_forward

V, D, C, NB, NH, L = 36, 32, 24, 2, 4, 12  # V clean tokens; MDLM's vocab_size is V + 1 ([MASK] = V)
M = V


def _config(tc: bool, **kw) -> dict:
    cfg = {"model_type": "mdlm", "vocab_size": V + 1, "model_length": L, "hidden_dim": D, "cond_dim": C,
           "n_blocks": NB, "n_heads": NH, "dropout": 0.1, "time_conditioning": tc,
           "architectures": ["MDLM"], "auto_map": {"AutoModelForMaskedLM": "modeling_mdlm.MDLM"}}
    cfg.update(kw)
    return cfg


def write_hf(path, params, tc=False, **kw):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(_config(tc, **kw)))
    save_file({f"backbone.{k}": v.contiguous() for k, v in params.items()}, str(path / "model.safetensors"))
    return path


def write_ckpt(path, raw, ema, tc=True, hyper=None):
    shadow = [ema[n].clone() for n in duo_param_names(NB)]
    torch.save({
        "state_dict": {f"backbone.{k}": v for k, v in raw.items()},
        "ema": {"decay": 0.9999, "num_updates": 55, "shadow_params": shadow},
        "global_step": 9,
        "hyper_parameters": hyper if hyper is not None else {"config": {
            "diffusion": "absorbing_state", "parameterization": "subs", "time_conditioning": tc,
            "model": {"n_heads": NH, "length": L, "dropout": 0.1, "hidden_size": D}}, "tokenizer": None},
    }, path)
    return path


def _params(seed):
    return random_duo_params(V + 1, D, C, NB, NH, seed=seed)


def _queries():
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, V, (6, L), generator=g)
    z = torch.where(torch.rand(6, L, generator=g) < 0.5, M, x)
    z[0] = M  # all masked
    z[1] = x[1]  # none masked
    return z, torch.tensor([1e-5, 0.01, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)


def check_matches(run, params, tc, ema=True) -> float:
    """max |log x_theta - MDLM's| over finite entries (and -inf exactly where MDLM puts -1e6)."""
    tm = basinlab.load(run, ema=ema)
    assert tm.process.name == "masked" and tm.vocab_size == V
    z, t = _queries()
    got = tm.denoiser(z, t)
    want = mdlm_forward(params, NH, z, sigma_of_t(t).float(), tc, M)
    assert got.dtype == torch.float32 and got.shape == (6, L, V)
    assert (want[..., M] <= NEG_INFINITY / 2).all()  # MDLM never predicts [MASK]; basinlab drops the column
    want = want[..., :V]
    assert torch.equal(torch.isneginf(got), want <= NEG_INFINITY / 2)
    fin = torch.isfinite(got)
    err = (got[fin] - want[fin]).abs().max().item()
    assert err < 1e-4, err
    # not vacuous: a masked position's prediction depends on the visible tokens, and on t exactly when conditioned
    two = torch.full((2, L), M)
    two[1, 1] = 3
    out = tm.denoiser(two, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert (out[0, 0] - out[1, 0]).abs().max().item() > 1e-2
    out = tm.denoiser(two[:1].expand(2, L), torch.tensor([0.1, 0.9], dtype=torch.float64))
    assert ((out[0] - out[1]).abs().max().item() > 1e-3) == tc
    return err


@pytest.mark.parametrize("tc", [False, True])
def test_hf_dir_matches_mdlm_forward(tmp_path, tc):
    params = _params(1)
    src = write_hf(tmp_path / "hf", params, tc)
    assert detect_family(src)[0] == "mdlm"
    convert(src, tmp_path / "run")
    err = check_matches(tmp_path / "run", params, tc)
    print(f"mdlm-hf time_conditioning={tc}: max |log x_theta - MDLM| = {err:.2e}")
    tm = basinlab.load(tmp_path / "run")
    assert tm.seq_len == L and tm.tokenizer is None and tm.model.time_conditioning == tc
    assert tm.schedule.name == "loglinear" and tm.schedule.eps == pytest.approx(1e-3)
    assert tm.config.train.process == "masked" and tm.config.model.time_conditioning == tc


def test_lightning_ckpt_ema_and_raw(tmp_path):
    raw, ema = _params(2), _params(3)
    src = write_ckpt(tmp_path / "last.ckpt", raw, ema, tc=True)
    assert detect_family(src)[0] == "mdlm"
    assert main(["convert", str(src), "--out", str(tmp_path / "run")]) == 0  # detected, EMA weights by default
    err = check_matches(tmp_path / "run", ema, True)
    print(f"mdlm .ckpt (ema): max |log x_theta - MDLM| = {err:.2e}")
    check_matches(tmp_path / "run", raw, True, ema=False)  # the raw ones stay in model.safetensors
    assert main(["convert", str(src), "--out", str(tmp_path / "run_raw"), "--weights", "raw"]) == 0
    check_matches(tmp_path / "run_raw", raw, True)
    assert basinlab.load(tmp_path / "run").step == 9


def test_ckpt_without_hyper_parameters_needs_the_family_and_the_switch(tmp_path, capsys):
    raw = _params(4)
    src = write_ckpt(tmp_path / "bare.ckpt", raw, raw, hyper={})
    assert detect_family(src)[0] is None  # nothing says masked or uniform
    args = ["convert", str(src), "--out", str(tmp_path / "run"), "--model-type", "mdlm", "--n-heads", str(NH),
            f"data.seq_len={L}"]
    assert main(args) == 2
    assert "model.time_conditioning" in capsys.readouterr().err
    assert main([*args, "model.time_conditioning=false"]) == 0
    check_matches(tmp_path / "run", raw, False)


def test_convert_export_convert_is_bit_for_bit(tmp_path):
    params = _params(6)
    src = write_hf(tmp_path / "hf", params, tc=False)
    convert(src, tmp_path / "a")
    assert main(["export", "--checkpoint", str(tmp_path / "a"), "--out", str(tmp_path / "exp"),
                 "--format", "mdlm-hf"]) == 0
    cfg = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert cfg["model_type"] == "mdlm" and cfg["vocab_size"] == V + 1 and cfg["time_conditioning"] is False
    for k in ("model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads"):
        assert cfg[k] == _config(False)[k]
    orig, back = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "exp" / "model.safetensors"))
    assert orig.keys() == back.keys()
    assert all(torch.equal(orig[k], back[k]) for k in orig)
    convert(tmp_path / "exp", tmp_path / "b")
    a, b = basinlab.load(tmp_path / "a"), basinlab.load(tmp_path / "b")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.config.to_dict() == b.config.to_dict() and a.model.arch() == b.model.arch()


def _gpt2_style_tokenizer(path):
    """A byte-level BPE with GPT-2's single special token ``<|endoftext|>`` (BOS = EOS, as MDLM's OWT runs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["the cat sat on the mat", "a dog ran in the park", "the end of the text"] * 20, trainer)
    tk.save(str(path))
    return tk.get_vocab_size()


def test_gpt2_style_tokenizer_travels(tmp_path):
    n = _gpt2_style_tokenizer(tmp_path / "tokenizer.json")
    params = random_duo_params(n + 1, D, C, NB, NH, seed=7)
    src = tmp_path / "hf"
    write_hf(src, params, tc=False, vocab_size=n + 1)
    assert main(["convert", str(src), "--out", str(tmp_path / "run"), "--tokenizer",
                 str(tmp_path / "tokenizer.json")]) == 0
    tm = basinlab.load(tmp_path / "run")
    assert tm.vocab_size == n and tm.tokenizer is not None and tm.tokenizer.vocab_size == n
    eot = tm.tokenizer.eos_id
    assert tm.tokenizer.bos_id == eot == tm.tokenizer.tk.token_to_id("<|endoftext|>")
    ids = tm.tokenizer.encode("the cat ran")
    assert tm.tokenizer.decode([eot, *ids, eot]) == "the cat ran"
    export_mdlm_hf(tmp_path / "run", tmp_path / "exp")
    assert (tmp_path / "exp" / "tokenizer.json").is_file()
    with pytest.raises(BasinlabError, match=r"has 300 tokens|tokens but the model has"):
        write_hf(tmp_path / "hf2", _params(8), tc=False)
        convert(tmp_path / "hf2", tmp_path / "run2", tokenizer=tmp_path / "tokenizer.json")


def test_bad_input_is_one_line(tmp_path, capsys):
    params = _params(9)
    bad = write_hf(tmp_path / "hf", params, tc="no")
    assert main(["convert", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "time_conditioning must be true or false" in capsys.readouterr().err
    bad = write_hf(tmp_path / "hf3", params, tc=False, hidden_dim=30)
    assert main(["convert", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "hidden_dim=30" in capsys.readouterr().err
    sedd = write_ckpt(tmp_path / "sedd.ckpt", params, params, hyper={"config": {"parameterization": "sedd",
                                                                                "diffusion": "absorbing_state"}})
    assert main(["convert", str(sedd), "--out", str(tmp_path / "r")]) == 2
    assert "SUBS" in capsys.readouterr().err
    # a uniform run is not an MDLM model
    duo_params = random_duo_params(V, D, C, NB, NH, seed=1)
    (tmp_path / "duo").mkdir()
    (tmp_path / "duo" / "config.json").write_text(json.dumps({**_config(True), "model_type": "duo", "vocab_size": V}))
    save_file({f"backbone.{k}": v.contiguous() for k, v in duo_params.items()},
              str(tmp_path / "duo" / "model.safetensors"))
    convert(tmp_path / "duo", tmp_path / "uniform")
    assert main(["export", "--checkpoint", str(tmp_path / "uniform"), "--out", str(tmp_path / "x"),
                 "--format", "mdlm-hf"]) == 2
    assert "--format duo-hf" in capsys.readouterr().err


def test_audit_runs_on_a_converted_mdlm_model(tmp_path):
    """``basinlab audit`` on the converted model: the masked process's probes (leave-one-out entropy with one
    position masked, basin recovery by unmasking, masked NELBO) give finite scores and the AUCs are written."""
    import pandas as pd

    convert(write_hf(tmp_path / "hf", _params(10), tc=False), tmp_path / "run")
    g = torch.Generator().manual_seed(0)
    for name in ("mem", "non"):
        rows = torch.randint(0, V, (6, L), generator=g)
        (tmp_path / f"{name}.txt").write_text("\n".join(" ".join(map(str, r.tolist())) for r in rows))
    assert main(["audit", "--checkpoint", str(tmp_path / "run"), "--members", str(tmp_path / "mem.txt"),
                 "--nonmembers", str(tmp_path / "non.txt"), "--format", "ids", "--out", str(tmp_path / "audit"),
                 "--steps", "8", "--nelbo-times", "4", "--quiet"]) == 0
    scores = pd.read_csv(tmp_path / "audit" / "scores.csv")
    assert len(scores) == 12
    for col in ("entropy", "recovery@0.25", "nelbo"):
        assert scores[col].notna().all() and (scores[col] >= 0).all()
    assert (scores["entropy"] <= torch.log(torch.tensor(float(V))).item() + 1e-4).all()  # over V clean tokens
    assert (tmp_path / "audit" / "auc.json").is_file()


def test_duo_export_refuses_a_masked_run(tmp_path, capsys):
    convert(write_hf(tmp_path / "hf", _params(11), tc=True), tmp_path / "run")
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "x"),
                 "--format", "duo-hf"]) == 2
    assert "--format mdlm-hf" in capsys.readouterr().err


def test_detects_the_family_of_a_lightning_checkpoint(tmp_path):
    """MDLM's config (``parameterization: subs``), Duo's repository's ``algo: mdlm`` and its ``algo: duo``."""
    raw = _params(12)
    model = {"n_heads": NH, "length": L, "name": "small"}
    cases = {"mdlm": {"config": {"data": {"name": "openwebtext"}, "parameterization": "subs", "model": model}},
             "duo-repo-mdlm": {"config": {"data": {"name": "lm1b"}, "model": model,
                                          "algo": {"name": "mdlm", "parameterization": "subs"}}},
             "duo": {"config": {"model": model, "algo": {"name": "duo", "parameterization": "mean"}}}}
    got = {k: detect_family(write_ckpt(tmp_path / f"{k}.ckpt", raw, raw, hyper=v))[0] for k, v in cases.items()}
    assert got == {"mdlm": "mdlm", "duo-repo-mdlm": "mdlm", "duo": "duo"}
