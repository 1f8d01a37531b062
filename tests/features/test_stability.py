"""PSI compares like with like: a feature that needs history is compared on the rows that have it."""

from __future__ import annotations

import numpy as np

from features.catalog import BY_NAME
from features.stability import psi, reference_bins, with_history


def test_a_book_growing_older_is_not_drift_of_a_feature_that_needs_history() -> None:
    """A short card book trained on its months 6-8: the 6-month balance trend was missing on a third of the
    training rows (no balance 6 months back) and known on every scored row, which read as drift (PSI 1.2)
    though the trends themselves had not moved."""
    rng = np.random.default_rng(5)
    need = BY_NAME["balance_trend_6m"].history
    assert need == 7  # t and the month 6 before it
    hist_train = np.repeat([6.0, 7.0, 8.0], 2000)
    train = np.where(hist_train >= need, rng.normal(0, 0.1, 6000), np.nan)
    hist_now = np.full(6000, 10.0)
    now = rng.normal(0, 0.1, 6000)  # the same trends, all known
    naive = psi(reference_bins(train), now)
    fair = psi(reference_bins(with_history(train, hist_train, need)), with_history(now, hist_now, need))
    assert naive > 0.25 and fair < 0.02, (naive, fair)
    moved = rng.normal(0.3, 0.1, 6000)  # balances that really grew: still an alarm
    assert psi(reference_bins(with_history(train, hist_train, need)), with_history(moved, hist_now, need)) > 1
    # a feature that needs no history keeps every row, missing ones included (unsecured loans' LTV)
    ltv = np.array([0.5, np.nan, 0.7])
    np.testing.assert_array_equal(with_history(ltv, np.array([1.0, 1.0, 1.0]), 0), ltv)
    np.testing.assert_array_equal(with_history(ltv, None, 7), ltv)
