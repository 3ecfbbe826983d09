"""EmpiricalDenoiser (SPEC 6) against brute-force enumeration; near/far split, bands, top-K and scale."""

import math

import pytest
import torch

from basinlab.diffusion import LogLinearSchedule, bayes_log_posterior, corrupt
from basinlab.oracles import EmpiricalDenoiser
from tests.oracles._brute import brute_posteriors


def _empirical_prior(train: torch.Tensor):
    """Support = the training rows (duplicates kept: each row has mass 1/N)."""
    return torch.full((train.shape[0],), -math.log(train.shape[0]), dtype=torch.float64), train


def log_loo_reference(train: torch.Tensor, z: torch.Tensor, lam: float, V: int) -> torch.Tensor:
    """SPEC 6 literally, in log space: ``log x_θ,l(k) = logsumexp_{n: x^n_l = k} (-λ d^(-l)_n) - norm``."""
    L = z.shape[0]
    mism = (train != z[None]).to(torch.float64)  # [N, L]
    out = torch.full((L, V), -math.inf, dtype=torch.float64)
    for l in range(L):
        lw = -lam * (mism.sum(1) - mism[:, l])
        for k in range(V):
            sel = train[:, l] == k
            if sel.any():
                out[l, k] = torch.logsumexp(lw[sel], 0)
        out[l] -= torch.logsumexp(out[l], 0)
    return out


@pytest.mark.parametrize("t", [1e-5, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("opts", [{}, {"near_k": 1}, {"near_k": 3}, {"top_k": 7}, {"chunk_size": 3, "near_k": 2}])
def test_memoriser_matches_enumeration(gen, t, opts):
    V, L, N = 4, 6, 7
    train = torch.randint(0, V, (N, L), generator=gen)
    train[1] = train[0]  # a duplicate counts twice
    sched = LogLinearSchedule()
    mem = EmpiricalDenoiser(train, V, sched, dtype=torch.float64, **opts)
    a = float(sched.alpha(t))
    z = torch.cat([corrupt(train[:3], a, V, generator=gen), torch.randint(0, V, (3, L), generator=gen)])
    tt = torch.full((6,), t, dtype=torch.float64)
    log_loo = mem(z, tt)
    loo = log_loo.exp()
    full = bayes_log_posterior(log_loo, z, a).exp()
    log_prior, xs = _empirical_prior(train)
    for b in range(6):
        ref_loo, ref_full = brute_posteriors(log_prior, xs, z[b], a, V)
        torch.testing.assert_close(loo[b], ref_loo, atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(full[b], ref_full, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(mem.full_log_posterior(z, tt).exp(), full, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("near_k", [1, 2, 64])
def test_far_rows_stay_finite_in_log_space(near_k):
    """Rows ~20 and ~90 mismatches away from the query: bands keep every supported token finite and exact."""
    V, L = 4, 100
    train = torch.zeros(3, L, dtype=torch.long)
    train[1, :20] = 1  # distance 20
    train[2, :90] = 2  # distance 90
    sched = LogLinearSchedule()
    mem = EmpiricalDenoiser(train, V, sched, dtype=torch.float64, near_k=near_k)
    z = torch.zeros(1, L, dtype=torch.long)
    t = torch.tensor([1e-5], dtype=torch.float64)
    out = mem(z, t)
    lam = float(mem.lam(t))
    assert 89 * lam > 1000 and 70 * lam > 745  # far beyond float64's range without the log-space treatment
    ref = log_loo_reference(train, z[0], lam, V)
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out[0]), fin)
    torch.testing.assert_close(out[0][fin], ref[fin], rtol=1e-12, atol=1e-9)
    assert out[0, 50, 2].item() == pytest.approx(-89 * lam, rel=1e-9)
    assert torch.isneginf(out[0, 50, 3])  # no training row has token 3: an exact zero


def test_top_k_keeps_the_nearest_rows(gen):
    V, L, N = 5, 12, 40
    train = torch.randint(0, V, (N, L), generator=gen)
    sched = LogLinearSchedule()
    mem = EmpiricalDenoiser(train, V, sched, dtype=torch.float64, top_k=4)
    z = corrupt(train[:2], float(sched.alpha(0.2)), V, generator=gen)
    out = mem(z, torch.full((2,), 0.2, dtype=torch.float64))
    lam = float(mem.lam(torch.tensor([0.2], dtype=torch.float64)))
    for b in range(2):
        d = (train != z[b]).sum(1)
        near = torch.topk(d, 4, largest=False).indices
        ref = log_loo_reference(train[near], z[b], lam, V)
        if d.sort().values[3] < d.sort().values[4]:  # no tie at the cut
            torch.testing.assert_close(out[b], ref, rtol=1e-12, atol=1e-9)


def test_memoriser_query_chunks_agree(gen):
    V, L, N = 6, 10, 50
    train = torch.randint(0, V, (N, L), generator=gen)
    sched = LogLinearSchedule()
    z = torch.randint(0, V, (9, L), generator=gen)
    t = torch.rand(9, generator=gen, dtype=torch.float64)
    whole = EmpiricalDenoiser(train, V, sched, dtype=torch.float64, near_k=4)(z, t)
    chunked = EmpiricalDenoiser(train, V, sched, dtype=torch.float64, near_k=4, max_elements=2 * L * V)(z, t)
    torch.testing.assert_close(whole, chunked, rtol=1e-12, atol=1e-12)


def test_memoriser_at_scale_returns_normalised_probabilities(gen):
    N, L, V = 65_536, 128, 32
    train = torch.randint(0, V, (N, L), generator=gen)
    sched = LogLinearSchedule()
    mem = EmpiricalDenoiser(train, V, sched)
    z = torch.cat([corrupt(train[:4], float(sched.alpha(0.1)), V, generator=gen), torch.randint(0, V, (4, L))])
    t = torch.tensor([0.1] * 4 + [0.5] * 4, dtype=torch.float64)
    out = mem(z, t)
    assert out.shape == (8, L, V) and not torch.isnan(out).any()
    torch.testing.assert_close(out.double().exp().sum(-1), torch.ones(8, L, dtype=torch.float64), atol=1e-6, rtol=0)
    # A lightly corrupted training row: the memoriser points at the row's own tokens.
    assert (out[:4].argmax(-1) == train[:4]).float().mean() > 0.99
