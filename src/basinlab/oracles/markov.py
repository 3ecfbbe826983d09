"""The generaliser (SPEC 6): the Bayes-optimal denoiser of a known first-order Markov source.

``(x, z_t)`` is a hidden Markov model: hidden ``x_1 ~ π``, ``x_{l+1} ~ P[x_l]``, emission
``e_t(z | x) = α_t 1[z = x] + (1 - α_t)/V`` (SPEC 2). In log space, with ``log e_t(z_l | v) = λ_t 1[v = z_l] + c``
(``c`` cancels in every normalisation),

    log f_1 = log π,              log f_{l+1}(v) = logsumexp_u(log f_l(u) + log e_l(u) + log P(u, v)),
    log β_L = 0,                  log β_l(u)     = logsumexp_v(log P(u, v) + log e_{l+1}(v) + log β_{l+1}(v)),

where ``f_l(v) = p(x_l = v, z_{<l})`` (forward *before* the emission at ``l``) and ``β_l(v) = p(z_{>l} | x_l = v)``.
Then the leave-one-out prediction of SPEC 4 is ``x_θ,l ∝ f_l β_l`` and the full posterior
``p(x_l | z_t) ∝ f_l e_l β_l`` (the Bayes combination). The recursion is exact in float64, keeps the structural
zeros of a sparse ``P`` as ``-inf`` and costs ``O(B L V²)``: each step is a rescaled matmul in probability space;
rows where an entry that must be positive underflowed are redone in log space (exact whatever the range).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from basinlab.diffusion.process import emission_log_bonus
from basinlab.diffusion.schedules import Schedule
from basinlab.diffusion.uniform import UniformProcess

if TYPE_CHECKING:  # only ``pi``, ``P`` and ``vocab_size`` are used: importing the oracles needs torch alone
    from basinlab.data.markov import MarkovSource

_BAND = 600.0  # nats: exp(-600) ~ 1e-261 is still a normal float64
_LAMBDA_MAX = 600.0


def log_matmul(a: torch.Tensor, P: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """``log Σ_u exp(a_u) P_uv`` per row (``a [b, V]``, ``-inf`` allowed, a row may be all ``-inf``), exact whatever
    the range of ``a``; with ``rescale`` each row is shifted so that its maximum is 0 (a constant per row cancels
    in every normalisation).

    The entries of ``a`` are cut into bands of ``_BAND`` nats below the row maximum; each band is summed by a
    matmul with its own shift (no term underflows) and the bands are combined by a log-sum-exp.
    """
    m = a.amax(-1, keepdim=True)
    m = torch.where(torch.isneginf(m), 0.0, m)  # an all -inf row gives -inf (no NaN)
    rel = m - a  # >= 0, inf where a = -inf
    top = torch.where(torch.isfinite(rel), rel, 0.0).max()
    if float(top) < _BAND:  # one band: no term underflows
        out = torch.log(torch.exp(-rel) @ P) + m
    else:
        band = torch.floor(rel / _BAND)
        nb = int(band[torch.isfinite(rel)].max().item()) + 1
        j = torch.arange(nb, dtype=torch.float64, device=a.device)
        jj = j[None, :, None]
        w = torch.where(band.unsqueeze(1) == jj, torch.exp(-(rel.unsqueeze(1) - _BAND * jj)), 0.0)
        out = torch.logsumexp(torch.log(w @ P) - _BAND * jj, dim=1) + m
    if not rescale:
        return out
    top = out.amax(-1, keepdim=True)
    return out - torch.where(torch.isneginf(top), 0.0, top)


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
        self.process = UniformProcess(self.vocab_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        with torch.inference_mode():
            self.log_pi = torch.log(source.pi.to(torch.float64)).to(self.device)
            self.P = source.P.to(torch.float64).to(self.device)
            self.log_P = torch.log(self.P)
            self._support = (self.P > 0).to(torch.float64)
        self._reach_cache: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"MarkovDenoiser({self.source!r})"

    def _log_matmul(self, a: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        """``log Σ_u exp(a_u) P_uv`` per row, rescaled (see :func:`log_matmul`)."""
        return log_matmul(a, P)

    def lam(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """``λ_t`` per row, float64 ``[B]``."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(batch).cpu()
        # Capped: α_t -> 1 makes λ infinite (inf * 0 = NaN); e^-600 is already an exact zero for any use.
        return emission_log_bonus(self.schedule.alpha(t), self.vocab_size).clamp(max=_LAMBDA_MAX).to(self.device)

    def _reach(self, L: int) -> torch.Tensor:
        """Support of the prior marginals ``π P^l`` per position, bool ``[L, V]`` (where ``f_l > 0`` must hold)."""
        if self._reach_cache is None or self._reach_cache.shape[0] < L:
            rows, cur = [], (self.source.pi > 0).to(torch.float64).to(self.device)
            for _ in range(L):
                rows.append(cur > 0)
                cur = ((cur > 0).to(torch.float64) @ self._support)
            self._reach_cache = torch.stack(rows)
        return self._reach_cache[:L]

    def log_messages(self, z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log f, log β, log e)``, each float64 ``[B, L, V]`` (unnormalised; ``log e = λ 1[v = z_l]``).

        Fast path: the rescaled recursion in probability space with the emission divided by ``e^λ``
        (``1`` at ``z_l``, ``e^-λ`` elsewhere). If any message entry that the support says is positive underflowed
        to zero, those rows are recomputed in log space (exact; slower).
        """
        z_t = z_t.to(self.device).long()
        B, L = z_t.shape
        V = self.vocab_size
        lam = self.lam(t, B)
        onehot = torch.nn.functional.one_hot(z_t, V).to(torch.float64)
        log_e = onehot * lam.reshape(B, 1, 1)
        e = torch.exp(log_e - lam.reshape(B, 1, 1))  # e_t / (α + (1 - α)/V): 1 at z_l, e^-λ elsewhere
        f = torch.empty(B, L, V, dtype=torch.float64, device=self.device)
        b = torch.empty_like(f)
        cur = self.source.pi.to(torch.float64).to(self.device).expand(B, V)
        for l in range(L):
            f[:, l] = cur
            cur = (cur * e[:, l]) @ self.P
            cur = cur / cur.amax(-1, keepdim=True)
        cur = torch.ones(B, V, dtype=torch.float64, device=self.device)
        for l in range(L - 1, -1, -1):
            b[:, l] = cur
            cur = (cur * e[:, l]) @ self.P.T
            cur = cur / cur.amax(-1, keepdim=True)
        log_f, log_b = torch.log(f), torch.log(b)
        bad = ((f == 0) & self._reach(L)[None]).flatten(1).any(1) | (b == 0).flatten(1).any(1)
        bad |= ~(torch.isfinite(f.amax((1, 2))) & torch.isfinite(b.amax((1, 2))))
        if bool(bad.any()):
            lf, lb = self._log_messages_exact(log_e[bad])
            log_f[bad], log_b[bad] = lf, lb
        return log_f, log_b, log_e

    def _log_messages_exact(self, log_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same recursion in log space, exact whatever the dynamic range."""
        B, L, V = log_e.shape
        log_f = torch.empty(B, L, V, dtype=torch.float64, device=self.device)
        log_b = torch.empty_like(log_f)
        cur = self.log_pi.expand(B, V)
        for l in range(L):
            log_f[:, l] = cur
            cur = self._log_matmul(cur + log_e[:, l], self.P)
        cur = torch.zeros(B, V, dtype=torch.float64, device=self.device)
        for l in range(L - 1, -1, -1):
            log_b[:, l] = cur
            cur = self._log_matmul(cur + log_e[:, l], self.P.T)
        return log_f, log_b

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
