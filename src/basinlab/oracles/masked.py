"""The exact oracles of the masked (absorbing) process (SPEC 2b, 6): the memoriser and the Markov generaliser.

Under masking a visible token is exact (emission ``1[z = x]``) and a ``[MASK]`` says nothing (emission 1), so the
posterior of a masked position given ``z_t`` is that of the clean prior conditioned on every visible token; SUBS
carries visible tokens over (``x_θ,l = onehot(z_l)``). The masked position's own emission is flat, so its
leave-one-out prediction is its full posterior.

**No consistent sequence (the ε-limit).** When no sequence of the prior's support agrees with every visible token
(an unseen sequence for the memoriser; an impossible transition for a sparse Markov source), both oracles take the
limit ``ε -> 0`` of the ε-smoothed emission ``(1 - ε) 1[z = x] + ε / V``: a clean sequence with ``d`` disagreements
among the visible tokens has weight ``prior(x) ε'^d`` (``ε' = ε/V / (1 - ε + ε/V)``), so the limit keeps the
sequences of the support with the *fewest* disagreements, weighted by their prior. Where a consistent sequence
exists (``d = 0``), this is the exact conditional itself. Each oracle counts how often the limit was needed
(``queries``, ``no_consistent``; per predicted position for :meth:`leave_one_out`: ``loo_positions``,
``loo_no_consistent``).

- :class:`MaskedEmpiricalDenoiser` (memoriser of ``D_N``): ``x_θ,l(v) ∝ Σ_{n: d_n = d_min} 1[x^n_l = v]`` with
  ``d_n`` the disagreements of ``x^n`` with the visible tokens (``d_min = 0`` when some ``x^n`` agrees).
- :class:`MaskedMarkovDenoiser` (generaliser of a Markov source): forward-backward in which each message is the
  leading term ``w ε'^d`` of its ε-expansion, a pair ``(d, log w)``: a sum keeps the smallest ``d`` and adds the
  weights at that ``d``, a product adds the ``d`` and multiplies the weights (all terms are positive, so nothing
  cancels and the leading terms are exact).

Both carry ``process`` (a :class:`~basinlab.diffusion.masked.MaskedProcess`, ``[MASK] = V``), return ``log x_θ``
over the ``V`` clean tokens, ``[B, L, V]`` (SUBS never predicts the mask), and offer ``leave_one_out(z_t, t)``:
``log x_θ,l`` of ``z_t`` with position ``l`` masked as well, for every ``l`` at once (SPEC 2b's leave-one-out
conditional, from one pass instead of ``L`` calls; the masked process uses it when a denoiser has it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from basinlab.diffusion.masked import MaskedProcess
from basinlab.diffusion.schedules import Schedule
from basinlab.errors import BasinlabError
from basinlab.oracles.markov import log_matmul
from basinlab.oracles.memoriser import EmpiricalDenoiser

if TYPE_CHECKING:
    from basinlab.data.markov import MarkovSource


def _check_query(z_t: torch.Tensor, vocab_size: int, length: int | None, device: torch.device) -> torch.Tensor:
    z_t = torch.as_tensor(z_t).to(device).long()
    if z_t.dim() != 2 or (length is not None and z_t.shape[1] != length):
        raise BasinlabError(f"a masked oracle needs z_t long [B, {length or 'L'}], got {tuple(z_t.shape)}")
    if z_t.numel() and (int(z_t.min()) < 0 or int(z_t.max()) > vocab_size):
        raise BasinlabError(f"masked z_t must lie in [0, {vocab_size}] ([MASK] = {vocab_size}), got "
                            f"[{int(z_t.min())}, {int(z_t.max())}]")
    return z_t


def _carry_over(log_x: torch.Tensor, z_t: torch.Tensor, mask_index: int) -> torch.Tensor:
    """SUBS: every visible position gets ``log onehot(z_l)`` (in place; returns ``log_x``)."""
    vis = z_t != mask_index
    if bool(vis.any()):
        row = torch.full((int(vis.sum()), log_x.shape[-1]), -math.inf, dtype=log_x.dtype, device=log_x.device)
        row.scatter_(1, z_t[vis].unsqueeze(1), 0.0)
        log_x[vis] = row
    return log_x


def _appended_mask(process: MaskedProcess | None, vocab_size: int) -> MaskedProcess:
    """The oracle's process: ``process`` (an absorbing process whose ``[MASK]`` is appended at ``V``), by default
    MDLM's masked process over ``vocab_size`` tokens."""
    if process is None:
        return MaskedProcess(vocab_size)
    if process.mask_index != vocab_size or process.vocab_size != vocab_size:
        raise BasinlabError(f"the masked oracles need the [MASK] appended at V = {vocab_size}, not {process!r}")
    return process


class MaskedEmpiricalDenoiser:
    """The memoriser of ``train`` under masking (SPEC 2b, 6); see the module docstring.

    ``denoiser(z_t: long [B, L] in [0, V], t: float64 [B]) -> log x_θ [B, L, V]`` (``dtype``, float32 by default;
    exact zeros are ``-inf``). ``t`` is not used: a visible token is exact at every ``t``.
    """

    #: its NELBO is infinite off the training set (SPEC 6): the suite skips the likelihood probe
    finite_likelihood = False

    def __init__(
        self,
        train: torch.Tensor,
        vocab_size: int,
        schedule: Schedule,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        max_elements: int = 1 << 24,
        process: MaskedProcess | None = None,
    ) -> None:
        # the uniform memoriser validates the training set and holds its index, distances and token sums
        self.memory = EmpiricalDenoiser(train, vocab_size, schedule, device=device, max_elements=max_elements)
        self.train, self.N, self.L = self.memory.train, self.memory.N, self.memory.L
        self.vocab_size = int(vocab_size)
        self.process = _appended_mask(process, self.vocab_size)
        self.mask_index = self.process.mask_index
        self.schedule = schedule
        self.device = self.memory.device
        self.dtype = dtype
        self.max_elements = int(max_elements)
        # counts go through the whole index when more than this share of rows is kept (speed only: both exact)
        self.dense_share = 1 / 16
        self.queries = self.no_consistent = self.loo_positions = self.loo_no_consistent = 0

    def __repr__(self) -> str:
        return f"MaskedEmpiricalDenoiser(N={self.N}, L={self.L}, V={self.vocab_size})"

    def visible_distances(self, z_t: torch.Tensor) -> torch.Tensor:
        """``d [B, N]`` (int32): disagreements of each training row with the visible tokens of each query."""
        n_mask = (z_t == self.mask_index).sum(1, dtype=torch.int32)
        return self.memory.distances(z_t) - n_mask[:, None]  # a [MASK] disagrees with every row

    def counts(self, keep: torch.Tensor) -> torch.Tensor:
        """``C [b, L, V]`` float64: ``C_l(v) = #{n kept: x^n_l = v}`` for a bool ``keep [b, N]``."""
        b = keep.shape[0]
        L, V = self.L, self.vocab_size
        if int(keep.sum()) > self.dense_share * b * self.N:  # many rows: one sparse product over the whole index
            return self.memory.token_sums(keep.to(torch.float64))
        qb, n = torch.nonzero(keep, as_tuple=True)
        key = ((qb[:, None] * L + torch.arange(L, device=self.device)) * V + self.train[n]).reshape(-1)
        return torch.bincount(key, minlength=b * L * V).to(torch.float64).reshape(b, L, V)

    def _chunks(self, B: int):
        step = max(1, self.max_elements // max(self.N, self.L * self.vocab_size))
        return [slice(b0, min(B, b0 + step)) for b0 in range(0, B, step)]

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``log x_θ [B, L, V]``: the share of nearest (consistent when any) rows per token at masked positions,
        carry-over at visible ones (SPEC 2b)."""
        with torch.inference_mode():
            z_t = _check_query(z_t, self.vocab_size, self.L, self.device)
            out = torch.empty(z_t.shape[0], self.L, self.vocab_size, dtype=self.dtype, device=self.device)
            rows = torch.nonzero((z_t == self.mask_index).any(1)).flatten()  # the others are all carry-over
            for sl in self._chunks(rows.numel()):
                sl = rows[sl]
                d = self.visible_distances(z_t[sl])
                dmin = d.min(1).values
                c = self.counts(d == dmin[:, None])
                out[sl] = (torch.log(c) - torch.log(c.sum(2, keepdim=True))).to(self.dtype)
                self.queries += int(d.shape[0])
                self.no_consistent += int((dmin > 0).sum())
            return _carry_over(out, z_t, self.mask_index)

    def leave_one_out(self, z_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``log x_θ,l`` of ``z_t`` with position ``l`` masked too, every ``l``, ``[B, L, V]`` (SPEC 2b).

        With ``d^(-l)_n = d_n - 1[l visible, x^n_l != z_l]`` only rows with ``d_n <= d_min + 1`` can reach the
        smallest ``d^(-l)``. If some row at ``d_min`` disagrees at ``l``, the smallest is ``d_min - 1`` and only
        those rows count; otherwise it is ``d_min``, reached by every ``d_min`` row (all hold ``z_l``) and by the
        ``d_min + 1`` rows that disagree at ``l``.
        """
        with torch.inference_mode():
            z_t = _check_query(z_t, self.vocab_size, self.L, self.device)
            out = torch.empty(z_t.shape[0], self.L, self.vocab_size, dtype=self.dtype, device=self.device)
            for sl in self._chunks(z_t.shape[0]):
                z = z_t[sl]
                d = self.visible_distances(z)
                dmin = d.min(1).values[:, None]
                c0, c1 = self.counts(d == dmin), self.counts(d == dmin + 1)
                at = torch.where(z == self.mask_index, 0, z).unsqueeze(2)
                held = torch.zeros_like(c0).scatter_(2, at, 1.0).masked_fill_((z == self.mask_index)[..., None], 0)
                drop = (c0 * (1 - held)).sum(2, keepdim=True) > 0  # a d_min row disagrees at l: d^(-l) = d_min - 1
                c = torch.where(drop, c0 * (1 - held), c1 * (1 - held) + c0 * held)
                out[sl] = (torch.log(c) - torch.log(c.sum(2, keepdim=True))).to(self.dtype)
                self.loo_positions += z.numel()
                shift = (drop.squeeze(2) & (z != self.mask_index)).long()
                self.loo_no_consistent += int(((dmin - shift) > 0).sum())
            return out


class MaskedMarkovDenoiser:
    """The Bayes-optimal generaliser of a Markov source under masking (SPEC 2b, 6); see the module docstring.

    ``denoiser(z_t: long [B, L] in [0, V], t: float64 [B]) -> log x_θ [B, L, V]`` (``dtype``, float32 by default).
    Forward-backward with ``(d, log w)`` messages in float64, ``O(B L V²)`` times the number of distinct ``d``
    levels in a step (one or two where the visible tokens are consistent); ``t`` is not used.
    """

    def __init__(
        self,
        source: MarkovSource,
        schedule: Schedule,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        process: MaskedProcess | None = None,
    ) -> None:
        self.source = source
        self.schedule = schedule
        self.vocab_size = int(source.vocab_size)
        self.process = _appended_mask(process, self.vocab_size)
        self.mask_index = self.process.mask_index
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.log_pi = torch.log(source.pi.to(torch.float64)).to(self.device)
        self.P = source.P.to(torch.float64).to(self.device)
        self.queries = self.no_consistent = self.loo_positions = self.loo_no_consistent = 0

    def __repr__(self) -> str:
        return f"MaskedMarkovDenoiser({self.source!r})"

    def _consistent_loo(self, z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log x_θ,l [B, L, V], consistent [B])`` by the forward-backward of the plain HMM with emission
        ``1[v = z_l]`` at visible positions (the ``d = 0`` level of the ε-expansion, all that counts where some
        sequence agrees with every visible token), in log space with banded matmuls (exact whatever the range);
        rows with ``consistent = False`` are left to the ε-expansion."""
        B, L = z_t.shape
        vis = (z_t != self.mask_index).unsqueeze(2)
        log_e = torch.where(vis & (torch.arange(self.vocab_size, device=self.device) != z_t.unsqueeze(2)),
                            -math.inf, 0.0).to(torch.float64)
        log_f = torch.empty(B, L, self.vocab_size, dtype=torch.float64, device=self.device)
        log_b = torch.empty_like(log_f)
        cur = self.log_pi.expand(B, -1)
        for l in range(L):
            log_f[:, l] = cur
            cur = log_matmul(cur + log_e[:, l], self.P)
        consistent = torch.isfinite((log_f[:, -1] + log_e[:, -1]).amax(-1))
        cur = torch.zeros(B, self.vocab_size, dtype=torch.float64, device=self.device)
        for l in range(L - 1, -1, -1):
            log_b[:, l] = cur
            cur = log_matmul(cur + log_e[:, l], self.P.T)
        return torch.log_softmax(log_f + log_b, dim=2), consistent

    @staticmethod
    def _lex_matmul(d: torch.Tensor, lw: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``Σ_u (w_u ε^{d_u}) P_uv`` to leading order: ``(d', log w')`` per row ``[b, V]`` (``d = inf`` and
        ``log w = -inf`` where impossible; ``log w'`` shifted by a constant per row)."""
        m = d.amin(-1, keepdim=True)
        m = torch.where(torch.isinf(m), 0.0, m)
        rel = d - m
        d_out = torch.full_like(d, math.inf)
        lw_out = torch.full_like(lw, -math.inf)
        for k in torch.unique(rel[torch.isfinite(rel)]).tolist():  # ascending: the first level to reach v wins
            lw_k = log_matmul(torch.where(rel == k, lw, -math.inf), P, rescale=False)
            new = torch.isinf(d_out) & torch.isfinite(lw_k)
            d_out = torch.where(new, m + k, d_out)
            lw_out = torch.where(new, lw_k, lw_out)
        top = lw_out.amax(-1, keepdim=True)
        return d_out, lw_out - torch.where(torch.isneginf(top), 0.0, top)

    def messages(self, z_t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(f_d, f_lw, b_d, b_lw, c)``, each float64 ``[B, L, V]``: the forward message before the emission at
        ``l``, the backward message after it, and the emission's disagreement ``c_l(v) = 1[z_l visible, v != z_l]``."""
        B, L = z_t.shape
        V = self.vocab_size
        vis = (z_t != self.mask_index).unsqueeze(2)
        c = (vis & (torch.arange(V, device=self.device) != z_t.unsqueeze(2))).to(torch.float64)
        f_d = torch.empty(B, L, V, dtype=torch.float64, device=self.device)
        f_lw, b_d, b_lw = torch.empty_like(f_d), torch.empty_like(f_d), torch.empty_like(f_d)
        d = torch.where(torch.isneginf(self.log_pi), math.inf, 0.0).expand(B, V)
        lw = self.log_pi.expand(B, V)
        for l in range(L):
            f_d[:, l], f_lw[:, l] = d, lw
            if l + 1 < L:
                d, lw = self._lex_matmul(d + c[:, l], lw, self.P)
        d = torch.zeros(B, V, dtype=torch.float64, device=self.device)
        lw = torch.zeros_like(d)
        for l in range(L - 1, -1, -1):
            b_d[:, l], b_lw[:, l] = d, lw
            if l > 0:
                d, lw = self._lex_matmul(d + c[:, l], lw, self.P.T)
        return f_d, f_lw, b_d, b_lw, c

    def _loo(self, z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log x_θ,l float64 [B, L, V], d of the best clean sequence per position [B, L], the same with the
        emission at l kept [B])``: the plain HMM for consistent rows, the ε-expansion for the others."""
        B, L = z_t.shape
        log_x, ok = self._consistent_loo(z_t)
        dmin = torch.zeros(B, L, dtype=torch.float64, device=self.device)
        best = torch.zeros(B, dtype=torch.float64, device=self.device)
        if not bool(ok.all()):
            bad = ~ok
            log_x[bad], dmin[bad], best[bad] = self._loo_limit(z_t[bad])
        return log_x, dmin, best

    def _loo_limit(self, z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_loo` by the ``(d, log w)`` messages, exact for every row."""
        f_d, f_lw, b_d, b_lw, c = self.messages(z_t)
        tot = f_d + b_d
        dmin = tot.amin(2, keepdim=True)
        logit = torch.where(tot == dmin, f_lw + b_lw, -math.inf)
        best = (tot[:, 0] + c[:, 0]).amin(1)  # any position: the d of the best path through all emissions
        return torch.log_softmax(logit, dim=2), dmin.squeeze(2), best

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``log x_θ [B, L, V]``: the posterior given the visible tokens at masked positions, carry-over at
        visible ones (SPEC 2b)."""
        with torch.inference_mode():
            z_t = _check_query(z_t, self.vocab_size, None, self.device)
            out = torch.empty(*z_t.shape, self.vocab_size, dtype=self.dtype, device=self.device)
            rows = (z_t == self.mask_index).any(1)  # a row without [MASK] is all carry-over: nothing to predict
            if bool(rows.any()):
                log_x, _, best = self._loo(z_t[rows])
                out[rows] = log_x.to(self.dtype)
                self.queries += int(rows.sum())
                self.no_consistent += int((best > 0).sum())
            return _carry_over(out, z_t, self.mask_index)

    def leave_one_out(self, z_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``log x_θ,l`` of ``z_t`` with position ``l`` masked too, every ``l``, ``[B, L, V]`` (SPEC 2b): the
        forward-backward messages without the emission at ``l``."""
        with torch.inference_mode():
            z_t = _check_query(z_t, self.vocab_size, None, self.device)
            log_x, dmin, _ = self._loo(z_t)
            self.loo_positions += z_t.numel()
            self.loo_no_consistent += int((dmin > 0).sum())
            return log_x.to(self.dtype)
