"""The transition size ``N*`` and its companions (SPEC 7).

- ``N*`` is where the train and test recovery curves of the basin test meet at a chosen ``t``: the smallest ``N``
  at which ``recovery(train) - recovery(test)`` has fallen to ``tol`` or below, interpolated linearly in
  ``log N`` between the last grid size above ``tol`` and the first at or below it.
- Its interval: where the sweep ran several training seeds, the range of the per-seed ``N*``; otherwise from
  the probes' 95% intervals: the gap's interval is ``gap ± sqrt(h_train² + h_test²)`` (``h`` the half-widths of
  the two means' intervals), and the bounds are where its lower and its upper end reach ``tol``.
- The test NELBO's peak over ``N`` (a parabola in ``log N`` through the largest value and its neighbours when it
  is inside the grid; its range: out to the nearest grid sizes whose test NELBO is significantly lower, see
  :func:`peak_interval`), and where the entropy of real (training) data leaves zero (first rise above a
  threshold, interpolated in ``log N``), both of which the paper sees near ``N*``.

A bound that lies outside the grid is ``None`` with a ``status`` that says on which side (``below_grid``:
already met at the smallest ``N``; ``above_grid``: not met by the largest).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from basinlab.labels import ModelLabel

#: Metrics read here (SPEC 5; each is produced by one probe only, so records are selected by metric).
RECOVERY = "recovery_rate"
NELBO = "nelbo"
ENTROPY = "entropy"


def _frame(rows: Any) -> Any:
    import pandas as pd  # here: pandas costs a second to import; only the estimate from rows needs it

    if isinstance(rows, pd.DataFrame):
        return rows
    return pd.DataFrame(list(rows))


def crossing(
    sizes: Sequence[float], values: Sequence[float], level: float, direction: str = "down"
) -> tuple[float | None, str]:
    """First ``N`` at which ``values`` reaches ``level`` (``down``: falls to ``<= level``; ``up``: rises ``> level``).

    Interpolated linearly in ``log N``. Returns ``(N, status)`` with status ``inside``, ``below_grid`` (already
    reached at the smallest ``N``; ``N`` is ``None``) or ``above_grid`` (never reached; ``None``).
    """
    pairs = [(float(n), float(v)) for n, v in zip(sizes, values, strict=True) if v is not None and np.isfinite(v)]
    pairs.sort()
    if not pairs:
        return None, "no_data"

    def reached(v: float) -> bool:
        return v <= level if direction == "down" else v > level

    if reached(pairs[0][1]):
        return None, "below_grid"
    for (n0, v0), (n1, v1) in zip(pairs[:-1], pairs[1:], strict=True):
        if reached(v1):
            frac = (v0 - level) / (v0 - v1) if v0 != v1 else 1.0
            frac = min(max(frac, 0.0), 1.0)
            return float(math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))), "inside"
    return None, "above_grid"


@dataclass
class Transition:
    """``N*`` at ``t`` for one model, with its interval and the companions the paper reads beside it."""

    model: str
    t: float
    tol: float
    n_star: float | None
    status: str  # inside | below_grid | above_grid | no_data
    low: float | None = None
    high: float | None = None
    interval_method: str = "none"  # seeds | ci | none
    per_seed: dict[int, float | None] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)
    train_recovery: list[float] = field(default_factory=list)
    test_recovery: list[float] = field(default_factory=list)
    nelbo_peak_n: float | None = None
    nelbo_peak_status: str = "no_data"  # inside | edge | no_data
    nelbo_peak_low: float | None = None  # 95% range of the peak (see peak_interval), when inside the grid
    nelbo_peak_high: float | None = None
    entropy_leaves_zero_n: float | None = None
    entropy_status: str = "no_data"
    entropy_threshold: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_seed"] = {str(k): v for k, v in self.per_seed.items()}
        return d

    def describe(self) -> str:
        """One line for people, e.g. ``N* ≈ 310 (95% range 180-520, from 3 seeds) at t = 0.25``."""
        if self.n_star is None:
            where = {
                "below_grid": f"N* < {self.sizes[0] if self.sizes else '?'} (train and test already meet)",
                "above_grid": f"N* > {self.sizes[-1] if self.sizes else '?'} (curves not yet met)",
            }.get(self.status, "N* unknown (no basin records)")
            return f"{where} at t = {self.t:g}"
        lo = "<grid" if self.low is None else f"{self.low:.0f}"
        hi = ">grid" if self.high is None else f"{self.high:.0f}"
        how = {"seeds": f"range over {len(self.per_seed)} seeds", "ci": "from the probes' 95% intervals"}.get(
            self.interval_method, "no interval"
        )
        return f"N* ≈ {self.n_star:.0f} ({lo} to {hi}, {how}) at t = {self.t:g}"


def _nearest_t(df: Any, t: float) -> float | None:
    ts = sorted({float(x) for x in df["t"].dropna().unique()})
    if not ts:
        return None
    return min(ts, key=lambda x: abs(x - t))


def _basin(df: Any, model: str, t: float) -> Any:
    sel = df[(df["model"] == model) & (df["metric"] == RECOVERY)]
    tt = _nearest_t(sel, t)
    if tt is None:
        return sel.iloc[0:0], t
    return sel[np.isclose(sel["t"].astype(float), tt, rtol=0, atol=1e-9)], tt


def estimate_transition(
    rows: Iterable[Mapping[str, Any]] | Any,
    t: float = 0.25,
    model: str | None = None,
    tol: float = 0.05,
    entropy_threshold: float = 0.05,
    entropy_set: str = "train",
) -> Transition:
    """Estimate ``N*`` at ``t`` (nearest tested ``t``) for ``model`` (default: the trained, non-oracle model).

    ``rows`` are records with the keys of ``results.csv`` (a DataFrame or an iterable of dicts). See the module
    docstring for the definitions (SPEC 7).
    """
    df = _frame(rows)
    if model is None:
        models = sorted(m for m in df["model"].unique() if not ModelLabel.parse(m).is_oracle) if len(df) else []
        model = models[0] if models else ""
    basin, t_used = _basin(df, model, t) if len(df) else (df, t)
    result = Transition(model=model, t=float(t_used), tol=tol, n_star=None, status="no_data")
    result.entropy_threshold = entropy_threshold
    if len(basin):
        _fill_n_star(result, basin, tol)
    if len(df):
        _fill_nelbo_peak(result, df, model)
        _fill_entropy(result, df, model, entropy_threshold, entropy_set)
    return result


def _fill_n_star(result: Transition, basin: Any, tol: float) -> None:
    train = basin[basin["set"] == "train"]
    test = basin[basin["set"] == "test"]
    mtr = train.groupby("N")["value"].mean()
    mte = test.groupby("N")["value"].mean()
    sizes = sorted(set(mtr.index) & set(mte.index))
    if not sizes:
        return
    gap = [float(mtr[n] - mte[n]) for n in sizes]
    result.sizes = [int(n) for n in sizes]
    result.train_recovery = [float(mtr[n]) for n in sizes]
    result.test_recovery = [float(mte[n]) for n in sizes]
    result.n_star, result.status = crossing(sizes, gap, tol)

    seeds = sorted(set(train["seed"]) & set(test["seed"]))
    if len(seeds) >= 2:
        statuses = []
        for s in seeds:
            a = train[train["seed"] == s].groupby("N")["value"].mean()
            b = test[test["seed"] == s].groupby("N")["value"].mean()
            ns = sorted(set(a.index) & set(b.index))
            n_s, st = crossing(ns, [float(a[n] - b[n]) for n in ns], tol)
            result.per_seed[int(s)] = n_s
            statuses.append(st)
        inside = [v for v in result.per_seed.values() if v is not None]
        result.low = None if "below_grid" in statuses or not inside else min(inside)
        result.high = None if "above_grid" in statuses or not inside else max(inside)
        result.interval_method = "seeds"
        return
    ci_tr_lo = train.groupby("N")["ci_low"].mean()
    ci_tr_hi = train.groupby("N")["ci_high"].mean()
    ci_te_lo = test.groupby("N")["ci_low"].mean()
    ci_te_hi = test.groupby("N")["ci_high"].mean()
    if ci_tr_lo.isna().all() or ci_te_hi.isna().all():
        return
    # 95% interval of the difference of two independent means: half-width sqrt(h_train² + h_test²)
    half = [
        math.hypot((ci_tr_hi[n] - ci_tr_lo[n]) / 2, (ci_te_hi[n] - ci_te_lo[n]) / 2) for n in sizes
    ]
    pess = [g - h for g, h in zip(gap, half, strict=True)]
    opt = [g + h for g, h in zip(gap, half, strict=True)]
    result.low, _ = crossing(sizes, pess, tol)
    result.high, _ = crossing(sizes, opt, tol)
    result.interval_method = "ci"


def _fill_nelbo_peak(result: Transition, df: Any, model: str) -> None:
    sel = df[(df["model"] == model) & (df["metric"] == NELBO)]
    sel = sel[sel["set"] == "test"]
    if not len(sel):
        return
    g = sel.groupby("N")
    m = g["value"].mean().sort_index()
    sizes = [float(n) for n in m.index]
    vals = [float(v) for v in m.values]
    k = int(np.nanargmax(vals))
    if 0 < k < len(vals) - 1:
        x = np.log(sizes[k - 1 : k + 2])
        y = np.array(vals[k - 1 : k + 2])
        a, b, _ = np.polyfit(x, y, 2)
        xv = -b / (2 * a) if a < 0 else x[1]
        xv = float(min(max(xv, x[0]), x[2]))
        result.nelbo_peak_n = float(math.exp(xv))
        result.nelbo_peak_status = "inside"
        lo = g["ci_low"].mean().reindex(m.index).to_numpy(dtype=float)
        hi = g["ci_high"].mean().reindex(m.index).to_numpy(dtype=float)
        result.nelbo_peak_low, result.nelbo_peak_high = peak_interval(sizes, lo, hi, k)
    else:
        result.nelbo_peak_n = sizes[k]
        result.nelbo_peak_status = "edge"


def peak_interval(
    sizes: Sequence[float], ci_low: Sequence[float], ci_high: Sequence[float], k: int
) -> tuple[float | None, float | None]:
    """95% range of a peak at grid index ``k``: bounded on each side by the nearest grid size whose value is
    significantly below the peak (its interval wholly under the peak's: ``ci_high[j] < ci_low[k]``); the sizes
    between are indistinguishable from the largest value. A side with no such size is unbounded (``None``), as
    are both when the intervals are missing. The bounds always bracket the parabola's vertex."""
    lo_k = float(ci_low[k])
    if not np.isfinite(lo_k) or not all(np.isfinite(float(h)) for h in ci_high):
        return None, None

    def level(j: int) -> bool:
        return float(ci_high[j]) >= lo_k

    i, j = k, k
    while i > 0 and level(i - 1):
        i -= 1
    while j < len(sizes) - 1 and level(j + 1):
        j += 1
    return (float(sizes[i - 1]) if i > 0 else None), (float(sizes[j + 1]) if j < len(sizes) - 1 else None)


def _fill_entropy(result: Transition, df: Any, model: str, threshold: float, set_name: str) -> None:
    sel = df[(df["model"] == model) & (df["metric"] == ENTROPY)]
    sel = sel[sel["set"] == set_name]
    if not len(sel):
        return
    if sel["t"].notna().any():
        t0 = float(sel["t"].dropna().min())
        sel = sel[np.isclose(sel["t"].astype(float), t0, rtol=0, atol=1e-12)]
    m = sel.groupby("N")["value"].mean().sort_index()
    n, st = crossing(list(m.index), list(m.values), threshold, direction="up")
    result.entropy_leaves_zero_n, result.entropy_status = n, st


def estimate_all(rows: Any, t: float = 0.25, tol: float = 0.05, entropy_threshold: float = 0.05) -> list[Transition]:
    """:func:`estimate_transition` for every trained (non-oracle) model in ``rows``."""
    df = _frame(rows)
    models = sorted(m for m in df["model"].unique() if not ModelLabel.parse(m).is_oracle) if len(df) else []
    return [estimate_transition(df, t=t, model=m, tol=tol, entropy_threshold=entropy_threshold) for m in models]
