"""Brute-force posteriors by enumeration of V^L (float64), the ground truth of the oracle tests."""

from __future__ import annotations

import itertools

import torch


def log_emission(z: torch.Tensor, x: torch.Tensor, alpha: float, V: int) -> torch.Tensor:
    """``log e_t(z_l | x_l)`` per position, ``[..., L]`` float64 (SPEC 2)."""
    same = (z == x).to(torch.float64)
    return torch.log(alpha * same + (1 - alpha) / V)


def brute_posteriors(log_prior: torch.Tensor, xs: torch.Tensor, z: torch.Tensor, alpha: float, V: int):
    """``(loo, full)``: ``p(x_l = v | z with l's emission removed)`` and ``p(x_l = v | z)``, float64 ``[L, V]``.

    ``xs [S, L]`` enumerates the support, ``log_prior [S]`` its log-probabilities.
    """
    L = xs.shape[1]
    le = log_emission(z[None], xs, alpha, V)  # [S, L]
    total = log_prior + le.sum(1)
    loo = torch.zeros(L, V, dtype=torch.float64)
    full = torch.zeros(L, V, dtype=torch.float64)
    for l in range(L):
        w_loo = torch.exp(total - le[:, l])
        w_full = torch.exp(total)
        loo[l].index_add_(0, xs[:, l], w_loo)
        full[l].index_add_(0, xs[:, l], w_full)
    return loo / loo.sum(1, keepdim=True), full / full.sum(1, keepdim=True)


def all_sequences(V: int, L: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(V), repeat=L)), dtype=torch.long)


def brute_masked(log_prior: torch.Tensor, xs: torch.Tensor, z: torch.Tensor, mask_index: int, V: int):
    """``(post, d_min)``: ``p(x_l = v | the visible tokens of z)``, float64 ``[L, V]``, in the ε -> 0 limit of SPEC 2b
    (the support's sequences with the fewest disagreements among the visible tokens, weighted by their prior), and
    that fewest number. ``xs [S, L]`` enumerates the support (rows of prior 0 are dropped), ``log_prior [S]``."""
    keep = torch.isfinite(log_prior)
    xs, log_prior = xs[keep], log_prior[keep]
    vis = z != mask_index
    d = ((xs != z[None]) & vis[None]).sum(1)
    sel = d == d.min()
    w = torch.exp(log_prior[sel] - log_prior[sel].max())
    post = torch.zeros(xs.shape[1], V, dtype=torch.float64)
    for l in range(xs.shape[1]):
        post[l].index_add_(0, xs[sel, l], w)
    return post / post.sum(1, keepdim=True), int(d.min())
