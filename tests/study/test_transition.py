"""N* and its companions (SPEC 7) against hand-computed answers on constructed records."""

from __future__ import annotations

import math

import pytest

from basinlab.study.transition import crossing, estimate_transition


def _rec(N, seed, set_name, value, half=0.02, model="micro", metric="recovery_rate", t=0.25):
    return {"N": N, "seed": seed, "model": model, "probe": "basins", "set": set_name, "t": t, "metric": metric,
            "value": value, "std": 0.1, "ci_low": value - half, "ci_high": value + half, "n": 100}


def test_crossing_interpolates_in_log_n():
    # gap 0.4 at N=16, 0.0 at N=64 -> reaches 0.1 three quarters of the way in log N: 16 * 4**0.75
    n, st = crossing([16, 64, 256], [0.4, 0.0, -0.1], 0.1)
    assert st == "inside" and n == pytest.approx(16 * 4**0.75)
    assert crossing([16, 64], [0.0, 0.0], 0.1) == (None, "below_grid")
    assert crossing([16, 64], [0.5, 0.3], 0.1) == (None, "above_grid")
    n, st = crossing([16, 64], [0.0, 0.2], 0.1, direction="up")
    assert st == "inside" and n == pytest.approx(32.0)


def test_n_star_single_seed_with_ci_interval():
    train = {16: 0.95, 64: 0.80, 256: 0.55}
    test = {16: 0.15, 64: 0.40, 256: 0.55}
    rows = [_rec(N, 0, "train", v) for N, v in train.items()] + [_rec(N, 0, "test", v) for N, v in test.items()]
    rows += [_rec(N, 0, "train", 0.99, t=0.1) for N in train]  # another t: ignored
    rows += [_rec(N, 0, "train", 0.0, model="oracle:empirical") for N in train]  # an oracle: ignored
    tr = estimate_transition(rows, t=0.25, tol=0.05)
    assert tr.model == "micro" and tr.status == "inside" and tr.interval_method == "ci"
    # gap 0.40 at 64, 0.00 at 256: reaches 0.05 at frac 0.875 of log(4)
    assert tr.n_star == pytest.approx(64 * 4**0.875)
    # the gap's half-width is hypot(0.02, 0.02) = h; gap - h: 0.40 - h -> -h, reaches 0.05 at (0.35 - h) / 0.40
    h = math.hypot(0.02, 0.02)
    assert tr.low == pytest.approx(64 * 4 ** ((0.35 - h) / 0.40))
    # gap + h: 0.40 + h -> h, reaches 0.05 at (0.35 + h) / 0.40
    assert tr.high == pytest.approx(64 * 4 ** ((0.35 + h) / 0.40))
    assert tr.low < tr.n_star < tr.high
    assert tr.sizes == [16, 64, 256] and tr.train_recovery[0] == pytest.approx(0.95)


def test_n_star_from_seeds_and_companions():
    rows = []
    # seed 0 meets (gap 0) at 64 exactly from 0.5 at 16; seed 1 meets at 256 from 0.5 at 64
    for N, g in {16: 0.5, 64: 0.0, 256: 0.0}.items():
        rows += [_rec(N, 0, "train", 0.5 + g), _rec(N, 0, "test", 0.5)]
    for N, g in {16: 0.6, 64: 0.5, 256: 0.0}.items():
        rows += [_rec(N, 1, "train", 0.5 + g), _rec(N, 1, "test", 0.5)]
    # test NELBO peaks at 64 (symmetric in log N -> vertex exactly at 64)
    for N, v in {16: 2.0, 64: 3.0, 256: 2.0}.items():
        rows.append(_rec(N, 0, "test", v, metric="nelbo", t=None))
    # training-data entropy 0, 0.02, 0.5: crosses 0.05 between 64 and 256
    for N, v in {16: 0.0, 64: 0.02, 256: 0.5}.items():
        rows.append(_rec(N, 0, "train", v, metric="entropy", t=1e-5))
    tr = estimate_transition(rows, t=0.25, tol=0.0)
    assert tr.interval_method == "seeds"
    s0 = tr.per_seed[0]
    s1 = tr.per_seed[1]
    assert s0 == pytest.approx(64.0) and s1 == pytest.approx(256.0)
    assert (tr.low, tr.high) == (pytest.approx(64.0), pytest.approx(256.0))
    # mean gap: 0.55, 0.25, 0.0 -> reaches 0 at 256 exactly
    assert tr.n_star == pytest.approx(256.0)
    assert tr.nelbo_peak_status == "inside" and tr.nelbo_peak_n == pytest.approx(64.0)
    assert tr.entropy_status == "inside"
    assert tr.entropy_leaves_zero_n == pytest.approx(math.exp(math.log(64) + (0.03 / 0.48) * math.log(4)))
    assert "N*" in tr.describe()


def test_transition_outside_grid_and_empty():
    rows = [_rec(N, 0, s, 0.9 if s == "train" else 0.1) for N in (16, 64) for s in ("train", "test")]
    tr = estimate_transition(rows, t=0.25)
    assert tr.n_star is None and tr.status == "above_grid" and "N* > 64" in tr.describe()
    empty = estimate_transition([], t=0.25)
    assert empty.status == "no_data" and empty.n_star is None


def test_nelbo_peak_and_its_range_hand_computed():
    """Test NELBO 2.0, 3.0, 2.9, 1.0 (± 0.2) at N = 16, 64, 256, 1024: the peak is the parabola's vertex through
    (64, 256 and 16) in log N; 16 and 1024 lie significantly below the peak (2.2 < 2.8, 1.2 < 2.8), 256 does not
    (3.1 >= 2.8), so the range runs from 16 to 1024."""
    from basinlab.study.transition import peak_interval

    vals = {16: 2.0, 64: 3.0, 256: 2.9, 1024: 1.0}
    rows = [_rec(N, 0, "test", v, half=0.2, metric="nelbo", t=None) for N, v in vals.items()]
    rows += [_rec(N, 0, "train", 0.5, half=0.2, metric="nelbo", t=None) for N in vals]  # train NELBO: ignored
    tr = estimate_transition(rows, t=0.25)
    # in u = log_4(N / 64): y(-1) = 2, y(0) = 3, y(1) = 2.9 -> y = -0.55 u² + 0.45 u + 3, vertex u = 0.45 / 1.1
    assert tr.nelbo_peak_status == "inside"
    assert tr.nelbo_peak_n == pytest.approx(64 * 4 ** (0.45 / 1.1))
    assert (tr.nelbo_peak_low, tr.nelbo_peak_high) == (pytest.approx(16.0), pytest.approx(1024.0))
    # narrower intervals: 256 (2.9 ± 0.02) is now significantly below 3.0 ± 0.02 -> range 16 to 256
    assert peak_interval([16, 64, 256, 1024], [1.98, 2.98, 2.88, 0.98], [2.02, 3.02, 2.92, 1.02], 1) == (16.0, 256.0)
    # the run of indistinguishable sizes reaches the grid's edge: that side is unbounded
    assert peak_interval([16, 64, 256, 1024], [2.8, 2.8, 2.0, 1.0], [3.2, 3.2, 2.4, 1.4], 1) == (None, 256.0)
    assert peak_interval([16, 64, 256], [1.0, 2.0, float("nan")], [1.2, 2.2, float("nan")], 1) == (None, None)
    # a peak at the grid's edge has no range
    edge = estimate_transition([_rec(N, 0, "test", v, metric="nelbo", t=None) for N, v in
                                {16: 5.0, 64: 3.0, 256: 2.0}.items()], t=0.25)
    assert edge.nelbo_peak_status == "edge" and edge.nelbo_peak_n == 16.0
    assert edge.nelbo_peak_low is None and edge.nelbo_peak_high is None


def test_report_marks_nelbo_peak_and_states_oracle_gaps(tmp_path):
    """The report names the test NELBO's peak with its range, and the network's gaps to the oracles."""
    import pandas as pd

    from basinlab.study.report import oracle_gaps, write_report

    rows = []
    for N, (a, b) in {16: (1.0, 0.06), 64: (0.5, 0.2), 256: (0.3, 0.28), 1024: (0.3, 0.3)}.items():
        rows += [_rec(N, 0, "train", a), _rec(N, 0, "test", b)]
        rows += [_rec(N, 0, "train", 0.99, model="oracle:empirical"), _rec(N, 0, "test", 0.33, model="oracle:markov")]
        rows += [_rec(N, 0, "test", 0.7, metric="entropy", model="oracle:markov", t=1e-5),
                 _rec(N, 0, "test", 0.8, metric="entropy", t=1e-5)]
    rows += [_rec(N, 0, "test", v, half=0.2, metric="nelbo", t=None)
             for N, v in {16: 2.0, 64: 3.0, 256: 2.9, 1024: 1.0}.items()]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    page = write_report(tmp_path).read_text()
    assert f"≈ {64 * 4 ** (0.45 / 1.1):.0f} (95% range 16 to 1024" in page
    assert (tmp_path / "plots" / "nelbo.png").exists()
    gaps = {w.split(":")[0] + w.split(":")[1]: (a, b) for w, a, b in oracle_gaps(pd.DataFrame(rows), "micro", 0.25)}
    assert gaps["train recovery, t = 0.25, N = 16 memoriser (oracle)"] == (pytest.approx(1.0), pytest.approx(0.99))
    assert gaps["test recovery, t = 0.25, N = 1024 generaliser (oracle)"] == (pytest.approx(0.3), pytest.approx(0.33))
    assert gaps["test entropy (nats), N = 1024 generaliser (oracle)"] == (pytest.approx(0.8), pytest.approx(0.7))
    assert "Network against the oracles" in page and "91%" in page  # 0.30 / 0.33
