"""Basin test: perturb and restore (SPEC 5).

For each ``t``: draw ``z_t ~ q_t(. | x)``, run the reverse chain from ``t`` on the ``T``-step grid (stochastic by
default), then the final step (greedy). Per sequence, over its *real* tokens:

- ``recovery_rate``: fraction of the changed positions (``z_t != x``) restored to ``x``; sequences with no changed
  real position are counted apart (row ``n_unchanged``) and left out of the mean;
- ``exact_match``: the restore equals ``x`` on every real position;
- ``unstable_rate``: fraction of the unchanged real positions that the restore changed. Not reported for a
  process under which a clean token never changes (masked without remasking, SPEC 2b): impossible by construction.

Options for the ``paper`` protocol (SPEC 5 "Protocols", :mod:`basinlab.probes.protocol`): ``final_greedy=False``
draws the final step; ``count_special=True`` counts every position (BOS/EOS/PAD too), ignoring ``real_mask``;
``restored_entropy=True`` also records the entropy of ``x_θ`` on the restored sequence at ``t_min``
(``.arrays["restored_entropy"]``), for :func:`~basinlab.probes.entropy.conditional_entropy` ``split="restored"``;
``entropy_of`` says which prediction (:data:`~basinlab.probes.entropy.ENTROPY_OF`).

Also ``recovery_rate_tokens`` (changed tokens restored, pooled over the set). Summary rows (``t = None``): the
*basin radius*, the ``t`` where mean recovery crosses 50% (linear interpolation on the tested ``t``; 0 if below 50%
at the smallest ``t``, 1 if never below), and the *basin area* under recovery over ``[0, 1]`` (trapezoids, recovery
1 at ``t = 0``; held flat beyond the largest tested ``t``), each with a bootstrap std and percentile interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from basinlab.diffusion import T_MIN, n_denoiser_calls, process_of, reverse_chain
from basinlab.diffusion.packed import chain_keys, packed_chains
from basinlab.errors import BasinlabError
from basinlab.probes._common import batches, check_seqs, denoiser_device, make_generator, progress_bar, tvec
from basinlab.probes.entropy import conditional_of, token_entropy
from basinlab.probes.results import ProbeResult, child_seed, summarize

PROBE = "basins"


def basin_radius(ts: Sequence[float], recovery: Sequence[float]) -> float:
    """The ``t`` where mean recovery first falls below 50% (linear interpolation; SPEC 5). NaN recoveries skipped."""
    pts = sorted((float(t), float(r)) for t, r in zip(ts, recovery, strict=False) if np.isfinite(r))
    if not pts:
        return float("nan")
    if pts[0][1] < 0.5:
        return 0.0
    for (t0, r0), (t1, r1) in zip(pts[:-1], pts[1:], strict=False):
        if r1 < 0.5:
            return t0 + (r0 - 0.5) / (r0 - r1) * (t1 - t0)
    return 1.0


def basin_area(ts: Sequence[float], recovery: Sequence[float]) -> float:
    """Trapezoid area under recovery over ``[0, 1]`` with recovery 1 at ``t = 0`` (SPEC 5).

    Beyond the largest tested ``t`` the last recovery is held flat to ``t = 1``; points above ``t = 1`` are ignored.
    """
    pts = sorted((float(t), float(r)) for t, r in zip(ts, recovery, strict=False) if np.isfinite(r) and 0.0 < t <= 1.0)
    if not pts:
        return float("nan")
    t = [0.0] + [p[0] for p in pts]
    r = [1.0] + [p[1] for p in pts]
    if t[-1] < 1.0:
        t.append(1.0)
        r.append(r[-1])
    return float(sum((t[i + 1] - t[i]) * (r[i + 1] + r[i]) / 2 for i in range(len(t) - 1)))


def basin_test(
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
    greedy: bool = False,
    final_greedy: bool = True,
    n_boot: int = 200,
    device: torch.device | str | None = None,
    count_special: bool = False,
    restored_entropy: bool = False,
    engine: str = "auto",
    compile_steps: bool | None = None,
    entry: str = "nearest",
    entropy_of: str = "leave_one_out",
) -> ProbeResult:
    """Perturb-and-restore test of SPEC 5 on ``seqs [M, L]``; see the module docstring for the metrics.

    ``.arrays``: ``ts`` ``[n_t]``, per sequence ``recovery`` (NaN where nothing changed), ``exact``, ``unstable``
    ``[n_t, M]``; per token ``changed``, ``recovered``, ``failed`` (bool) and ``corrupted``, ``restored`` (ids)
    ``[n_t, M, L]``; ``real_mask [M, L]`` (the positions counted); with ``restored_entropy``, ``restored_entropy``
    (float64 ``[n_t, M, L]``).

    ``engine``: ``loop`` runs each ``t``'s chains batch by batch with one generator per ``t``; ``packed`` runs all
    ``n_t · M`` chains through :func:`~basinlab.diffusion.packed.packed_chains` (full batches across ``t``, per-chain
    RNG, no host synchronisation per step: the fast path on a GPU; stochastic chains only). Both draw from the same
    distributions, with different random numbers. ``auto``: ``packed`` on CUDA for stochastic chains, else ``loop``.
    ``compile_steps`` (packed only): compile the reverse step (default: on CUDA). ``entry``: how a chain from ``t``
    enters the grid (:func:`~basinlab.diffusion.sampler.start_index`; ``above`` under the ``paper`` protocol).
    """
    V = denoiser.vocab_size
    seqs, mask = check_seqs(seqs, V, None if count_special else real_mask)
    dev = denoiser_device(denoiser, device)
    M, L = seqs.shape
    ts = [float(t) for t in ts]
    nt = len(ts)
    res = ProbeResult()
    if engine == "auto":  # the packed fast path is the uniform process's; any other runs the plain sampler
        engine = "packed" if dev.type == "cuda" and not greedy and process_of(denoiser).packed_fast_path else "loop"
    if engine == "packed" and not greedy and not process_of(denoiser).packed_fast_path:
        raise BasinlabError(f"basin-test engine 'packed' runs the uniform process's chains only; this denoiser's "
                            f"process is {process_of(denoiser).name}: use engine=\"loop\" (or \"auto\")")
    if engine == "packed" and not greedy:
        compile_steps = dev.type == "cuda" if compile_steps is None else compile_steps
        z_all, out_all = _packed(denoiser, seqs, ts, steps, batch_size, final_greedy, seed, dev, compile_steps,
                                 entry)
        h_all = _restored_entropy(denoiser, out_all, batch_size, dev, entropy_of) if restored_entropy else None
    elif engine == "loop":
        z_all, out_all, h_all = _loop(denoiser, seqs, ts, steps, batch_size, greedy, final_greedy, seed, dev,
                                      progress, set_name, restored_entropy, entry, entropy_of)
    else:
        raise BasinlabError(f"basin-test engine '{engine}' (greedy={greedy}): use auto, loop, or packed (stochastic)")
    arrays = _outcomes(res, set_name, ts, seqs, mask, z_all, out_all)
    if not process_of(denoiser).can_change_clean:  # SPEC 2b: no "unstable" outcome by construction, not a finding
        res.rows = [r for r in res.rows if r["metric"] != "unstable_rate"]
    rec = arrays["recovery"]
    means = [float(torch.nanmean(rec[i])) if (~rec[i].isnan()).any() else float("nan") for i in range(nt)]
    radius, area = basin_radius(ts, means), basin_area(ts, means)
    boot_r, boot_a = _bootstrap(ts, rec, n_boot, child_seed(seed, PROBE, "bootstrap"))
    res.add(PROBE, set_name, None, "basin_radius", _boot_stats(radius, boot_r, M))
    res.add(PROBE, set_name, None, "basin_area", _boot_stats(area, boot_a, M))
    res.arrays.update(ts=torch.tensor(ts, dtype=torch.float64), corrupted=z_all, restored=out_all, real_mask=mask,
                      **arrays)
    if h_all is not None:
        res.arrays["restored_entropy"] = h_all
    return res


def _outcomes(res: ProbeResult, set_name: str, ts: list[float], seqs: torch.Tensor, mask: torch.Tensor,
              z_all: torch.Tensor, out_all: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-``t`` rows (recovery, exact match, instability) and the per-sequence / per-token outcome arrays."""
    nt, M, _ = z_all.shape
    rec = torch.full((nt, M), float("nan"), dtype=torch.float64)
    exact = torch.zeros(nt, M, dtype=torch.bool)
    unstable = torch.full((nt, M), float("nan"), dtype=torch.float64)
    changed_all = (z_all != seqs) & mask
    ok_all = out_all == seqs
    for i, t in enumerate(ts):
        n_changed = changed_all[i].sum(1)
        unchanged = (z_all[i] == seqs) & mask
        n_unchanged_pos = unchanged.sum(1)
        rec[i] = (changed_all[i] & ok_all[i]).sum(1) / n_changed.to(torch.float64)  # NaN where 0/0
        unstable[i] = (unchanged & ~ok_all[i]).sum(1) / n_unchanged_pos.to(torch.float64)
        exact[i] = (ok_all[i] | ~mask).all(1)
        res.add(PROBE, set_name, t, "recovery_rate", summarize(rec[i]))
        res.add(PROBE, set_name, t, "exact_match", summarize(exact[i].to(torch.float64)))
        res.add(PROBE, set_name, t, "unstable_rate", summarize(unstable[i]))
        res.add(PROBE, set_name, t, "n_unchanged", {"value": int((n_changed == 0).sum()), "n": M})
        pooled = float((changed_all[i] & ok_all[i]).sum()) / max(1, int(n_changed.sum()))
        res.add(PROBE, set_name, t, "recovery_rate_tokens", {"value": pooled, "n": int(n_changed.sum())})
    return {"recovery": rec, "exact": exact, "unstable": unstable, "changed": changed_all,
            "recovered": changed_all & ok_all, "failed": changed_all & ~ok_all}


def _loop(denoiser, seqs, ts, steps, batch_size, greedy, final_greedy, seed, dev, progress, set_name,
          restored_entropy, entry="nearest", entropy_of="leave_one_out"):
    """``(z_all, out_all, h_all)`` ``[n_t, M, L]``: each ``t``'s chains batch by batch (one generator per ``t``)."""
    M, L = seqs.shape
    z_all = torch.zeros(len(ts), M, L, dtype=torch.long)
    out_all = torch.zeros(len(ts), M, L, dtype=torch.long)
    h_all = torch.zeros(len(ts), M, L, dtype=torch.float64) if restored_entropy else None
    total = sum(n_denoiser_calls(steps, t, entry=entry) + restored_entropy for t in ts) * len(range(0, M, batch_size))
    bar = progress_bar(total, f"basins {set_name}".strip(), progress)
    with torch.inference_mode():
        for i, t in enumerate(ts):
            g = make_generator(child_seed(seed, PROBE, t), dev)
            a_t = float(denoiser.schedule.alpha(t))
            for sl in batches(M, batch_size):
                x = seqs[sl].to(dev)
                z = process_of(denoiser).corrupt(x, a_t, generator=g)
                out = reverse_chain(
                    denoiser, z, t, steps, greedy=greedy, final_greedy=final_greedy, generator=g,
                    callback=lambda *_: bar.update(1), entry=entry,
                )
                z_all[i, sl], out_all[i, sl] = z.cpu(), out.cpu()
                if h_all is not None:  # the study's entropy: x_θ of the restored sequence at t_min
                    h_all[i, sl] = _conditional_entropy(denoiser, out, dev, entropy_of).cpu()
                    bar.update(1)
    bar.close()
    return z_all, out_all, h_all


def _restored_entropy(denoiser, out_all: torch.Tensor, batch_size: int, dev: torch.device,
                      entropy_of: str = "leave_one_out") -> torch.Tensor:
    """Per-token entropy of ``x_θ`` of the restored sequences at ``t_min`` (float64 ``[n_t, M, L]``)."""
    h_all = torch.zeros(out_all.shape, dtype=torch.float64)
    with torch.inference_mode():
        for i in range(out_all.shape[0]):
            for sl in batches(out_all.shape[1], batch_size):
                out = out_all[i, sl].to(dev)
                h_all[i, sl] = _conditional_entropy(denoiser, out, dev, entropy_of).cpu()
    return h_all


def _conditional_entropy(denoiser, out: torch.Tensor, dev: torch.device,
                         entropy_of: str = "leave_one_out") -> torch.Tensor:
    """Entropy of each token of ``out`` at ``t_min``: of the leave-one-out conditional (the process's, SPEC 2b), or
    of ``x_θ`` at its input under ``entropy_of="output"`` (:data:`~basinlab.probes.entropy.ENTROPY_OF`)."""
    return token_entropy(conditional_of(denoiser, out, tvec(T_MIN, out.shape[0], dev), entropy_of))


def _packed(denoiser, seqs, ts, steps, batch_size, final_greedy, seed, dev, compile_steps, entry="nearest"):
    """``(z_all, out_all)`` ``[n_t, M, L]``: every chain of every ``t`` packed into full batches, longest first;
    chain ``(i, m)`` has key ``chain_keys(seed', i·M + m)`` whatever the packing."""
    M, L = seqs.shape
    nt = len(ts)
    order = sorted(range(nt), key=lambda i: -ts[i])  # chains from large t are the longest: start them first
    x = torch.cat([seqs for _ in order]).to(dev)
    ids = torch.cat([torch.arange(M) + i * M for i in order])
    keys = chain_keys(child_seed(seed, PROBE, "packed"), ids)
    t_starts = [ts[i] for i in order for _ in range(M)]
    with torch.inference_mode():
        z, out = packed_chains(denoiser, x, t_starts, keys, steps, batch_size, final_greedy, compile=compile_steps,
                               entry=entry)
    z_all = torch.zeros(nt, M, L, dtype=torch.long)
    out_all = torch.zeros(nt, M, L, dtype=torch.long)
    for j, i in enumerate(order):
        z_all[i], out_all[i] = z[j * M : (j + 1) * M].cpu(), out[j * M : (j + 1) * M].cpu()
    return z_all, out_all


def _bootstrap(ts: list[float], rec: torch.Tensor, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Radius and area of ``n_boot`` resamples of the sequences (with replacement)."""
    M = rec.shape[1]
    if n_boot < 1 or M < 2:
        return np.array([]), np.array([])
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, M, (n_boot, M), generator=g)
    means = torch.nanmean(rec[:, idx], dim=2).numpy()  # [n_t, n_boot]
    r = np.array([basin_radius(ts, means[:, b]) for b in range(n_boot)])
    a = np.array([basin_area(ts, means[:, b]) for b in range(n_boot)])
    return r, a


def _boot_stats(value: float, boot: np.ndarray, n: int) -> dict:
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(value):
        return {"value": None, "n": n}
    if boot.size < 2:
        return {"value": value, "n": n}
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"value": value, "std": float(boot.std(ddof=1)), "ci_low": float(lo), "ci_high": float(hi), "n": n}
