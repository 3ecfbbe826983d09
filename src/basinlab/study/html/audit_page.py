"""``audit.html``: one self-contained page per ``basinlab audit`` (SPEC 5 scores, per-token view).

Every text token by token, shaded by its leave-one-out conditional entropy (:mod:`.shading`); hovering a token
shows its entropy, the model's top-5 predictions, and the basin test's outcome at its first ``t``. A table of the
texts sortable by every score and filterable by group; ROC curves of every score with AUC [DeLong 95%] and the TPR
at 1% and 0.1% FPR; histograms of the best score for members and non-members. The data travel as one JSON block
that the page's script renders (a token costs ~30 bytes: 1,000 texts of 128 tokens stay a few MB).
"""

from __future__ import annotations

import datetime
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from basinlab.io import atomic_write_text
from basinlab.study.html import environment, shading

#: top-k entries below this probability are not sent to the page (the first always is)
MIN_PROB = 1e-3


def _r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(f"{x:.3g}")


def page_data(arrays: dict[str, Any], groups: Sequence[str], texts: Sequence[str], special: Sequence[bool],
              scores: Sequence[Any]) -> dict[str, Any]:
    """The page's JSON: per text its ids, entropies, top-k and basin outcome; the vocabulary entries used."""
    seqs = arrays["tokens/seqs"].numpy()
    H = arrays["tokens/entropy"].numpy()
    top_i, top_p = arrays["tokens/top_ids"].numpy(), arrays["tokens/top_probs"].numpy()
    z, out = arrays["tokens/corrupted_id"].numpy(), arrays["tokens/restored_id"].numpy()
    used: set[int] = set()
    rows = []
    lengths = arrays["tokens/lengths"].tolist() if "tokens/lengths" in arrays else [seqs.shape[1]] * seqs.shape[0]
    for m in range(seqs.shape[0]):
        x = seqs[m, : lengths[m]]  # a text scored at its own length (LLaDA, Dream): no padding shown
        top = []
        for pos in range(len(x)):
            keep = [(int(i), _r(float(p))) for k, (i, p) in enumerate(zip(top_i[m, pos], top_p[m, pos],
                                                                           strict=True)) if k == 0 or p >= MIN_PROB]
            top.append([v for pair in keep for v in pair])
            used.update(i for i, _ in keep)
        moved = np.nonzero((z[m, : len(x)] != x) | (out[m, : len(x)] != x))[0]
        rows.append({"g": groups[m], "ids": x.tolist(), "h": [_r(float(h)) for h in H[m, : len(x)]], "top": top,
                     "basin": [v for p in moved for v in (int(p), int(z[m, p]), int(out[m, p]))]})
        used.update(x.tolist())
        used.update(z[m, moved].tolist())
        used.update(out[m, moved].tolist())
    vocab = {str(i): texts[i] for i in sorted(used)}
    return {"texts": rows, "vocab": vocab, "special": sorted(i for i in used if special[i]),
            "scores": [{"name": s.name, "dir": s.direction,
                        "v": [float(v) if math.isfinite(v) else None for v in s.values.tolist()]}
                       for s in scores],
            "basin_t": float(arrays["tokens/basin_t"])}


#: pixels each further ROC curve is shifted right and down, so that coinciding curves stay visible
ROC_SHIFT = 2.5
_DASHES = ("none", "6 3", "2 2", "8 3 2 3", "4 4", "1 3", "10 2", "3 1")


def _marker(c: int, x: float, y: float, col: str) -> str:
    """The ``c``-th curve's marker at ``(x, y)``: circle, square, triangle, diamond, in turn."""
    kind = c % 4
    if kind == 0:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{col}"/>'
    if kind == 1:
        return f'<rect x="{x - 2.4:.1f}" y="{y - 2.4:.1f}" width="4.8" height="4.8" fill="none" stroke="{col}"/>'
    pts = ((x, y - 3.2), (x + 3, y + 2.4), (x - 3, y + 2.4)) if kind == 2 else \
        ((x, y - 3.4), (x + 3, y), (x, y + 3.4), (x - 3, y))
    return f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" fill="none" stroke="{col}"/>'


def _svg_roc(scores: Sequence[Any], groups: np.ndarray, aucs: dict[str, Any]) -> tuple[str, list]:
    """ROC curves of every score (inline SVG; each with its own dash pattern and marker, shifted by
    :data:`ROC_SHIFT` px per score so that coinciding curves stay visible) and their legend rows."""
    from basinlab.probes.audit import roc_curve

    W, P = 360, 40
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    parts = [f'<svg class="roc" viewBox="0 0 {W + P + 10} {W + P + 10}" width="{W + P + 10}" '
             f'height="{W + P + 10}" role="img" aria-label="ROC curves">',
             f'<rect x="{P}" y="10" width="{W}" height="{W}" fill="none" stroke="#999"/>',
             f'<line x1="{P}" y1="{W + 10}" x2="{P + W}" y2="10" stroke="#bbb" stroke-dasharray="4 3"/>',
             f'<text x="{P + W / 2}" y="{W + P}" text-anchor="middle" font-size="12">false-positive rate</text>',
             f'<text x="12" y="{10 + W / 2}" font-size="12" text-anchor="middle" '
             f'transform="rotate(-90 12 {10 + W / 2})">true-positive rate</text>']
    for k in (0, 0.5, 1):
        parts.append(f'<text x="{P + k * W}" y="{W + 24}" font-size="10" text-anchor="middle">{k:g}</text>')
        parts.append(f'<text x="{P - 4}" y="{10 + W - k * W + 3}" font-size="10" text-anchor="end">{k:g}</text>')
    legend = []
    for c, s in enumerate(scores):
        v = s.values.numpy()
        fpr, tpr = roc_curve(v[groups == "member"], v[groups == "nonmember"], s.direction)
        dx = c * ROC_SHIFT  # identical curves would hide under one another: each is shifted, dashed and marked
        xy = [(P + f * W + dx, 10 + W - t * W + dx) for f, t in zip(fpr, tpr, strict=True)]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        col = colours[c % len(colours)]
        dash = _DASHES[c % len(_DASHES)]
        parts.append(f'<polyline class="roc-curve" fill="none" stroke="{col}" stroke-width="1.6" '
                     f'stroke-dasharray="{dash}" points="{pts}"><title>{_esc(s.name)}</title></polyline>')
        for x, y in xy[:: max(1, len(xy) // 8)]:
            parts.append(_marker(c, x, y, col))
        legend.append((col, s.name, aucs.get(s.name, {})))
    parts.append("</svg>")
    return "".join(parts), legend


def _svg_hist(values: np.ndarray, groups: np.ndarray, name: str) -> str:
    """Overlaid histograms of one score for members and non-members (inline SVG)."""
    W, H, P = 420, 200, 36
    v = values[np.isfinite(values)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, 21)
    counts = {g: np.histogram(values[(groups == g) & np.isfinite(values)], edges)[0] for g in ("member", "nonmember")}
    top = max(1, *(int(c.max()) for c in counts.values()))
    parts = [f'<svg class="hist" viewBox="0 0 {W + P} {H + P}" width="{W + P}" height="{H + P}" role="img" '
             f'aria-label="histogram">', f'<line x1="{P}" y1="{H}" x2="{P + W}" y2="{H}" stroke="#666"/>']
    bw = W / 20
    for g, col in (("member", "#d62728"), ("nonmember", "#1f77b4")):
        for b, c in enumerate(counts[g]):
            if c:
                h = c / top * (H - 10)
                parts.append(f'<rect x="{P + b * bw:.1f}" y="{H - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" '
                             f'fill="{col}" fill-opacity="0.5"><title>{g}: {c}</title></rect>')
    parts.append(f'<text x="{P}" y="{H + 14}" font-size="10">{lo:.3g}</text>'
                 f'<text x="{P + W}" y="{H + 14}" font-size="10" text-anchor="end">{hi:.3g}</text>'
                 f'<text x="{P + W / 2}" y="{H + 28}" font-size="12" text-anchor="middle">{_esc(name)}</text>'
                 f'<text x="{P - 4}" y="14" font-size="10" text-anchor="end">{top}</text></svg>')
    return "".join(parts)


def _esc(s: str) -> str:
    import html

    return html.escape(str(s))


def _best(aucs: dict[str, Any]) -> str | None:
    ok = {k: a["auc"] for k, a in aucs.items() if a.get("auc") is not None}
    return max(ok, key=lambda k: ok[k]) if ok else None


def _provenance(checkpoint: str) -> dict[str, str]:
    import basinlab

    return {"checkpoint": str(checkpoint), "basinlab": basinlab.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node()}


def render_audit_page(result: Any, groups: Sequence[str], texts: Sequence[str], special: Sequence[bool],
                      vocab_size: int, checkpoint: str = "", markov: bool = False) -> str:
    """The page's HTML (see the module docstring). ``texts`` / ``special``: per-id display strings and flags
    (:func:`basinlab.probes.tokens.token_texts`)."""
    from basinlab.probes.audit import FPR_LEVELS, auc_table, tpr_metric

    scores = result.arrays["scores"]
    g = np.asarray(list(groups))
    data = page_data(result.arrays, groups, texts, special, scores)
    h_max = shading.scale_max([h for r in data["texts"] for h in r["h"]], vocab_size)
    aucs = auc_table(result)
    roc = legend = hist = None
    best = _best(aucs)
    if aucs:
        roc, legend = _svg_roc(scores, g, aucs)
        best_s = next(s for s in scores if s.name == best) if best else None
        hist = _svg_hist(best_s.values.numpy(), g, best) if best_s is not None else None
    blob = json.dumps({**data, "h_max": h_max, "palette": list(shading.PALETTE), "markov": markov},
                      separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return environment().get_template("audit.html.j2").render(
        data_json=blob, shading_css=shading.css(), legend=shading.legend_html(h_max), roc=roc, roc_legend=legend,
        hist=hist, best=best, levels=[(lv, tpr_metric(lv)) for lv in FPR_LEVELS], aucs=aucs,
        counts={k: int((g == k).sum()) for k in dict.fromkeys(groups)}, prov=_provenance(checkpoint),
        basin_t=data["basin_t"], markov=markov, roc_shift=ROC_SHIFT)


def write_audit_page(path: str | Path, result: Any, groups: Sequence[str], texts: Sequence[str],
                     special: Sequence[bool], vocab_size: int, checkpoint: str = "", markov: bool = False) -> Path:
    """Write :func:`render_audit_page` atomically to ``path``."""
    path = Path(path)
    atomic_write_text(path, render_audit_page(result, groups, texts, special, vocab_size, checkpoint, markov))
    return path
