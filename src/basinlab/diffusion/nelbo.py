"""The continuous-time NELBO of the uniform process (SPEC 4), its cheap twin, and NELBO evaluation.

With ``x̄ = V a_t onehot(x) + (1 - a_t)``, ``x̄_θ = V a_t x_θ + (1 - a_t)``, ``i = z_t``, SPEC 4 defines

    f = (a'_t / (V a_t)) [ V/x̄_i - V/x̄_θ,i - Σ_j (x̄_j/x̄_i) log((x̄_θ,i x̄_j)/(x̄_θ,j x̄_i)) ].

Writing ``p = x̄ / V`` (the noisy marginal of the clean token) and ``q = x̄_θ / V`` (that of the prediction), and
``r = p_i / q_i``, the bracket equals ``-V [(r - 1 - log r) + KL(p || q)]``, so

    f = (-a'_t / (V a_t p_i)) [ (r - 1 - log r) + KL(p || q) ]  >= 0,

a sum of two non-negative terms, zero exactly when ``x_θ = onehot(x)``. This module evaluates that form in log
space: ``log(q_j / u) = softplus(log(a/u) + log x_θ,j)`` with ``u = (1 - a)/V``, so oracles with exact zeros in
``x_θ`` are fine, and nothing larger than the logits is materialised.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def nelbo_integrand(
    x: torch.Tensor,
    z_t: torch.Tensor,
    log_x_theta: torch.Tensor,
    alpha_t: torch.Tensor | float,
    dalpha_t: torch.Tensor | float,
) -> torch.Tensor:
    """Per-position NELBO integrand ``f`` of SPEC 4, ``[B, L]``, in the dtype of ``log_x_theta`` (>= float32).

    ``x``, ``z_t``: long ``[B, L]``; ``log_x_theta``: ``[B, L, V]`` log-probabilities (the leave-one-out
    prediction); ``alpha_t``, ``dalpha_t``: scalars or ``[B]``.
    """
    B, L, V = log_x_theta.shape
    dtype = torch.float64 if log_x_theta.dtype == torch.float64 else torch.float32
    dev = log_x_theta.device
    a = torch.as_tensor(alpha_t, dtype=torch.float64, device=dev).expand(B).reshape(B, 1)
    da = torch.as_tensor(dalpha_t, dtype=torch.float64, device=dev).expand(B).reshape(B, 1)
    u = (1.0 - a) / V
    log_ratio = torch.log(a / u)  # log(V a / (1 - a)), [B, 1]
    lam = torch.log1p(V * a / (1.0 - a))  # log(p_x / u) = softplus(log_ratio)

    lx = log_x_theta.to(dtype)
    # log(q_j / u) for every j: the only [B, L, V] intermediate.
    log_q_over_u = F.softplus(lx + log_ratio.to(dtype).unsqueeze(-1))
    sum_log_q = log_q_over_u.sum(-1)  # [B, L]
    log_q_x = log_q_over_u.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    log_q_i = log_q_over_u.gather(-1, z_t.unsqueeze(-1)).squeeze(-1)

    a_, u_, lam_ = a.to(dtype), u.to(dtype), lam.to(dtype)
    # KL(p || q) = u Σ_j [log(p_j/u) - log(q_j/u)] + a [log(p_x/u) - log(q_x/u)]
    kl = u_ * (lam_ - sum_log_q) + a_ * (lam_ - log_q_x)
    is_x = (z_t == x).to(dtype)
    log_r = lam_ * is_x - log_q_i  # log(p_i / q_i)
    bregman = torch.expm1(log_r) - log_r  # r - 1 - log r
    p_i = u_ + a_ * is_x
    pref = (-da / (V * a)).to(dtype) / p_i
    return pref * (bregman + kl.clamp_min(0.0))


def nelbo_integrand_reference(
    x: torch.Tensor, z_t: torch.Tensor, x_theta: torch.Tensor, alpha_t: float, dalpha_t: float
) -> torch.Tensor:
    """SPEC 4's formula written literally, in float64, for tests (``x_theta`` strictly positive probabilities)."""
    V = x_theta.shape[-1]
    x_theta = x_theta.to(torch.float64)
    xbar = V * alpha_t * F.one_hot(x, V).double() + (1 - alpha_t)
    xbar_t = V * alpha_t * x_theta + (1 - alpha_t)
    xb_i = xbar.gather(-1, z_t.unsqueeze(-1))
    xbt_i = xbar_t.gather(-1, z_t.unsqueeze(-1))
    s = (xbar / xb_i * torch.log((xbt_i * xbar) / (xbar_t * xb_i))).sum(-1)
    return dalpha_t / (V * alpha_t) * (V / xb_i.squeeze(-1) - V / xbt_i.squeeze(-1) - s)


def redrawn_cross_entropy(x: torch.Tensor, log_x_theta: torch.Tensor, redrawn: torch.Tensor) -> torch.Tensor:
    """``-log x_θ,l(x_l)`` on the positions the forward process redrew, 0 elsewhere, ``[B, L]`` (SPEC 4).

    Minimised by the leave-one-out posterior, like the NELBO. Never use cross-entropy on all positions.
    """
    nll = -log_x_theta.float().gather(-1, x.unsqueeze(-1)).squeeze(-1)
    return nll * redrawn.to(nll.dtype)


def sample_times(
    batch: int,
    t_eps: float = 1e-3,
    antithetic: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``t = t_eps + (1 - t_eps) u`` (SPEC 4), float64 ``[batch]``.

    Antithetic: one offset ``u_0`` for the batch, ``u_k = (u_0 + k/batch) mod 1`` (one draw per stratum).
    """
    if antithetic:
        u0 = torch.rand(1, generator=generator, dtype=torch.float64)
        u = (u0 + torch.arange(batch, dtype=torch.float64) / batch) % 1.0
    else:
        u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return (t_eps + (1.0 - t_eps) * u).to(device)


def prior_kl(alpha_1: float, vocab_size: int) -> float:
    """``KL(q_1(. | x) || uniform)`` per token, nats: the prior term, non-zero when ``alpha_1 = eps > 0`` (SPEC 4)."""
    V = vocab_size
    p_x = alpha_1 + (1 - alpha_1) / V
    u = (1 - alpha_1) / V
    return p_x * math.log(p_x * V) + (V - 1) * (u * math.log(u * V) if u > 0 else 0.0)


def estimate_nelbo(
    denoiser,
    seqs: torch.Tensor,
    real_mask: torch.Tensor | None = None,
    n_times: int = 8,
    t_eps: float = 1e-3,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> dict:
    """Monte-Carlo NELBO per real token (SPEC 4; SPEC 2b for a masked denoiser: its process's terms) of any
    denoiser on ``seqs`` ``[M, L]``.

    ``NELBO = (1 - t_eps) E_{t ~ U[t_eps, 1]} E_{z_t} f + E[-log p(x | z_{t_eps})] + KL(q_1 || uniform)``:
    the diffusion term (``n_times`` antithetic times per sequence), the reconstruction term at ``t_eps`` (the
    Bayes combination of SPEC 3) and the prior term. Each is averaged over the real tokens (``real_mask``).
    Returns floats ``nelbo``, ``diffusion``, ``recon``, ``prior``, ``ppl_bound`` = exp(nelbo), ``n_tokens``, and
    ``per_seq`` (float64 ``[M]``, NELBO per real token of each sequence). Also ``integrand`` = ``E f`` per real
    token, the plain mean of the integrand over the sampled times (= ``diffusion / (1 - t_eps)``), and its
    ``per_seq_integrand``: the study's NELBO (Duo's validation loss), whose ``exp`` it reports as perplexity.
    """

    from basinlab.diffusion.forward import process_of

    proc = process_of(denoiser)
    sched = denoiser.schedule
    M, L = seqs.shape
    mask = torch.ones(M, L, dtype=torch.bool) if real_mask is None else real_mask.bool()
    g = torch.Generator().manual_seed(seed)
    per_seq_diff = torch.zeros(M, dtype=torch.float64)
    per_seq_rec = torch.zeros(M, dtype=torch.float64)
    with torch.inference_mode():
        # outside a terminal no bar: carriage-return updates would fill log files
        bar = tqdm(range(0, M, batch_size), desc="nelbo", disable=not progress or not sys.stderr.isatty(), leave=False)
        for b0 in bar:
            x = seqs[b0 : b0 + batch_size]
            m = mask[b0 : b0 + batch_size].to(torch.float64)
            B = x.shape[0]
            dev = x.device
            acc = torch.zeros(B, dtype=torch.float64)
            for _ in range(n_times):
                t = sample_times(B, t_eps, antithetic=True, generator=g)
                a = sched.alpha(t)
                z = proc.corrupt(x, a.to(dev), generator=_device_gen(g, dev))
                log_x = denoiser(z, t.to(dev))
                f = proc.nelbo_integrand(x, z, log_x, a.to(dev), sched.dalpha(t).to(dev)).double().cpu()
                acc += (f * m).sum(1)
            per_seq_diff[b0 : b0 + B] = (1.0 - t_eps) * acc / n_times
            t0 = torch.full((B,), t_eps, dtype=torch.float64)
            a0 = sched.alpha(t0)
            z0 = proc.corrupt(x, a0.to(dev), generator=_device_gen(g, dev))
            logp = proc.log_posterior(denoiser(z0, t0.to(dev)), z0, a0.to(dev))
            nll = -logp.gather(-1, x.unsqueeze(-1)).squeeze(-1).double().cpu()
            per_seq_rec[b0 : b0 + B] = (nll * m).sum(1)
    n_tok = mask.sum(1).clamp_min(1).to(torch.float64)
    prior = proc.prior_kl(float(sched.alpha(1.0)))
    total_tok = float(mask.sum())
    diffusion = float(per_seq_diff.sum()) / max(total_tok, 1.0)
    recon = float(per_seq_rec.sum()) / max(total_tok, 1.0)
    nelbo = diffusion + recon + prior
    integrand = float(per_seq_diff.sum()) / (1.0 - t_eps) / max(total_tok, 1.0)
    return {
        "integrand": integrand,
        "per_seq_integrand": per_seq_diff / (1.0 - t_eps) / n_tok,
        "nelbo": nelbo,
        "diffusion": diffusion,
        "recon": recon,
        "prior": prior,
        "ppl_bound": math.exp(min(nelbo, 700.0)),
        "n_tokens": int(total_tok),
        "per_seq": (per_seq_diff + per_seq_rec) / n_tok + prior,
    }


def _device_gen(g: torch.Generator, device: torch.device) -> torch.Generator | None:
    """The CPU generator for CPU tensors; on an accelerator, a generator seeded from it."""
    if device.type == "cpu":
        return g
    dg = torch.Generator(device=device)
    dg.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
    return dg
