"""The training loop: objectives, exact resume, accumulation, errors (SPEC 4, SPEC 7)."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from basinlab.data import build_dataset
from basinlab.errors import BasinlabError
from basinlab.training.checkpoint import find_checkpoint, load_train_state, load_weights
from basinlab.training.trainer import EpochSampler, ema_decay, lr_at, train

from .conftest import markov_config


def test_epoch_sampler_shuffles_whole_epochs() -> None:
    s = EpochSampler(n=10, batch_size=4, seed=0)
    seen = torch.cat([s.indices(k) for k in range(5)])  # 20 draws = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])
    assert torch.equal(EpochSampler(10, 4, 0).indices(3), s.indices(3))  # a pure function of the step
    assert EpochSampler(3, 8, 0).indices(0).max() < 3  # N smaller than the batch: several epochs per batch


def test_schedules_of_lr_and_ema() -> None:
    assert lr_at(0, 1e-3, 10) == pytest.approx(1e-4)
    assert lr_at(9, 1e-3, 10) == pytest.approx(1e-3)
    assert lr_at(500, 1e-3, 10) == 1e-3
    assert lr_at(0, 1e-3, 0) == 1e-3
    assert ema_decay(0, 0.9999) == pytest.approx(0.1)


def test_lr_decay_reaches_zero_at_the_last_step() -> None:
    """After the warm-up, ``linear`` and ``cosine`` fall from the base rate to 0 at ``total_steps``, by hand."""
    base, warm, total = 1e-3, 10, 110
    for decay in ("linear", "cosine"):
        assert lr_at(4, base, warm, decay, total) == pytest.approx(5e-4)  # the warm-up is unchanged
        assert lr_at(warm, base, warm, decay, total) == pytest.approx(base)
        assert lr_at(60, base, warm, decay, total) == pytest.approx(base / 2)  # halfway: both at one half
        assert lr_at(total, base, warm, decay, total) == 0.0
    assert lr_at(35, base, warm, "linear", total) == pytest.approx(base * 0.75)
    assert lr_at(35, base, warm, "cosine", total) == pytest.approx(base * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(100, base, warm, "none", total) == base
    assert ema_decay(10**7, 0.9999) == 0.9999


def _read_metrics(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("objective,ce_warmup", [("nelbo", 3), ("ce_redrawn", 0)])
def test_resume_equals_uninterrupted(tmp_path, objective, ce_warmup) -> None:
    cfg = markov_config(tmp_path, steps=8, objective=objective, ce_warmup_steps=ce_warmup, ckpt_every=4)
    cfg.model.dropout = 0.1  # dropout RNG must be restored too
    data = build_dataset(cfg.data)
    full = train(cfg, data, out_dir=tmp_path / "full")
    assert full.steps == 8 and len(full.losses) == 8 and full.start_step == 0

    half = markov_config(tmp_path, steps=4, objective=objective, ce_warmup_steps=ce_warmup, ckpt_every=4)
    half.model.dropout = 0.1
    first = train(half, data, out_dir=tmp_path / "split")
    second = train(cfg, data, out_dir=tmp_path / "split")  # steps=8 now: resumes at 4
    assert second.resumed and second.start_step == 4 and second.steps == 8
    assert first.losses + second.losses == full.losses  # bit-identical
    a, b = find_checkpoint(tmp_path / "full"), find_checkpoint(tmp_path / "split")
    for ema in (False, True):
        wa, wb = load_weights(a, ema), load_weights(b, ema)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = load_train_state(a), load_train_state(b)
    assert torch.equal(sa["rng"][0]["noise"], sb["rng"][0]["noise"])
    rows = _read_metrics(tmp_path / "split" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    objectives = [r["objective"] for r in rows]
    assert objectives == (["ce_redrawn"] * 3 + ["nelbo"] * 5 if objective == "nelbo" else ["ce_redrawn"] * 8)
    # a finished run resumes to nothing
    again = train(cfg, data, out_dir=tmp_path / "split")
    assert again.steps == 8 and again.losses == [] and again.resumed


def test_resume_drops_metrics_after_the_checkpoint(tmp_path) -> None:
    cfg = markov_config(tmp_path, steps=3, ckpt_every=2)
    data = build_dataset(cfg.data)
    train(cfg, data)  # checkpoints at 2 and 3; only the newest is kept
    run = tmp_path / "run"
    assert find_checkpoint(run).name == "ckpt-00000003"
    with open(run / "metrics.csv", "a") as fh:  # as if killed after logging step 4, before its checkpoint
        fh.write("4,1.0,nelbo,9.9,0.1,1.0,1.0,1.0\n")
    cfg.train.steps = 5
    res = train(cfg, data)
    assert res.start_step == 3
    assert [int(r["step"]) for r in _read_metrics(run / "metrics.csv")] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("ckpt-")) == ["ckpt-00000005"]


def test_resume_refuses_a_different_run(tmp_path) -> None:
    cfg = markov_config(tmp_path, steps=2)
    data = build_dataset(cfg.data)
    train(cfg, data)
    cfg.train.lr = 1e-2
    with pytest.raises(BasinlabError, match=r"cannot resume .*train\.lr.*--no-resume"):
        train(cfg, data)
    res = train(cfg, data, resume=False)  # starting over is allowed
    assert res.start_step == 0 and res.steps == 2 and not res.resumed


def test_grad_accumulation_equals_one_big_batch(tmp_path) -> None:
    cfg = markov_config(tmp_path, steps=3, objective="nelbo")
    data = build_dataset(cfg.data)
    one = train(cfg, data, out_dir=tmp_path / "a")
    cfg.train.grad_accum = 4
    acc = train(cfg, data, out_dir=tmp_path / "b")
    assert one.losses == pytest.approx(acc.losses, abs=1e-6)
    wa, wb = load_weights(find_checkpoint(tmp_path / "a")), load_weights(find_checkpoint(tmp_path / "b"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_bad_training_input(tmp_path) -> None:
    cfg = markov_config(tmp_path)
    data = build_dataset(cfg.data)
    cfg.data.n_train = data.pool_size + 1
    with pytest.raises(BasinlabError, match="larger than the training pool"):
        train(cfg, data)
    cfg = markov_config(tmp_path, objective="ce_all")
    with pytest.raises(BasinlabError, match="unknown train.objective"):
        train(cfg, data)
    cfg = markov_config(tmp_path, batch_size=10, grad_accum=4)
    with pytest.raises(BasinlabError, match="multiple of train.grad_accum"):
        train(cfg, data)
    cfg = markov_config(tmp_path, lr="1e-3")  # YAML reads 1e-3 as a string: accepted as a number
    assert train(cfg, data).steps == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_bf16_and_cpu_load(tmp_path) -> None:
    from basinlab.training.checkpoint import load_trained

    cfg = markov_config(tmp_path, steps=20, device="cuda", precision="auto", objective="nelbo", ce_warmup_steps=5)
    data = build_dataset(cfg.data)
    res = train(cfg, data)
    assert res.steps == 20 and all(torch.isfinite(torch.tensor(res.losses)))
    assert res.losses[-1] < res.losses[0]
    half = markov_config(tmp_path, steps=10, device="cuda", objective="nelbo", ce_warmup_steps=5)
    train(half, data, out_dir=tmp_path / "split")
    second = train(cfg, data, out_dir=tmp_path / "split")
    # CUDA RNG restored; CUDA backward kernels (embedding, SDPA) are not bitwise deterministic run to run
    assert second.losses == pytest.approx(res.losses[10:], rel=1e-3, abs=1e-4)
    tm = load_trained(tmp_path / "run", device="cpu")
    z = data.test[:4]
    out = tm.denoiser(z, torch.full((4,), 0.3, dtype=torch.float64))
    gpu = load_trained(tmp_path / "run", device="cuda").denoiser(z, torch.full((4,), 0.3, dtype=torch.float64))
    assert gpu.device == z.device
    assert float((gpu.exp() - out.exp()).abs().max()) < 0.05



def test_metrics_csv_has_one_line_ending(tmp_path) -> None:
    """The header and the rows end in \\n alike, before and after a resume (issue 10, item 10); the rows after a
    kill between a checkpoint and a metrics row are checked in tests/reliability/test_resume_faults.py."""
    cfg = markov_config(tmp_path, steps=4, ckpt_every=3, log_every=2)
    data = build_dataset(cfg.data)
    train(cfg, data)
    cfg.train.steps = 6
    train(cfg, data)
    text = (tmp_path / "run" / "metrics.csv").read_bytes()
    assert b"\r" not in text and text.endswith(b"\n")
    assert [int(line.split(b",")[0]) for line in text.splitlines()[1:]] == [2, 4, 6]
