"""Training on the demo-size book: out-of-time windows, calibration, monotonicity, challenger, oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.bundle import ModelBundle


@pytest.fixture(scope="module")
def trained(demo_trained):
    return demo_trained


def test_windows_are_consecutive_and_out_of_time(trained) -> None:
    spec, _, res = trained
    (_, b), (c, d), (e, f) = res.windows["train"], res.windows["calibration"], res.windows["test"]
    assert b < c and d < e
    assert (c - b).days <= 31 and (e - d).days <= 31
    assert res.test_scores["as_of"].between(e, f).all()
    assert f == pd.Timestamp(
        "2024-12-01"
    )  # last month with a complete 12-month window in a book ending 2025-12


def test_model_quality_against_oracle_and_challenger(trained) -> None:
    _, _, res = trained
    m = res.test_metrics
    assert m["auc"] >= 0.97 * m["oracle_auc"]
    assert m["auc"] <= m["oracle_auc"] + 0.005
    assert m["ece"] < 0.01
    assert 0.8 < res.challenger_metrics["auc"] < m["auc"]  # LightGBM beats the scorecard benchmark


def test_declared_directions_hold(trained) -> None:
    _, _, res = trained
    assert res.monotonicity and all(res.monotonicity.values()), res.monotonicity


def test_tiers_match_capacity_on_calibration_and_grades_are_ordered(trained) -> None:
    _, _, res = trained
    t = res.test_scores
    assert 0.003 < (t["tier"] == "red").mean() < 0.03
    assert (t["tier"] != "green").mean() < 0.12
    g = res.grades
    rates = g.set_index("grade")["observed_rate"]
    assert rates.iloc[-1] > rates.iloc[0]
    dec = res.deciles
    assert dec["default_rate"].iloc[0] > 5 * dec["default_rate"].iloc[-1]


def test_bundle_round_trip_gives_identical_predictions(trained, tmp_path) -> None:
    _, panel, res = trained
    res.bundle.save(tmp_path / "b")
    back = ModelBundle.load(tmp_path / "b")
    rows = panel.sample(500, random_state=0)
    a = res.bundle.pd_from_raw(res.bundle.raw_score(rows))
    b = back.pd_from_raw(back.raw_score(rows))
    np.testing.assert_array_equal(a, b)
    assert back.tier_thresholds == res.bundle.tier_thresholds


def test_unknown_schema_version_is_refused(trained, tmp_path) -> None:
    _, _, res = trained
    res.bundle.save(tmp_path / "b")
    meta = (
        (tmp_path / "b" / "bundle.json")
        .read_text()
        .replace('"schema_version": "1.0"', '"schema_version": "9.9"')
    )
    (tmp_path / "b" / "bundle.json").write_text(meta)
    with pytest.raises(ValueError, match="schema version"):
        ModelBundle.load(tmp_path / "b")


def test_lead_time_is_reported_and_plausible(trained) -> None:
    _, _, res = trained
    m = res.test_metrics
    assert 0.5 < m["lead_flagged_share"] <= 1.0
    assert 1 <= m["lead_median_months"] <= 12
    assert m["lead_3m_share"] <= m["lead_flagged_share"]


def _quick_spec(spec, **lgb):
    """The default spec with a short train window and capped trees: same code path, seconds to fit."""
    return spec.model_copy(
        update={
            "windows": spec.windows.model_copy(update={"train_months": 6}),
            "lightgbm": spec.lightgbm.model_copy(update={"n_estimators": 150, **lgb}),
        }
    )


def test_same_spec_data_and_seed_reproduce_the_model_and_metrics(trained, demo_generated) -> None:
    from training.fit import train_model

    spec, panel, _ = trained
    quick = _quick_spec(spec)
    a = train_model(quick, panel, demo_generated.book.last_month)
    b = train_model(quick, panel, demo_generated.book.last_month)
    assert a.test_metrics == b.test_metrics
    assert a.challenger_metrics == b.challenger_metrics
    assert a.bundle.booster.model_to_string() == b.bundle.booster.model_to_string()
    other = train_model(quick.model_copy(update={"seed": 8}), panel, demo_generated.book.last_month)
    assert other.bundle.booster.model_to_string() != a.bundle.booster.model_to_string()


def test_tuning_searches_on_the_calibration_window_and_returns_a_trained_spec(
    trained, demo_generated
) -> None:
    from training.tune import tune

    spec, panel, _ = trained
    quick = _quick_spec(spec)
    test_start = pd.Timestamp("2024-07-01")
    # the test window's labels are scrambled: tuning must give the same result without looking at them
    scrambled = panel.copy()
    late = scrambled["as_of"] >= test_start
    scrambled.loc[late, "label"] = np.random.default_rng(0).permutation(
        scrambled.loc[late, "label"].to_numpy()
    )
    best, trials = tune(quick, panel, demo_generated.book.last_month, 3)
    best2, trials2 = tune(quick, scrambled, demo_generated.book.last_month, 3)
    assert len(trials) == 3 and [t["value"] for t in trials] == [t["value"] for t in trials2]
    assert best.lightgbm == best2.lightgbm
    top = max(trials, key=lambda t: t["value"])
    assert best.lightgbm.num_leaves == top["params"]["num_leaves"]
    assert all(0.5 < t["value"] < 1 for t in trials)
