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
