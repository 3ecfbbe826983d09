"""SPEC 5 probes on the exact oracles of SPEC 6 and a sparse Markov source (V = 32, L = 32, 8 successors).

The memoriser of a training set restores and fixes its own sequences with vanishing entropy and fails on unseen
ones; the Markov generaliser restores about half the corrupted tokens on any two sets of the source's sequences,
keeps them as fixed points, and its entropy is the exact leave-one-out entropy.
"""

import pytest
import torch

from basinlab.data.markov import MarkovSource
from basinlab.diffusion import LogLinearSchedule
from basinlab.oracles import EmpiricalDenoiser, MarkovDenoiser
from basinlab.probes import (
    basin_test,
    conditional_entropy,
    fixed_point_test,
    generate_samples,
    likelihood,
    novelty,
)
from tests.probes._helpers import exact_loo_entropy, expected_loo_entropy

M, T, N = 64, 50, 256


@pytest.fixture(scope="module")
def world():
    src = MarkovSource(vocab_size=32, successors=8, seed=0)
    g = torch.Generator().manual_seed(7)
    train = src.sample(N, 32, generator=g)
    test_a = src.sample(M, 32, generator=g)
    test_b = src.sample(M, 32, generator=g)
    rnd = torch.randint(0, 32, (M, 32), generator=g)
    sched = LogLinearSchedule()
    return {
        "src": src, "train": train, "a": test_a, "b": test_b, "random": rnd,
        "markov": MarkovDenoiser(src, sched), "mem": EmpiricalDenoiser(train, 32, sched),
    }


def _overlap(r1: dict, r2: dict) -> bool:
    return r1["ci_low"] <= r2["ci_high"] and r2["ci_low"] <= r1["ci_high"]


def test_memoriser_memorises_its_training_set(world):
    mem, train = world["mem"], world["train"][:M]
    ent = conditional_entropy(mem, train, ts=(1e-5,), set_name="train")
    assert ent.value("entropy") < 1e-3
    assert torch.nanmean(ent.arrays["entropy"]).item() < 1e-3
    bt = basin_test(mem, train, ts=(0.05, 0.1), steps=T, set_name="train")
    assert bt.value("recovery_rate", t=0.05) > 0.95 and bt.value("exact_match", t=0.05) > 0.9
    assert bt.value("recovery_rate", t=0.1) > 0.9
    assert fixed_point_test(mem, train, steps=T).value("fixed_point_rate") == 1.0


def test_memoriser_fails_on_unseen_sequences(world):
    mem, test = world["mem"], world["a"]
    bt = basin_test(mem, test, ts=(0.05,), steps=T, set_name="test")
    assert bt.value("recovery_rate", t=0.05) < 0.3 and bt.value("exact_match", t=0.05) == 0.0
    assert bt.value("unstable_rate", t=0.05) > 0.5  # it drags the sequence to a training one
    assert fixed_point_test(mem, test, steps=T).value("fixed_point_rate") == 0.0
    assert conditional_entropy(mem, test).value("entropy") > 0.05


def test_generaliser_restores_equally_on_disjoint_sets(world):
    mk = world["markov"]
    ra = basin_test(mk, world["a"], ts=(0.05, 0.1), steps=T, set_name="a")
    rb = basin_test(mk, world["b"], ts=(0.05, 0.1), steps=T, set_name="b")
    for t in (0.05, 0.1):
        a, b = ra.get("recovery_rate", t=t), rb.get("recovery_rate", t=t)
        assert a["value"] > 0.3 and b["value"] > 0.3  # a large share of the corrupted tokens
        assert _overlap(a, b)
        assert ra.value("unstable_rate", t=t) < 0.05
    # Fixed points: the last greedy step (t = 1/T -> t_min) moves a token whose leave-one-out probability is below
    # ~ max_j x_θ,j / (V T) (SPEC 3), so a clean sequence with a rare transition (relative probability 5e-4 in
    # set b) needs T > 60 to stay put; the paper's T = 1000 puts the threshold at 3e-5.
    for name in ("a", "b"):
        assert fixed_point_test(mk, world[name], steps=200).value("fixed_point_rate") == 1.0


def test_generaliser_entropy_is_the_exact_leave_one_out_entropy(world):
    src, x = world["src"], world["a"]
    res = conditional_entropy(world["markov"], x, ts=(1e-5,))
    H = exact_loo_entropy(src, x)
    probe_tok = res.arrays["entropy"][0]
    assert (probe_tok - H).abs().mean() < 0.01  # a rare redrawn token at t = 1e-5 aside, per token
    row = res.get("entropy")
    assert row["value"] == pytest.approx(H.mean().item(), abs=0.01)
    assert row["ci_low"] <= expected_loo_entropy(src, 32) <= row["ci_high"]


def test_random_sequences_are_not_fixed_points(world):
    for name in ("markov", "mem"):
        assert fixed_point_test(world[name], world["random"], steps=T).value("fixed_point_rate") == 0.0


def test_entropy_split_gap_and_trajectory(world):
    mk, x = world["markov"], world["a"][:32]
    bt = basin_test(mk, x, ts=(0.1, 0.5), steps=20)
    gen = generate_samples(mk, 16, 32, steps=20, seed=1)
    res = conditional_entropy(mk, x, basin=bt, generated=gen, trajectory=True, steps=20, traj_points=5)
    H = res.arrays["entropy"][0]
    rec, fail = bt.arrays["recovered"][0], bt.arrays["failed"][0]
    assert torch.equal(res.arrays["recovered@0.1"], H[rec]) and torch.equal(res.arrays["failed@0.1"], H[fail])
    seq_rec = torch.nansum(torch.where(rec, H, 0.0), 1) / rec.sum(1)
    assert res.value("entropy_recovered", t=0.1) == pytest.approx(torch.nanmean(seq_rec).item())
    gap = res.get("entropy_gap")
    assert gap["value"] == pytest.approx(res.value("entropy_generated") - res.value("entropy"))
    assert gap["ci_low"] <= 0.0 <= gap["ci_high"] or abs(gap["value"]) < 0.1  # the generaliser's samples are real
    traj = res.arrays["traj_entropy"]
    assert traj.shape == (21, 32) and res.arrays["traj_t"][0] == 1.0
    rows = [r for r in res.rows if r["metric"] == "entropy_traj"]
    assert 2 <= len(rows) <= 6 and rows[-1]["t"] == pytest.approx(1e-5)


def test_novelty_of_memoriser_and_generaliser_samples(world):
    mem, mk, train = world["mem"], world["markov"], world["train"]
    s_mem = generate_samples(mem, 16, 32, steps=T, seed=0)
    r = novelty(mem, s_mem, train=train, test=world["a"], steps=T)
    assert r.value("copy_rate") == 1.0 and r.value("nn_hamming_train") == 0.0
    assert r.value("novel_4gram_rate") == 0.0 and r.value("spurious_rate") == 0.0
    assert r.value("sample_fixed_point_rate") == 1.0
    s_mk = generate_samples(mk, 16, 32, steps=T, seed=0)
    r = novelty(mk, s_mk, train=train, test=world["a"], steps=T)
    assert r.value("copy_rate") == 0.0 and r.value("nn_hamming_train") > 0.3
    assert r.value("spurious_rate") == r.value("sample_fixed_point_rate") > 0.8  # new fixed points: creative


def test_generaliser_nelbo_bounds_the_true_entropy(world):
    src = world["src"]
    res = likelihood(world["markov"], world["a"], n_times=4)
    row = res.get("nelbo")
    H = src.entropy_per_token(32)
    assert row["ci_low"] - 0.05 <= H <= row["ci_high"] + 0.05  # the exact denoiser's NELBO is the NLL on average
    assert res.value("ppl_bound") == pytest.approx(torch.tensor(row["value"]).exp().item())
