"""Rows, intervals, and the basin radius/area definitions of SPEC 5."""

import math

import numpy as np
import pytest

from basinlab.probes import ROW_KEYS, ProbeResult, basin_area, basin_radius, summarize


def test_summarize_mean_std_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, float("nan")])
    s = summarize(x)
    assert s["n"] == 12 and s["value"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4] * 3, ddof=1))
    h = 2.201 * s["std"] / math.sqrt(12)  # t_{0.975, 11} * se
    assert s["ci_low"] == pytest.approx(2.5 - h, rel=1e-3) and s["ci_high"] == pytest.approx(2.5 + h, rel=1e-3)
    # the interval of a mean never leaves the range of the values: a rate's stays in [0, 1]
    rate = summarize(np.array([1.0] * 15 + [0.0]))
    assert rate["ci_high"] == 1.0 and 0.0 <= rate["ci_low"] < rate["value"] < 1.0
    few = summarize(np.array([1.0, 2.0, 3.0, 4.0]))
    assert few["ci_low"] == 1.0 and few["ci_high"] == 4.0  # t_{0.975,3} * se = 2.05 > 1.5
    big = summarize(np.arange(1000.0))
    assert big["ci_high"] - big["value"] == pytest.approx(1.959964 * big["std"] / math.sqrt(1000))
    assert summarize([])["value"] is None and summarize([5.0])["std"] is None


def test_summarize_weights_and_infinity():
    x, w = np.array([1.0, 3.0]), np.array([1.0, 3.0])
    assert summarize(x, weights=w)["value"] == pytest.approx(2.5)
    s = summarize(np.array([1.0, 3.0]), weights=np.array([2.0, 2.0]))
    assert s["value"] == pytest.approx(2.0) and s["std"] == pytest.approx(summarize([1.0, 3.0])["std"])
    inf = summarize([1.0, float("inf")])
    assert inf["value"] == math.inf and inf["ci_low"] is None  # never silently dropped


def test_rows_have_exactly_the_tidy_keys():
    r = ProbeResult()
    r.add("basins", "train", 0.1, "recovery_rate", summarize([0.0, 1.0]))
    r.add("basins", "train", None, "basin_radius", 0.3)
    assert all(tuple(row) == ROW_KEYS for row in r.rows)
    df = r.to_frame()
    assert list(df.columns) == list(ROW_KEYS) and len(df) == 2
    assert r.value("basin_radius") == 0.3 and r.get("recovery_rate", t=0.1)["n"] == 2


def test_basin_radius_and_area():
    ts = [0.05, 0.1, 0.25, 0.5, 1.0]
    assert basin_radius(ts, [0.9, 0.8, 0.6, 0.4, 0.1]) == pytest.approx(0.25 + 0.1 / 0.2 * 0.25)
    assert basin_radius(ts, [0.4, 0.3, 0.2, 0.1, 0.0]) == 0.0
    assert basin_radius(ts, [1.0, 1.0, 0.9, 0.8, 0.7]) == 1.0
    assert basin_radius(ts[::-1], [0.1, 0.4, 0.6, 0.8, 0.9]) == pytest.approx(0.375)  # order of ts irrelevant
    assert basin_area(ts, [1.0] * 5) == pytest.approx(1.0)
    r = [0.9, 0.8, 0.6, 0.4, 0.1]
    pts_t, pts_r = [0.0] + ts, [1.0] + r
    expected = sum((pts_t[i + 1] - pts_t[i]) * (pts_r[i + 1] + pts_r[i]) / 2 for i in range(5))
    assert basin_area(ts, r) == pytest.approx(expected)
    assert basin_area([0.5], [0.0]) == pytest.approx(0.25)  # held flat at 0 from 0.5 to 1
