"""Likelihood (SPEC 5): NELBO per real token and the perplexity bound, wrapping ``estimate_nelbo`` (SPEC 4).

``nelbo`` is the token-weighted mean (total over real tokens); its std and interval come from the per-sequence
NELBOs weighted by their real-token counts. ``ppl_bound = exp(nelbo)`` with the interval mapped through ``exp``.
The diffusion, reconstruction and prior terms are reported as bare rows.

``integrand_only=True`` (the ``paper`` protocol, SPEC 5 "Protocols") reports what the study reports: ``nelbo`` =
the mean of the integrand ``f`` over the sampled times and tokens, with no reconstruction or prior term and no
``1 - t_eps`` weight (Duo's validation loss), and ``ppl_bound = exp`` of it; no term rows Under ``paper`` the tokens are
those of the study's attention mask (``count_special`` with ``attention_mask``): BOS and EOS count, PAD does not.
"""

from __future__ import annotations

import math

import torch

from basinlab.diffusion import estimate_nelbo
from basinlab.probes._common import check_seqs, denoiser_device
from basinlab.probes.results import ProbeResult, summarize

PROBE = "likelihood"


def likelihood(
    denoiser,
    seqs: torch.Tensor,
    *,
    set_name: str = "",
    seed: int = 0,
    batch_size: int = 256,
    real_mask: torch.Tensor | None = None,
    progress: bool = False,
    n_times: int = 8,
    t_eps: float = 1e-3,
    device: torch.device | str | None = None,
    integrand_only: bool = False,
    count_special: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> ProbeResult:
    """``nelbo``, ``ppl_bound``, ``nelbo_diffusion``, ``nelbo_recon``, ``nelbo_prior`` of ``seqs [M, L]``
    (``integrand_only``: ``nelbo`` and ``ppl_bound`` of the study's definition, see the module docstring).

    ``count_special=True`` (``paper``): the positions of ``attention_mask`` count (the study's: BOS/EOS too, PAD
    not; :meth:`~basinlab.data.sequences.SequenceData.attention_mask`), every position when it is None;
    ``real_mask`` ignored.

    ``.arrays``: ``per_seq`` (NELBO per real token of each sequence), ``n_tokens`` ``[M]``.
    """
    seqs, mask = check_seqs(seqs, denoiser.vocab_size, attention_mask if count_special else real_mask)
    dev = denoiser_device(denoiser, device)
    out = estimate_nelbo(denoiser, seqs.to(dev), real_mask=mask, n_times=n_times, t_eps=t_eps, seed=seed,
                         batch_size=batch_size, progress=progress)
    key = "integrand" if integrand_only else "nelbo"
    per_seq = out["per_seq_integrand" if integrand_only else "per_seq"].cpu()
    n_tok = mask.sum(1).to(torch.float64)
    stats = summarize(per_seq, weights=n_tok)
    stats["value"] = out[key]  # identical to the weighted mean up to rounding
    res = ProbeResult()
    res.add(PROBE, set_name, None, "nelbo", stats)
    ppl = {"value": _exp(out[key]), "n": stats["n"]}
    if stats["ci_low"] is not None:
        ppl.update(ci_low=_exp(stats["ci_low"]), ci_high=_exp(stats["ci_high"]))
    res.add(PROBE, set_name, None, "ppl_bound", ppl)
    for k in () if integrand_only else ("diffusion", "recon", "prior"):
        res.add(PROBE, set_name, None, f"nelbo_{k}", {"value": out[k], "n": out["n_tokens"]})
    res.arrays.update(per_seq=per_seq, n_tokens=n_tok)
    return res


def _exp(x: float) -> float:
    """``exp`` that overflows to ``inf`` instead of raising."""
    return math.exp(x) if x < 709.0 else math.inf
