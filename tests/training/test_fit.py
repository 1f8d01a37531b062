"""Training on the demo-size book: out-of-time windows, calibration, monotonicity, challenger, oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.bundle import ModelBundle
from training.fit import train_model
from training.panel import build_panel, month_range
from training.spec import load_spec, resolve_windows


@pytest.fixture(scope="module")
def trained(demo_generated):
    book = demo_generated.book
    spec = load_spec("models/pd_90d_12m.yaml")
    w = resolve_windows(spec, book.last_month)
    panel = build_panel(book, month_range(w["train"][0], w["test"][1]), 12, 90, demo_generated.oracle)
    return spec, panel, train_model(spec, panel, book.last_month)


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
