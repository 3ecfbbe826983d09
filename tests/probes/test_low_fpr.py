"""auc.json's two low-FPR conventions (issue 24): basinlab's largest TPR at FPR <= a and SAMA's ROC point nearest
a, at 10%, 1% and 0.1% FPR, against brute force over every threshold and a worked example."""

from __future__ import annotations

import numpy as np
import pytest

from basinlab.probes.audit import AUC_JSON_LEVELS, low_fpr_table, tpr_at_fpr, tpr_at_nearest_fpr


def _points(pos, neg):
    """Every empirical ROC point: (0, 0) and one per distinct threshold, "member" when score >= threshold."""
    pts = [(0.0, 0.0)]
    for thr in sorted(set(pos) | set(neg), reverse=True):
        pts.append((float(np.mean(np.asarray(neg) >= thr)), float(np.mean(np.asarray(pos) >= thr))))
    return pts


@pytest.mark.parametrize("seed", range(6))
def test_both_conventions_match_brute_force(seed):
    g = np.random.default_rng(seed)
    pos = np.round(g.normal(1.0, 1.0, int(g.integers(5, 40))), 1).tolist()
    neg = np.round(g.normal(0.0, 1.0, int(g.integers(5, 40))), 1).tolist()
    pts = _points(pos, neg)
    for level in (*AUC_JSON_LEVELS, 0.2, 0.33):
        assert tpr_at_fpr(pos, neg, 1, level)["value"] == pytest.approx(max(t for f, t in pts if f <= level))
        gap = min(abs(f - level) for f, _ in pts)
        best = max(t for f, t in pts if abs(abs(f - level) - gap) < 1e-12)
        got = tpr_at_nearest_fpr(pos, neg, 1, level)
        assert got["value"] == pytest.approx(best) and abs(got["fpr"] - level) == pytest.approx(gap)


def test_a_worked_example_where_the_conventions_differ():
    # 10 non-members; the members' scores above all but one non-member (0.95) and below it
    pos, neg = [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 2.5]
    # ROC points: (0, 0), (0, .25), (0, .5), (.1, .5), (.1, .75), (.1, 1)...; at 1% FPR basinlab takes FPR 0: 50%
    assert tpr_at_fpr(pos, neg, 1, 0.01)["value"] == 0.5
    # SAMA's nearest point to 1% is at FPR 0 too (0.01 away, against 0.09): also 50%
    assert tpr_at_nearest_fpr(pos, neg, 1, 0.01)["value"] == 0.5
    # at 8% FPR the nearest point is FPR 10% (0.02 away), whose best TPR is 100%; basinlab's stays at 50%
    assert tpr_at_nearest_fpr(pos, neg, 1, 0.08) == {"value": 1.0, "fpr": 0.1, "n": 14}
    assert tpr_at_fpr(pos, neg, 1, 0.08)["value"] == 0.5
    # lower is more memorised: direction -1 mirrors the scores
    assert tpr_at_nearest_fpr([-x for x in pos], [-x for x in neg], -1, 0.08)["value"] == 1.0
    table = low_fpr_table(pos, neg, 1)
    assert set(table) == {f"{p}{a:g}" for a in AUC_JSON_LEVELS
                          for p in ("tpr_at_fpr_", "tpr_at_nearest_fpr_", "fpr_nearest_")}
    assert tpr_at_nearest_fpr([], [1.0])["value"] is None
