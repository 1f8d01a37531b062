"""Validation measures on hand-made cases where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from training import metrics


def test_lead_time_counts_months_from_the_earliest_flag_to_default() -> None:
    # loan a defaults 5 months after its first snapshot: flagged at ttd 5 and 4 -> lead 5
    # loan b defaults, flagged only 1 month ahead -> lead 1; loan c defaults, never flagged
    # loan d never defaults (ttd NaN): a false alarm, not part of lead time
    loan = ["a", "a", "b", "b", "c", "d"]
    ttd = [5, 4, 2, 1, 3, np.nan]
    flag = [True, True, False, True, False, True]
    r = metrics.lead_time(loan, ttd, flag)
    assert r["lead_flagged_share"] == pytest.approx(2 / 3)
    assert r["lead_median_months"] == 3.0 and r["lead_mean_months"] == 3.0
    assert r["lead_3m_share"] == pytest.approx(1 / 3)


def test_ks_and_auc_of_a_perfect_and_a_useless_score() -> None:
    y = np.array([0, 0, 0, 1, 1])
    assert metrics.ks(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0
    assert metrics.auc(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0
    assert metrics.ks(y, np.full(5, 0.5)) == 0.0


def test_ece_is_zero_when_pd_matches_the_bin_rates() -> None:
    y = np.r_[np.zeros(90), np.ones(10)]
    assert metrics.ece(y, np.full(100, 0.1), n_bins=1) == pytest.approx(0.0)
    assert metrics.ece(y, np.full(100, 0.3), n_bins=1) == pytest.approx(0.2)


def test_ks_does_not_split_ties_and_the_curve_gives_the_same_figure() -> None:
    y = np.array([1, 0, 1, 0, 0, 1, 0, 0])
    p = np.array([0.9, 0.9, 0.5, 0.5, 0.5, 0.2, 0.1, 0.1])
    share, bad, good = metrics.ks_curve(y, p)
    assert len(share) == 4  # one point per distinct score
    assert metrics.ks(y, p) == pytest.approx(np.max(np.abs(bad - good)))
    shuffled = np.random.default_rng(0).permutation(len(y))
    assert metrics.ks(y[shuffled], p[shuffled]) == metrics.ks(y, p)


def test_jeffreys_test_flags_a_grade_whose_pd_is_far_from_its_rate() -> None:
    assert metrics.jeffreys_pvalue(10, 1000, 0.01) > 0.5  # 1.0% observed, 1.0% predicted
    assert metrics.jeffreys_pvalue(30, 1000, 0.01) < 0.001  # 3% observed, 1% predicted: under-predicts
    assert metrics.jeffreys_pvalue(2, 1000, 0.02) < 0.001  # over-predicts
    y = np.r_[np.zeros(990), np.ones(10), np.zeros(900), np.ones(100)]
    p = np.r_[np.full(1000, 0.01), np.full(1000, 0.3)]
    g = metrics.calibration_by_grade(y, p, np.r_[np.full(1000, 3), np.full(1000, 9)])
    assert list(g["grade"]) == list(range(1, 11)) and g["count"].sum() == 2000
    row3, row9 = g.set_index("grade").loc[3], g.set_index("grade").loc[9]
    assert row3["jeffreys_pvalue"] > 0.05 and row9["jeffreys_pvalue"] < 0.001  # 10% observed vs 30%
    assert row3["rate_low"] < 0.01 < row3["rate_high"]


def test_calibration_in_the_large_gives_o_e_with_an_interval_and_a_slope() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.2, 50_000)
    y = (rng.random(len(p)) < p).astype(float)
    c = metrics.calibration_in_the_large(y, p)
    assert c["oe_low"] < 1 < c["oe_high"] and abs(c["oe"] - 1) < 0.03
    assert abs(c["calibration_slope"] - 1) < 0.1
    spread = 1 / (1 + np.exp(-2 * np.log(p / (1 - p))))  # PDs pushed apart: the slope falls below 1
    assert metrics.calibration_in_the_large(y, spread)["calibration_slope"] < 0.7


def test_psi_sees_arrears_rise_in_a_feature_that_is_mostly_zero() -> None:
    """96% of the training loans at 0 days past due: the zeros get a bin of their own, so half the book
    in arrears is a large PSI (it was exactly 0: the zeros shared a bin with every larger value)."""
    from features.stability import psi, reference_bins

    ref = reference_bins(np.r_[np.zeros(960), np.full(40, 30.0)])
    assert psi(ref, np.r_[np.zeros(960), np.full(40, 30.0)]) < 1e-9
    assert psi(ref, np.r_[np.zeros(500), np.full(500, 120.0)]) > 0.25
    counts = np.random.default_rng(3).integers(0, 4, 10_000).astype(float)  # a few distinct values
    ref = reference_bins(counts)
    assert min(ref["shares"][1:-1]) > 0.2  # a bin per value, none left almost empty
    assert psi(ref, np.where(counts == 0, 1.0, counts)) > 0.25
    # a coarse model's few PD levels, recomputed a float step off either way, are the same distribution
    levels = np.random.default_rng(4).choice([0.01, 0.02, 0.05, 0.1, 0.2], 20_000)
    ref = reference_bins(levels)
    for again in (np.nextafter(levels, 1), levels * (1 - 1e-15), levels * (1 + 1e-15)):
        assert psi(ref, again) < 1e-9
    assert ref["median"] == 0.05  # the training median itself (the scorer's typical loan), not a bin edge


def test_psi_of_a_sample_against_its_own_reference_is_near_zero_and_a_shift_is_large() -> None:
    from features.stability import psi, psi_band, reference_bins

    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 20_000)
    ref = reference_bins(x)
    assert psi(ref, rng.normal(0, 1, 20_000)) < 0.01 and psi_band(0.05) == "stable"
    assert psi(ref, rng.normal(1, 1, 20_000)) > 0.25 and psi_band(0.3) == "shifted"
    cats = reference_bins(np.array(["a", "b", "a", None], dtype=object), categorical=True)
    assert cats["missing"] == 0.25 and psi(cats, np.array(["c"] * 4, dtype=object)) > 1


def test_decile_table_is_riskiest_first_and_captures_everything() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(float)
    d = metrics.decile_table(y, p)
    assert len(d) == 10 and d["count"].sum() == 1000
    assert d["mean_pd"].is_monotonic_decreasing and d["cum_capture"].iloc[-1] == pytest.approx(1.0)
    assert d["ks"].max() <= metrics.ks(y, p) + 1e-12  # the deciles sample the one KS curve


def test_decile_ks_never_splits_a_tie_so_row_order_does_not_change_it() -> None:
    """A coarse model (6 distinct PDs on a card book) ties thousands of loans: a decile cut inside a tie
    made the table's KS depend on how the rows happened to be sorted."""
    rng = np.random.default_rng(5)
    p = rng.choice([0.01, 0.02, 0.05, 0.1, 0.2, 0.4], size=3000, p=[0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    y = (rng.random(3000) < p).astype(float)
    d = metrics.decile_table(y, p)
    flipped = np.argsort(y, kind="stable")[::-1]  # defaulters first within every tie
    assert d.equals(metrics.decile_table(y[flipped], p[flipped]))
    assert d["count"].sum() == 3000
    _, bad, good = metrics.ks_curve(y, p)
    points = {round(v, 12) for v in np.abs(bad - good)}
    assert all(round(v, 12) in points for v in d["ks"].dropna())  # every row is a point of the one curve
    assert d["ks"].max() <= metrics.ks(y, p) + 1e-12
    assert (d["count"] == 0).sum() >= 4  # six scores fill six deciles at most: tie runs are not cut


def test_the_code_version_is_this_checkout_s_from_any_folder(tmp_path, monkeypatch) -> None:
    """A model's lineage must not depend on where `ews train` ran (it said 'unknown' outside the repo)."""
    import subprocess
    from pathlib import Path

    from training.tracking import code_version

    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    if not head:
        pytest.skip("the tests run from a copy that is not a git checkout")
    monkeypatch.chdir(tmp_path)
    assert code_version().removesuffix("-dirty") == head
