"""The memoriser as it was before issue 9 (dense sparse-product passes, far rows kept finite in log space):
kept verbatim as a reference for tests/oracles/test_memoriser.py (medium case). Not used by the library."""
from __future__ import annotations

import math
import warnings

import torch

from basinlab.diffusion.process import bayes_log_posterior, emission_log_bonus
from basinlab.diffusion.schedules import Schedule
from basinlab.errors import BasinlabError

# Largest exponent range accumulated in one band: exp(-650) ~ 1e-282 stays a normal float64.
_BAND_EXPONENT = 650.0
# Cap on λ so that a band is at least one distance level wide (α_t -> 1 makes λ -> inf).
_LAMBDA_MAX = 600.0


class LegacyEmpiricalDenoiser:
    """Leave-one-out Bayes denoiser of the empirical distribution of ``train`` (SPEC 6, "memoriser").

    ``denoiser(z_t: long [B, L], t: float64 [B]) -> log x_θ [B, L, V]`` (``dtype``, float32 by default; exact zeros
    are ``-inf``). ``chunk_size`` is the training rows per sparse block (default ``max(4096, 2V)``);
    ``max_elements`` the float64 work ``queries · L · V`` per query chunk; ``near_k`` the rows summed exactly per
    query before the sparse pass when one shift cannot cover every row.
    """

    def __init__(
        self,
        train: torch.Tensor,
        vocab_size: int,
        schedule: Schedule,
        chunk_size: int | None = None,
        top_k: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        max_elements: int = 1 << 25,
        near_k: int = 64,
    ) -> None:
        train = torch.as_tensor(train)
        if train.dim() != 2 or train.shape[0] < 1:
            raise BasinlabError(
                f"EmpiricalDenoiser needs a non-empty long [N, L] training set, got {tuple(train.shape)}"
            )
        if train.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.bool):
            raise BasinlabError(f"EmpiricalDenoiser needs integer token ids, got {train.dtype}")
        train = train.long()
        if int(train.min()) < 0 or int(train.max()) >= vocab_size:
            lo, hi = int(train.min()), int(train.max())
            raise BasinlabError(f"training tokens must lie in [0, {vocab_size}), got [{lo}, {hi}]")
        if top_k is not None and top_k < 1:
            raise BasinlabError(f"top_k must be >= 1 or None, got {top_k}")
        self.device = torch.device(device) if device is not None else train.device
        self.train = train.to(self.device)
        self.vocab_size = int(vocab_size)
        self.schedule = schedule
        # Sparse blocks of ~4096 rows keep the weights in cache; large V needs bigger blocks (fewer passes
        # over the [L·V, B] accumulator). Measured on a CPU (docs/PERFORMANCE.md).
        self.chunk_size = int(chunk_size) if chunk_size is not None else max(4096, 2 * int(vocab_size))
        self.top_k = None if top_k is None else min(int(top_k), train.shape[0])
        self.dtype = dtype
        self.max_elements = int(max_elements)
        self.N, self.L = train.shape
        self.near_k = max(1, min(int(near_k), self.N))
        self._blocks: list[tuple[int, int, torch.Tensor, torch.Tensor]] | None = None

    def __repr__(self) -> str:
        return f"EmpiricalDenoiser(N={self.N}, L={self.L}, V={self.vocab_size}, top_k={self.top_k})"

    # ----------------------------------------------------------------------------------------------------------
    def _sparse_blocks(self) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """Per chunk of ``N``: the one-hot ``[n, L·V]`` (float32, for distances) and its transpose (float64)."""
        if self._blocks is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                blocks = []
                L, V = self.L, self.vocab_size
                offs = torch.arange(L, device=self.device) * V
                for n0 in range(0, self.N, self.chunk_size):
                    x = self.train[n0 : n0 + self.chunk_size]
                    n = x.shape[0]
                    cols = (x + offs).reshape(-1)  # row-major: row r has L entries, one per position
                    crow = torch.arange(0, n * L + 1, L, device=self.device)
                    a = torch.sparse_csr_tensor(
                        crow, cols, torch.ones(n * L, dtype=torch.float32, device=self.device), size=(n, L * V)
                    )
                    # Transpose: rows are (l, k), columns the training rows holding k at l.
                    order = torch.argsort(cols, stable=True)
                    counts = torch.bincount(cols, minlength=L * V)
                    crow_t = torch.zeros(L * V + 1, dtype=torch.long, device=self.device)
                    crow_t[1:] = torch.cumsum(counts, 0)
                    at = torch.sparse_csr_tensor(
                        crow_t, order // L, torch.ones(n * L, dtype=torch.float64, device=self.device),
                        size=(L * V, n),
                    )
                    blocks.append((n0, n, a, at))
                self._blocks = blocks
        return self._blocks

    def distances(self, z_t: torch.Tensor) -> torch.Tensor:
        """Full Hamming distances ``d [B, N]`` (int32) between each query and every training sequence."""
        B, L = z_t.shape
        V = self.vocab_size
        oz = torch.zeros(L * V, B, dtype=torch.float32, device=self.device)
        rows = (z_t + torch.arange(L, device=self.device) * V).T.reshape(-1)
        oz[rows, torch.arange(B, device=self.device).repeat(L)] = 1.0
        d = torch.empty(B, self.N, dtype=torch.int32, device=self.device)
        for n0, n, a, _ in self._sparse_blocks():
            matches = (a @ oz).T  # [B, n], exact small integers
            d[:, n0 : n0 + n] = L - matches.to(torch.int32)  # float32 sums of ones <= L are exact
        return d

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        """``λ_t`` per row, float64 ``[B]``, capped at a large finite value."""
        a = self.schedule.alpha(t.to(torch.float64).cpu())
        return emission_log_bonus(a, self.vocab_size).clamp(max=_LAMBDA_MAX).to(self.device)

    def full_log_posterior(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log p(x_l | z_t)``, float64 ``[B, L, V]``: the Bayes combination of the leave-one-out one (SPEC 3, 4)."""
        z_t = z_t.to(self.device).long()
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(z_t.shape[0])
        log_x = self._loo(z_t, t)
        return bayes_log_posterior(log_x, z_t, self.schedule.alpha(t.cpu()).to(self.device))

    # ----------------------------------------------------------------------------------------------------------
    def __call__(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log x_θ [B, L, V]``: the leave-one-out posterior of every position (SPEC 4, 6)."""
        z_t = z_t.to(self.device).long()
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(z_t.shape[0])
        return self._loo(z_t, t, self.dtype)

    def _loo(self, z_t: torch.Tensor, t: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The leave-one-out log-posterior, query chunk by query chunk. Sums run in float64; the final
        normalisation in ``dtype`` (float32 halves the memory traffic of the ``[B, L, V]`` passes)."""
        with torch.inference_mode():
            B, L = z_t.shape
            if L != self.L:
                raise BasinlabError(f"query length {L} differs from the training length {self.L}")
            lam = self.lam(t)
            step = max(1, self.max_elements // (L * self.vocab_size))
            if step >= B:
                return self._loo_chunk(z_t, lam, dtype)
            out = torch.empty(B, L, self.vocab_size, dtype=dtype, device=self.device)
            for b0 in range(0, B, step):
                out[b0 : b0 + step] = self._loo_chunk(z_t[b0 : b0 + step], lam[b0 : b0 + step], dtype)
            return out

    def _loo_chunk(self, z_t: torch.Tensor, lam: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        B, L = z_t.shape
        d = self.distances(z_t)
        if self.top_k is not None:  # approximation: the K nearest rows only
            dk, idx = torch.topk(d, min(self.top_k, self.N), dim=1, largest=False, sorted=False)
            log_s = self._log_s_near(idx, dk - dk.min(1, keepdim=True).values, lam)
        else:
            dmin = d.min(1).values
            span = (d.max(1).values - dmin).to(torch.float64)
            if bool((lam * span <= _BAND_EXPONENT).all()) or self.near_k >= self.N:
                # One shift covers every row (or every row is near): a single pass.
                log_s = (self._log_s_far(d, None, dmin, lam) if self.near_k < self.N
                         else self._log_s_near(torch.arange(self.N, device=self.device).expand(B, -1),
                                               d - dmin[:, None], lam))
            else:
                dk, idx = torch.topk(d, self.near_k, dim=1, largest=False, sorted=False)  # the near rows
                log_s = torch.logaddexp(self._log_s_near(idx, dk - dmin[:, None], lam),
                                        self._log_s_far(d, idx, dmin, lam))
        # Leave-one-out correction: the e^λ factor of every k != z_l, then normalise over k. Relative to d_min the
        # dominant entries are O(1), so the work dtype loses nothing that matters.
        log_s = log_s.to(dtype if dtype == torch.float64 else torch.float32).contiguous()
        bonus = lam.to(log_s.dtype).reshape(B, 1, 1).expand(B, L, 1)
        log_s.add_(bonus)
        log_s.scatter_add_(-1, z_t.unsqueeze(-1), -bonus)
        return torch.log_softmax(log_s, dim=-1)

    def _log_s_near(self, idx: torch.Tensor, rel: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """``log Σ_{n near} exp(-λ (d_n - d_min)) 1[x^n_l = k]``, ``[B, L, V]``: exact scatter log-sum-exp."""
        B, K = idx.shape
        L, V = self.L, self.vocab_size
        xk = self.train[idx]  # [B, K, L]
        flat = (xk + torch.arange(L, device=self.device) * V).reshape(B, K * L)  # index into [L·V]
        lw = (-lam[:, None] * rel.to(torch.float64))[:, :, None].expand(B, K, L).reshape(B, K * L)
        mx = torch.full((B, L * V), -math.inf, dtype=torch.float64, device=self.device)
        mx.scatter_reduce_(1, flat, lw, reduce="amax", include_self=True)
        s = torch.zeros(B, L * V, dtype=torch.float64, device=self.device)
        s.scatter_add_(1, flat, torch.exp(lw - mx.gather(1, flat)))
        return (torch.log(s) + mx).reshape(B, L, V)  # log 0 + (-inf) = -inf where no near row has k at l

    def _log_s_far(
        self, d: torch.Tensor, near: torch.Tensor | None, dmin: torch.Tensor, lam: torch.Tensor
    ) -> torch.Tensor:
        """``log S_l(k) + λ d_min`` of all rows but the ``near`` ones (None: all rows) by the sparse product,
        banded when the range needs it."""
        B = d.shape[0]
        L, V = self.L, self.vocab_size
        is_near = torch.zeros(B, self.N, dtype=torch.bool, device=self.device)
        if near is not None:
            is_near.scatter_(1, near, True)
        big = torch.iinfo(torch.int32).max
        dfar = torch.where(is_near, big, d).min(1).values
        span = (torch.where(is_near, dfar[:, None], d).max(1).values - dfar).to(torch.float64)
        width = torch.floor(_BAND_EXPONENT / lam.clamp_min(1e-300)).clamp(1.0, float(L + 1))  # Δ per query
        nbands = int((torch.floor(span / width) + 1).max())
        acc = torch.zeros(L * V, nbands * B, dtype=torch.float64, device=self.device)
        cols = torch.arange(B, device=self.device)
        for n0, n, _, at in self._sparse_blocks():
            rel = (d[:, n0 : n0 + n] - dfar[:, None]).to(torch.float64).clamp_min(0.0)  # [B, n]
            keep = ~is_near[:, n0 : n0 + n]
            if nbands == 1:
                wt = torch.where(keep, torch.exp(-lam[:, None] * rel), 0.0).T.contiguous()  # in (e^-650, 1]
            else:
                band = torch.floor(rel / width[:, None]).clamp_max(nbands - 1)
                w = torch.where(keep, torch.exp(-lam[:, None] * (rel - band * width[:, None])), 0.0)
                wt = torch.zeros(n, nbands * B, dtype=torch.float64, device=self.device)
                wt.scatter_(1, (band.long() * B + cols[:, None]).T, w.T)  # column of (band, query)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                acc.addmm_(at, wt)  # in place: no [L·V, B] temporary per block
        log_acc = torch.log(acc).reshape(L, V, nbands, B).permute(3, 0, 1, 2)  # [B, L, V, bands]
        j = torch.arange(nbands, device=self.device, dtype=torch.float64)
        shift = -lam[:, None] * ((dfar - dmin).to(torch.float64)[:, None] + width[:, None] * j)  # [B, bands]
        return torch.logsumexp(log_acc + shift[:, None, None, :], dim=-1)
