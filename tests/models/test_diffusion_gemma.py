"""DiffusionGemma as a model family (SPEC 2c): tiny random models built with transformers' own config classes and
saved with ``save_pretrained``, loaded in place, probed, audited, fine-tuned, exported; bad directories refused."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers.models.diffusion_gemma")

from basinlab.errors import BasinlabError
from basinlab.models.diffusion_gemma import (
    FAMILY,
    DiffusionGemmaNetwork,
    estimate_parameters,
    hf_classes,
    tiny_config,
)

V, C = 128, 16


def _tokenizer_json(path: Path, size: int) -> None:
    """A word-level tokenizer of ``size`` tokens: ``<pad> <eos> <bos>`` (ids 0, 1, 2, the config's) then ``w3``..."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, **{f"w{i}": i for i in range(3, size)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w3"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.save(str(path))


def make_dir(path: Path, vocab: int = V, canvas: int = C, seed: int = 0, tokenizer: bool = True, **arch) -> Path:
    """A random model of :func:`tiny_config` (``arch``: its ``hidden``, ``layers``, ``heads``, ``experts``)."""
    torch.manual_seed(seed)
    model = hf_classes()[1](tiny_config(vocab, canvas, **arch)).eval()
    model.save_pretrained(str(path))
    if tokenizer:
        _tokenizer_json(path / "tokenizer.json", vocab)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_dir(tmp_path_factory.mktemp("dgemma") / "tiny")


@pytest.fixture(scope="module")
def loaded(tiny):
    import basinlab

    return basinlab.load(tiny, device="cpu")


def reference_log_probs(path: Path, seqs: torch.Tensor) -> torch.Tensor:
    """transformers' own forward (float32: its grouped expert matmul has no float64): prompt [BOS], the
    clean canvas, ``log_softmax`` of the soft-capped logits, in float64."""
    model = hf_classes()[1].from_pretrained(str(path), dtype=torch.float32).eval()
    bos = model.config.text_config.bos_token_id
    with torch.no_grad():
        logits = model(input_ids=torch.full((seqs.shape[0], 1), bos), decoder_input_ids=seqs).logits
    return torch.log_softmax(logits.double(), -1)


def test_parameter_estimate_matches_the_built_model(tiny):
    config = json.loads((tiny / "config.json").read_text())
    built = sum(p.numel() for p in hf_classes()[1](tiny_config(V, C)).parameters())
    assert abs(estimate_parameters(config) - built) / built < 0.03


def test_loads_in_place_with_the_uniform_process_over_the_whole_vocabulary(loaded):
    assert isinstance(loaded.model, DiffusionGemmaNetwork)
    assert (loaded.vocab_size, loaded.seq_len) == (V, C)
    assert loaded.process.vocab_size == V and not loaded.model.time_conditioning
    x = torch.randint(0, V, (3, C), generator=torch.Generator().manual_seed(0))
    # not time-conditioned: x_theta is the same at every t
    assert torch.equal(loaded.denoiser(x, 0.9), loaded.denoiser(x, 1e-5))


def test_per_token_entropy_equals_transformers(tiny, loaded):
    from basinlab.probes.entropy import entropy_per_token

    x = torch.randint(3, V, (5, C), generator=torch.Generator().manual_seed(1))
    ours = entropy_per_token(loaded.denoiser, x, 1e-5, seed=0)
    z = loaded.process.corrupt(x, float(loaded.schedule.alpha(1e-5)),
                               generator=torch.Generator().manual_seed(0))  # almost surely z = x at t = 1e-5
    lp = reference_log_probs(tiny, z)
    ref = -(lp.exp() * lp).sum(-1)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)


def test_basins_fixed_points_likelihood_and_novelty_run(loaded):
    from basinlab.probes.basins import basin_test
    from basinlab.probes.fixed_points import fixed_point_test
    from basinlab.probes.likelihood import likelihood
    from basinlab.probes.novelty import generate_samples

    x = torch.randint(3, V, (6, C), generator=torch.Generator().manual_seed(2))
    basins = basin_test(loaded.denoiser, x, ts=(0.1, 1.0), steps=5, n_boot=10)
    rec = basins.arrays["recovery"]
    assert rec.shape == (2, 6) and bool(((rec[~rec.isnan()] >= 0) & (rec[~rec.isnan()] <= 1)).all())
    changed = basins.arrays["changed"]
    assert changed[1].float().mean() > changed[0].float().mean()  # t = 1 changes more tokens than t = 0.1
    fixed = fixed_point_test(loaded.denoiser, x, t_start=0.05, steps=5)
    rates = [r["value"] for r in fixed.rows if r["metric"] == "fixed_point_rate"]
    assert rates and all(0.0 <= v <= 1.0 for v in rates)
    nelbo = [r["value"] for r in likelihood(loaded.denoiser, x, n_times=4).rows if r["metric"] == "nelbo"]
    assert nelbo and all(math.isfinite(v) and v > 0 for v in nelbo)  # an untrained model: a positive bound
    samples = generate_samples(loaded.denoiser, 4, C, steps=5, seed=0)
    assert samples.shape == (4, C) and int(samples.max()) < V


def _ids_file(path: Path, seqs: torch.Tensor) -> Path:
    path.write_text("\n".join(" ".join(map(str, r)) for r in seqs.tolist()) + "\n")
    return path


@pytest.mark.parametrize("placed", [[], ["--device-map", "auto"]], ids=["one-device", "device-map"])
def test_audit_cli_tokens_equal_transformers(tiny, tmp_path, placed):
    import pandas as pd

    from basinlab.cli import main

    g = torch.Generator().manual_seed(3)
    members, nonmembers = torch.randint(3, V, (4, C), generator=g), torch.randint(3, V, (4, C), generator=g)
    rc = main(["audit", "--checkpoint", str(tiny), "--members", str(_ids_file(tmp_path / "m.txt", members)),
               "--nonmembers", str(_ids_file(tmp_path / "n.txt", nonmembers)), "--format", "ids", "--steps", "4",
               "--device", "cpu", "--quiet", "--out", str(tmp_path / "A"), *placed])
    assert rc == 0
    assert {"auc.json", "tokens.parquet", "audit.html", "scores.csv"} <= {p.name for p in (tmp_path / "A").iterdir()}
    frame = pd.read_parquet(tmp_path / "A" / "tokens.parquet")
    lp = reference_log_probs(tiny, torch.cat([members, nonmembers]))
    ref = -(lp.exp() * lp).sum(-1).reshape(-1).numpy()
    assert abs(frame["entropy"].to_numpy() - ref).max() < 1e-4
    auc = json.loads((tmp_path / "A" / "auc.json").read_text())
    assert "tpr_at_1pct_fpr" in json.dumps(auc) or "tpr" in json.dumps(auc)


# ---- bad directories ---------------------------------------------------------------------------------------------


def _load(path):
    import basinlab

    return basinlab.load(path, device="cpu")


def test_missing_weights_refused(tmp_path):
    d = make_dir(tmp_path / "d")
    (d / "model.safetensors").unlink()
    with pytest.raises(BasinlabError, match="missing"):
        _load(d)


def test_lying_config_refused(tmp_path):
    d = make_dir(tmp_path / "d")
    config = json.loads((d / "config.json").read_text())
    config["text_config"]["hidden_size"] = 96
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(BasinlabError, match="does not describe"):
        _load(d)


def test_nan_weights_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    d = make_dir(tmp_path / "d")
    state = load_file(str(d / "model.safetensors"))
    key = next(k for k in state if k.endswith("q_proj.weight"))
    state[key][0, 0] = float("nan")
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BasinlabError, match="NaN"):
        _load(d)


def test_tokenizer_of_another_vocabulary_refused(tmp_path):
    d = make_dir(tmp_path / "d")
    _tokenizer_json(d / "tokenizer.json", V + 5)
    with pytest.raises(BasinlabError, match="tokens but the model's vocabulary"):
        _load(d)


def test_unknown_model_type_refused(tmp_path):
    from basinlab.models.family import require_family_dir

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(BasinlabError, match="diffusion_gemma"):
        require_family_dir(tmp_path)


def big_config(path: Path) -> Path:
    """A config of the 26B-A4B model's scale (Gemma 4 26B-A4B's published shape), written by transformers'
    own config classes, without weights."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaTextConfig

    text = DiffusionGemmaTextConfig(
        vocab_size=262144, hidden_size=2816, intermediate_size=2112, num_hidden_layers=30, num_attention_heads=16,
        num_key_value_heads=8, head_dim=256, global_head_dim=512, num_global_key_value_heads=2, num_experts=128,
        top_k_experts=8, moe_intermediate_size=704, enable_moe_block=True, sliding_window=1024)
    DiffusionGemmaConfig(text_config=text, canvas_length=256).save_pretrained(str(path))
    return path


def test_26b_config_refused_within_seconds_before_any_weight(tmp_path):
    from basinlab.memory import physical_memory_bytes

    d = big_config(tmp_path / "big")
    n = estimate_parameters(json.loads((d / "config.json").read_text()))
    assert 24e9 < n < 27e9
    if (physical_memory_bytes() or 0) > 4 * n * 1.1:
        pytest.skip("this machine could hold the 26B model in fp32")
    ids = _ids_file(tmp_path / "ids.txt", torch.arange(3, 19).reshape(1, 16))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "basinlab.cli", "audit", "--checkpoint", str(d), "--texts", str(ids),
                           "--format", "ids", "--device", "cpu", "--out", str(tmp_path / "A")],
                          capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "B parameters need about" in proc.stderr and "would fit" in proc.stderr
    assert elapsed < 15


# ---- fine-tuning, LoRA and export ----------------------------------------------------------------------------------


def _train(tmp_path: Path, init: Path, out: str, steps: int, **extra):
    from basinlab.config import load_config
    from basinlab.training.trainer import train

    overrides = [f"model.init={init}", "data.n_train=16", f"train.steps={steps}", "train.batch_size=16",
                 "train.ce_warmup_steps=0", "train.objective=ce_redrawn", "train.warmup_steps=1", "train.lr=0.003",
                 f"train.ckpt_every={steps}", "train.log_every=1", "train.progress=false", "train.device=cpu",
                 "data.seq_len=32", "data.markov_pool=400", "data.n_test=64"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return train(load_config("demo", overrides), out_dir=tmp_path / out)


@pytest.fixture(scope="module")
def init32(tmp_path_factory) -> Path:
    return make_dir(tmp_path_factory.mktemp("dgemma32") / "tiny32", vocab=40, canvas=32, tokenizer=False)


def test_finetune_from_init_then_export_reloads_with_equal_logits(init32, tmp_path):
    import basinlab

    result = _train(tmp_path, init32, "R", steps=3)
    tm = basinlab.load(result.out_dir, device="cpu")
    assert tm.meta["family"] == "diffusion_gemma" and tm.vocab_size == 40
    assert tm.dataset().train(16).shape == (16, 32)  # the run's own data (32 states) under a 40-token model
    from basinlab.cli import main

    assert main(["export", "--checkpoint", str(result.out_dir), "--format", "hf", "--out", str(tmp_path / "E")]) == 0
    hf = hf_classes()[1].from_pretrained(str(tmp_path / "E")).eval()
    x = torch.randint(0, 32, (3, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = tm.model(x, torch.zeros(3))
        theirs = hf(input_ids=torch.full((3, 1), 2), decoder_input_ids=x).logits
    assert torch.equal(ours, theirs)


def test_init_refuses_data_beyond_its_vocabulary(tmp_path):
    d = make_dir(tmp_path / "small", vocab=20, canvas=32, tokenizer=False)
    with pytest.raises(BasinlabError, match="vocabulary of 20 tokens"):
        _train(tmp_path, d, "R", steps=1)


def test_lora_checkpoint_holds_the_merged_weights(init32, tmp_path):
    import basinlab
    from basinlab.training.lora import apply_lora, has_lora, merged_state

    result = _train(tmp_path, init32, "L", steps=3, **{"train.lora_rank": 2, "train.ema": 0.0})
    raw = basinlab.load(result.out_dir, device="cpu", ema=False)
    assert not has_lora(raw.model)
    # the same LoRA network, with the adapters of state.pt, gives the merged checkpoint's logits
    state = torch.load(result.checkpoint_path / "state.pt", weights_only=True)
    net = FAMILY.init_network(init32, 32, torch.device("cpu"))
    apply_lora(net, 2, FAMILY.lora_targets)
    net.load_state_dict(state["adapters"], strict=False)
    assert any(v.abs().sum() > 0 for k, v in state["adapters"].items() if "lora_B" in k)  # trained, not zero
    x = torch.randint(0, 32, (2, 32), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(net(x, None), raw.model(x, None), atol=1e-5)
    assert set(merged_state(net)) == set(raw.model.state_dict())


# 8 heads of width 8: with the 2 heads of width 32 the network still falls short of the memoriser's recovery at
# 1,500-2,000 steps (0.86-0.94 against 1.0, seed 0, no EMA); with 8 it reaches 0.95-1.0 at 1,250 steps on seeds
# 0-4 (init and train.seed, five probe seeds each; measured 2026-12-07). The EMA (decay 0.99) steadies the last
# steps' weights. Timing: docs/PERFORMANCE.md.
MEMORISE_STEPS = 1250


@pytest.mark.slow  # run by default (pyproject: "still run in CI")
def test_a_tiny_model_trained_on_16_sequences_memorises(tmp_path):
    """Fine-tuned on N = 16 Markov sequences, its train recovery at t = 0.25 is the memoriser's (within 0.05), and
    the audit tells its training sequences from test ones (entropy AUC >= 0.9). One thread: on the shared 2-core
    CPU a network this small trains faster on one (measured: 50-55 against 75-90 ms a step)."""
    import basinlab
    from basinlab.oracles.build import build_oracle
    from basinlab.probes.audit import auc_table, audit
    from basinlab.probes.basins import basin_test

    init = make_dir(tmp_path / "init", vocab=34, canvas=16, tokenizer=False, heads=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = _train(tmp_path, init, "M", steps=MEMORISE_STEPS, **{
            "data.seq_len": 16, "train.batch_size": 64, "train.log_every": 100, "train.lr": 0.02,
            "train.lr_decay": "none", "train.ema": 0.99})
    finally:
        torch.set_num_threads(threads)
    tm = basinlab.load(result.out_dir, device="cpu")  # the EMA weights
    data = tm.dataset()
    train, test = data.train(16), data.test[:16]

    def recovery(denoiser) -> float:
        rec = basin_test(denoiser, train, ts=(0.25,), steps=25, n_boot=10, seed=1).arrays["recovery"]
        return float(rec[~rec.isnan()].mean())

    memoriser = build_oracle("empirical", data, 16, tm.config)
    assert recovery(tm.denoiser) >= recovery(memoriser) - 0.05
    scores = audit(tm.denoiser, torch.cat([train, test]), groups=["member"] * 16 + ["nonmember"] * 16, steps=25)
    assert auc_table(scores)["entropy"]["auc"] >= 0.9


def test_entropy_bound_sampler_is_transformers_generate_from_the_corrupted_canvas(tiny, loaded):
    from basinlab.diffusion import with_sampler
    from basinlab.diffusion.sampler import reverse_chain

    den = with_sampler(loaded.denoiser, "entropy_bound")
    z = torch.randint(3, V, (3, C), generator=torch.Generator().manual_seed(6))
    ours = reverse_chain(den, z, 0.5, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours, reverse_chain(den, z, 0.5, 8, generator=torch.Generator().manual_seed(0)))
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(seed)
    hf = loaded.model.hf
    theirs = hf.generate(input_ids=torch.full((3, 1), 2), decoder_input_ids=z, max_new_tokens=C, max_denoising_steps=4)
    assert torch.equal(ours, theirs.sequences[:, 1:])
    with pytest.raises(BasinlabError, match="no such sampler"):
        with_sampler(object(), "entropy_bound")


def test_self_conditioning_feeds_each_steps_logits_to_the_next(loaded):
    from basinlab.diffusion import with_self_conditioning
    from basinlab.probes.basins import basin_test

    net, hf = loaded.model, loaded.model.hf
    z = torch.randint(3, V, (2, C), generator=torch.Generator().manual_seed(7))
    prompt = torch.full((2, 1), 2)
    with torch.no_grad(), net.self_conditioned():
        first, second = net(z), net(z)
    with torch.no_grad():
        plain = hf(input_ids=prompt, decoder_input_ids=z).logits
        fed = hf(input_ids=prompt, decoder_input_ids=z, self_conditioning_logits=plain).logits
        assert torch.equal(net(z), plain)  # outside the context: off (the leave-one-out entropy's setting)
    assert torch.equal(first, plain) and torch.equal(second, fed) and not torch.equal(first, second)
    res = basin_test(with_self_conditioning(loaded.denoiser), z, ts=(0.25,), steps=4, n_boot=5)
    assert res.arrays["restored"].shape == (1, 2, C)
    with pytest.raises(BasinlabError, match="self-conditioning"):
        with_self_conditioning(object())


def test_probe_sampler_is_validated_and_reaches_the_chains(loaded):
    from basinlab.config import load_config
    from basinlab.data import build_dataset
    from basinlab.probes import run_suite

    with pytest.raises(BasinlabError, match="probe.sampler"):
        load_config("demo", ["probe.sampler=nope"])
    cfg = load_config("demo", ["probe.sampler=entropy_bound", "probe.self_conditioning=true", "data.seq_len=16",
                               "probe.m=4", "probe.steps=4", "probe.ts=[0.5]", "data.markov_pool=200",
                               "data.n_test=16"])
    result = run_suite(loaded.denoiser, build_dataset(cfg.data), cfg.probe, n_train=16, probes=["basins"],
                       sets=["test"])
    assert result.arrays["basins/test/restored"].shape == (1, 4, C)


@pytest.mark.parametrize("device_map", ["auto", {"": "cpu"}, "cpu", {"model": "cpu", "lm_head": "cpu"}])
def test_a_user_device_map_loads_the_same_model(tiny, loaded, device_map):
    """``basinlab.load(DIR, device_map=...)`` hands the placement to transformers (a map checked against the
    model's modules first): the same log-probabilities as the plain load, on this CPU-only machine."""
    import basinlab

    placed = basinlab.load(tiny, device="cpu", device_map=device_map)
    x = torch.randint(3, V, (3, C), generator=torch.Generator().manual_seed(7))
    assert torch.equal(placed.denoiser(x, 0.5), loaded.denoiser(x, 0.5))


def test_a_device_map_that_leaves_weights_unplaced_is_refused(tiny):
    import basinlab

    with pytest.raises(BasinlabError, match="device_map places no device"):
        basinlab.load(tiny, device="cpu", device_map={"model.encoder": "cpu"})
