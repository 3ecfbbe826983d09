"""The figures' shared helpers (SPEC 7 plots): per-``N`` series of a results frame, matplotlib without a display,
the log-``N`` axis, PNG bytes. Used by the report (:mod:`basinlab.study.report`) and its process contrast
(:mod:`basinlab.study.contrast`)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def series(df: Any, model: str, metric: str, set_name: str | None, t: float | None = None) -> Any:
    """Per-``N`` mean of ``value`` over seeds with the mean 95% interval: DataFrame ``N, value, lo, hi``."""
    sel = df[(df["model"] == model) & (df["metric"] == metric)]
    if set_name is not None:
        sel = sel[sel["set"] == set_name]
    if t is not None:
        sel = sel[np.isclose(sel["t"].astype(float).fillna(-1.0), t, rtol=0, atol=1e-9)]
    elif sel["t"].notna().any() and sel["t"].isna().any():
        sel = sel[sel["t"].isna()]
    elif sel["t"].notna().any():
        sel = sel[np.isclose(sel["t"].astype(float), float(sel["t"].min()), rtol=0, atol=1e-12)]
    g = sel.groupby("N")
    out = g.agg(value=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean")).reset_index()
    return out.sort_values("N")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib  # here: the backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def setup_ax(ax: Any, ylabel: str, title: str) -> None:
    """An axis over ``N`` (log base 2), labelled and gridded."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training-set size N")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")


def png(fig: Any) -> bytes:
    """The figure as PNG bytes (110 dpi); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    pyplot().close(fig)
    return buf.getvalue()
