"""Fine-tune then audit (SAMA's protocol at toy size, issue 24): ``basinlab train CONFIG model.init=DIR`` on N = 16
sequences of a tiny LLaDA, ``basinlab audit --train-vs-test 16`` (the members look memorised), and
``basinlab export --format hf`` writing the official layout that reloads bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from basinlab.cli import main
from basinlab.errors import BasinlabError
from basinlab.training.checkpoint import find_checkpoint, load_trained, load_weights
from tests.models.masked_lm_reference import write

#: the demo's Markov data (V = 32, L = 32) cut to what a few seconds of training on a CPU need
FAST = ["data.n_train=16", "data.markov_pool=1000", "data.n_test=16", "train.batch_size=16", "train.lr=0.005",
        "train.warmup_steps=10", "train.objective=ce_redrawn", "train.ce_warmup_steps=0", "train.ema=0",
        "train.progress=false"]


@pytest.fixture(scope="module")
def llada_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    init = write("llada", tmp / "init")
    (init / "tokenizer_config.json").write_text("{}\n")  # a file beside the weights, copied by the export
    run = tmp / "run"
    assert main(["train", "demo", f"model.init={init}", "train.steps=600", "train.ckpt_every=600", *FAST,
                 "--out", str(run)]) == 0
    return init, run


def test_a_fine_tuned_llada_memorises_its_16_sequences(llada_run, tmp_path):
    init, run = llada_run
    meta = json.loads((find_checkpoint(run) / "meta.json").read_text())
    assert meta["family"] == "llada" and meta["process"] == "masked"
    assert meta["process_options"] == {"mask_index": 40} and meta["vocab_size"] == 48 and meta["data_vocab_size"] == 32
    out = tmp_path / "audit"
    assert main(["audit", "--checkpoint", str(run), "--train-vs-test", "16", "--out", str(out), "--steps", "10",
                 "--quiet", "--device", "cpu"]) == 0
    doc = json.loads((out / "auc.json").read_text())
    scores = doc["scores"]
    assert scores["entropy"]["auc"] >= 0.9 and scores["nelbo"]["auc"] >= 0.9, scores
    assert set(doc["tpr_conventions"]) == {"tpr_at_fpr_<a>", "tpr_at_nearest_fpr_<a>"}
    for level in ("0.1", "0.01", "0.001"):  # both conventions, named, at 10%, 1% and 0.1% FPR
        assert 0.0 <= scores["nelbo"][f"tpr_at_fpr_{level}"] <= scores["nelbo"][f"tpr_at_nearest_fpr_{level}"] or (
            scores["nelbo"][f"fpr_nearest_{level}"] <= float(level))


def test_export_writes_the_official_layout_that_reloads_bit_for_bit(llada_run, tmp_path):
    init, run = llada_run
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--format", "hf"]) == 0
    official = load_file(str(out / "model.safetensors"))
    original = {}
    for f in init.glob("*.safetensors"):
        original.update(load_file(str(f)))
    assert sorted(official) == sorted(original)  # the original key names, nothing more
    cfg = json.loads((out / "config.json").read_text())
    assert {k: v for k, v in cfg.items() if k != "basinlab"} == json.loads((init / "config.json").read_text())
    assert (out / "tokenizer_config.json").is_file()
    trained = load_weights(find_checkpoint(run), ema=True)
    reloaded = load_trained(out, device="cpu")
    state = reloaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    assert not torch.equal(official["model.transformer.blocks.0.q_proj.weight"],
                           original["model.transformer.blocks.0.q_proj.weight"])  # fine-tuning changed it
    z = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    z[:, 3] = 40
    assert torch.equal(reloaded.denoiser(z, 0.5), load_trained(run, device="cpu").denoiser(z, 0.5))


def test_the_dit_formats_refuse_a_family_run_in_one_line(llada_run, tmp_path, capsys):
    _, run = llada_run
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "x"), "--format", "mdlm-hf"]) == 2
    assert "llada run" in capsys.readouterr().err


def test_dream_fine_tunes_and_exports_with_its_key_names(tmp_path):
    init = write("dream", tmp_path / "init")
    run = tmp_path / "run"
    assert main(["train", "demo", f"model.init={init}", "train.steps=5", "train.ckpt_every=5", *FAST,
                 "--out", str(run)]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "export"), "--format", "hf"]) == 0
    assert sorted(load_file(str(tmp_path / "export" / "model.safetensors"))) == sorted(
        load_file(str(init / "model.safetensors")))
    state = load_trained(tmp_path / "export", device="cpu").model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in load_weights(find_checkpoint(run), ema=True).items())


@pytest.mark.parametrize("overrides, message", [
    (["model.init=/nonexistent/llada"], "model.init=/nonexistent/llada: not a directory"),
    (["model.family=dream"], "is a llada checkpoint but model.family=dream"),
    (["data.markov_vocab=44"], "the data hold the model's mask id 40"),
    (["data.markov_vocab=50"], "the data's 50 token ids do not fit the model's vocabulary of 48"),
])
def test_bad_fine_tuning_settings_are_refused_in_one_line(llada_run, tmp_path, overrides, message):
    from basinlab.config import load_config
    from basinlab.training.trainer import train

    init, _ = llada_run
    cfg = load_config("demo", [f"model.init={init}", *FAST, "train.steps=1", *overrides])
    with pytest.raises(BasinlabError, match=message) as err:
        train(cfg, out_dir=tmp_path / "bad")
    assert "\n" not in str(err.value)
