"""Tidy result rows and the one interval helper that every probe uses (SPEC 5: "means with std and a 95% interval").

A row is a dict with exactly the keys of :data:`ROW_KEYS`: ``probe, set, t, metric, value, std, ci_low, ci_high,
n``; ``t`` is ``None`` for summary rows (basin radius and area, novelty, likelihood). Per-sequence and per-token
arrays (for histograms and for other probes, e.g. the entropy split by basin outcome) live in
``ProbeResult.arrays``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ROW_KEYS = ("probe", "set", "t", "metric", "value", "std", "ci_low", "ci_high", "n")

# Two-sided 97.5% Student-t quantiles for 1..30 degrees of freedom; the normal 1.959964 beyond.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t critical value (table up to 30 degrees of freedom, normal beyond)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.959964


def summarize(values: Any, weights: Any = None) -> dict[str, float | int | None]:
    """Mean, std and 95% interval of ``values``; NaN entries (e.g. "nothing changed") are excluded.

    An infinite entry makes the mean infinite (std and interval None): it is never silently dropped.

    ``weights`` (e.g. tokens per sequence) give the weighted mean with the ratio-estimator standard error
    ``sqrt(n/(n-1) Σ w_i² (x_i - μ)²) / Σ w_i``; without weights this is the usual ``std / sqrt(n)``. The interval
    is ``μ ± t_{0.975, n-1} · se`` (Student-t), clipped to the range of the values (a rate's stays in [0, 1]).
    Returns ``value, std, ci_low, ci_high, n``; with ``n = 0`` the
    value is None, with ``n = 1`` std and interval are None.
    """
    x = _to_numpy(values).astype(np.float64).reshape(-1)
    w = np.ones_like(x) if weights is None else _to_numpy(weights).astype(np.float64).reshape(-1)
    ok = ~np.isnan(x) & np.isfinite(w) & (w > 0)
    x, w = x[ok], w[ok]
    n = int(x.size)
    if n == 0:
        return {"value": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}
    if not np.isfinite(x).all():  # an infinite value (e.g. a NELBO where an oracle gives probability 0)
        with np.errstate(invalid="ignore"):
            mu = float(np.sum(w * x) / np.sum(w))
        return {"value": mu, "std": None, "ci_low": None, "ci_high": None, "n": n}
    mu = float(np.sum(w * x) / np.sum(w))
    if n == 1:
        return {"value": mu, "std": None, "ci_low": None, "ci_high": None, "n": 1}
    wn = w / w.mean()
    std = float(math.sqrt(np.sum(wn * (x - mu) ** 2) / (n - 1)))
    se = float(math.sqrt(n / (n - 1) * np.sum(w**2 * (x - mu) ** 2)) / np.sum(w))
    h = t_quantile_975(n - 1) * se
    # A mean of values in [min, max] lies in [min, max]: clip the interval there (rates stay in [0, 1]).
    return {"value": mu, "std": std, "ci_low": max(mu - h, float(x.min())), "ci_high": min(mu + h, float(x.max())),
            "n": n}


def make_row(
    probe: str, set_name: str, t: float | None, metric: str, stats: dict[str, Any] | float | int | None
) -> dict[str, Any]:
    """A tidy row; ``stats`` is a :func:`summarize` dict or a bare number (std and interval then None)."""
    if not isinstance(stats, dict):
        stats = {"value": None if stats is None else float(stats), "std": None, "ci_low": None, "ci_high": None,
                 "n": None}
    row = {"probe": probe, "set": set_name, "t": None if t is None else float(t), "metric": metric}
    for k in ("value", "std", "ci_low", "ci_high", "n"):
        v = stats.get(k)
        row[k] = None if v is None else (int(v) if k == "n" else float(v))
    return row


@dataclass
class ProbeResult:
    """Rows (list of dicts with keys :data:`ROW_KEYS`) and named arrays (tensors) of one or several probes."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, Any] = field(default_factory=dict)

    def add(self, probe: str, set_name: str, t: float | None, metric: str, stats: Any) -> dict[str, Any]:
        row = make_row(probe, set_name, t, metric, stats)
        self.rows.append(row)
        return row

    def extend(self, other: ProbeResult, prefix: str = "") -> ProbeResult:
        """Append another result's rows and its arrays (keys prefixed with ``prefix``)."""
        self.rows.extend(other.rows)
        for k, v in other.arrays.items():
            self.arrays[f"{prefix}{k}"] = v
        return self

    def get(self, metric: str, t: float | None = None, set_name: str | None = None) -> dict[str, Any]:
        """The single row with this metric (and ``t`` / ``set`` when given); KeyError if none or several."""
        hits = [
            r for r in self.rows
            if r["metric"] == metric
            and (t is None or (r["t"] is not None and abs(r["t"] - t) < 1e-12))
            and (set_name is None or r["set"] == set_name)
        ]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} rows match metric={metric!r} t={t} set={set_name!r}")
        return hits[0]

    def value(self, metric: str, t: float | None = None, set_name: str | None = None) -> float | None:
        return self.get(metric, t, set_name)["value"]

    def to_frame(self):
        """The rows as a pandas DataFrame with the columns of :data:`ROW_KEYS`."""
        import pandas as pd  # here: pandas costs a second to import and only tables need it

        return pd.DataFrame(self.rows, columns=list(ROW_KEYS))

    def __add__(self, other: ProbeResult) -> ProbeResult:
        out = ProbeResult(list(self.rows), dict(self.arrays))
        return out.extend(other)


def rows_to_frame(rows: Iterable[dict[str, Any]]):
    """Any iterable of rows as a DataFrame with the standard columns."""
    import pandas as pd  # see ProbeResult.to_frame

    return pd.DataFrame(list(rows), columns=list(ROW_KEYS))


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def child_seed(seed: int, *tags: Sequence[Any] | Any) -> int:
    """A deterministic sub-seed from ``seed`` and tags (e.g. the probe's ``t``), so each piece of a probe draws
    the same numbers whatever else is run beside it."""
    h = int(seed) & 0xFFFFFFFF
    for tag in tags:
        for ch in repr(tag).encode():
            h = (h * 1_000_003 ^ ch) & 0xFFFFFFFFFFFF
    return h
