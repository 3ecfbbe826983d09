"""NELBO integrand (SPEC 4): sign, zero, the KL limit, and exactness on an enumerable Markov source."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from basinlab.data.markov import MarkovSource
from basinlab.diffusion import (
    CosineSchedule,
    LogLinearSchedule,
    corrupt,
    nelbo_integrand,
    nelbo_integrand_reference,
    posterior,
    prior_kl,
    redrawn_cross_entropy,
    sample_times,
)


@pytest.mark.parametrize("a", [0.001, 0.05, 0.5, 0.9, 0.999])
def test_integrand_matches_spec_formula_and_is_nonnegative(gen, a):
    B, L, V = 8, 6, 11
    x = torch.randint(0, V, (B, L), generator=gen)
    z = corrupt(x, a, V, generator=gen)
    x_theta = torch.softmax(2 * torch.randn(B, L, V, generator=gen, dtype=torch.float64), -1)
    f = nelbo_integrand(x, z, x_theta.log(), a, -0.999)
    ref = nelbo_integrand_reference(x, z, x_theta, a, -0.999)
    assert torch.allclose(f, ref, rtol=1e-9, atol=1e-12)
    assert (f >= 0).all()
    # float32 path agrees with float64 to float32 accuracy
    f32 = nelbo_integrand(x, z, x_theta.float().log(), a, -0.999)
    assert f32.dtype == torch.float32
    assert torch.allclose(f32.double(), ref, rtol=1e-3, atol=1e-4)


def test_integrand_zero_at_truth_and_positive_elsewhere(gen):
    B, L, V = 4, 5, 7
    x = torch.randint(0, V, (B, L), generator=gen)
    z = corrupt(x, 0.4, V, generator=gen)
    onehot = F.one_hot(x, V).double()
    assert nelbo_integrand(x, z, onehot.log(), 0.4, -1.0).abs().max() < 1e-12
    near = 0.999 * onehot + 0.001 / V
    assert (nelbo_integrand(x, z, near.log(), 0.4, -1.0) > 0).all()


@pytest.mark.parametrize("sched", [LogLinearSchedule(1e-3), CosineSchedule(1e-3)])
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_integrand_is_kl_rate(gen, sched, t):
    """f = lim_{s->t} KL(q(z_s|z_t,x) || p_theta(z_s|z_t)) / (t - s), for every z_t (Richardson-extrapolated)."""
    V, L = 6, 1
    x = torch.tensor([[2]])
    x_theta = torch.softmax(torch.randn(1, L, V, generator=gen, dtype=torch.float64), -1)
    onehot = F.one_hot(x, V).double()
    a_t = float(sched.alpha(t))
    f_all = []
    for i in range(V):  # every value of z_t
        z = torch.tensor([[i]])
        f = float(nelbo_integrand(x, z, x_theta.log(), a_t, float(sched.dalpha(t))))

        def rate(h, z=z):
            a_s = float(sched.alpha(t - h))
            p = posterior(z, onehot, a_t, a_s)
            q = posterior(z, x_theta, a_t, a_s)
            return float((torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum()) / h

        h = 1e-4
        extrapolated = 2 * rate(h) - rate(2 * h)
        assert extrapolated == pytest.approx(f, rel=1e-4)
        f_all.append(f)
    assert min(f_all) > 0


def _enumerate(source: MarkovSource, L: int):
    V = source.vocab_size
    xs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    return xs, source.log_prob(xs).exp()


def _posteriors(xs, px, zs, a, V, leave_one_out: bool):
    """p(x_l | z) exactly, with or without position l's emission, for every z: [Z, L, V]."""
    L = xs.shape[1]
    emit = a * (zs.unsqueeze(1) == xs.unsqueeze(0)).double() + (1 - a) / V  # [Z, X, L]
    out = torch.zeros(zs.shape[0], L, V, dtype=torch.float64)
    for l in range(L):
        e = emit.clone()
        if leave_one_out:
            e[:, :, l] = 1.0
        w = e.prod(-1) * px.unsqueeze(0)  # [Z, X]
        out[:, l, :] = torch.zeros(zs.shape[0], V, dtype=torch.float64).index_add_(1, xs[:, l], w)
    return out / out.sum(-1, keepdim=True)


def _expected_integrand(source, L, sched, t, leave_one_out):
    V = source.vocab_size
    xs, px = _enumerate(source, L)
    zs = xs.clone()
    a = float(sched.alpha(t))
    x_theta = _posteriors(xs, px, zs, a, V, leave_one_out)  # [Z, L, V]
    q = (a * (zs.unsqueeze(1) == xs.unsqueeze(0)).double() + (1 - a) / V).prod(-1)  # q(z | x): [Z, X]
    total = 0.0
    for xi in range(xs.shape[0]):
        x = xs[xi].expand(zs.shape[0], L)
        f = nelbo_integrand(x, zs, x_theta.log(), a, float(sched.dalpha(t))).sum(-1)  # [Z]
        total += float(px[xi] * (q[:, xi] * f).sum())
    return total / L


def _nelbo_by_quadrature(source, L, sched, leave_one_out, n=48):
    # t = exp(-s): the integrand is smooth in log t; Gauss-Legendre on s in [0, 30] covers t down to 1e-13.
    nodes, weights = np.polynomial.legendre.leggauss(n)
    lo, hi = 0.0, 30.0
    s = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    total = 0.0
    for si, wi in zip(s, weights, strict=True):
        t = math.exp(-si)
        total += 0.5 * (hi - lo) * wi * t * _expected_integrand(source, L, sched, t, leave_one_out)
    return total


def test_nelbo_of_leave_one_out_posterior_is_the_entropy():
    """E_x NELBO(x) with x_theta = the exact leave-one-out posterior equals H(x)/L (eps = 0: no prior term);
    the full posterior in its place scores worse (SPEC 4)."""
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    P = torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.2, 0.8], [0.7, 0.0, 0.3]], dtype=torch.float64)
    source = MarkovSource.from_matrix(pi, P)
    L = 3
    sched = LogLinearSchedule(eps=0.0)
    h = source.entropy_per_token(L)
    loo = _nelbo_by_quadrature(source, L, sched, leave_one_out=True)
    full = _nelbo_by_quadrature(source, L, sched, leave_one_out=False)
    assert loo == pytest.approx(h, rel=2e-3)
    assert full > h + 0.05


def test_prior_term():
    assert prior_kl(0.0, 10) == 0.0
    V, a = 10, 0.01
    p = torch.full((V,), (1 - a) / V, dtype=torch.float64)
    p[0] += a
    assert prior_kl(a, V) == pytest.approx(float((p * torch.log(p * V)).sum()), rel=1e-12)


def test_sample_times_antithetic(gen):
    t = sample_times(64, 1e-3, antithetic=True, generator=torch.Generator().manual_seed(5))
    assert t.dtype == torch.float64 and ((t >= 1e-3) & (t <= 1)).all()
    # stratified: exactly one draw in each of 64 equal strata of u
    u = (t - 1e-3) / (1 - 1e-3)
    assert sorted(torch.floor(u * 64).long().tolist()) == list(range(64))


def test_redrawn_cross_entropy_only_counts_redrawn(gen):
    B, L, V = 3, 4, 5
    x = torch.randint(0, V, (B, L), generator=gen)
    logp = torch.log_softmax(torch.randn(B, L, V, generator=gen), -1)
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[0, 1] = True
    ce = redrawn_cross_entropy(x, logp, mask)
    assert ce[0, 1] == pytest.approx(-float(logp[0, 1, x[0, 1]]))
    assert ce.sum() == ce[0, 1]


def test_redrawn_positions_carry_no_information_about_x():
    """p(x_l | z, position l redrawn) = the leave-one-out posterior p(x_l | z_{-l}) (SPEC 4, exact enumeration),
    so the redrawn-positions cross-entropy has the NELBO's optimum; the plain posterior p(x_l | z) differs."""
    pi = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    P = torch.tensor([[0.2, 0.8, 0.0], [0.0, 0.3, 0.7], [0.9, 0.0, 0.1]], dtype=torch.float64)
    source = MarkovSource.from_matrix(pi, P)
    V, L, a = 3, 3, 0.55
    xs, px = _enumerate(source, L)
    zs = xs.clone()
    emit = a * (zs.unsqueeze(1) == xs.unsqueeze(0)).double() + (1 - a) / V  # [Z, X, L]
    loo = _posteriors(xs, px, zs, a, V, leave_one_out=True)
    full = _posteriors(xs, px, zs, a, V, leave_one_out=False)
    for l in range(L):
        e = emit.clone()
        e[:, :, l] = (1 - a) / V  # joint of (x, z, redrawn_l = 1): z_l drawn uniformly
        w = e.prod(-1) * px.unsqueeze(0)
        cond = torch.zeros(zs.shape[0], V, dtype=torch.float64).index_add_(1, xs[:, l], w)
        cond = cond / cond.sum(-1, keepdim=True)
        assert torch.allclose(cond, loo[:, l], atol=1e-12)
        assert not torch.allclose(cond, full[:, l], atol=1e-3)
