"""Masked models end to end (issue 15 items 2-3; SPEC 2b): a short masked training on a toy Markov source, its
checkpoint, and the probes on it, checked against invariants of the masked process (carry-over, normalised
predictions, NELBO >= 0, no 'unstable' outcome without remasking) and against direct computation."""

from __future__ import annotations

import math

import pytest
import torch

import basinlab
from basinlab.config import load_config
from basinlab.data import build_dataset
from basinlab.diffusion import MaskedProcess, estimate_nelbo, process_of
from basinlab.models import build
from basinlab.probes import basin_test, conditional_entropy, run_suite
from basinlab.training.trainer import train

TOY = [
    "data.source=markov", "data.seq_len=12", "data.markov_vocab=12", "data.markov_successors=3",
    "data.markov_pool=600", "data.n_test=40", "data.n_train=16",
    "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_cond=16", "model.time_conditioning=false",
    "train.steps=150", "train.batch_size=16", "train.warmup_steps=10", "train.lr=0.003", "train.ckpt_every=150",
    "train.log_every=50", "train.ce_warmup_steps=50", "train.progress=false", "train.device=cpu",
    "train.process=masked",
    "probe.m=16", "probe.steps=8", "probe.ts=[0.25, 0.5]", "probe.n_samples=8", "probe.batch_size=16",
]


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("masked")
    cfg = load_config(None, [*TOY, f"data.cache_dir={tmp / 'cache'}", f"out_dir={tmp / 'run'}"])
    data = build_dataset(cfg.data)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, data=data)
    finally:
        torch.set_num_threads(before)
    return basinlab.load(tmp / "run"), data, cfg


def test_checkpoint_carries_the_process(masked_run):
    tm, data, _ = masked_run
    assert tm.meta["process"] == "masked" and isinstance(tm.process, MaskedProcess)
    assert process_of(tm.denoiser) == MaskedProcess(data.vocab_size) and tm.denoiser.vocab_size == data.vocab_size
    assert tm.model.vocab_size == data.vocab_size + 1  # [MASK] appended: V + 1 inputs and outputs
    assert "process=masked" in repr(tm)
    # trained without time conditioning (as MDLM's OpenWebText model): the time changes nothing
    assert tm.meta["arch"]["time_conditioning"] is False and tm.model.time_conditioning is False
    z = torch.full((2, data.seq_len), data.vocab_size)
    z[:, ::2] = data.train(2)[:, ::2]
    a, b = (tm.denoiser(z, torch.full((2,), t, dtype=torch.float64)) for t in (0.1, 0.9))
    assert torch.equal(a, b)


def test_training_lowers_the_masked_nelbo(masked_run):
    """An untrained SUBS network (zero head: x_θ uniform over V) has a NELBO of about log V per token; training
    on D_16 brings it well below, and it stays >= 0."""
    tm, data, cfg = masked_run
    x = data.train(16)
    fresh = basinlab.models.NetworkDenoiser(build(cfg.model, data.vocab_size, data.seq_len, process="masked"),
                                            tm.schedule, device="cpu", process=tm.process)
    before = estimate_nelbo(fresh, x, n_times=4)["nelbo"]
    after = estimate_nelbo(tm.denoiser, x, n_times=4)
    assert abs(before - math.log(data.vocab_size)) < 0.25
    assert 0.0 <= after["nelbo"] < 0.8 * before and (after["per_seq"] >= 0).all()


def test_basin_test_carries_clean_tokens_over(masked_run):
    tm, data, _ = masked_run
    x = data.train(16)
    res = basin_test(tm.denoiser, x, ts=[0.25, 0.5], steps=8, set_name="train")
    z, out = res.arrays["corrupted"], res.arrays["restored"]
    kept = z != data.vocab_size
    assert (z[~kept] == data.vocab_size).all() and torch.equal(out[kept], x.expand_as(out)[kept])
    assert (out < data.vocab_size).all()  # no [MASK] survives the final step
    assert not any(r["metric"] == "unstable_rate" for r in res.rows)  # impossible by construction: not reported
    rec = [r for r in res.rows if r["metric"] == "recovery_rate"]
    assert len(rec) == 2 and all(0.0 <= r["value"] <= 1.0 for r in rec)


def test_entropy_is_the_leave_one_out_conditional(masked_run):
    """The entropy probe's H at position l = entropy of x_θ,l with only l masked (SPEC 2b), computed directly."""
    tm, data, _ = masked_run
    x = data.test[:5]
    res = conditional_entropy(tm.denoiser, x, ts=[1e-5])
    got = res.arrays["entropy"][0]
    t = torch.full((5,), 1e-5, dtype=torch.float64)
    for l in range(x.shape[1]):
        z = x.clone()
        z[:, l] = data.vocab_size
        p = tm.denoiser(z, t)[:, l].double().exp()
        assert torch.allclose(p.sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-5)
        want = torch.special.entr(p).sum(-1)
        assert torch.allclose(got[:, l], want, atol=1e-5)
    assert (got >= 0).all() and (got <= math.log(data.vocab_size) + 1e-6).all()


def test_run_suite_on_a_masked_model(masked_run):
    tm, data, cfg = masked_run
    res = run_suite(tm.denoiser, data, cfg.probe, n_train=16, seed=0)
    by = {(r["probe"], r["set"], r["metric"]): r for r in res.rows if r["t"] is None or r["metric"] != "recovery_rate"}
    for s in ("train", "test", "random"):  # a clean start has no [MASK]: a fixed point by construction
        assert by[("fixed_points", s, "fixed_point_rate")]["value"] == 1.0
    assert by[("likelihood", "train", "nelbo")]["value"] >= 0
    assert any(r["metric"] == "membership_auc" for r in res.rows)
    assert not any(r["metric"] == "unstable_rate" for r in res.rows)


def test_remasking_lets_clean_tokens_change(masked_run):
    """probe.remask > 0 (ReMDM) drives the same x_θ with a sampler that can change clean tokens: the unstable
    outcome exists again, and fixed points are no longer guaranteed."""
    tm, data, cfg = masked_run
    pc = cfg.probe
    pc.remask = 1.0
    try:
        res = run_suite(tm.denoiser, data, pc, n_train=16, seed=0, probes=["basins", "fixed_points"],
                        sets=["train", "test", "random"])
    finally:
        pc.remask = 0.0
    unstable = [r["value"] for r in res.rows if r["metric"] == "unstable_rate"]
    assert unstable and all(0.0 <= v <= 1.0 for v in unstable) and max(unstable) > 0
    fp = [r["value"] for r in res.rows if r["metric"] == "fixed_point_rate"]
    assert min(fp) < 1.0
