"""Fixed-point test (SPEC 5): start from the clean ``x`` at ``t_start``, greedy chain, greedy final step.

``fixed_point_rate`` is the share of sequences that come back unchanged on their real tokens. No randomness is
drawn (every step is an argmax), so the result does not depend on the seed.
"""

from __future__ import annotations

import torch

from basinlab.diffusion import n_denoiser_calls, reverse_chain
from basinlab.probes._common import batches, check_seqs, denoiser_device, progress_bar
from basinlab.probes.results import ProbeResult, summarize

PROBE = "fixed_points"


def greedy_restore(
    denoiser,
    seqs: torch.Tensor,
    *,
    t_start: float = 1.0,
    steps: int = 1000,
    batch_size: int = 256,
    progress: bool = False,
    device: torch.device | str | None = None,
    desc: str = "fixed points",
    entry: str = "nearest",
) -> torch.Tensor:
    """The greedy chain (greedy final step) run from each clean sequence at ``t_start``, long ``[M, L]`` on CPU
    (``entry``: how the chain enters the grid, :func:`~basinlab.diffusion.sampler.start_index`)."""
    dev = denoiser_device(denoiser, device)
    seqs = torch.as_tensor(seqs).long().cpu()
    M = seqs.shape[0]
    out = torch.empty_like(seqs)
    bar = progress_bar(n_denoiser_calls(steps, t_start, entry=entry) * len(range(0, M, batch_size)), desc, progress)
    with torch.inference_mode():
        for sl in batches(M, batch_size):
            z = seqs[sl].to(dev)
            out[sl] = reverse_chain(
                denoiser, z, t_start, steps, greedy=True, final_greedy=True, callback=lambda *_: bar.update(1),
                entry=entry,
            ).cpu()
    bar.close()
    return out


def fixed_point_test(
    denoiser,
    seqs: torch.Tensor,
    *,
    set_name: str = "",
    seed: int = 0,
    batch_size: int = 256,
    real_mask: torch.Tensor | None = None,
    progress: bool = False,
    t_start: float = 1.0,
    steps: int = 1000,
    device: torch.device | str | None = None,
    count_special: bool = False,
    entry: str = "nearest",
) -> ProbeResult:
    """``fixed_point_rate`` of ``seqs [M, L]`` (SPEC 5). ``.arrays``: ``fixed [M]`` bool, ``restored [M, L]``.

    ``paper`` protocol (SPEC 5 "Protocols"): ``count_special=True`` compares every position (BOS/EOS/PAD too),
    ignoring ``real_mask``; ``entry="above"`` enters the grid at the smallest point ``>= t_start``.
    """
    del seed  # deterministic: greedy everywhere
    seqs, mask = check_seqs(seqs, denoiser.vocab_size, None if count_special else real_mask)
    out = greedy_restore(denoiser, seqs, t_start=t_start, steps=steps, batch_size=batch_size, progress=progress,
                         device=device, desc=f"fixed points {set_name}".strip(), entry=entry)
    fixed = ((out == seqs) | ~mask).all(1)
    res = ProbeResult()
    res.add(PROBE, set_name, t_start, "fixed_point_rate", summarize(fixed.to(torch.float64)))
    res.arrays.update(fixed=fixed, restored=out)
    return res
