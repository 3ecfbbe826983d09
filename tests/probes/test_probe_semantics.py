"""What the basin metrics count (SPEC 5), real-token masks, determinism, and the novelty helpers."""

import itertools

import pytest
import torch

from basinlab.data.markov import MarkovSource
from basinlab.diffusion import LogLinearSchedule
from basinlab.oracles import MarkovDenoiser
from basinlab.probes import (
    basin_test,
    conditional_entropy,
    fixed_point_test,
    likelihood,
    nearest_hamming,
    novel_ngram_rate,
)
from tests.probes._helpers import TargetDenoiser

V, L, M = 8, 8, 64


def _targets(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Targets equal to x except at random positions (so some restores fail, some unchanged tokens move)."""
    flip = torch.rand(x.shape, generator=gen) < 0.3
    return torch.where(flip, (x + 1) % V, x)


def test_recovery_counts_changed_positions_and_unstable_counts_unchanged_ones(gen):
    x = torch.randint(0, V, (M, L), generator=gen)
    target = _targets(x, gen)
    den = TargetDenoiser(target, V)
    mask = torch.ones(M, L, dtype=torch.bool)
    mask[:, -2:] = False  # two non-real positions (e.g. EOS, PAD): never counted
    res = basin_test(den, x, ts=(0.02, 0.5), steps=10, batch_size=M, real_mask=mask)
    for i, t in enumerate((0.02, 0.5)):
        z, out = res.arrays["corrupted"][i], res.arrays["restored"][i]
        assert torch.equal(out, target)  # the hand-made denoiser always ends at its target
        changed = (z != x) & mask
        unchanged = (z == x) & mask
        rec = ((target == x) & changed).sum(1) / changed.sum(1)
        uns = ((target != x) & unchanged).sum(1) / unchanged.sum(1)
        assert torch.allclose(res.arrays["recovery"][i], rec.double(), equal_nan=True)
        assert torch.allclose(res.arrays["unstable"][i], uns.double(), equal_nan=True)
        none_changed = changed.sum(1) == 0
        row = res.get("recovery_rate", t=t)
        assert row["n"] == M - int(none_changed.sum())  # sequences with nothing changed are counted apart
        assert res.value("n_unchanged", t=t) == int(none_changed.sum())
        assert row["value"] == pytest.approx(rec[~none_changed].double().mean().item())
        assert res.value("unstable_rate", t=t) == pytest.approx(torch.nanmean(uns.double()).item())
        exact = ((target == x) | ~mask).all(1)
        assert res.value("exact_match", t=t) == pytest.approx(exact.double().mean().item())
    assert res.value("n_unchanged", t=0.02) > 0  # at t = 0.02 most sequences keep all 6 real tokens


def test_a_perfect_restorer_and_a_wrecker():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, V, (M, L), generator=g)
    perfect = basin_test(TargetDenoiser(x, V), x, ts=(0.5,), steps=5, batch_size=M)
    assert perfect.value("recovery_rate", t=0.5) == 1.0 and perfect.value("unstable_rate", t=0.5) == 0.0
    assert perfect.value("basin_radius") == 1.0 and perfect.value("basin_area") == pytest.approx(1.0)
    wreck = basin_test(TargetDenoiser((x + 1) % V, V), x, ts=(0.5,), steps=5, batch_size=M)
    assert wreck.value("recovery_rate", t=0.5) == 0.0 and wreck.value("unstable_rate", t=0.5) == 1.0
    assert wreck.value("basin_radius") == 0.0


def test_probes_are_deterministic_given_the_seed():
    src = MarkovSource(vocab_size=32, successors=8, seed=0)
    den = MarkovDenoiser(src, LogLinearSchedule())
    x = src.sample(16, 32, generator=torch.Generator().manual_seed(0))

    def rows(seed):
        out = basin_test(den, x, ts=(0.25,), steps=10, seed=seed, batch_size=8).rows
        out += conditional_entropy(den, x, ts=(0.3,), seed=seed).rows
        out += likelihood(den, x, n_times=2, seed=seed).rows
        return out

    assert rows(0) == rows(0)
    assert rows(0) != rows(1)


def test_fixed_points_respect_the_real_mask():
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, V, (M, L), generator=g)
    target = x.clone()
    target[:8, -1] = (x[:8, -1] + 1) % V  # the first 8 differ only at the last position
    den = TargetDenoiser(target, V)
    assert fixed_point_test(den, x, batch_size=M, steps=5).value("fixed_point_rate") == pytest.approx(56 / 64)
    mask = torch.ones(M, L, dtype=torch.bool)
    mask[:, -1] = False
    assert fixed_point_test(den, x, batch_size=M, steps=5, real_mask=mask).value("fixed_point_rate") == 1.0


def test_nearest_hamming_matches_brute_force(gen):
    q = torch.randint(0, 3, (7, 6), generator=gen)
    r = torch.randint(0, 3, (50, 6), generator=gen)
    qm = torch.rand(7, 6, generator=gen) > 0.2
    rm = torch.rand(50, 6, generator=gen) > 0.2
    d, idx = nearest_hamming(q, r, qm, rm, chunk_elements=64)
    for i, j in itertools.product(range(7), range(50)):
        union = qm[i] | rm[j]
        same = qm[i] & rm[j] & (q[i] == r[j])
        dij = (union.sum() - same.sum()).item() / max(1, union.sum().item())
        assert d[i].item() <= dij + 1e-12
    for i in range(7):
        j = idx[i].item()
        union = qm[i] | rm[j]
        same = (qm[i] & rm[j] & (q[i] == r[j])).sum()
        assert d[i].item() == pytest.approx((union.sum() - same).item() / union.sum().item())
    d0, _ = nearest_hamming(r[:3], r)
    assert torch.equal(d0, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("vocab", [5, 70_000])
def test_novel_ngram_rate(vocab):
    train = torch.tensor([[1, 2, 3, 4, 1, 2]])
    samples = torch.tensor([[1, 2, 3, 4, 1, 2], [1, 2, 3, 4, 4, 4], [4, 4, 4, 4, 4, 4]])
    ones = torch.ones_like
    rate = novel_ngram_rate(samples, ones(samples, dtype=torch.bool), train, ones(train, dtype=torch.bool), vocab)
    assert rate.tolist() == [0.0, pytest.approx(2 / 3), 1.0]
    smask = ones(samples, dtype=torch.bool)
    smask[1, 4:] = False  # only the 4-gram at 0 is all real
    rate = novel_ngram_rate(samples, smask, train, ones(train, dtype=torch.bool), vocab)
    assert rate[1].item() == 0.0
