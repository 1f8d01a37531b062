"""Tiers against the bundle's thresholds."""

from __future__ import annotations

import numpy as np

from model.bundle import capacity_cut, tiers_at


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


def test_an_older_bundle_s_catalog_takes_today_s_reason_rules_and_keeps_its_texts() -> None:
    """A champion trained before the rules still said 'Loan-to-value has moved -3 points': its stored
    catalog had no `signed`, `told_by` or `measure`. Its texts stay its own."""
    from dataclasses import asdict

    from features.catalog import BY_NAME
    from model.bundle import _feature

    old = asdict(BY_NAME["ltv_change"])
    for k in ("signed", "told_by", "measure", "history"):
        old.pop(k)
    old["reason"] = "LTV moved {value:+.0%} since origination"  # the wording it was trained with
    f = _feature(old)
    assert f.signed and f.reason == "LTV moved {value:+.0%} since origination"
    assert f.history == 0  # its PSI reference was made of every row: compared the same way
    since = asdict(BY_NAME["months_since_delinquency"])
    since.pop("told_by")
    assert _feature(since).told_by == "dpd_now"


def test_the_capacity_rule_puts_exactly_the_share_in_each_tier_ties_going_up() -> None:
    rng = np.random.default_rng(0)
    p = rng.permutation(np.linspace(0.001, 0.5, 2000))
    cut = capacity_cut(p, 0.01, 0.04)
    tiers = tiers_at(p, np.full(len(p), "early_warning"), {"early_warning": cut})
    assert (tiers == "red").sum() == 20 and (tiers == "amber").sum() == 80
    # loans tied at the red threshold all go up, however many there are
    tied = np.concatenate([np.full(30, 0.4), np.linspace(0.001, 0.2, 970)])
    t = capacity_cut(tied, 0.01, 0.04)
    assert t["red"] == 0.4 and (tied >= t["red"]).sum() == 30
    # too few loans for one of the tier: no PD reaches it
    few = np.linspace(0.01, 0.9, 35)
    small = capacity_cut(few, 0.01, 0.04)
    assert small["red"] == float("inf") and small["amber"] == few[-2]  # 5% of 35 rounds to 2 loans
    # training stores finite thresholds (JSON, and loans the window never saw): one loan at least
    kept = capacity_cut(few, 0.01, 0.04, at_least_one=True)
    assert kept["red"] == few[-1] and kept["amber"] == few[-2]
