"""EmpiricalDenoiser (SPEC 6) against brute-force enumeration and the previous implementation; the skipping
bound, both paths, top-K, distances and scale."""

import math

import pytest
import torch

from basinlab.diffusion import LogLinearSchedule, bayes_log_posterior, corrupt
from basinlab.oracles import EmpiricalDenoiser
from basinlab.oracles.memoriser import keep_radius
from tests.oracles._brute import brute_posteriors
from tests.oracles._memoriser_legacy import LegacyEmpiricalDenoiser


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


PATHS = {"auto": {}, "dense": {"dense_above": -1}, "sparse": {"dense_above": 10**9}}


def _memoriser(train, V, sched, path="auto", **opts):
    mem = EmpiricalDenoiser(train, V, sched, **opts)
    for k, v in PATHS[path].items():
        setattr(mem, k, v)
    return mem


@pytest.mark.parametrize("t", [1e-5, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("opts", [{}, {"top_k": 7}, {"max_elements": 20}])
def test_memoriser_matches_enumeration(gen, t, path, opts):
    V, L, N = 4, 6, 7
    train = torch.randint(0, V, (N, L), generator=gen)
    train[1] = train[0]  # a duplicate counts twice
    sched = LogLinearSchedule()
    mem = _memoriser(train, V, sched, path, dtype=torch.float64, **opts)
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


def assert_within_bound(out: torch.Tensor, ref: torch.Tensor, rtol: float, atol: float) -> None:
    """The memoriser's contract against a dense log-space reference: exact zeros stay ``-inf``; entries above -30
    agree; an entry the skipped rows alone carried may be ``-inf``, and then it was below ``e^-66`` (the bound)."""
    assert not torch.isnan(out).any()
    assert torch.equal(torch.isneginf(ref) & torch.isneginf(out), torch.isneginf(ref))  # zeros stay zeros
    big = ref > -30
    assert torch.isfinite(out[big]).all()
    torch.testing.assert_close(out[big].double(), ref[big].double(), rtol=rtol, atol=atol)
    dropped = torch.isneginf(out) & torch.isfinite(ref)
    assert (ref[dropped] < -66).all()
    kept = torch.isfinite(out)
    torch.testing.assert_close(out[kept].double(), ref[kept].double(), rtol=max(rtol, 1e-6), atol=atol)


@pytest.mark.parametrize("path", list(PATHS))
def test_far_rows_are_skipped_within_the_bound(path):
    """Rows 4, 20 and 90 mismatches away from the query at t = 1e-5 (λ ≈ 12.9, keep radius D = 6): the row at 4 is
    summed exactly (its own tokens at -3λ ≈ -39), the others carry < e^-66 and are skipped."""
    V, L = 4, 100
    train = torch.zeros(4, L, dtype=torch.long)
    train[1, :20] = 1  # distance 20
    train[2, :90] = 2  # distance 90
    train[3, -4:] = 1  # distance 4
    sched = LogLinearSchedule()
    mem = _memoriser(train, V, sched, path, dtype=torch.float64)
    z = torch.zeros(1, L, dtype=torch.long)
    t = torch.tensor([1e-5], dtype=torch.float64)
    out = mem(z, t)
    lam = float(mem.lam(t))
    assert int(keep_radius(mem.lam(t), 4, L)) == 6
    ref = log_loo_reference(train, z[0], lam, V)
    assert_within_bound(out[0], ref, rtol=1e-12, atol=1e-9)
    assert out[0, 99, 1].item() == pytest.approx(ref[99, 1].item(), rel=1e-12)  # kept: the row at distance 4
    assert -45 < ref[99, 1].item() < -30
    assert torch.isneginf(out[0, 10, 1]) and -300 < ref[10, 1].item() < -200  # only the row at 20: skipped
    assert torch.isneginf(out[0, 50, 2]) and ref[50, 2].item() < -1000  # only the row at distance 90: skipped
    assert torch.isneginf(out[0, 50, 3]) and torch.isneginf(ref[50, 3])  # no row has token 3: an exact zero


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
    whole = EmpiricalDenoiser(train, V, sched, dtype=torch.float64)(z, t)
    chunked = EmpiricalDenoiser(train, V, sched, dtype=torch.float64, max_elements=2 * N)(z, t)
    torch.testing.assert_close(whole, chunked, rtol=1e-12, atol=1e-12)


def test_distances_inverted_and_dense_agree(gen):
    """The inverted index and the dense comparison give the same Hamming distances, on skewed data too."""
    V, L, N = 50, 16, 300
    train = torch.randint(0, V, (N, L), generator=gen)
    train[: N // 2, 8:] = 0  # a token most rows share (padding-like): the dense way is chosen for it
    mem = EmpiricalDenoiser(train, V, LogLinearSchedule())
    z = torch.cat([train[:5], torch.randint(0, V, (5, L), generator=gen), torch.zeros(2, L, dtype=torch.long)])
    ref = (train[None] != z[:, None]).sum(-1).to(torch.int32)
    assert torch.equal(mem.distances(z), ref)
    assert torch.equal(mem.distances_dense(z), ref)
    assert torch.equal(mem._distances_inverted(*_inverted_args(mem, z)), ref)


def _inverted_args(mem, z):
    keys = z + torch.arange(mem.L) * mem.vocab_size
    crow = mem.index()["crow"]
    return keys.reshape(-1), (crow[keys + 1] - crow[keys]).reshape(-1), z.shape[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_memoriser_matches_the_previous_implementation(gen, dtype):
    """Medium case against the pre-issue-9 memoriser (dense sparse-product passes, far rows kept in log space):
    training rows corrupted at several t and unseen queries, both paths, float64 and the float32 default."""
    V, L, N = 300, 24, 2000
    train = torch.randint(0, V, (N, L), generator=gen)
    train[N // 2 :, 12:] = train[: N // 2, 12:]  # shared halves: many rows at middling distances
    sched = LogLinearSchedule()
    ts = [0.05, 0.1, 0.25, 0.5, 0.9, 1.0]
    z = torch.cat([corrupt(train[:12], sched.alpha(torch.tensor(ts * 2, dtype=torch.float64)), V, generator=gen),
                   torch.randint(0, V, (12, L), generator=gen)])
    tt = torch.tensor(ts * 4, dtype=torch.float64)
    old = LegacyEmpiricalDenoiser(train, V, sched, dtype=torch.float64)(z, tt)
    rtol, atol = (1e-10, 1e-10) if dtype == torch.float64 else (1e-6, 2e-6)
    for path in PATHS:
        new = _memoriser(train, V, sched, path, dtype=dtype)(z, tt)
        assert new.dtype == dtype
        assert_within_bound(new, old, rtol=rtol, atol=atol)


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
