import pytest
import torch
import torch.nn.functional as F

from basinlab.diffusion import (
    bayes_log_posterior,
    corrupt,
    greedy_posterior,
    mixture_weights,
    posterior,
    sample_posterior,
)


def _reference_posterior(i, x, at, as_, V):
    """SPEC 3 by Bayes' rule with explicit sums over the clean token, float64."""
    ats = at / as_
    out = torch.zeros(V, dtype=torch.float64)
    for j in range(V):
        q_t_given_s = ats * (i == j) + (1 - ats) / V
        q_s_given_x = sum(x[c] * (as_ * (j == c) + (1 - as_) / V) for c in range(V))
        out[j] = q_t_given_s * q_s_given_x
    return out / out.sum()


def test_corrupt_rate_and_mask(gen):
    V, a = 50, 0.7
    x = torch.randint(0, V, (400, 64), generator=gen)
    z, redrawn = corrupt(x, a, V, generator=gen, return_mask=True)
    assert z.dtype == torch.long and z.shape == x.shape
    assert (z[~redrawn] == x[~redrawn]).all()
    assert redrawn.float().mean().item() == pytest.approx(1 - a, abs=0.01)
    # expected fraction of changed tokens (1 - a)(1 - 1/V) (SPEC 2)
    assert (z != x).float().mean().item() == pytest.approx((1 - a) * (1 - 1 / V), abs=0.01)
    # a redrawn token is uniform over all V, itself included
    assert (z[redrawn] == x[redrawn]).float().mean().item() == pytest.approx(1 / V, abs=0.01)


def test_corrupt_per_row_alpha(gen):
    V = 10
    x = torch.zeros(2, 5000, dtype=torch.long)
    z = corrupt(x, torch.tensor([1.0, 0.0], dtype=torch.float64), V, generator=gen)
    assert (z[0] == 0).all()
    assert (z[1] != 0).float().mean().item() == pytest.approx(0.9, abs=0.02)


def test_posterior_normalised_and_matches_reference(gen):
    V, B, L = 6, 3, 4
    x = torch.softmax(torch.randn(B, L, V, generator=gen, dtype=torch.float64), -1)
    z = torch.randint(0, V, (B, L), generator=gen)
    at, as_ = 0.3, 0.8
    post = posterior(z, x, at, as_)
    assert post.dtype == torch.float64
    assert torch.allclose(post.sum(-1), torch.ones(B, L, dtype=torch.float64))
    for b in range(B):
        for l in range(L):
            ref = _reference_posterior(int(z[b, l]), x[b, l], at, as_, V)
            assert torch.allclose(post[b, l], ref, atol=1e-12)


def test_three_way_mixture_equals_posterior(gen):
    V, B, L = 9, 4, 5
    x = torch.softmax(torch.randn(B, L, V, generator=gen, dtype=torch.float64), -1)
    z = torch.randint(0, V, (B, L), generator=gen)
    at = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=torch.float64)
    as_ = at + 0.04
    stay, draw, unif = mixture_weights(x.gather(-1, z.unsqueeze(-1)).squeeze(-1), at, as_, V)
    assert torch.allclose(stay + draw + unif, torch.ones(B, L, dtype=torch.float64))
    mix = draw.unsqueeze(-1) * x + unif.unsqueeze(-1) / V
    mix = mix + stay.unsqueeze(-1) * F.one_hot(z, V).double()
    assert torch.allclose(mix, posterior(z, x, at, as_), atol=1e-12)


def test_sample_posterior_distribution(gen):
    V, n = 5, 200_000
    probs = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    x = probs.expand(n, 1, V)
    z = torch.full((n, 1), 3, dtype=torch.long)
    at, as_ = 0.2, 0.6
    zs = sample_posterior(z, x.log(), at, as_, generator=gen)
    freq = torch.bincount(zs.flatten(), minlength=V).double() / n
    ref = posterior(z[:1], x[:1], at, as_)[0, 0]
    assert torch.allclose(freq, ref, atol=4e-3)


def test_greedy_posterior_is_argmax(gen):
    V, B, L = 7, 16, 8
    x = torch.softmax(3 * torch.randn(B, L, V, generator=gen, dtype=torch.float64), -1)
    z = torch.randint(0, V, (B, L), generator=gen)
    for at, as_ in [(0.05, 0.3), (0.5, 0.9), (0.98, 0.99999)]:
        g = greedy_posterior(z, x.log(), at, as_)
        assert (g == posterior(z, x, at, as_).argmax(-1)).all()


def test_bayes_combination(gen):
    V, B, L = 6, 2, 3
    x = torch.softmax(torch.randn(B, L, V, generator=gen, dtype=torch.float64), -1)
    z = torch.randint(0, V, (B, L), generator=gen)
    a = 0.6
    logp = bayes_log_posterior(x.log(), z, a)
    e = a * F.one_hot(z, V).double() + (1 - a) / V  # e_t(z | v) as a function of v
    ref = e * x
    ref = ref / ref.sum(-1, keepdim=True)
    assert torch.allclose(logp.exp(), ref, atol=1e-12)
    # exact zeros of x_theta stay zeros
    x0 = x.clone()
    x0[..., 0] = 0
    x0 = x0 / x0.sum(-1, keepdim=True)
    assert (bayes_log_posterior(x0.log(), z, a).exp()[..., 0] == 0).all()
