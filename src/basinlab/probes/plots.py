"""Matplotlib (Agg) figures of probe results: recovery against ``t`` per set with 95% bands, per-token entropy
histograms per set, fixed-point rates per set. PNGs are written atomically."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from basinlab.io import atomic_write
from basinlab.probes.results import rows_to_frame


def _plt():
    import matplotlib  # here: the backend must be chosen before pyplot is imported, and only plots need either

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _frame(rows: Any):
    if hasattr(rows, "rows"):
        rows = rows.rows
    if hasattr(rows, "columns"):
        return rows
    return rows_to_frame(rows)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    _plt().close(fig)
    return path


def plot_recovery(rows: Any, path: str | Path, title: str | None = None) -> Path | None:
    """Mean ``recovery_rate`` (SPEC 5 basin test) against ``t``, one line per set with its 95% band."""
    df = _frame(rows)
    df = df[(df["metric"] == "recovery_rate") & df["t"].notna()]
    if df.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, g in df.groupby("set", sort=False):
        g = g.sort_values("t")
        t = g["t"].to_numpy(float)
        v = g["value"].to_numpy(float)
        ax.plot(t, v, marker="o", label=str(name) or "set")
        lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.fill_between(t[ok], np.clip(lo[ok], 0, 1), np.clip(hi[ok], 0, 1), alpha=0.2)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("corruption level t")
    ax.set_ylabel("recovery rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, 1.02)
    ax.set_title(title or "Basin test: changed tokens restored")
    ax.legend(frameon=False)
    return _save(fig, path)


def plot_entropy_hist(
    entropies: Mapping[str, Any], path: str | Path, bins: int = 50, title: str | None = None
) -> Path | None:
    """Histograms of per-token conditional entropy (nats), one per set (NaN entries, i.e. non-real, dropped)."""
    data = {}
    for name, h in entropies.items():
        a = np.asarray(h.detach().cpu().numpy() if hasattr(h, "detach") else h, dtype=float).reshape(-1)
        a = a[np.isfinite(a)]
        if a.size:
            data[name] = a
    if not data:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    hi = max(float(a.max()) for a in data.values())
    edges = np.linspace(0.0, max(hi, 1e-3) * 1.001, bins + 1)
    for name, a in data.items():
        ax.hist(a, bins=edges, histtype="step", lw=1.5, density=False, weights=np.full(a.size, 1.0 / a.size),
                label=f"{name} (mean {a.mean():.3g})")
    ax.set_xlabel("entropy of x_θ per token (nats)")
    ax.set_ylabel("share of tokens")
    ax.set_title(title or "Conditional entropy")
    ax.legend(frameon=False)
    return _save(fig, path)


def plot_fixed_points(rows: Any, path: str | Path, title: str | None = None) -> Path | None:
    """Bar chart of ``fixed_point_rate`` per set with 95% intervals."""
    df = _frame(rows)
    df = df[df["metric"] == "fixed_point_rate"]
    if df.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    names = [str(s) for s in df["set"]]
    v = df["value"].to_numpy(float)
    lo = np.nan_to_num(v - df["ci_low"].to_numpy(float))
    hi = np.nan_to_num(df["ci_high"].to_numpy(float) - v)
    ax.bar(names, v, yerr=[lo, hi], capsize=4, color="#4c72b0")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fixed-point rate")
    ax.set_title(title or "Fixed points (greedy chain from x)")
    return _save(fig, path)


def write_plots(result: Any, out_dir: str | Path, sets: Iterable[str] | None = None) -> list[Path]:
    """All figures a :class:`~basinlab.probes.results.ProbeResult` (from ``run_all`` or the CLI) supports.

    Entropy histograms use arrays named ``entropy/{set}/entropy`` (first ``t``).
    """
    out = Path(out_dir)
    paths = [
        plot_recovery(result, out / "recovery.png"),
        plot_fixed_points(result, out / "fixed_points.png"),
    ]
    ent = {}
    for key, arr in getattr(result, "arrays", {}).items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "entropy" and parts[2] == "entropy":
            if sets is None or parts[1] in set(sets):
                ent[parts[1]] = arr[0]
        if len(parts) == 3 and parts[0] == "entropy" and parts[2] == "generated_entropy" and "generated" not in ent:
            ent["generated"] = arr
    if ent:
        paths.append(plot_entropy_hist(ent, out / "entropy_hist.png"))
    return [p for p in paths if p is not None]


def plot_roc(result: Any, groups: Any, path: str | Path, title: str | None = None) -> Path | None:
    """ROC curves of every audit score, members against non-members (``basinlab.probes.audit``), with the AUC
    (:func:`roc_figure`)."""
    fig = roc_figure(result, groups, title)
    if fig is None:
        return None
    return _save(fig, path)


#: points each further ROC curve is shifted right and down in the PNG, so that coinciding curves stay visible
ROC_SHIFT_PT = 2.0
_ROC_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_ROC_DASHES = ("-", "--", ":", "-.")


def roc_figure(result: Any, groups: Any, title: str | None = None) -> Any:
    """The ROC figure of :func:`plot_roc`: each score its own marker and dash, shifted by :data:`ROC_SHIFT_PT`
    points per score (curves that coincide, such as several perfect scores, stay visible), the AUCs listed in
    the legend beside the axes; ``None`` without members and non-members."""
    from matplotlib.transforms import offset_copy

    from basinlab.probes.audit import auc_table, roc_curve

    g = np.asarray(list(groups))
    scores = result.arrays.get("scores", [])
    if not scores or not (g == "member").any() or not (g == "nonmember").any():
        return None
    aucs = auc_table(result)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.2, 5))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    for c, s in enumerate(scores):
        v = s.values.numpy()
        fpr, tpr = roc_curve(v[g == "member"], v[g == "nonmember"], s.direction)
        auc = aucs.get(s.name, {}).get("auc")
        shift = offset_copy(ax.transData, fig=fig, x=c * ROC_SHIFT_PT, y=-c * ROC_SHIFT_PT, units="points")
        ax.plot(fpr, tpr, lw=1.5, ls=_ROC_DASHES[c % len(_ROC_DASHES)], marker=_ROC_MARKERS[c % len(_ROC_MARKERS)],
                markersize=4, markevery=max(1, len(fpr) // 8), transform=shift,
                label=f"{s.name} (AUC {auc:.3f})" if auc is not None else f"{s.name} (AUC -)")
    ax.set_xlabel("false-positive rate (non-members called members)")
    ax.set_ylabel("true-positive rate (members called members)")
    ax.set_title(title or "membership: members vs non-members")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
              title=f"curves shifted {ROC_SHIFT_PT:g} pt each", title_fontsize=7)
    fig.tight_layout()
    return fig
