"""A synthetic first-order Markov source with known ``pi`` and ``P`` (SPEC 1).

Sparse by default: each row of ``P`` is supported on ``successors`` random states with Dirichlet(1) weights, so
the Bayes-optimal denoiser (``basinlab.oracles.MarkovDenoiser``) restores about half of the corrupted tokens while
a memoriser fails on unseen sequences. ``pi`` is the stationary distribution of ``P`` unless given.
"""

from __future__ import annotations

import torch

from basinlab.errors import BasinlabError


class MarkovSource:
    """First-order Markov chain over ``V`` states: ``x_1 ~ pi``, ``x_{l+1} ~ P[x_l]``."""

    def __init__(self, vocab_size: int = 32, successors: int = 8, seed: int = 0) -> None:
        if vocab_size < 2:
            raise BasinlabError(f"markov vocab_size must be >= 2, got {vocab_size}")
        if not 1 <= successors <= vocab_size:
            raise BasinlabError(f"markov successors must lie in [1, vocab_size={vocab_size}], got {successors}")
        g = torch.Generator().manual_seed(seed)
        V = vocab_size
        P = torch.zeros(V, V, dtype=torch.float64)
        for v in range(V):
            support = torch.randperm(V, generator=g)[:successors]
            # Dirichlet(1) weights via normalised exponentials drawn from our own generator.
            w = -torch.log(torch.rand(successors, generator=g, dtype=torch.float64).clamp_min(1e-300))
            P[v, support] = w / w.sum()
        self._init(_stationary(P), P)
        self.successors = successors
        self.seed = seed

    def _init(self, pi: torch.Tensor, P: torch.Tensor) -> None:
        self.pi = pi.to(torch.float64)
        self.P = P.to(torch.float64)
        self.vocab_size = int(P.shape[0])

    @classmethod
    def from_matrix(cls, pi: torch.Tensor, P: torch.Tensor) -> MarkovSource:
        """A source with the given initial distribution ``pi`` ``[V]`` and transition matrix ``P`` ``[V, V]``."""
        pi = torch.as_tensor(pi, dtype=torch.float64)
        P = torch.as_tensor(P, dtype=torch.float64)
        if P.dim() != 2 or P.shape[0] != P.shape[1] or pi.shape != (P.shape[0],):
            raise BasinlabError(
                f"MarkovSource.from_matrix needs pi [V] and P [V, V], got {tuple(pi.shape)}, {tuple(P.shape)}"
            )
        if (P < 0).any() or not torch.allclose(P.sum(1), torch.ones(P.shape[0], dtype=torch.float64)):
            raise BasinlabError("MarkovSource.from_matrix: rows of P must be non-negative and sum to 1")
        if (pi < 0).any() or abs(float(pi.sum()) - 1.0) > 1e-9:
            raise BasinlabError("MarkovSource.from_matrix: pi must be non-negative and sum to 1")
        obj = cls.__new__(cls)
        obj._init(pi, P)
        obj.successors = int((P > 0).sum(1).max())
        obj.seed = None
        return obj

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` sequences of ``length`` tokens, long ``[n, length]``."""
        out = torch.empty(n, length, dtype=torch.long)
        if n == 0 or length == 0:
            return out
        # Inverse-CDF draws: one uniform per position, searched in the cumulative rows (vectorised over n).
        cdf_pi = torch.cumsum(self.pi, 0)
        cdf_P = torch.cumsum(self.P, 1)
        V = self.vocab_size
        u = torch.rand(n, length, generator=generator, dtype=torch.float64)
        # u is scaled by each row's total, so rounding in the cumulative sums never selects a zero-probability state.
        out[:, 0] = torch.searchsorted(cdf_pi, (u[:, :1] * cdf_pi[-1]).contiguous(), right=True).squeeze(1)
        for l in range(1, length):
            rows = cdf_P[out[:, l - 1]]
            out[:, l] = torch.searchsorted(rows, (u[:, l : l + 1] * rows[:, -1:]).contiguous(), right=True).squeeze(1)
        out.clamp_(max=V - 1)
        return out

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` of sequences ``[n, L]``, float64 ``[n]``."""
        lp = torch.log(self.pi)[x[:, 0]]
        logP = torch.log(self.P)
        return lp + logP[x[:, :-1], x[:, 1:]].sum(1)

    def entropy_rate(self) -> float:
        """Entropy per transition under ``pi`` (nats), ``-Σ_a pi_a Σ_b P_ab log P_ab``."""
        return float(-(self.pi * torch.special.xlogy(self.P, self.P).sum(1)).sum())

    def entropy_per_token(self, length: int) -> float:
        """``H(x_1..x_L) / L`` in nats (exact when ``pi`` is stationary; otherwise by propagating marginals)."""
        h0 = float(-torch.special.xlogy(self.pi, self.pi).sum())
        total, marg = h0, self.pi.clone()
        row_h = -torch.special.xlogy(self.P, self.P).sum(1)
        for _ in range(1, length):
            total += float(marg @ row_h)
            marg = marg @ self.P
        return total / length

    def __repr__(self) -> str:
        return f"MarkovSource(vocab_size={self.vocab_size}, successors={self.successors}, seed={self.seed})"


def _stationary(P: torch.Tensor) -> torch.Tensor:
    """Stationary distribution by power iteration from uniform (lazy chain, so it converges when periodic)."""
    V = P.shape[0]
    pi = torch.full((V,), 1.0 / V, dtype=torch.float64)
    lazy = 0.5 * (P + torch.eye(V, dtype=torch.float64))
    for _ in range(10_000):
        nxt = pi @ lazy
        if (nxt - pi).abs().max() < 1e-15:
            break
        pi = nxt
    return pi / pi.sum()
