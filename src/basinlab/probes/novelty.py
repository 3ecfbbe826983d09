"""Generation and novelty (SPEC 5).

Samples come from pure noise (``t = 1``, ``T`` steps, greedy final step: :func:`generate_samples`; the ``paper``
protocol ends with ``argmax x_θ`` alone). Per sample:

- ``copy_rate``: the sample equals a training sequence (normalised Hamming distance 0);
- ``nn_hamming_train`` / ``nn_hamming_test``: normalised Hamming distance to the nearest training / test sequence.
  With real-token masks, the distance between ``a`` and ``b`` counts the positions real in either and not equal
  with both real, divided by the number of positions real in either (all ``L`` positions without masks);
- ``novel_4gram_rate``: fraction of the sample's 4-grams (real tokens only) absent from the training subset;
- ``sample_fixed_point_rate``: the sample is a fixed point of the greedy chain from itself at ``t_start``;
- ``spurious_rate``: a fixed point that copies no training sequence (a spurious, or creative, memory).

Distances are computed position by position over chunks of the reference set: memory ``O(S · chunk)``.
"""

from __future__ import annotations

import torch

from basinlab.diffusion import generate
from basinlab.probes._common import check_seqs, denoiser_device, make_generator
from basinlab.probes.fixed_points import greedy_restore
from basinlab.probes.results import ProbeResult, summarize

PROBE = "novelty"


def generate_samples(
    denoiser,
    n: int,
    length: int,
    steps: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
    final_bayes: bool = True,
) -> torch.Tensor:
    """``n`` samples from pure noise (stochastic chain, greedy final step; SPEC 5), long ``[n, length]`` on CPU.

    ``final_bayes=False`` ends with ``argmax x_θ`` alone (the ``paper`` protocol, SPEC 5 "Protocols").
    """
    dev = denoiser_device(denoiser, device)
    g = make_generator(seed, dev)
    with torch.inference_mode():
        out = generate(denoiser, n, length, steps=steps, greedy=False, final_greedy=True, batch_size=batch_size,
                       generator=g, device=dev, progress=progress, final_bayes=final_bayes)
    return out.cpu()


def nearest_hamming(
    queries: torch.Tensor,
    refs: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    ref_mask: torch.Tensor | None = None,
    chunk_elements: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised Hamming distance of each query to its nearest reference, and that reference's index.

    ``queries [S, L]``, ``refs [N, L]``; float64 ``[S]`` and long ``[S]``. See the module docstring for masks.
    """
    S, L = queries.shape
    N = refs.shape[0]
    qm = torch.ones_like(queries, dtype=torch.bool) if query_mask is None else query_mask.bool()
    rm = torch.ones_like(refs, dtype=torch.bool) if ref_mask is None else ref_mask.bool()
    best = torch.full((S,), float("inf"), dtype=torch.float64)
    arg = torch.zeros(S, dtype=torch.long)
    if N == 0:
        return best, arg
    chunk = max(1, chunk_elements // max(1, S))
    for n0 in range(0, N, chunk):
        r, m = refs[n0 : n0 + chunk], rm[n0 : n0 + chunk]
        same = torch.zeros(S, r.shape[0], dtype=torch.int32)
        union = torch.zeros(S, r.shape[0], dtype=torch.int32)
        for l in range(L):
            both = qm[:, l, None] & m[None, :, l]
            same += (both & (queries[:, l, None] == r[None, :, l])).to(torch.int32)
            union += (qm[:, l, None] | m[None, :, l]).to(torch.int32)
        d = (union - same).to(torch.float64) / union.clamp_min(1).to(torch.float64)
        dmin, amin = d.min(1)
        better = dmin < best
        best = torch.where(better, dmin, best)
        arg = torch.where(better, amin + n0, arg)
    return best, arg


def ngrams(seqs: torch.Tensor, mask: torch.Tensor, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``n``-gram ``[M, L-n+1, n]`` and whether it lies entirely on real tokens ``[M, L-n+1]``."""
    M, L = seqs.shape
    if L < n:
        return torch.zeros(M, 0, n, dtype=torch.long), torch.zeros(M, 0, dtype=torch.bool)
    grams = seqs.long().unfold(1, n, 1)
    ok = mask.bool().unfold(1, n, 1).all(-1)
    return grams, ok


def novel_ngram_rate(
    samples: torch.Tensor, sample_mask: torch.Tensor, train: torch.Tensor, train_mask: torch.Tensor,
    vocab_size: int, n: int = 4,
) -> torch.Tensor:
    """Per sample, the fraction of its real ``n``-grams absent from the training set (NaN if it has none).

    Exact: ``n``-grams are base-``V`` integers when ``V^n < 2^63``, else rows matched by ``torch.unique``.
    """
    tg, tok = ngrams(train, train_mask, n)
    sg, sok = ngrams(samples, sample_mask, n)
    train_grams = tg[tok]  # [K, n]
    S, P = sok.shape
    flat = sg.reshape(S * P, n)
    if vocab_size**n < 2**63:
        base = vocab_size ** torch.arange(n - 1, -1, -1, dtype=torch.long)
        known = torch.unique((train_grams * base).sum(-1))  # sorted
        codes = (flat * base).sum(-1)
    else:
        _, inv = torch.unique(torch.cat([train_grams, flat]), dim=0, return_inverse=True)
        known = torch.unique(inv[: train_grams.shape[0]])
        codes = inv[train_grams.shape[0] :]
    if known.numel() == 0:
        present = torch.zeros(S * P, dtype=torch.bool)
    else:
        pos = torch.searchsorted(known, codes).clamp_max(known.numel() - 1)
        present = known[pos] == codes
    absent = (~present.reshape(S, P) & sok).sum(1).to(torch.float64)
    return absent / sok.sum(1).to(torch.float64)


def novelty(
    denoiser,
    samples: torch.Tensor,
    *,
    train: torch.Tensor,
    test: torch.Tensor | None = None,
    set_name: str = "generated",
    seed: int = 0,
    batch_size: int = 256,
    real_mask: torch.Tensor | None = None,
    train_mask: torch.Tensor | None = None,
    test_mask: torch.Tensor | None = None,
    progress: bool = False,
    t_start: float = 1.0,
    steps: int = 1000,
    ngram: int = 4,
    fixed_points: bool = True,
    device: torch.device | str | None = None,
) -> ProbeResult:
    """Novelty metrics of ``samples [S, L]`` against the training subset ``train`` (and ``test``); SPEC 5.

    ``.arrays``: ``copy``, ``nn_train``, ``nn_train_index``, ``nn_test``, ``novel_ngram``, ``fixed``, ``spurious``
    (all ``[S]``). ``fixed_points=False`` skips the greedy chains (no ``sample_fixed_point_rate``/``spurious_rate``).
    """
    del seed  # nothing random: distances, n-grams and greedy chains
    V = denoiser.vocab_size
    samples, smask = check_seqs(samples, V, real_mask)
    train, tmask = check_seqs(train, V, train_mask)
    res = ProbeResult()
    nn_train, nn_idx = nearest_hamming(samples, train, smask, tmask)
    copy = nn_train == 0
    res.add(PROBE, set_name, None, "copy_rate", summarize(copy.to(torch.float64)))
    res.add(PROBE, set_name, None, "nn_hamming_train", summarize(nn_train))
    res.arrays.update(copy=copy, nn_train=nn_train, nn_train_index=nn_idx)
    if test is not None:
        test, emask = check_seqs(test, V, test_mask)
        nn_test, _ = nearest_hamming(samples, test, smask, emask)
        res.add(PROBE, set_name, None, "nn_hamming_test", summarize(nn_test))
        res.arrays["nn_test"] = nn_test
    novel = novel_ngram_rate(samples, smask, train, tmask, V, ngram)
    res.add(PROBE, set_name, None, f"novel_{ngram}gram_rate", summarize(novel))
    res.arrays["novel_ngram"] = novel
    if fixed_points:
        restored = greedy_restore(denoiser, samples, t_start=t_start, steps=steps, batch_size=batch_size,
                                  progress=progress, device=device, desc="novelty fixed points")
        fixed = ((restored == samples) | ~smask).all(1)
        spurious = fixed & ~copy
        res.add(PROBE, set_name, None, "sample_fixed_point_rate", summarize(fixed.to(torch.float64)))
        res.add(PROBE, set_name, None, "spurious_rate", summarize(spurious.to(torch.float64)))
        res.arrays.update(fixed=fixed, spurious=spurious)
    return res
