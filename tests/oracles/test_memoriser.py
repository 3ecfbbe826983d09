"""EmpiricalDenoiser (SPEC 6) against brute-force enumeration; underflow, top-K and scale."""

import math

import pytest
import torch

from basinlab.diffusion import LogLinearSchedule, bayes_log_posterior, corrupt
from basinlab.oracles import EmpiricalDenoiser
from tests.oracles._brute import brute_posteriors


def _empirical_prior(train: torch.Tensor):
    """Support = the training rows (duplicates kept: each row has mass 1/N)."""
    return torch.full((train.shape[0],), -math.log(train.shape[0]), dtype=torch.float64), train


@pytest.mark.parametrize("t", [1e-5, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("top_k", [None, 3])
def test_memoriser_matches_enumeration(gen, t, top_k):
    V, L, N = 4, 6, 7
    train = torch.randint(0, V, (N, L), generator=gen)
    train[1] = train[0]  # a duplicate counts twice
    sched = LogLinearSchedule()
    mem = EmpiricalDenoiser(train, V, sched, chunk_size=3, top_k=top_k, dtype=torch.float64)
    if top_k is not None:
        mem.top_k = N  # K = N takes the top-K path and must be exact
        mem_k = EmpiricalDenoiser(train, V, sched, top_k=N, dtype=torch.float64)
        mem_k.top_k = N
        mem_k._log_s_exact = None  # make sure the exact path is not used
        mem = _ForceTopK(mem_k)
    a = float(sched.alpha(t))
    z = torch.cat([corrupt(train[:3], a, V, generator=gen), torch.randint(0, V, (3, L), generator=gen)])
    tt = torch.full((6,), t, dtype=torch.float64)
    loo = mem(z, tt).exp()
    full = bayes_log_posterior(mem(z, tt), z, a).exp()
    log_prior, xs = _empirical_prior(train)
    for b in range(6):
        ref_loo, ref_full = brute_posteriors(log_prior, xs, z[b], a, V)
        torch.testing.assert_close(loo[b], ref_loo, atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(full[b], ref_full, atol=1e-12, rtol=1e-9)


class _ForceTopK:
    """Calls the top-K path with K = N (exact) on an EmpiricalDenoiser."""

    def __init__(self, mem: EmpiricalDenoiser) -> None:
        self.mem = mem

    def __call__(self, z, t):
        lam = self.mem.lam(t)
        log_s = self.mem._log_s_topk(z, lam)
        B, L = z.shape
        bonus = lam.reshape(B, 1, 1).expand(B, L, 1)
        log_s = log_s + bonus
        log_s.scatter_add_(-1, z.unsqueeze(-1), -bonus)
        return torch.log_softmax(log_s, -1)


def test_full_posterior_method(gen):
    V, L = 3, 5
    train = torch.randint(0, V, (5, L), generator=gen)
    sched = LogLinearSchedule()
    mem = EmpiricalDenoiser(train, V, sched, dtype=torch.float64)
    z = torch.randint(0, V, (2, L), generator=gen)
    a = float(sched.alpha(0.3))
    full = mem.full_log_posterior(z, torch.full((2,), 0.3, dtype=torch.float64)).exp()
    log_prior, xs = _empirical_prior(train)
    for b in range(2):
        torch.testing.assert_close(full[b], brute_posteriors(log_prior, xs, z[b], a, V)[1], atol=1e-12, rtol=1e-9)


def test_memoriser_far_sequences_stay_finite_in_log_space():
    """Bands: a supported token whose only carrier is ~80 mismatches away keeps a finite log-probability."""
    V, L = 4, 100
    train = torch.zeros(2, L, dtype=torch.long)
    train[1] = 1
    train[1, :20] = 0  # row 1: distance 80 from the all-zero query
    sched = LogLinearSchedule()
    mem = EmpiricalDenoiser(train, V, sched, dtype=torch.float64)
    z = torch.zeros(1, L, dtype=torch.long)
    t = torch.tensor([1e-5], dtype=torch.float64)
    out = mem(z, t)
    lam = float(mem.lam(t))
    assert not torch.isnan(out).any()
    # Position 50: token 1 carried only by row 1 (d^(-l) = 79) vs token 0 by row 0 (d^(-l) = 0).
    assert out[0, 50, 1].item() == pytest.approx(-79 * lam, rel=1e-9)
    assert out[0, 50, 0].item() == pytest.approx(0.0, abs=1e-300)
    assert torch.isinf(out[0, 50, 2]) and out[0, 50, 2] < 0  # no training row has token 2: an exact zero
    assert 79 * lam > 745  # this value would underflow without the bands


def test_memoriser_at_scale_returns_normalised_probabilities(gen):
    N, L, V = 65_536, 128, 32
    train = torch.randint(0, V, (N, L), generator=gen)
    sched = LogLinearSchedule()
    mem = EmpiricalDenoiser(train, V, sched)
    z = torch.cat([corrupt(train[:4], float(sched.alpha(0.1)), V, generator=gen), torch.randint(0, V, (4, L))])
    t = torch.tensor([0.1] * 4 + [0.5] * 4, dtype=torch.float64)
    out = mem(z, t)
    assert out.shape == (8, L, V) and not torch.isnan(out).any()
    torch.testing.assert_close(out.double().exp().sum(-1), torch.ones(8, L, dtype=torch.float64))
    # A lightly corrupted training row: the memoriser points at the row's own tokens.
    assert (out[:4].argmax(-1) == train[:4]).float().mean() > 0.99
