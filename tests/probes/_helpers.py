"""Small denoisers and exact references for the probe tests."""

from __future__ import annotations

import torch

from basinlab.diffusion import LogLinearSchedule, UniformProcess


class TargetDenoiser:
    """A hand-made denoiser whose leave-one-out prediction is a point mass on ``targets[b]`` for batch row ``b``
    (run the probe in one batch): every chain ends exactly at the target."""

    def __init__(self, targets: torch.Tensor, vocab_size: int) -> None:
        self.targets = targets
        self.vocab_size = vocab_size
        self.schedule = LogLinearSchedule()
        self.process = UniformProcess(vocab_size)

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B = z.shape[0]
        tgt = self.targets[:B]
        out = torch.full((B, z.shape[1], self.vocab_size), float("-inf"))
        out.scatter_(-1, tgt.unsqueeze(-1), 0.0)
        return out


def exact_loo_entropy(src, x: torch.Tensor) -> torch.Tensor:
    """``H(x_l | x_{l-1}, x_{l+1})`` of a Markov source at every position of clean ``x``, float64 ``[M, L]``."""
    P, pi = src.P, src.pi
    M, L = x.shape
    H = torch.zeros(M, L, dtype=torch.float64)
    for l in range(L):
        w = P[x[:, l - 1]] if l > 0 else pi.expand(M, -1)
        if l < L - 1:
            w = w * P[:, x[:, l + 1]].T
        H[:, l] = torch.special.entr(w / w.sum(1, keepdim=True)).sum(1)
    return H


def expected_loo_entropy(src, L: int) -> float:
    """``E_x[mean_l H(x_l | x_{-l})]`` for a stationary Markov source, exactly."""
    P, pi = src.P, src.pi
    j = pi[:, None] * P  # p(a, b)
    pb = j.sum(0)
    first = (pb * torch.special.entr(j / pb.clamp_min(1e-300)).sum(0)).sum()  # H(x_0 | x_1)
    t3 = pi[:, None, None] * P[:, :, None] * P[None, :, :]  # p(a, b, c)
    pac = t3.sum(1)
    middle = (pac * torch.special.entr(t3 / pac[:, None, :].clamp_min(1e-300)).sum(1)).sum()
    last = (pi * torch.special.entr(P).sum(1)).sum()  # H(x_{L-1} | x_{L-2})
    return float((first + (L - 2) * middle + last) / L)
