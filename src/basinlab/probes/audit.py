"""Memorisation audit of given texts, and the membership AUC (SPEC 5 scores per sequence; any denoiser).

Per sequence, from the existing probes (nothing is re-implemented here):

- ``entropy``: mean leave-one-out conditional entropy over real tokens at ``entropy_t`` (default 1e-5, the clean
  input; :func:`~basinlab.probes.entropy.conditional_entropy`);
- ``recovery@t``: share of the corrupted real tokens the stochastic chain restores, per ``t``
  (:func:`~basinlab.probes.basins.basin_test`; NaN where the corruption changed nothing);
- ``fixed_point``: 1 when the greedy chain from ``t_start`` returns the sequence unchanged
  (:func:`~basinlab.probes.fixed_points.fixed_point_test`);
- ``nelbo``: NELBO per real token (:func:`~basinlab.probes.likelihood.likelihood`);
- ``nn_hamming_reference`` (with a reference set): normalised Hamming distance to the nearest reference sequence
  (:func:`~basinlab.probes.novelty.nearest_hamming`).

**Membership AUC.** For each score, the ROC AUC of telling members (e.g. a model's training sequences) from
non-members, oriented so that 1.0 means members look *more memorised* (lower entropy, NELBO and distance; higher
recovery and fixed-point rate) and 0.5 means no difference. Ties count one half (Mann-Whitney); NaN scores are
left out. The 95% interval is DeLong's (the structural-components variance of the Mann-Whitney statistic,
DeLong et al. 1988), normal approximation clipped to [0, 1]: deterministic, no resampling. At a perfect
separation its variance is 0 and the interval collapses to the point.

**TPR at low FPR.** Membership-inference practice also reports the true-positive rate at a low false-positive
rate: ``tpr_at_fpr_0.01`` and ``tpr_at_fpr_0.001`` are the largest TPR among the points of the empirical ROC
(:func:`roc_curve`: one point per distinct threshold, calling "member" when ``direction * score >= threshold``,
plus ``(0, 0)``) whose FPR is at most the level; no interpolation between points. With fewer than ``1 / level``
non-members the only such points have FPR 0. ``auc.json`` gives this convention (basinlab's) and SAMA's side by side
at 10%, 1% and 0.1% FPR: ``tpr_at_nearest_fpr_<level>`` is the TPR of the ROC point whose FPR is *nearest* the
level (it may lie above it; ``fpr_nearest_<level>`` says where), so that numbers compare with published tables.

Per token (``tokens/*`` arrays of :func:`audit`, ``tokens.parquet``): :mod:`basinlab.probes.tokens`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from basinlab.errors import BasinlabError
from basinlab.probes._common import check_seqs
from basinlab.probes.basins import basin_test
from basinlab.probes.entropy import conditional_entropy
from basinlab.probes.fixed_points import fixed_point_test
from basinlab.probes.likelihood import likelihood
from basinlab.probes.novelty import nearest_hamming
from basinlab.probes.protocol import protocol_options
from basinlab.probes.results import ProbeResult, summarize
from basinlab.probes.tokens import TOP_K, token_predictions

PROBE = "audit"
MEMBERSHIP = "membership_auc"
#: false-positive rates at which the true-positive rate is reported (metric ``tpr_at_fpr_<level>``)
FPR_LEVELS = (0.01, 0.001)
#: the levels of ``auc.json``'s two low-FPR conventions (basinlab's ``tpr_at_fpr_<a>``, SAMA's
#: ``tpr_at_nearest_fpr_<a>``), as the membership-inference tables report them (10%, 1%, 0.1% FPR)
AUC_JSON_LEVELS = (0.1, 0.01, 0.001)
#: the ``set`` of a membership row: members versus non-members
VERSUS = "member_vs_nonmember"
_Z975 = 1.959963984540054


@dataclass
class Score:
    """One per-sequence score: where it comes from (``probe``, ``t``) and which way is "more memorised".

    ``weights`` ``[M]``: how many positions each value is a mean over (the entropy's counted tokens, the changed
    tokens of ``recovery@t``, the NELBO's tokens); ``None`` for a yes/no score (``fixed_point``) or a distance.
    Texts of several canvases combine their canvases' values with them (:mod:`basinlab.probes.canvases`)."""

    name: str
    probe: str
    t: float | None
    direction: int  # +1: higher = more memorised; -1: lower = more memorised
    values: torch.Tensor  # float64 [M]
    weights: torch.Tensor | None = None


def scores_from_results(
    *,
    basins: ProbeResult | None = None,
    fixed_points: ProbeResult | None = None,
    entropy: ProbeResult | None = None,
    likelihood: ProbeResult | None = None,
    nearest: torch.Tensor | None = None,
    t_start: float | None = None,
) -> list[Score]:
    """The per-sequence scores held in the probes' results (their ``arrays``), in a fixed order."""
    out: list[Score] = []
    if entropy is not None:
        t = float(entropy.arrays["ts"][0])
        out.append(Score("entropy", "entropy", t, -1, entropy.arrays["entropy_seq"][0].to(torch.float64),
                         (~entropy.arrays["entropy"][0].isnan()).sum(-1) if "entropy" in entropy.arrays else None))
    if basins is not None:
        for i, t in enumerate(basins.arrays["ts"].tolist()):
            out.append(Score(f"recovery@{t:g}", "basins", t, +1, basins.arrays["recovery"][i].to(torch.float64),
                             basins.arrays["changed"][i].sum(-1) if "changed" in basins.arrays else None))
    if fixed_points is not None:
        out.append(Score("fixed_point", "fixed_points", t_start, +1, fixed_points.arrays["fixed"].to(torch.float64)))
    if likelihood is not None:
        out.append(Score("nelbo", "likelihood", None, -1, likelihood.arrays["per_seq"].to(torch.float64),
                         likelihood.arrays.get("n_tokens")))
    if nearest is not None:
        out.append(Score("nn_hamming_reference", "novelty", None, -1, nearest.to(torch.float64)))
    return out


def membership_auc(members: Any, nonmembers: Any, direction: int = 1) -> dict[str, Any]:
    """ROC AUC that ``direction * score`` ranks members above non-members, with DeLong's 95% interval.

    NaN scores are dropped; ties count 1/2; ``±inf`` compare as usual. Returns the tidy statistics
    ``value, std, ci_low, ci_high, n`` (``std`` = DeLong's standard error; ``n`` = members + non-members used).
    """
    pos = direction * np.asarray(torch.as_tensor(members, dtype=torch.float64).cpu(), dtype=np.float64).ravel()
    neg = direction * np.asarray(torch.as_tensor(nonmembers, dtype=torch.float64).cpu(), dtype=np.float64).ravel()
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return {"value": None, "std": None, "ci_low": None, "ci_high": None, "n": m + n}
    sneg, spos = np.sort(neg), np.sort(pos)
    # V10[i] = P(neg < pos_i) + P(neg == pos_i) / 2; V01[j] = P(pos > neg_j) + P(pos == neg_j) / 2
    v10 = (np.searchsorted(sneg, pos, "left") + np.searchsorted(sneg, pos, "right")) / (2.0 * n)
    v01 = ((m - np.searchsorted(spos, neg, "right")) + (m - np.searchsorted(spos, neg, "left"))) / (2.0 * m)
    auc = float(v10.mean())
    var = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    se = math.sqrt(max(var, 0.0))
    return {"value": auc, "std": se, "ci_low": max(0.0, auc - _Z975 * se), "ci_high": min(1.0, auc + _Z975 * se),
            "n": m + n}


def tpr_metric(level: float) -> str:
    """The metric name of the TPR at FPR ``level``: ``tpr_at_fpr_0.01``."""
    return f"tpr_at_fpr_{level:g}"


def tpr_at_fpr(members: Any, nonmembers: Any, direction: int = 1, level: float = 0.01) -> dict[str, Any]:
    """The largest TPR on the empirical ROC with FPR <= ``level`` (module docstring); ``value`` None when either
    group is empty, ``n`` = members + non-members used."""
    pos, neg = _oriented(members, direction), _oriented(nonmembers, direction)
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return {"value": None, "n": m + n}
    thr = np.unique(np.concatenate([pos, neg]))
    fp = n - np.searchsorted(np.sort(neg), thr, "left")  # non-members with score >= threshold
    tp = m - np.searchsorted(np.sort(pos), thr, "left")
    ok = fp <= level * n * (1 + 1e-12)
    return {"value": float(tp[ok].max()) / m if ok.any() else 0.0, "n": m + n}


def nearest_metric(level: float) -> str:
    """The metric name of SAMA's convention at FPR ``level``: ``tpr_at_nearest_fpr_0.01``."""
    return f"tpr_at_nearest_fpr_{level:g}"


def tpr_at_nearest_fpr(members: Any, nonmembers: Any, direction: int = 1, level: float = 0.01) -> dict[str, Any]:
    """SAMA's convention: the TPR of the empirical ROC point (:func:`roc_curve`, every point kept) whose FPR is
    nearest ``level`` (of several at that FPR, the highest TPR); also ``fpr``, that point's FPR, which may exceed
    ``level``. ``value`` None when either group is empty."""
    pos, neg = _oriented(members, direction), _oriented(nonmembers, direction)
    if pos.size == 0 or neg.size == 0:
        return {"value": None, "fpr": None, "n": pos.size + neg.size}
    fpr, tpr = roc_curve(pos, neg, 1)
    gap = np.abs(fpr - level)
    near = gap <= gap.min() + 1e-12
    best = int(np.flatnonzero(near)[np.argmax(tpr[near])])
    return {"value": float(tpr[best]), "fpr": float(fpr[best]), "n": pos.size + neg.size}


def low_fpr_table(members: Any, nonmembers: Any, direction: int) -> dict[str, Any]:
    """Both low-FPR conventions at every :data:`AUC_JSON_LEVELS` level: ``tpr_at_fpr_<a>`` (basinlab: the largest
    TPR with FPR <= a) and ``tpr_at_nearest_fpr_<a>`` (SAMA: the ROC point nearest a) with ``fpr_nearest_<a>``."""
    out: dict[str, Any] = {}
    for level in AUC_JSON_LEVELS:
        out[tpr_metric(level)] = tpr_at_fpr(members, nonmembers, direction, level)["value"]
        near = tpr_at_nearest_fpr(members, nonmembers, direction, level)
        out[nearest_metric(level)], out[f"fpr_nearest_{level:g}"] = near["value"], near["fpr"]
    return out


def _oriented(x: Any, direction: int) -> np.ndarray:
    v = direction * np.asarray(torch.as_tensor(x, dtype=torch.float64).cpu(), dtype=np.float64).ravel()
    return v[~np.isnan(v)]


def membership_rows(members: Sequence[Score], nonmembers: Sequence[Score], set_name: str = VERSUS) -> list[dict]:
    """Per score present in both lists (``probe`` and ``t`` name the score), one ``membership_auc`` row and one
    ``tpr_at_fpr_<level>`` row per :data:`FPR_LEVELS` entry."""
    other = {s.name: s for s in nonmembers}
    res = ProbeResult()
    for s in members:
        if s.name in other:
            res.add(s.probe, set_name, s.t, MEMBERSHIP, membership_auc(s.values, other[s.name].values, s.direction))
            for level in FPR_LEVELS:
                res.add(s.probe, set_name, s.t, tpr_metric(level),
                        tpr_at_fpr(s.values, other[s.name].values, s.direction, level))
    return res.rows


def membership_rows_from_results(train: Mapping[str, ProbeResult], test: Mapping[str, ProbeResult],
                                 set_name: str = "train_vs_test", t_start: float | None = None) -> list[dict]:
    """Membership AUC rows of a model's training set against the test set, from the probes already run on both
    (keys ``basins``, ``fixed_points``, ``entropy``, ``likelihood``; any may be missing)."""
    keys = ("basins", "fixed_points", "entropy", "likelihood")
    a = scores_from_results(**{k: train.get(k) for k in keys}, t_start=t_start)
    b = scores_from_results(**{k: test.get(k) for k in keys}, t_start=t_start)
    return membership_rows(a, b, set_name)


def membership_rows_from_arrays(arrays: Mapping[str, Any], t_start: float | None = None, members: str = "train",
                                nonmembers: str = "test", set_name: str = "train_vs_test") -> list[dict]:
    """The same rows from a combined result's arrays keyed ``"{probe}/{set}/{name}"`` (as ``ProbeResult.extend``
    with a prefix writes them)."""
    def view(probe: str, s: str) -> ProbeResult | None:
        pre = f"{probe}/{s}/"
        sub = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
        return ProbeResult(arrays=sub) if sub else None

    keys = ("basins", "fixed_points", "entropy", "likelihood")
    return membership_rows_from_results({k: view(k, members) for k in keys}, {k: view(k, nonmembers) for k in keys},
                                        set_name, t_start)


def audit(
    denoiser,
    seqs: torch.Tensor,
    *,
    groups: Sequence[str] | None = None,
    real_mask: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    reference_mask: torch.Tensor | None = None,
    ts: Sequence[float] = (0.25,),
    entropy_t: float = 1e-5,
    steps: int = 100,
    t_start: float = 1.0,
    nelbo_times: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
    device: torch.device | str | None = None,
    top_k: int = TOP_K,
    protocol: str = "exact",
    attention_mask: torch.Tensor | None = None,
) -> ProbeResult:
    """Memorisation scores of each sequence of ``seqs [M, L]`` and, where ``groups`` holds both ``member`` and
    ``nonmember`` labels, the membership AUC of every score (see the module docstring).

    ``groups`` (length ``M``; default all ``text``) labels the rows. Rows: per group and score the mean with its
    interval (``probe="audit"``, ``set`` = group, ``metric`` = score), and ``membership_auc`` rows
    (``set="member_vs_nonmember"``). ``.arrays``: ``score/<name>`` float64 ``[M]``, ``n_tokens [M]``, and the
    per-token data of :mod:`basinlab.probes.tokens`: ``tokens/seqs``, ``tokens/mask`` ``[M, L]``, ``tokens/entropy``
    ``[M, L]``, ``tokens/top_ids`` and ``tokens/top_probs`` ``[M, L, top_k]``, ``tokens/corrupted_id`` and
    ``tokens/restored_id`` ``[M, L]`` (basin test at ``ts[0]``, held in ``tokens/basin_t``).
    ``lengths`` (``[M]``, each ``<= L``): every row is scored at its own length, ``seqs[i, :lengths[i]]``; the
    positions after it are padding that the denoiser never sees (rows of one length are scored together; a model
    that attends to every position, as LLaDA and Dream, SPEC 2c). ``tokens/lengths`` then holds them.
    ``protocol``: the probes' definitions, as the sweep's (:func:`~basinlab.probes.protocol.protocol_options`);
    ``attention_mask``: the positions the ``paper`` NELBO counts (all but PAD; every position when None).
    """
    seqs, mask = check_seqs(seqs, denoiser.vocab_size, real_mask)
    M = seqs.shape[0]
    groups = ["text"] * M if groups is None else [str(g) for g in groups]
    if len(groups) != M:
        raise BasinlabError(f"audit: {len(groups)} group labels for {M} sequences")
    if M == 0:
        raise BasinlabError("audit: no sequences to score")
    opts = {"seed": seed, "batch_size": batch_size, "progress": progress, "device": device, "ts": list(ts),
            "entropy_t": entropy_t, "steps": steps, "t_start": t_start, "nelbo_times": nelbo_times, "top_k": top_k,
            "protocol": protocol, "attention_mask": attention_mask}
    if lengths is None:
        scores, tokens = _score(denoiser, seqs, mask, **opts)
    else:
        scores, tokens = _score_by_length(denoiser, seqs, mask, torch.as_tensor(lengths).long().cpu(), **opts)
    if reference is not None:
        ref, rmask = check_seqs(reference, denoiser.vocab_size, reference_mask)
        if ref.shape[1] != seqs.shape[1]:
            raise BasinlabError(f"reference sequences have length {ref.shape[1]}, the audited ones {seqs.shape[1]}")
        nearest = nearest_hamming(seqs, ref, mask, rmask)[0]
        scores.append(scores_from_results(nearest=nearest)[0])
    res = _audit_result(scores, groups, mask)
    res.arrays["notes"] = construction_notes(denoiser)
    res.arrays.update({"tokens/seqs": seqs, "tokens/mask": mask, **tokens})
    if lengths is not None:
        res.arrays["tokens/lengths"] = torch.as_tensor(lengths).long().cpu()
    return res


def _score(denoiser, seqs: torch.Tensor, mask: torch.Tensor, *, ts, entropy_t, steps, t_start, nelbo_times,
           top_k, protocol, attention_mask=None, **kw) -> tuple[list[Score], dict[str, Any]]:
    """The per-sequence scores and per-token arrays of ``seqs`` (all of one length)."""
    kw = {**kw, "real_mask": mask}
    opts = protocol_options(protocol)
    basin_opts = {k: v for k, v in opts["basins"].items() if k != "restored_entropy"}
    found = {
        "entropy": conditional_entropy(denoiser, seqs, ts=(entropy_t,), steps=steps, **kw,
                                       count_special=opts["entropy"]["count_special"],
                                       entropy_of=opts["entropy"]["entropy_of"]),
        "basins": basin_test(denoiser, seqs, ts=list(ts), steps=steps, **kw, **basin_opts),
        "fixed_points": fixed_point_test(denoiser, seqs, t_start=t_start, steps=steps, **kw, **opts["fixed_points"]),
        "likelihood": likelihood(denoiser, seqs, n_times=nelbo_times, **kw, attention_mask=attention_mask,
                                 **opts["likelihood"]),
    }
    pred = token_predictions(denoiser, seqs, entropy_t, k=top_k, **kw)
    b = found["basins"].arrays
    tokens = {"tokens/basin_t": float(b["ts"][0]), "tokens/corrupted_id": b["corrupted"][0],
              "tokens/restored_id": b["restored"][0], **{f"tokens/{k}": v for k, v in pred.items()}}
    return scores_from_results(**found, t_start=t_start), tokens


def _score_by_length(denoiser, seqs: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor,
                     **opts) -> tuple[list[Score], dict[str, Any]]:
    """:func:`_score` per distinct length, each row cut to its length; the results put back in row order (per-token
    arrays padded: entropy and probabilities NaN, ids the row's own padding)."""
    M, L = seqs.shape
    if lengths.shape != (M,) or int(lengths.min()) < 1 or int(lengths.max()) > L:
        raise BasinlabError(f"audit: lengths must be {M} values in [1, {L}]")
    scores: list[Score] | None = None
    k = max(1, min(int(opts["top_k"]), denoiser.vocab_size))
    tokens: dict[str, Any] = {"tokens/entropy": torch.full((M, L), torch.nan, dtype=torch.float64),
                              "tokens/top_ids": torch.zeros(M, L, k, dtype=torch.long),
                              "tokens/top_probs": torch.full((M, L, k), torch.nan, dtype=torch.float64),
                              "tokens/corrupted_id": seqs.clone(), "tokens/restored_id": seqs.clone()}
    for n in sorted(set(lengths.tolist())):
        rows = torch.nonzero(lengths == n).flatten()
        att = opts["attention_mask"]
        part, part_tokens = _score(denoiser, seqs[rows, :n], mask[rows, :n],
                                   **{**opts, "attention_mask": None if att is None else att[rows, :n]})
        if scores is None:
            scores = [Score(s.name, s.probe, s.t, s.direction, torch.full((M,), torch.nan, dtype=torch.float64))
                      for s in part]
        for whole, s in zip(scores, part, strict=True):
            whole.values[rows] = s.values
        for key, v in part_tokens.items():
            if key == "tokens/basin_t":
                tokens[key] = v
            else:
                tokens[key][rows, :n] = v.to(tokens[key].dtype)
    return scores or [], tokens


def construction_notes(denoiser: Any) -> dict[str, str]:
    """Scores that are constant by construction for ``denoiser``, with why (SPEC 2b): a masked model without
    remasking never changes a clean token, so every text is a fixed point and the fixed-point AUC is 0.5 by
    construction, not a finding."""
    from basinlab.diffusion import process_of

    proc = process_of(denoiser)
    if proc.can_change_clean:
        return {}
    return {"fixed_point": f"1 for every text by construction: the {proc.name} process without remasking never "
                           "changes a clean token (SPEC 2b), so its AUC of 0.5 says nothing"}


def _audit_result(scores: list[Score], groups: list[str], mask: torch.Tensor) -> ProbeResult:
    res = ProbeResult()
    g = np.asarray(groups)
    for name in dict.fromkeys(groups):
        sel = torch.from_numpy(g == name)
        for s in scores:
            res.add(PROBE, name, s.t, s.name, summarize(s.values[sel]))
    sel_m, sel_n = torch.from_numpy(g == "member"), torch.from_numpy(g == "nonmember")
    if bool(sel_m.any()) and bool(sel_n.any()):
        pick = [Score(s.name, s.probe, s.t, s.direction, s.values[sel_m]) for s in scores]
        rest = [Score(s.name, s.probe, s.t, s.direction, s.values[sel_n]) for s in scores]
        res.rows.extend(membership_rows(pick, rest))
        res.arrays["low_fpr"] = {s.name: low_fpr_table(a.values, b.values, s.direction)
                                 for s, a, b in zip(scores, pick, rest, strict=True)}
    res.arrays.update({f"score/{s.name}": s.values for s in scores})
    res.arrays["n_tokens"] = mask.sum(1)
    res.arrays["scores"] = scores
    return res


def auc_table(result: ProbeResult) -> dict[str, dict[str, Any]]:
    """``{score: {auc, ci_low, ci_high, std, n, probe, t, higher_is_memorised, interval, tpr_at_fpr_<a>,
    tpr_at_nearest_fpr_<a>, fpr_nearest_<a>}}`` from an :func:`audit` result (its rows, and for an audit with
    members and non-members both low-FPR conventions at 10%, 1% and 0.1%: :func:`low_fpr_table`)."""
    out: dict[str, dict[str, Any]] = {}
    for s in result.arrays.get("scores", []):
        for r in result.rows:
            if r["metric"] == MEMBERSHIP and r["probe"] == s.probe and r["t"] == (None if s.t is None else float(s.t)):
                out[s.name] = {"auc": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "std": r["std"],
                               "n": r["n"], "probe": s.probe, "t": s.t, "higher_is_memorised": s.direction > 0,
                               "interval": "DeLong 95%"}
                note = result.arrays.get("notes", {}).get(s.name)
                if note:
                    out[s.name]["note"] = note
        for level in FPR_LEVELS:
            hit = [r for r in result.rows if r["metric"] == tpr_metric(level) and r["probe"] == s.probe
                   and r["t"] == (None if s.t is None else float(s.t))]
            if s.name in out and hit:
                out[s.name][tpr_metric(level)] = hit[0]["value"]
        if s.name in out:
            out[s.name].update(result.arrays.get("low_fpr", {}).get(s.name, {}))
    return out


def scores_frame(result: ProbeResult, groups: Sequence[str], texts: Sequence[str] | None = None):
    """One row per sequence: ``index, group, [text,] n_tokens`` and every score (a pandas DataFrame)."""
    import pandas as pd

    cols: dict[str, Any] = {"index": list(range(len(groups))), "group": list(groups)}
    if texts is not None:
        cols["text"] = list(texts)
    cols["n_tokens"] = result.arrays["n_tokens"].tolist()
    for s in result.arrays["scores"]:
        cols[s.name] = s.values.tolist()
    return pd.DataFrame(cols)


def roc_curve(members: Any, nonmembers: Any, direction: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of "member" calls as the threshold on ``direction * score`` falls (NaN left
    out); the trapezoid area under it equals :func:`membership_auc`."""
    pos = direction * np.asarray(torch.as_tensor(members, dtype=torch.float64), dtype=np.float64).ravel()
    neg = direction * np.asarray(torch.as_tensor(nonmembers, dtype=torch.float64), dtype=np.float64).ravel()
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    if pos.size == 0 or neg.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    thr = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = np.array([0.0] + [(pos >= x).mean() for x in thr])
    fpr = np.array([0.0] + [(neg >= x).mean() for x in thr])
    return fpr, tpr
