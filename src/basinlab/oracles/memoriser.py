"""The perfect memoriser (SPEC 6): the Bayes-optimal denoiser of the empirical training distribution.

For a training set ``{x^n}``, a noisy ``z_t`` and ``λ_t = log(1 + V α_t / (1 - α_t))``, the leave-one-out
prediction of SPEC 4 is

    x_θ,l(k) = Σ_n w^(l)_n 1[x^n_l = k],   w^(l)_n ∝ exp(-λ_t d^(-l)_n),

with ``d^(-l)_n`` the Hamming distance between ``z_t`` and ``x^n`` over all positions but ``l``. Since
``d^(-l)_n = d_n - 1[x^n_l != z_l]`` (``d_n`` the full distance), every ``n`` with ``x^n_l = k`` has the same
correction, so

    x_θ,l(k) ∝ S_l(k) · (e^λ if k != z_l else 1),   S_l(k) = Σ_n exp(-λ (d_n - d_min)) 1[x^n_l = k]

(the shift by the query's nearest distance ``d_min`` cancels in the normalisation). The exact method is one pass
over the ``N·L`` training entries per query: a scatter-add of the row weights into ``[L, V]``.

**Rows that cannot matter are skipped (the bound).** Let ``C = log N + 30 + log 10^16`` and
``D = ceil(C / λ)``; only rows with ``d_n <= d_min + D`` are summed. Proof that this changes nothing measurable:
a skipped row has ``d_n >= d_min + D + 1``, so ``d^(-l)_n >= d_n - 1 >= d_min + D`` at every ``l``, while the
nearest row ``n*`` has ``d^(-l)_{n*} <= d_min``. Its leave-one-out weight relative to the nearest row's is
therefore at most ``exp(-λ D) <= exp(-C)``, and all skipped rows together carry at most
``N exp(-C) = 10^-16 e^-30`` of the total ``T_l = Σ_n w^(l)_n`` at every position. Hence

- an entry ``p = x_θ,l(k) >= e^-30`` changes by a factor within ``1 ± 2·10^-16`` (numerator and denominator each
  lose at most ``10^-16 e^-30 T_l <= 10^-16 p T_l``): its log-probability moves by less than ``3·10^-16``,
  below float64's resolution;
- an entry supported *only* by skipped rows had ``p <= N e^-C < e^-66``; it becomes ``-inf``. Entries that no
  training row supports (exact zeros) stay ``-inf``; every position keeps its nearest row, so no row of the
  output is empty and nothing is NaN.

Every kept weight is ``exp(-λ (d_n - d_min)) >= exp(-(C + λ))``, a normal float64 for ``λ <= 600`` (``λ_t`` is capped
there; ``C + λ < 708``), so the sums need no log-space or banded accumulation.

**How it is computed.** Distances ``d [B, N]``: from the inverted index of the training set (for each ``(l, k)``
the rows holding ``k`` at ``l``) when the query's tokens are rare there, which costs ``Σ_l |rows(l, z_l)|`` per
query instead of ``N·L``; else by a chunked dense comparison. Then per query either the *sparse* path (few kept
rows: their ``K·L`` entries are summed by key in float64 and normalised per position, and only those entries are
written) or the *dense* path (many kept rows: a float64 ``bincount`` over the ``N·L`` entries in key order, then a
float64 log-softmax over ``[L, V]``). The output ``[B, L, V]`` in ``dtype`` (float32 by default) is filled with
``-inf`` first; the cost of a call on a training-like query is that of writing the output.

``top_k`` keeps only the ``K`` nearest rows (intersected with the bound above): an approximation for huge ``N``.
"""

from __future__ import annotations

import math
import warnings

import torch

from basinlab.diffusion.process import bayes_log_posterior, emission_log_bonus
from basinlab.diffusion.schedules import Schedule
from basinlab.diffusion.uniform import UniformProcess
from basinlab.errors import BasinlabError

# Cap on λ (α_t -> 1 makes λ -> inf): keeps every kept weight a normal float64 (see the module docstring).
_LAMBDA_MAX = 600.0
# The skipped rows carry at most 10^-16 e^-30 of each position's total: log of the inverse.
_CUT_EXPONENT = 30.0 + math.log(1e16)
# Training rows per block of the dense distance comparison (a [B, rows, L] int16 temporary stays in cache).
_DENSE_ROWS = 256


def keep_radius(lam: torch.Tensor, n_rows: int, length: int) -> torch.Tensor:
    """``D = ceil((log N + 30 + log 1e16) / λ)`` per query (long ``[B]``, at most ``L``): rows with
    ``d_n <= d_min + D`` are summed, the others carry less than ``1e-16 e^-30`` of any position's mass."""
    c = math.log(n_rows) + _CUT_EXPONENT
    return torch.ceil(c / lam.clamp_min(1e-300)).clamp(max=float(length)).long()


class EmpiricalDenoiser:
    """Leave-one-out Bayes denoiser of the empirical distribution of ``train`` (SPEC 6, "memoriser").

    ``denoiser(z_t: long [B, L], t: float64 [B]) -> log x_θ [B, L, V]`` (``dtype``, float32 by default; exact zeros
    and entries below ``e^-66`` carried only by far rows are ``-inf``, see the module docstring).
    ``max_elements`` bounds the index and pair arrays built per group of queries.
    """

    #: its NELBO is infinite off the training set (SPEC 6): the suite skips the likelihood probe
    finite_likelihood = False

    def __init__(
        self,
        train: torch.Tensor,
        vocab_size: int,
        schedule: Schedule,
        top_k: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        max_elements: int = 1 << 24,
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
        self.process = UniformProcess(self.vocab_size)
        self.schedule = schedule
        self.top_k = None if top_k is None else min(int(top_k), train.shape[0])
        self.dtype = dtype
        self.max_elements = int(max_elements)
        self.N, self.L = train.shape
        # A query goes the dense way when it keeps more rows than this (speed only: both ways are exact).
        self.dense_above = (self.N + 8 * self.vocab_size) // 16
        self._index: dict[str, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return f"EmpiricalDenoiser(N={self.N}, L={self.L}, V={self.vocab_size}, top_k={self.top_k})"

    # ----------------------------------------------------------------------------------------------------------
    def index(self) -> dict[str, torch.Tensor]:
        """The training entries in key order (``key = l·V + k``): ``keys``, ``rows`` (int32 ``[N·L]``), ``crow``
        (``[L·V + 1]``, where each key's rows start), and the tokens as int16/int32 ``narrow [N, L]``."""
        if self._index is None:
            L, V = self.L, self.vocab_size
            cols = (self.train + torch.arange(L, device=self.device) * V).reshape(-1)  # entry e = n·L + l
            order = torch.argsort(cols, stable=True)
            crow = torch.zeros(L * V + 1, dtype=torch.long, device=self.device)
            crow[1:] = torch.cumsum(torch.bincount(cols, minlength=L * V), 0)
            narrow = torch.int16 if V <= 32767 else torch.int32
            self._index = {
                "keys": cols[order].to(torch.int32 if L * V < 2**31 else torch.long),
                "rows": (order // L).to(torch.int32),
                "crow": crow,
                "narrow": self.train.to(narrow),
            }
        return self._index

    def distances(self, z_t: torch.Tensor) -> torch.Tensor:
        """Full Hamming distances ``d [B, N]`` (int32) between each query and every training sequence (a query
        token outside ``[0, V)``, such as a ``[MASK]``, disagrees with every row)."""
        z_t = z_t.to(self.device).long()
        ix = self.index()
        # a token outside [0, V) (the masked process's [MASK], SPEC 2b) matches no training row
        seen = z_t < self.vocab_size
        keys = torch.where(seen, z_t + torch.arange(self.L, device=self.device) * self.vocab_size, 0)
        counts = torch.where(seen, ix["crow"][keys + 1] - ix["crow"][keys], 0).reshape(-1)  # rows sharing each token
        # an entry of the inverted way costs about 30-40 compared entries of the dense way (measured on a CPU:
        # docs/PERFORMANCE.md), so the index pays only when the query's tokens are rare in the training set
        if int(counts.sum()) * 32 <= z_t.shape[0] * self.N * self.L and int(counts.sum()) <= self.max_elements:
            return self._distances_inverted(keys.reshape(-1), counts, z_t.shape[0])
        return self.distances_dense(z_t)

    def distances_dense(self, z_t: torch.Tensor) -> torch.Tensor:
        """``d [B, N]`` by comparing every training entry with the query, in blocks of rows: the irreducible
        ``O(B N L)`` pass of a memoriser that does not index its training set."""
        x = self.index()["narrow"]
        z = z_t.to(self.device).to(x.dtype)
        B = z.shape[0]
        d = torch.empty(B, self.N, dtype=torch.int32, device=self.device)
        for n0 in range(0, self.N, _DENSE_ROWS):
            d[:, n0 : n0 + _DENSE_ROWS] = (x[None, n0 : n0 + _DENSE_ROWS] != z[:, None]).sum(-1, dtype=torch.int32)
        return d

    def _distances_inverted(self, keys: torch.Tensor, counts: torch.Tensor, B: int) -> torch.Tensor:
        """``d = L - matches``, the matches counted from the rows listed under each query token."""
        ix = self.index()
        total = int(counts.sum())
        seg = torch.repeat_interleave(torch.arange(counts.numel(), device=self.device), counts)  # (b, l) per entry
        first = torch.cumsum(counts, 0) - counts
        pos = torch.arange(total, device=self.device) - first[seg] + ix["crow"][keys][seg]
        hits = (seg // self.L) * self.N + ix["rows"][pos]
        matches = torch.bincount(hits, minlength=B * self.N).reshape(B, self.N)
        return (self.L - matches).to(torch.int32)

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        """``λ_t`` per row, float64 ``[B]``, capped at a large finite value."""
        a = self.schedule.alpha(t.to(torch.float64).cpu())
        return emission_log_bonus(a, self.vocab_size).clamp(max=_LAMBDA_MAX).to(self.device)

    def full_log_posterior(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log p(x_l | z_t)``, float64 ``[B, L, V]``: the Bayes combination of the leave-one-out one (SPEC 3, 4)."""
        z_t = z_t.to(self.device).long()
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(z_t.shape[0])
        log_x = self._loo(z_t, t, torch.float64)
        return bayes_log_posterior(log_x, z_t, self.schedule.alpha(t.cpu()).to(self.device))

    # ----------------------------------------------------------------------------------------------------------
    def __call__(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log x_θ [B, L, V]``: the leave-one-out posterior of every position (SPEC 4, 6)."""
        z_t = z_t.to(self.device).long()
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(z_t.shape[0])
        return self._loo(z_t, t, self.dtype)

    def _loo(self, z_t: torch.Tensor, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The leave-one-out log-posterior, written into a ``-inf``-filled ``[B, L, V]`` output."""
        with torch.inference_mode():
            B, L = z_t.shape
            if L != self.L:
                raise BasinlabError(f"query length {L} differs from the training length {self.L}")
            lam = self.lam(t)
            out = torch.full((B, L, self.vocab_size), -math.inf, dtype=dtype, device=self.device)
            step = max(1, self.max_elements // self.N)  # queries per distance matrix
            for b0 in range(0, B, step):
                sl = slice(b0, min(B, b0 + step))
                self._loo_chunk(z_t[sl], lam[sl], out[sl])
            return out

    def kept_rows(self, d: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(keep [B, N] bool, d_min [B])``: the rows within the bound of the module docstring (and the ``top_k``
        nearest when set)."""
        dmin = d.min(1).values
        keep = d <= (dmin + keep_radius(lam, self.N, self.L))[:, None]
        if self.top_k is not None and self.top_k < self.N:
            idx = torch.topk(d, self.top_k, dim=1, largest=False).indices
            keep &= torch.zeros_like(keep).scatter_(1, idx, True)
        return keep, dmin

    def _loo_chunk(self, z_t: torch.Tensor, lam: torch.Tensor, out: torch.Tensor) -> None:
        d = self.distances(z_t)
        keep, dmin = self.kept_rows(d, lam)
        rel = (d - dmin[:, None]).to(torch.float64)
        n_keep = keep.sum(1)
        dense = n_keep > self.dense_above
        qd = torch.nonzero(dense).flatten()
        step = max(1, self.max_elements // max(self.L * self.vocab_size, self.N))  # bounds w [b, N], S [b, L, V]
        for q0 in range(0, qd.numel(), step):
            qs = qd[q0:q0 + step]
            w = torch.where(keep[qs], torch.exp(-lam[qs, None] * rel[qs]), 0.0)
            out[qs] = self._dense_queries(z_t[qs], w, lam[qs]).to(out.dtype)
        sparse = torch.nonzero(~dense).flatten()
        if sparse.numel() == 0:
            return
        # Groups of sparse queries whose kept entries fit in max_elements; each writes only its supported entries.
        cost = torch.cumsum(n_keep[sparse] * self.L, 0)
        group = torch.div(cost - 1, max(self.max_elements, self.L), rounding_mode="floor")
        for gid in torch.unique(group).tolist():
            qs = sparse[group == gid]
            qb, n = torch.nonzero(keep[qs], as_tuple=True)
            qb = qs[qb]
            self._sparse_queries(z_t, qb, n, torch.exp(-lam[qb] * rel[qb, n]), lam, out)

    def token_sums(self, w: torch.Tensor) -> torch.Tensor:
        """``S [b, L, V]`` float64, ``S_l(k) = Σ_n w_n 1[x^n_l = k]`` for row weights ``w [b, N]`` (float64): one
        sparse-dense product with the training one-hots (the index, read as a CSR matrix ``[L·V, N]``)."""
        ix = self.index()
        L, V = self.L, self.vocab_size
        if "onehot" not in ix:
            with warnings.catch_warnings():  # torch calls its CSR support "beta"; the product used here is tested
                warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
                ix["onehot"] = torch.sparse_csr_tensor(
                    ix["crow"], ix["rows"].long(), torch.ones(ix["rows"].numel(), dtype=torch.float64,
                                                             device=self.device),
                    size=(L * V, self.N), check_invariants=False)
        return torch.sparse.mm(ix["onehot"], w.t().contiguous()).t().reshape(-1, L, V)

    def _dense_queries(self, z: torch.Tensor, w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """``log x_θ [b, L, V]`` of ``b`` queries from their row weights ``w [b, N]`` (float64, zero for skipped
        rows): ``S_l(k) = Σ_n w_n [x_nl = k]`` for every query at once, as one sparse-dense product with the
        training one-hots (the index, read as a CSR matrix ``[L·V, N]``). The normaliser
        ``Z_l = e^λ Σ_{k != z_l} S_l(k) + S_l(z_l)`` comes from row sums (no exp pass)."""
        s = self.token_sums(w)
        at = z[:, :, None]
        s_z = s.gather(2, at)
        s.scatter_(2, at, 0.0)
        log_z = torch.logaddexp(torch.log(s.sum(2, keepdim=True)) + lam[:, None, None], torch.log(s_z))
        s.scatter_(2, at, s_z)
        log_s = torch.log(s, out=s)
        log_s.sub_(log_z - lam[:, None, None])  # log S + λ - log Z for every k != z_l ...
        log_s.scatter_add_(2, at, -lam[:, None, None].expand_as(s_z))  # ... and log S - log Z at z_l
        return log_s

    def _sparse_queries(
        self, z: torch.Tensor, qb: torch.Tensor, n: torch.Tensor, w: torch.Tensor, lam: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """Write ``log x_θ`` of the queries in ``qb`` into ``out [B, L, V]`` (``-inf``-filled) from their kept pairs
        (query ``qb``, row ``n``, weight ``w``): the entries summed by key in float64, normalised per position."""
        L, V = self.L, self.vocab_size
        key = ((qb[:, None] * L + torch.arange(L, device=self.device)) * V + self.train[n]).reshape(-1)
        uniq, inv = torch.unique(key, return_inverse=True)  # sorted: the keys of one position are contiguous
        s = torch.zeros(uniq.numel(), dtype=torch.float64, device=self.device)
        s.index_add_(0, inv, w[:, None].expand(-1, L).reshape(-1))
        pos = torch.div(uniq, V, rounding_mode="floor")  # b·L + l
        log_s = torch.log(s) + torch.where(uniq - pos * V != z.reshape(-1)[pos], lam[pos // L], 0.0)
        mx = torch.full((z.numel(),), -math.inf, dtype=torch.float64, device=self.device)
        mx.scatter_reduce_(0, pos, log_s, reduce="amax")
        tot = torch.zeros(z.numel(), dtype=torch.float64, device=self.device)
        tot.index_add_(0, pos, torch.exp(log_s - mx[pos]))
        out.view(-1)[uniq] = (log_s - (mx + torch.log(tot))[pos]).to(out.dtype)
