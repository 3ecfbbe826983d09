"""LoRA fine-tuning of LLaDA and Dream (``train.lora_rank`` with ``model.init=DIR``, issue 24): only the adapters
train, the checkpoint holds ``W + (alpha / r) B A`` (checked in float64 against the adapters of ``state.pt``), the
export reloads with the run's logits, and the memory check counts frozen weights without optimiser state."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import basinlab
from basinlab.cli import main
from basinlab.errors import BasinlabError
from basinlab.training.checkpoint import find_checkpoint, load_weights
from tests.models.masked_lm_reference import write

RANK = 2
FAST = ["data.n_train=16", "data.markov_pool=1000", "data.n_test=16", "train.batch_size=16", "train.lr=0.01",
        "train.warmup_steps=1", "train.objective=ce_redrawn", "train.ce_warmup_steps=0", "train.ema=0",
        "train.progress=false"]


@pytest.fixture(scope="module", params=["llada", "dream"])
def lora_run(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"lora-{request.param}")
    init = write(request.param, tmp / "init")
    run = tmp / "run"
    assert main(["train", "demo", f"model.init={init}", f"train.lora_rank={RANK}", "train.steps=4",
                 "train.ckpt_every=4", *FAST, "--out", str(run)]) == 0
    return request.param, init, run


def _init_state(family, init):
    from basinlab.models.masked_lm import load_network

    return load_network(family, init).state_dict()


def test_only_the_adapters_train_and_the_checkpoint_holds_them_merged(lora_run):
    from basinlab.registry import FAMILIES

    kind, init, run = lora_run
    family = FAMILIES.get(kind)
    ckpt = find_checkpoint(run)
    merged = load_weights(ckpt, ema=False)
    base = _init_state(family, init)
    adapters = torch.load(ckpt / "state.pt", weights_only=True)["adapters"]
    assert set(merged) == set(base) and not any("lora_" in k for k in merged)  # the plain architecture's names
    assert set(adapters) == {k for k in adapters if ".lora_A." in k or ".lora_B." in k}  # nothing else trained
    targets = {k.split(".lora_")[0] for k in adapters}
    assert len(targets) == 7 * 2  # q, k, v, o, gate, up, down of both layers
    for key, weight in merged.items():
        module = key.removesuffix(".weight")
        if module in targets and key.endswith(".weight"):
            A = adapters[f"{module}.lora_A.default.weight"].double()
            B = adapters[f"{module}.lora_B.default.weight"].double()
            assert A.shape[0] == RANK and float(B.abs().max()) > 0  # B starts at zero: trained
            delta = (RANK / RANK) * B @ A  # lora_alpha = rank
            assert torch.allclose(weight.double() - base[key].double(), delta, atol=1e-6)
        else:  # embeddings, norms, head, biases: model.init's, bit for bit
            assert torch.equal(weight, base[key]), key


def test_the_lora_network_gives_the_checkpoints_logits(lora_run):
    from basinlab.registry import FAMILIES
    from basinlab.training.lora import apply_lora, has_lora

    kind, init, run = lora_run
    family = FAMILIES.get(kind)
    tm = basinlab.load(run, device="cpu", ema=False)
    assert not has_lora(tm.model) and tm.meta["lora_rank"] == RANK
    from basinlab.models.masked_lm import load_network

    net = apply_lora(load_network(family, init), RANK, family.lora_targets)
    net.load_state_dict(torch.load(find_checkpoint(run) / "state.pt", weights_only=True)["adapters"], strict=False)
    z = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(4))
    z[:, 5] = tm.process.mask_index
    with torch.no_grad():
        assert torch.allclose(net(z), tm.model(z), atol=1e-5)


def test_the_export_after_lora_reloads_with_the_runs_logits(lora_run, tmp_path):
    kind, init, run = lora_run
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--format", "hf"]) == 0
    assert sorted(load_file(str(out / "model.safetensors"))) == sorted(load_file(str(init / "model.safetensors")))
    assert json.loads((out / "config.json").read_text())["basinlab"]["step"] == 4
    reloaded = basinlab.load(out, device="cpu")
    z = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(5))
    z[:, 2] = reloaded.process.mask_index
    assert torch.equal(reloaded.denoiser(z, 0.5), basinlab.load(run, device="cpu").denoiser(z, 0.5))


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_the_adapter_count_is_peft_s(tmp_path, kind):
    from basinlab.config import load_config
    from basinlab.models.masked_lm import load_network
    from basinlab.registry import FAMILIES
    from basinlab.training.lora import apply_lora

    init = write(kind, tmp_path / kind)
    family = FAMILIES.get(kind)
    net = apply_lora(load_network(family, init), RANK, family.lora_targets)
    peft_count = sum(p.numel() for n, p in net.named_parameters() if "lora_" in n)
    cfg = load_config("demo", [f"model.init={init}"])
    assert family.lora_parameters(cfg.model, RANK) == peft_count > 0


def test_the_memory_check_counts_lora_s_frozen_weights_once(tmp_path):
    """A LLaDA config (no weights) sized so that a full fine-tune (20 bytes a parameter) exceeds this machine's
    memory and LoRA (4 bytes a frozen parameter) fits: the first is refused, the second passes."""
    from basinlab.config import load_config
    from basinlab.memory import physical_memory_bytes
    from basinlab.training.trainer import check_memory

    d, per_layer = 4096, 16 * 4096**2  # q, k, v, o and an MLP of 4 d: 16 d^2 per layer
    layers = max(1, math.ceil(physical_memory_bytes() / 10 / per_layer))  # about a tenth of the memory in parameters
    big = tmp_path / "big"
    big.mkdir()
    cfg = {**json.loads((write("llada", tmp_path / "tiny") / "config.json").read_text()),
           "d_model": d, "n_heads": 32, "n_kv_heads": 32, "n_layers": layers, "mlp_hidden_size": 4 * d}
    (big / "config.json").write_text(json.dumps(cfg))
    common = [f"model.init={big}", "train.batch_size=2"]
    with pytest.raises(BasinlabError, match=r"training model.init=.* parameters, vocabulary 48\) .* or train LoRA "
                                            r"adapters only \(train.lora_rank=16\)"):
        check_memory(load_config("demo", common), 48, 32, 1, torch.device("cpu"))
    check_memory(load_config("demo", [*common, "train.lora_rank=8"]), 48, 32, 1, torch.device("cpu"))
