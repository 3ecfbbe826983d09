"""The audit and the NELBO of texts laid out in canvases (SPEC 2c block layout; :mod:`basinlab.models.canvases`).

The canvases are scored per distinct prompt (every text's canvas 0 after ``[BOS]`` in one batch, canvas ``k >= 1``
after its text's own prompt) by the audit's probes, each with the denoiser bound to that prompt
(:func:`~basinlab.models.prompted.with_prompt`); no probe knows of prompts. Then each text's canvases combine into
one row per text:

- a per-token mean (``entropy`` over the counted tokens, ``recovery@t`` over the changed tokens, ``nelbo`` per
  token) is the mean over the whole text: each canvas's value weighted by the positions it is a mean over
  (:attr:`~basinlab.probes.audit.Score.weights`), canvases with none left out (NaN where the text has none). The
  NELBO of a text is thus the sum of its canvases' NELBOs over its tokens: the block model's bound on the text;
- a yes/no score (``fixed_point``) is 1 only if every canvas of the text is;
- ``nn_hamming_reference`` needs every audited and reference text to fit one canvas (else one line).

Per token, every token of a text at its position in the text (the PAD fill left out), ``tokens/lengths`` the
texts' lengths: ``tokens.parquet`` and ``audit.html`` show each text whole. The canvases of the first prompt
(``[BOS]``) draw with ``seed``, those of the ``j``-th further prompt with a child seed: texts that fit one canvas
score exactly as :func:`~basinlab.probes.audit.audit` scores them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.models.canvases import Canvases
from basinlab.models.prompted import with_prompt
from basinlab.probes.audit import Score, _audit_result, _score, construction_notes, scores_from_results
from basinlab.probes.novelty import nearest_hamming
from basinlab.probes.results import ProbeResult, child_seed
from basinlab.probes.tokens import TOP_K


def prompted_groups(denoiser: Any, layout: Canvases, seed: int) -> Iterator[tuple[Any, torch.Tensor, int]]:
    """``(denoiser bound to the prompt, canvas rows, seed)`` per distinct prompt of ``layout``."""
    for j, (prompt, rows) in enumerate(layout.groups()):
        yield with_prompt(denoiser, prompt), rows, seed if j == 0 else child_seed(seed, "canvas prompt", j)


def combine(values: torch.Tensor, weights: torch.Tensor | None, text: torch.Tensor, n_texts: int) -> torch.Tensor:
    """Per-canvas ``values [n]`` as per-text ``[n_texts]`` (module docstring): the ``weights``-weighted mean of
    each text's canvases (NaN values and zero weights left out), or with ``weights=None`` the smallest (a yes/no
    score is 1 only if every canvas is 1)."""
    v = values.to(torch.float64)
    if weights is None:
        return torch.full((n_texts,), math.inf, dtype=torch.float64).scatter_reduce(0, text, v, "amin")
    w = torch.where(v.isnan(), 0.0, weights.to(torch.float64))
    num = torch.zeros(n_texts, dtype=torch.float64).index_add(0, text, torch.where(w > 0, v * w, 0.0))
    den = torch.zeros(n_texts, dtype=torch.float64).index_add(0, text, w)
    return num / den  # NaN where a text has nothing to average


def audit_canvases(denoiser, layout: Canvases, *, groups: Sequence[str] | None = None,
                   reference: Canvases | None = None, seed: int = 0, top_k: int = TOP_K, **options: Any
                   ) -> ProbeResult:
    """:func:`~basinlab.probes.audit.audit` of the texts of ``layout``: one score row per text (the module
    docstring says how its canvases combine), ``tokens/*`` arrays per text with ``tokens/lengths``. ``options``:
    the audit's (``ts``, ``entropy_t``, ``steps``, ``t_start``, ``nelbo_times``, ``batch_size``, ``progress``,
    ``device``, ``protocol``); the ``paper`` NELBO counts every position but PAD."""
    n = layout.n_texts
    groups = ["text"] * n if groups is None else [str(g) for g in groups]
    if len(groups) != n or n == 0:
        raise BasinlabError(f"audit: {len(groups)} group labels for {n} texts (at least one text needed)")
    if reference is not None and not (layout.single_canvas and reference.single_canvas):
        raise BasinlabError("--reference needs every audited and reference text to fit one canvas of "
                            f"{layout.seqs.shape[1]} tokens; drop --reference for longer texts")
    opts = {"ts": (0.25,), "entropy_t": 1e-5, "steps": 100, "t_start": 1.0, "nelbo_times": 8, "batch_size": 256,
            "progress": False, "device": None, "protocol": "exact", **options,
            "top_k": max(1, min(int(top_k), denoiser.vocab_size))}
    canvas_scores, canvas_tokens = _score_groups(denoiser, layout, seed, opts)
    scores = [Score(s.name, s.probe, s.t, s.direction, combine(s.values, s.weights, layout.text, n))
              for s in canvas_scores]
    if reference is not None:
        scores.append(scores_from_results(
            nearest=nearest_hamming(layout.seqs, reference.seqs, layout.mask, reference.mask)[0])[0])
    text_mask = layout.per_text(layout.mask, False)
    res = _audit_result(scores, groups, text_mask)
    res.arrays["notes"] = construction_notes(denoiser)
    res.arrays.update({"tokens/seqs": layout.per_text(layout.seqs, layout.pad_id), "tokens/mask": text_mask,
                       "tokens/lengths": layout.lengths.clone()})
    fills = {"tokens/entropy": math.nan, "tokens/top_ids": 0, "tokens/top_probs": math.nan,
             "tokens/corrupted_id": layout.pad_id, "tokens/restored_id": layout.pad_id}
    for key, fill in fills.items():
        res.arrays[key] = layout.per_text(canvas_tokens[key], fill)
    res.arrays["tokens/basin_t"] = canvas_tokens["tokens/basin_t"]
    return res


def _score_groups(denoiser, layout: Canvases, seed: int, opts: dict[str, Any]
                  ) -> tuple[list[Score], dict[str, Any]]:
    """The audit's per-canvas scores (with their weights) and per-token arrays ``[n, C, ...]``, scored per prompt."""
    n = layout.seqs.shape[0]
    scores: list[Score] | None = None
    tokens: dict[str, Any] = {}
    for den, rows, group_seed in prompted_groups(denoiser, layout, seed):
        seqs = layout.seqs[rows]
        part, part_tokens = _score(den, seqs, layout.mask[rows], **opts, seed=group_seed,
                                   attention_mask=seqs != layout.pad_id)
        if scores is None:
            scores = [Score(s.name, s.probe, s.t, s.direction, torch.full((n,), math.nan, dtype=torch.float64),
                            None if s.weights is None else torch.zeros(n, dtype=torch.long)) for s in part]
        for whole, s in zip(scores, part, strict=True):
            whole.values[rows] = s.values
            if whole.weights is not None:
                whole.weights[rows] = s.weights.long().cpu()
        for key, v in part_tokens.items():
            if key == "tokens/basin_t":
                tokens[key] = v
                continue
            if key not in tokens:
                tokens[key] = torch.zeros((n, *v.shape[1:]), dtype=v.dtype)
            tokens[key][rows] = v.cpu()
    return scores or [], tokens


def nelbo_canvases(denoiser, layout: Canvases, *, n_times: int = 8, t_eps: float = 1e-3, seed: int = 0,
                   batch_size: int = 256) -> dict[str, Any]:
    """NELBO per real token of the texts of ``layout`` (``basinlab nll --texts``): each canvas's NELBO after its
    prompt (:func:`~basinlab.diffusion.nelbo.estimate_nelbo`, per prompt), summed over all canvases and divided by
    their real tokens. Keys ``nelbo, diffusion, recon, prior, ppl_bound, n_tokens``."""
    from basinlab.diffusion.nelbo import estimate_nelbo

    total = {"diffusion": 0.0, "recon": 0.0}
    n_tokens, prior = 0, 0.0
    for den, rows, group_seed in prompted_groups(denoiser, layout, seed):
        out = estimate_nelbo(den, layout.seqs[rows].to(den.device), layout.mask[rows], n_times=n_times,
                             t_eps=t_eps, seed=group_seed, batch_size=batch_size)
        for k in total:
            total[k] += out[k] * out["n_tokens"]
        n_tokens, prior = n_tokens + out["n_tokens"], out["prior"]
    diffusion, recon = (total[k] / max(n_tokens, 1) for k in ("diffusion", "recon"))
    nelbo = diffusion + recon + prior
    return {"nelbo": nelbo, "diffusion": diffusion, "recon": recon, "prior": prior,
            "ppl_bound": math.exp(min(nelbo, 700.0)), "n_tokens": n_tokens}
