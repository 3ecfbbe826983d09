"""The generaliser (SPEC 6): the Bayes-optimal denoiser of a known first-order Markov source.

``(x, z_t)`` is a hidden Markov model: hidden ``x_1 ~ π``, ``x_{l+1} ~ P[x_l]``, emission
``e_t(z | x) = α_t 1[z = x] + (1 - α_t)/V`` (SPEC 2). In log space, with ``log e_t(z_l | v) = λ_t 1[v = z_l] + c``
(``c`` cancels in every normalisation),

    log f_1 = log π,              log f_{l+1}(v) = logsumexp_u(log f_l(u) + log e_l(u) + log P(u, v)),
    log β_L = 0,                  log β_l(u)     = logsumexp_v(log P(u, v) + log e_{l+1}(v) + log β_{l+1}(v)),

where ``f_l(v) = p(x_l = v, z_{<l})`` (forward *before* the emission at ``l``) and ``β_l(v) = p(z_{>l} | x_l = v)``.
Then the leave-one-out prediction of SPEC 4 is ``x_θ,l ∝ f_l β_l`` and the full posterior
``p(x_l | z_t) ∝ f_l e_l β_l`` (the Bayes combination). The recursion is exact in float64, keeps the structural
zeros of a sparse ``P`` as ``-inf`` and costs ``O(B L V²)``: each step is a matmul of ``exp(a - max a)`` with
``P``, falling back to an exact log-sum-exp only for rows where a supported state underflowed.
"""

from __future__ import annotations

import torch

from basinlab.data.markov import MarkovSource
from basinlab.diffusion.process import emission_log_bonus
from basinlab.diffusion.schedules import Schedule


class MarkovDenoiser:
    """Exact leave-one-out posterior of a :class:`~basinlab.data.markov.MarkovSource` (SPEC 6, "generaliser").

    ``denoiser(z_t: long [B, L], t: float64 [B]) -> log x_θ [B, L, V]`` (``dtype``, float32 by default).
    """

    def __init__(
        self,
        source: MarkovSource,
        schedule: Schedule,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.source = source
        self.schedule = schedule
        self.vocab_size = int(source.vocab_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        with torch.inference_mode():
            self.log_pi = torch.log(source.pi.to(torch.float64)).to(self.device)
            self.P = source.P.to(torch.float64).to(self.device)
            self.log_P = torch.log(self.P)
            self._support = (self.P > 0).to(torch.float64)

    def __repr__(self) -> str:
        return f"MarkovDenoiser({self.source!r})"

    def _log_matmul(self, a: torch.Tensor, P: torch.Tensor, log_P: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """``log Σ_u exp(a_u) P_uv`` per row (``a [b, V]``), shifted by the row maximum.

        A fast matmul; a state that the exact support says is reachable but whose sum underflowed to zero is
        recomputed with a log-sum-exp over ``[b, V, V]``, so no supported probability ever becomes ``-inf``.
        """
        m = a.max(-1, keepdim=True).values
        out = torch.log(torch.exp(a - m) @ P) + m
        lost = torch.isneginf(out) & ((torch.isfinite(a).to(torch.float64) @ support) > 0)
        rows = lost.any(-1)
        if rows.any():
            exact = torch.logsumexp(a[rows][:, :, None] + log_P[None], dim=1)
            out[rows] = exact
        return out - out.max(-1, keepdim=True).values  # rescale (a constant per row cancels)

    def lam(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """``λ_t`` per row, float64 ``[B]``."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(batch).cpu()
        return emission_log_bonus(self.schedule.alpha(t), self.vocab_size).to(self.device)

    def log_messages(self, z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log f, log β, log e)``, each float64 ``[B, L, V]`` (unnormalised; ``log e = λ 1[v = z_l]``)."""
        z_t = z_t.to(self.device).long()
        B, L = z_t.shape
        V = self.vocab_size
        lam = self.lam(t, B)
        log_e = torch.nn.functional.one_hot(z_t, V).to(torch.float64) * lam.reshape(B, 1, 1)
        log_f = torch.empty(B, L, V, dtype=torch.float64, device=self.device)
        log_b = torch.empty_like(log_f)
        cur = self.log_pi.expand(B, V)
        for l in range(L):
            log_f[:, l] = cur
            cur = self._log_matmul(cur + log_e[:, l], self.P, self.log_P, self._support)
        cur = torch.zeros(B, V, dtype=torch.float64, device=self.device)
        for l in range(L - 1, -1, -1):
            log_b[:, l] = cur
            cur = self._log_matmul(cur + log_e[:, l], self.P.T, self.log_P.T, self._support.T)
        return log_f, log_b, log_e

    def loo_log_posterior(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log p(x_l | z_t with the emission at l left out)``, float64 ``[B, L, V]`` (SPEC 4)."""
        with torch.inference_mode():
            log_f, log_b, _ = self.log_messages(z_t, t)
            return torch.log_softmax(log_f + log_b, dim=-1)

    def full_log_posterior(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log p(x_l | z_t)``, float64 ``[B, L, V]``: the Bayes combination of the leave-one-out one (SPEC 3, 4)."""
        with torch.inference_mode():
            log_f, log_b, log_e = self.log_messages(z_t, t)
            return torch.log_softmax(log_f + log_e + log_b, dim=-1)

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log x_θ [B, L, V]``: the leave-one-out posterior (SPEC 6)."""
        return self.loo_log_posterior(z_t, t).to(self.dtype)
