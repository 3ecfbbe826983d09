"""The masked (absorbing) forward process of MDLM (SPEC 2b) as a :class:`~basinlab.diffusion.forward.ForwardProcess`.

``q_t(z | x) = α_t onehot(x) + (1 - α_t) onehot(m)`` per position, ``m = [MASK]`` appended to the vocabulary
(``mask_index = V``, so the network has ``V + 1`` inputs and outputs), or the tokenizer's own ``[MASK]``
inside it (``mask_index < V``, ``V`` outputs: MDLM's rule; that token then never occurs in clean data). The
network's output goes through MDLM's SUBS parameterisation (``_subs_parameterization`` of kuleshov-group/mdlm's
``diffusion.py``): zero mass on ``m``, and at an unmasked position ``x_θ = onehot(z_t)`` (carry-over). The
denoiser returns ``log x_θ`` over the ``V`` clean tokens (an appended mask column, always ``-inf``, is dropped;
one inside the vocabulary stays, at ``-inf``), so probes see the same shape as for the uniform process.

Reverse step (MDLM's ``_ddpm_update``): an unmasked token stays; a masked one becomes a draw from ``x_θ`` with
probability ``(α_s - α_t) / (1 - α_t)``, else stays masked. With ``remask = η > 0`` the step is ReMDM's (Wang et
al. 2025, "rescale" schedule): ``σ_t = η min(1, (1 - α_s)/α_t)``; an unmasked token is masked again with
probability ``σ_t``, and a masked one is unmasked with probability ``(α_s - (1 - σ_t) α_t) / (1 - α_t)``: the
marginals ``q_s`` are kept, and clean tokens can change, so fixed points and self-correction mean something.

NELBO (MDLM's continuous-time ``L_vb`` with ``dsigma / expm1(sigma) = -α'_t / (1 - α_t)``): per position
``f = (α'_t / (1 - α_t)) log x_θ,l(x_l) 1[z_l = m] >= 0``. The prior term is 0: the chain starts from all
``[MASK]`` (MDLM's convention; the ``ε`` mass that ``q_1`` keeps on ``x`` is not counted).
"""

from __future__ import annotations

from typing import Any

import torch

from basinlab.diffusion.forward import ForwardProcess
from basinlab.diffusion.process import per_row


class AbsorbingProcess(ForwardProcess):
    """What MDLM-like (absorbing, ``[MASK]``) processes share (SPEC 2b). ``remask``: ReMDM's ``η`` (0: MDLM's
    ancestral sampler, clean tokens never change); ``mask_index``: a ``[MASK]`` inside the vocabulary (a
    tokenizer's own, or a deployed model's, SPEC 2c), else one is appended at ``V``."""

    name = "absorbing"
    supports_remask = True
    tokenizer_token = "[MASK]"
    corrupted_word = "masked"
    cheap_objective_note = "SPEC 2b: MDLM's objective without its weight, the same optimum"
    nelbo_name = "the masked process's continuous-time NELBO (SPEC 2b, MDLM's)"
    output_one_hot_where_visible = True  # SUBS: x_θ = onehot(z_t) at an unmasked position
    #: the leave-one-out conditional's denoiser calls return at most about this many entries ([r, L, V]: 256 MB
    #: float32), whatever L and V (a deployed model's vocabulary of 10^5 tokens included)
    loo_entries = 1 << 26

    def __init__(self, vocab_size: int, remask: float = 0.0, mask_index: int | None = None) -> None:
        super().__init__(vocab_size)
        if not 0.0 <= float(remask) <= 1.0:
            raise ValueError(f"remask (ReMDM eta) must lie in [0, 1], got {remask}")
        if mask_index is not None and not 0 <= int(mask_index) < self.vocab_size:
            raise ValueError(f"a [MASK] inside the vocabulary needs 0 <= mask_index < {vocab_size}, got {mask_index}")
        self.remask = float(remask)
        self._mask = None if mask_index is None else int(mask_index)

    @property
    def can_change_clean(self) -> bool:  # type: ignore[override]
        return self.remask > 0

    @property
    def n_outputs(self) -> int:
        return self.vocab_size + (self._mask is None)

    @property
    def mask_index(self) -> int:
        return self.vocab_size if self._mask is None else self._mask

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"remask": self.remask} if self.remask else {}
        if self._mask is not None:
            opts["mask_index"] = self._mask
        return opts

    def with_remask(self, eta: float) -> AbsorbingProcess:
        """The same process with ReMDM's ``η`` set (a sampler option: training never remasks)."""
        return type(self)(self.vocab_size, remask=eta, mask_index=self._mask)

    # ---- forward ----------------------------------------------------------------------------------------------

    def corrupt(self, x: torch.Tensor, alpha_t: Any, generator: torch.Generator | None = None,
                return_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Each position becomes ``[MASK]`` with probability ``1 - α_t``; the mask is the masked positions."""
        B, L = x.shape
        a = per_row(alpha_t, B, x.device)
        u = torch.rand(B, L, generator=generator, device=x.device, dtype=torch.float64)
        masked = u >= a
        z = torch.where(masked, torch.full_like(x, self.mask_index), x)
        return (z, masked) if return_mask else z

    def prior_sample(self, n: int, length: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """Every position ``[MASK]``."""
        return torch.full((n, length), self.mask_index, dtype=torch.long, device=device)

    # ---- the network's output ------------------------------------------------------------------------------------

    def parameterise(self, logits: torch.Tensor, z_t: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """SUBS: softmax over the ``V`` clean tokens (the mask logit dropped, i.e. ``-inf``); an unmasked position
        carries its token over (``log onehot(z_t)``). Float32 (float64 for float64 logits)."""
        head = logits[..., : self.vocab_size]
        head = head if head.dtype == torch.float64 else head.float()
        if self._mask is not None:  # MDLM: the mask logit to -inf (out of place: autograd)
            head = head.index_fill(-1, torch.tensor([self._mask], device=head.device), float("-inf"))
        logp = torch.log_softmax(head, dim=-1)
        unmasked = z_t != self.mask_index
        carry = torch.full_like(logp, float("-inf"))
        carry.scatter_(-1, z_t.clamp(max=self.vocab_size - 1).unsqueeze(-1), 0.0)
        return torch.where(unmasked.unsqueeze(-1), carry, logp)

    def leave_one_out(self, denoiser: Any, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_θ,l`` with position ``l`` (and no other) masked in ``z_t``: ``p(x_l | x_{-l})`` at ``t -> 0``
        (SPEC 2b). The ``L`` maskings of each row run in batches of rows of which only the masked position is
        kept (memory bounded by :attr:`loo_entries`, whatever ``V``); a denoiser with its own
        ``leave_one_out(z_t, t)`` (an exact oracle computing all ``l`` at once) is asked instead."""
        own = getattr(denoiser, "leave_one_out", None)
        if callable(own):
            return own(z_t, t)
        B, L = z_t.shape
        t = torch.as_tensor(t, dtype=torch.float64)
        t = t.expand(B) if t.dim() == 0 else t
        r = max(1, self.loo_entries // max(1, L * self.vocab_size))  # rows per call, and sequences per result
        out = []
        for b0 in range(0, B, r):
            z = z_t[b0 : b0 + r]
            n = z.shape[0]
            pos = torch.arange(L, device=z.device).repeat(n)
            rows = z.repeat_interleave(L, dim=0)  # row i L + l is z[i], with position l masked below
            rows[torch.arange(n * L, device=z.device), pos] = self.mask_index
            tt = t[b0 : b0 + r].repeat_interleave(L)
            picked = []
            for r0 in range(0, n * L, r):  # each call returns [r, L, V]; only row i's position l is kept
                log_x = denoiser(rows[r0 : r0 + r], tt[r0 : r0 + r])
                picked.append(log_x[torch.arange(log_x.shape[0], device=log_x.device), pos[r0 : r0 + r].to(
                    log_x.device)])
            out.append(torch.cat(picked).reshape(n, L, -1))
        return torch.cat(out).contiguous()

    # ---- reverse ----------------------------------------------------------------------------------------------

    def _sigma(self, at: torch.Tensor, as_: torch.Tensor) -> torch.Tensor:
        """ReMDM's remasking probability ``σ_t = η min(1, (1 - α_s)/α_t)`` (0 without remasking), ``[B, 1]``."""
        if not self.remask:
            return torch.zeros_like(at)
        return self.remask * torch.clamp((1.0 - as_) / at, max=1.0)

    def step(self, z_t: torch.Tensor, log_x_theta: torch.Tensor, alpha_t: Any, alpha_s: Any, greedy: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """MDLM's ancestral step (``_ddpm_update``), or ReMDM's with ``remask``; see the module docstring."""
        B, L, V = log_x_theta.shape
        at = per_row(alpha_t, B, z_t.device)
        as_ = per_row(alpha_s, B, z_t.device)
        sig = self._sigma(at, as_)
        masked = z_t == self.mask_index
        p_unmask = ((as_ - (1.0 - sig) * at) / (1.0 - at)).clamp(0.0, 1.0).expand(B, L)  # at a masked position
        x = log_x_theta.float().exp()
        if greedy:
            best_p, best_j = x.max(-1)
            p_mask = ((1.0 - as_ - sig * at) / (1.0 - at)).expand(B, L)
            unmask = masked & (p_unmask * best_p.double() > p_mask)
            remask = ~masked & (sig > 0.5).expand(B, L)
            z = torch.where(unmask, best_j, z_t)
            return torch.where(remask, torch.full_like(z, self.mask_index), z)
        u = torch.rand(B, L, generator=generator, device=z_t.device, dtype=torch.float64)
        z = z_t.clone()
        unmask = masked & (u < p_unmask)
        if unmask.any():
            z[unmask] = torch.multinomial(x[unmask], 1, generator=generator).squeeze(-1)
        if self.remask:
            z = torch.where(~masked & (u < sig.expand(B, L)), torch.full_like(z, self.mask_index), z)
        return z

    def log_posterior(self, log_x_theta: torch.Tensor, z_t: torch.Tensor, alpha_t: Any) -> torch.Tensor:
        """``x_θ`` itself: SUBS already carries unmasked tokens over, and ``e_t(m | v) = 1 - α_t`` is flat in
        ``v``, so the Bayes combination of SPEC 3 changes nothing."""
        return log_x_theta.float() if log_x_theta.dtype != torch.float64 else log_x_theta

    # ---- objective --------------------------------------------------------------------------------------------

    def nelbo_integrand(self, x: torch.Tensor, z_t: torch.Tensor, log_x_theta: torch.Tensor, alpha_t: Any,
                        dalpha_t: Any) -> torch.Tensor:
        """``f = (α'_t / (1 - α_t)) log x_θ,l(x_l)`` at masked positions, 0 elsewhere (SPEC 2b), ``[B, L]``."""
        B, L, _ = log_x_theta.shape
        dtype = torch.float64 if log_x_theta.dtype == torch.float64 else torch.float32
        a = per_row(alpha_t, B, log_x_theta.device)
        da = per_row(dalpha_t, B, log_x_theta.device)
        weight = (da / (1.0 - a)).to(dtype)  # MDLM: -dsigma / expm1(sigma), <= 0
        log_px = log_x_theta.to(dtype).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        masked = z_t == self.mask_index
        return torch.where(masked, weight * log_px, torch.zeros_like(log_px))

    def prior_kl(self, alpha_1: float) -> float:
        """0: the chain starts from all ``[MASK]`` (see the module docstring)."""
        return 0.0


class MaskedProcess(AbsorbingProcess):
    """MDLM's masked process (SPEC 2b), ``train.process: masked``."""

    name = "masked"
    oracles = {"empirical": "basinlab.oracles.masked:MaskedEmpiricalDenoiser",
               "markov": "basinlab.oracles.masked:MaskedMarkovDenoiser"}
