"""The uniform forward process, its posterior and the Bayes combination (SPEC 2 and 3).

``alpha``-like arguments are Python floats or ``[B]`` tensors; they are broadcast over positions. Arithmetic on
``alpha`` happens in float64; tensors shaped like the logits stay in their own dtype unless stated.
"""

from __future__ import annotations

import torch


def per_row(a: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """``alpha`` as a float64 ``[B, 1]`` column."""
    a = torch.as_tensor(a, dtype=torch.float64, device=device)
    if a.dim() == 0:
        a = a.expand(batch)
    return a.reshape(batch, 1)


def corrupt(
    x: torch.Tensor,
    alpha_t: torch.Tensor | float,
    vocab_size: int,
    generator: torch.Generator | None = None,
    return_mask: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Draw ``z_t ~ q_t(. | x)`` (SPEC 2): each position is redrawn uniformly over all ``V`` with prob ``1 - alpha_t``.

    A redrawn token may draw itself. With ``return_mask=True`` also returns the boolean mask of redrawn positions
    (the mask the redrawn-positions cross-entropy of SPEC 4 uses; not ``z_t != x``).
    """
    B, L = x.shape
    a = per_row(alpha_t, B, x.device)
    u = torch.rand(B, L, generator=generator, device=x.device, dtype=torch.float64)
    redrawn = u >= a
    noise = torch.randint(0, vocab_size, (B, L), generator=generator, device=x.device)
    z = torch.where(redrawn, noise, x)
    return (z, redrawn) if return_mask else z


def emission_log_bonus(alpha_t: torch.Tensor | float, vocab_size: int) -> torch.Tensor:
    """``lambda_t = log(1 + V alpha_t / (1 - alpha_t))``: log e_t(z|z) - log e_t(z|v != z) (SPEC 2, 6)."""
    a = torch.as_tensor(alpha_t, dtype=torch.float64)
    return torch.log1p(vocab_size * a / (1.0 - a))


def bayes_log_posterior(log_x_theta: torch.Tensor, z_t: torch.Tensor, alpha_t: torch.Tensor | float) -> torch.Tensor:
    """``log p(x_l = v | z_t) = log softmax_v(log e_t(z_l | v) + log x_theta,l(v))`` (SPEC 3 final step, SPEC 4).

    Combines the leave-one-out prediction with the evidence of the current token: the current token's logit gets
    ``lambda_t``. Returns log-probabilities in float32 (float64 if ``log_x_theta`` is float64).
    """
    B, L, V = log_x_theta.shape
    dtype = torch.float64 if log_x_theta.dtype == torch.float64 else torch.float32
    lam = emission_log_bonus(per_row(alpha_t, B, log_x_theta.device), V).to(dtype)  # [B, 1]
    logits = log_x_theta.to(dtype).clone()
    bonus = lam.expand(B, L).unsqueeze(-1)
    logits.scatter_add_(-1, z_t.unsqueeze(-1), bonus)
    return torch.log_softmax(logits, dim=-1)


def posterior(
    z_t: torch.Tensor, x_probs: torch.Tensor, alpha_t: torch.Tensor | float, alpha_s: torch.Tensor | float
) -> torch.Tensor:
    """``q(z_s | z_t, x)`` for ``s < t`` with ``x`` a probability vector (SPEC 3), as float64 ``[B, L, V]``.

    ``q(z_s = j | z_t = i, x) ∝ [a_ts d_ij + (1 - a_ts)/V] [a_s x_j + (1 - a_s)/V]`` with ``a_ts = a_t / a_s``.
    A reference implementation: samplers use :func:`sample_posterior`, which never builds this tensor in float64.
    """
    B, L, V = x_probs.shape
    at = per_row(alpha_t, B, x_probs.device).unsqueeze(-1)
    as_ = per_row(alpha_s, B, x_probs.device).unsqueeze(-1)
    ats = at / as_
    x = x_probs.to(torch.float64)
    onehot = torch.nn.functional.one_hot(z_t, V).to(torch.float64)
    w = (ats * onehot + (1 - ats) / V) * (as_ * x + (1 - as_) / V)
    return w / w.sum(-1, keepdim=True)


def mixture_weights(
    x_i: torch.Tensor, alpha_t: torch.Tensor | float, alpha_s: torch.Tensor | float, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three-way form of the posterior (SPEC 3), normalised, float64 ``[B, L]`` each.

    ``stay`` at ``i = z_t``: ``V a_t x_i + a_ts - a_t``; ``draw`` from ``x``: ``a_s - a_t``;
    ``uniform``: ``(1 - a_ts)(1 - a_s)``. ``x_i`` is ``x_theta`` at the current token.
    """
    B, L = x_i.shape
    at = per_row(alpha_t, B, x_i.device)
    as_ = per_row(alpha_s, B, x_i.device)
    ats = at / as_
    stay = vocab_size * at * x_i.to(torch.float64) + (ats - at)
    draw = (as_ - at).expand(B, L)
    unif = ((1 - ats) * (1 - as_)).expand(B, L)
    total = stay + draw + unif
    return stay / total, draw / total, unif / total


def sample_posterior(
    z_t: torch.Tensor,
    log_x_theta: torch.Tensor,
    alpha_t: torch.Tensor | float,
    alpha_s: torch.Tensor | float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``z_s ~ q(z_s | z_t, x_theta)`` exactly, by the three-way mixture of SPEC 3 (no float64 ``[B,L,V]``)."""
    B, L, V = log_x_theta.shape
    x = log_x_theta.float().exp()
    x_i = x.gather(-1, z_t.unsqueeze(-1)).squeeze(-1)
    stay, draw, _ = mixture_weights(x_i, alpha_t, alpha_s, V)
    u = torch.rand(B, L, generator=generator, device=z_t.device, dtype=torch.float64)
    from_u = torch.randint(0, V, (B, L), generator=generator, device=z_t.device)
    z_s = torch.where(u < stay, z_t, from_u)
    take_x = (u >= stay) & (u < stay + draw)
    if take_x.any():  # draw from x_theta only where that branch was taken (rare for small steps)
        z_s[take_x] = torch.multinomial(x[take_x], 1, generator=generator).squeeze(-1)
    return z_s


def greedy_posterior(
    z_t: torch.Tensor, log_x_theta: torch.Tensor, alpha_t: torch.Tensor | float, alpha_s: torch.Tensor | float
) -> torch.Tensor:
    """``argmax_j q(z_s = j | z_t, x_theta)`` (SPEC 3, greedy chains), without a float64 ``[B, L, V]`` tensor.

    For ``j != i`` the unnormalised weight is ``(a_s - a_t) x_j + const``; the current token adds the stay weight.
    """
    B, L, V = log_x_theta.shape
    x = log_x_theta.float().exp()
    x_i = x.gather(-1, z_t.unsqueeze(-1)).squeeze(-1).double()
    best_p, best_j = x.max(-1)
    at = per_row(alpha_t, B, z_t.device)
    as_ = per_row(alpha_s, B, z_t.device)
    ats = at / as_
    stay_total = V * at * x_i + (ats - at) + (as_ - at) * x_i
    move_total = (as_ - at) * best_p.double()
    return torch.where(move_total > stay_total, best_j, z_t)
