"""Tiers against the bundle's thresholds."""

from __future__ import annotations

import numpy as np

from model.bundle import tiers_at


def test_a_pd_equal_to_the_threshold_but_for_its_last_bits_is_at_it() -> None:
    """The card model's top PD, computed again in another order, came out 3e-16 below the red threshold
    (its own value on the calibration window), so nobody could ever be red."""
    top = 0.04860078208738075
    again = 0.04860078208738042  # the same loan's PD, summed in another order
    thresholds = {"early_warning": {"red": top, "amber": 0.03}, "in_arrears": {"red": 0.5, "amber": 0.2}}
    pd_ = np.array([again, top, 0.0486, 0.031, 0.029, 0.49999999999999994, 0.3])
    lists = np.array(["early_warning"] * 5 + ["in_arrears"] * 2)
    assert tiers_at(pd_, lists, thresholds).tolist() == [
        "red",
        "red",
        "amber",
        "amber",
        "green",
        "red",
        "amber",
    ]
