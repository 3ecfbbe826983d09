"""Conditional entropy of the leave-one-out prediction (SPEC 5).

For ``z_t ~ q_t(. | x)``, per position ``H = -Σ_v x_θ,v log x_θ,v`` in nats (``torch.special.entr``: the oracles'
exact zeros contribute 0). Reported as the mean over real positions, then over sequences (metric ``entropy`` per
``t``; default ``t = 1e-5``, the clean input). Options:

- ``trajectory=True``: ``entropy_traj`` along the stochastic reverse chain from ``z_1 ~ q_1(. | x)`` (at every
  denoiser call; rows at up to ``traj_points`` of them, all calls in ``.arrays``);
- ``basin=`` a :func:`~basinlab.probes.basins.basin_test` result on the same sequences: ``entropy_recovered`` and
  ``entropy_failed``, the entropy at the first ``ts`` entry averaged over the tokens that the basin test at each
  of its ``t`` restored or failed to restore (the row's ``t`` is the basin ``t``);
- ``split="restored"`` (the ``paper`` protocol, SPEC 5 "Protocols"): instead, the entropy of ``x_θ`` on the
  sequence the basin test *restored* (at ``t_min``; ``basin_test(restored_entropy=True)``), averaged over four
  groups of the positions the basin test counted: ``entropy_stable`` (unchanged and kept), ``entropy_unstable``
  (unchanged but altered by the restore), ``entropy_recovered`` and ``entropy_failed`` (changed, restored or not);
- ``generated=`` samples: ``entropy_generated`` and ``entropy_gap = mean(generated) - mean(real)`` at the first
  ``ts`` entry (interval of a difference of two independent means); ``gap_name`` names that row (the suite: the
  gap against ``test`` is ``entropy_gap``, against ``train`` ``entropy_gap_train``; under ``paper`` only the
  study's gap, against ``train``, named ``entropy_gap``);
- ``count_special=True`` (the ``paper`` protocol): every position counts (BOS/EOS/PAD too), in the set and in the
  generated samples, ``real_mask`` and ``generated_mask`` ignored.
- ``entropy_of="output"`` (the ``paper`` protocol): the entropy of ``x_θ`` at its own input instead of the
  leave-one-out conditional (:data:`ENTROPY_OF`); for a masked model it is 0 at every position left visible, by
  construction, so it cannot tell memorisation from generalisation there (the study's code; SPEC 5 "Protocols").

Memorisation shows as vanishing entropy on training data, generalisation as finite entropy for most tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from basinlab.diffusion import n_denoiser_calls, process_of, reverse_chain
from basinlab.errors import BasinlabError
from basinlab.probes._common import batches, check_seqs, denoiser_device, make_generator, progress_bar, tvec
from basinlab.probes.results import ProbeResult, child_seed, summarize, t_quantile_975

PROBE = "entropy"


#: What the entropy probes read (``entropy_of``): ``leave_one_out``, the conditional of each token given the others
#: (SPEC 5; for a masked model, the token masked, SPEC 2b), or ``output``, ``x_θ`` at its own input as the study's
#: code reads it (the ``paper`` protocol): the same for the uniform process, whose ``x_θ`` leaves each token out;
#: for a masked model MDLM's SUBS output, one-hot (entropy 0) at every position ``z_t`` leaves visible.
ENTROPY_OF = ("leave_one_out", "output")


def token_entropy(log_x_theta: torch.Tensor) -> torch.Tensor:
    """``H = Σ_v entr(x_θ,v)`` per position, float64 ``[B, L]`` (nats)."""
    return torch.special.entr(log_x_theta.to(torch.float64).exp()).sum(-1)


def conditional_of(denoiser, z_t: torch.Tensor, t: torch.Tensor, entropy_of: str = "leave_one_out") -> torch.Tensor:
    """``log`` of the prediction whose entropy the probes report at ``z_t`` (:data:`ENTROPY_OF`), ``[B, L, V]``."""
    if entropy_of == "output":
        return denoiser(z_t, t)
    if entropy_of != "leave_one_out":
        raise BasinlabError(f"entropy_of must be one of {', '.join(ENTROPY_OF)}, got {entropy_of!r}")
    return process_of(denoiser).leave_one_out(denoiser, z_t, t)


def _seq_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h`` over the masked positions of each row; NaN where a row has none."""
    m = mask.to(h.dtype)
    return (torch.where(mask, h, 0.0)).sum(1) / m.sum(1)


def entropy_per_token(
    denoiser,
    seqs: torch.Tensor,
    t: float,
    *,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
    device: torch.device | str | None = None,
    desc: str = "entropy",
    entropy_of: str = "leave_one_out",
) -> torch.Tensor:
    """``H`` of ``x_θ(z_t)`` at every position, ``z_t ~ q_t(. | x)``, float64 ``[M, L]`` (``entropy_of``:
    :data:`ENTROPY_OF`)."""
    dev = denoiser_device(denoiser, device)
    proc = process_of(denoiser)
    M, L = seqs.shape
    g = make_generator(child_seed(seed, PROBE, t), dev)
    a_t = float(denoiser.schedule.alpha(t))
    out = torch.empty(M, L, dtype=torch.float64)
    bar = progress_bar(len(range(0, M, batch_size)), desc, progress)
    with torch.inference_mode():
        for sl in batches(M, batch_size):
            x = seqs[sl].to(dev)
            z = proc.corrupt(x, a_t, generator=g)
            out[sl] = token_entropy(conditional_of(denoiser, z, tvec(t, x.shape[0], dev), entropy_of)).cpu()
            bar.update(1)
    bar.close()
    return out


def conditional_entropy(
    denoiser,
    seqs: torch.Tensor,
    *,
    set_name: str = "",
    seed: int = 0,
    batch_size: int = 256,
    real_mask: torch.Tensor | None = None,
    progress: bool = False,
    ts: Sequence[float] = (1e-5,),
    steps: int = 1000,
    trajectory: bool = False,
    traj_points: int = 50,
    basin=None,
    generated: torch.Tensor | None = None,
    generated_mask: torch.Tensor | None = None,
    generated_entropy: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    split: str = "input",
    count_special: bool = False,
    gap_name: str = "entropy_gap",
    entropy_of: str = "leave_one_out",
) -> ProbeResult:
    """Entropy probe of SPEC 5 on ``seqs [M, L]``; see the module docstring for the metrics.

    ``.arrays``: ``ts``, ``entropy [n_t, M, L]`` (NaN at non-real positions), ``entropy_seq [n_t, M]``; with
    ``trajectory``: ``traj_t [K]``, ``traj_entropy [K, M]``; with ``basin``: ``recovered@{t}`` / ``failed@{t}``
    (per-token entropies of those tokens, 1-D); with ``generated``: ``generated_entropy [S, L]`` (NaN at non-real).
    ``generated_entropy``: that array from an earlier call on the same samples and seed, reused instead of recomputed.
    """
    V = denoiser.vocab_size
    seqs, mask = check_seqs(seqs, V, None if count_special else real_mask)
    dev = denoiser_device(denoiser, device)
    M, L = seqs.shape
    ts = [float(t) for t in ts]
    if not ts:
        raise BasinlabError("conditional_entropy needs at least one t")
    res = ProbeResult()
    H = torch.empty(len(ts), M, L, dtype=torch.float64)
    H_seq = torch.empty(len(ts), M, dtype=torch.float64)
    for i, t in enumerate(ts):
        h = entropy_per_token(denoiser, seqs, t, seed=seed, batch_size=batch_size, progress=progress,
                              device=dev, desc=f"entropy {set_name} t={t:g}".strip(), entropy_of=entropy_of)
        H[i] = torch.where(mask, h, math.nan)
        H_seq[i] = _seq_mean(h, mask)
        res.add(PROBE, set_name, t, "entropy", summarize(H_seq[i]))
    res.arrays.update(ts=torch.tensor(ts, dtype=torch.float64), entropy=H, entropy_seq=H_seq)

    if trajectory:
        traj_t, traj = _trajectory(denoiser, seqs, mask, steps, seed, batch_size, progress, dev, set_name)
        K = len(traj_t)
        keep = sorted(set(range(0, K, max(1, math.ceil(K / max(1, traj_points))))) | {K - 1})
        for k in keep:
            res.add(PROBE, set_name, traj_t[k], "entropy_traj", summarize(traj[k]))
        res.arrays.update(traj_t=torch.tensor(traj_t, dtype=torch.float64), traj_entropy=traj)

    if basin is not None:
        _basin_split(res, basin, H[0].nan_to_num(0.0), mask, set_name, split)

    if generated is not None:
        gen, gmask = check_seqs(generated, V, None if count_special else generated_mask)
        hg = generated_entropy if generated_entropy is not None else entropy_per_token(
            denoiser, gen, ts[0], seed=child_seed(seed, "generated"), batch_size=batch_size, progress=progress,
            device=dev, desc="entropy generated", entropy_of=entropy_of)
        g_seq = _seq_mean(hg, gmask)
        res.add(PROBE, set_name, ts[0], "entropy_generated", summarize(g_seq))
        res.add(PROBE, set_name, ts[0], gap_name, _difference(summarize(g_seq), summarize(H_seq[0])))
        res.arrays["generated_entropy"] = torch.where(gmask, hg, math.nan)
    return res


def _basin_split(res: ProbeResult, basin, h0: torch.Tensor, mask: torch.Tensor, set_name: str, split: str) -> None:
    """Entropy averaged over the tokens of each basin outcome, per basin ``t`` (see the module docstring)."""
    arr = basin.arrays
    if "recovered" not in arr or arr["recovered"].shape[1:] != h0.shape:
        raise BasinlabError("conditional_entropy: the basin result must come from basin_test on the same sequences")
    if split not in ("input", "restored"):
        raise BasinlabError(f"conditional_entropy: split must be 'input' or 'restored', got {split!r}")
    if split == "restored" and "restored_entropy" not in arr:
        raise BasinlabError("conditional_entropy(split='restored') needs basin_test(..., restored_entropy=True)")
    for j, bt in enumerate(arr["ts"].tolist()):
        groups = [("recovered", arr["recovered"][j] & mask), ("failed", arr["failed"][j] & mask)]
        h = h0
        if split == "restored":  # the study's four groups, on the positions the basin test counted
            h, counted = arr["restored_entropy"][j], arr["real_mask"]
            kept = arr["restored"][j] == arr["corrupted"][j]
            unchanged = counted & ~arr["changed"][j]
            groups = [("stable", unchanged & kept), ("unstable", unchanged & ~kept),
                      ("recovered", arr["recovered"][j]), ("failed", arr["failed"][j])]
        for name, tok in groups:
            res.add(PROBE, set_name, bt, f"entropy_{name}", summarize(_seq_mean(h, tok)))
            res.arrays[f"{name}@{bt:g}"] = h[tok]


def _difference(a: dict, b: dict) -> dict:
    """``a - b`` for two independent means, with the interval from their standard errors (Welch-style, normal)."""
    if a["value"] is None or b["value"] is None:
        return {"value": None, "n": None}
    value = a["value"] - b["value"]
    se2 = 0.0
    for s in (a, b):
        if s["ci_high"] is None:
            return {"value": value, "n": (a["n"] or 0) + (b["n"] or 0)}
        se2 += ((s["ci_high"] - s["value"]) / t_quantile_975(s["n"] - 1)) ** 2
    h = 1.959964 * math.sqrt(se2)
    return {"value": value, "ci_low": value - h, "ci_high": value + h, "n": a["n"] + b["n"]}


def _trajectory(denoiser, seqs, mask, steps, seed, batch_size, progress, dev, set_name):
    """Per-sequence mean entropy at every denoiser call of the stochastic chain from ``t = 1``."""
    M = seqs.shape[0]
    g = make_generator(child_seed(seed, PROBE, "trajectory"), dev)
    a_1 = float(denoiser.schedule.alpha(1.0))
    K = n_denoiser_calls(steps, 1.0)
    traj = torch.empty(K, M, dtype=torch.float64)
    traj_t: list[float] = []
    bar = progress_bar(K * len(range(0, M, batch_size)), f"entropy trajectory {set_name}".strip(), progress)
    with torch.inference_mode():
        for sl in batches(M, batch_size):
            x = seqs[sl].to(dev)
            m = mask[sl]
            step = [0]
            times: list[float] = []

            def record(k, t, z, log_x, sl=sl, m=m, step=step, times=times):
                traj[step[0], sl] = _seq_mean(token_entropy(log_x).cpu(), m)
                times.append(float(t))
                step[0] += 1
                bar.update(1)

            z = process_of(denoiser).corrupt(x, a_1, generator=g)
            reverse_chain(denoiser, z, 1.0, steps, greedy=False, final_greedy=True, generator=g, callback=record)
            traj_t = times
    bar.close()
    return traj_t, traj
