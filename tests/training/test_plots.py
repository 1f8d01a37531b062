"""Validation plots are drawn for any model, a degenerate one included."""

from __future__ import annotations

import numpy as np

from training.metrics import calibration_by_grade
from training.plots import reliability_by_grade


def test_reliability_is_drawn_for_grades_of_one_loan_or_all_defaults(tmp_path) -> None:
    """A model stopped after a few rounds leaves grades of one loan without a default, or of two that
    both defaulted: their Jeffreys intervals hold the observed rate (0 and 1) and the plot draws them
    (training crashed on negative error bars)."""
    rng = np.random.default_rng(0)
    p = np.r_[0.001, 0.9, 0.9, rng.uniform(0.01, 0.2, 5_000)]
    y = np.r_[0, 1, 1, (rng.random(5_000) < p[3:]).astype(int)]
    grades = np.r_[1, 10, 10, rng.integers(2, 10, 5_000)]
    g = calibration_by_grade(y, p, grades)
    one, both = g.set_index("grade").loc[1], g.set_index("grade").loc[10]
    assert one["rate_low"] == 0.0 <= one["observed_rate"] <= one["rate_high"]
    assert both["rate_low"] <= both["observed_rate"] == 1.0 == both["rate_high"]
    assert (g["rate_low"] <= g["observed_rate"]).all() and (g["observed_rate"] <= g["rate_high"]).all()
    assert reliability_by_grade(g, tmp_path / "r.png").stat().st_size > 1000
