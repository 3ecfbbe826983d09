"""Fixed points and conditional entropy over a grid of ``t`` in one run (SPEC 5, "Fixed points and entropy over
``t``").

For each ``t`` of ``probe.ts`` (the basin test's grid; the study's scripts use ``{0.05, 0.1, 0.25, 0.5, 1.0}``):

- ``grid_fixed_point_rate``: the fixed-point test started at ``t`` instead of ``probe.t_start`` (the clean ``x`` enters
  the grid at ``t``, greedy chain, greedy final step; share of sequences that come back unchanged);
- ``grid_entropy``: the conditional entropy of ``x_θ(z_t)``, ``z_t ~ q_t(. | x)``, mean over positions then sequences.

Rows: probe ``t_grid``, one per ``t`` and metric. The protocol's options apply (``paper``: the study's grid entry
and every position counted, ``x_θ``'s entropy at its input: ``entropy_of``). ``.arrays``: ``ts [n_t]``,
``fixed [n_t, M]`` (bool), ``entropy_seq [n_t, M]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from basinlab.probes._common import check_seqs
from basinlab.probes.entropy import conditional_entropy
from basinlab.probes.fixed_points import fixed_point_test
from basinlab.probes.results import ProbeResult

PROBE = "t_grid"


def t_grid(
    denoiser,
    seqs: torch.Tensor,
    *,
    set_name: str = "",
    seed: int = 0,
    batch_size: int = 256,
    real_mask: torch.Tensor | None = None,
    progress: bool = False,
    ts: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 1.0),
    steps: int = 1000,
    count_special: bool = False,
    entry: str = "nearest",
    entropy: bool = True,
    device: torch.device | str | None = None,
    entropy_of: str = "leave_one_out",
) -> ProbeResult:
    """``grid_fixed_point_rate`` and (``entropy=True``) ``grid_entropy`` at every ``t`` of ``ts`` on ``seqs [M, L]``."""
    seqs, mask = check_seqs(seqs, denoiser.vocab_size, None if count_special else real_mask)
    ts = [float(t) for t in ts]
    res = ProbeResult()
    fixed, h_seq = [], []
    for t in ts:
        fp = fixed_point_test(denoiser, seqs, set_name=set_name, real_mask=mask, progress=progress, t_start=t,
                              steps=steps, batch_size=batch_size, entry=entry, device=device)
        res.add(PROBE, set_name, t, "grid_fixed_point_rate", {k: v for k, v in fp.rows[0].items() if k in _STATS})
        fixed.append(fp.arrays["fixed"])
    if entropy:
        ce = conditional_entropy(denoiser, seqs, set_name=set_name, seed=seed, batch_size=batch_size,
                                 real_mask=mask, progress=progress, ts=ts, steps=steps, device=device,
                                 entropy_of=entropy_of)
        for r in ce.rows:
            res.add(PROBE, set_name, r["t"], "grid_entropy", {k: v for k, v in r.items() if k in _STATS})
        h_seq = ce.arrays["entropy_seq"]
        res.arrays["entropy_seq"] = h_seq
    res.arrays.update(ts=torch.tensor(ts, dtype=torch.float64), fixed=torch.stack(fixed) if fixed else
                      torch.zeros(0, seqs.shape[0], dtype=torch.bool))
    return res


_STATS = ("value", "std", "ci_low", "ci_high", "n")
