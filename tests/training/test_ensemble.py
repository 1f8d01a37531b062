"""The merged booster is exactly the mean of its members, for LightGBM's prediction and its SHAP."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.ensemble import loan_draws, loan_folds, member_raw, merge, unseen_raw


def _members(X: pd.DataFrame, y: pd.Series) -> list[lgb.Booster]:
    params = {
        "objective": "binary",
        "num_leaves": 4,
        "verbose": -1,
        "bagging_fraction": 0.7,
        "bagging_freq": 1,
    }
    return [lgb.train({**params, "seed": s}, lgb.Dataset(X, y), 30 + 10 * s) for s in range(3)]


def _data(n: int = 3000) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "c": pd.Categorical(rng.choice(["x", "y", "z"], n)),
        }
    )
    return X, ((X["a"] + (X["c"] == "y") + rng.normal(size=n)) > 0.8).astype(int)


def test_each_member_is_read_back_from_the_merged_booster() -> None:
    X, y = _data()
    members = _members(X, y)
    merged = merge(members)
    rounds = [m.num_trees() for m in members]
    for j, own in enumerate(members):
        np.testing.assert_allclose(
            member_raw(merged, rounds, j, X), own.predict(X, raw_score=True), atol=1e-12
        )


def test_a_test_row_is_scored_by_the_member_blind_to_its_loan() -> None:
    """Member j never fitted fold j's loans: their test rows take its score; a loan no member fitted (one
    opened after training) takes the merged score."""
    X, y = _data(600)
    members = _members(X, y)
    merged, rounds = merge(members), [m.num_trees() for m in members]
    train_loans = pd.Series(np.repeat(np.arange(100), 3))
    cal_loans = pd.Series(np.arange(100, 150))
    row_loans = pd.Series(np.r_[np.arange(0, 150, 0.25).astype(int)[:550], np.full(50, 999)])
    got = unseen_raw(merged, rounds, X, row_loans, train_loans, cal_loans, seed=5)
    fold = loan_folds(row_loans, 3, 5, np.arange(150))
    for j, m in enumerate(members):
        on = fold == j
        assert on.sum() > 50
        np.testing.assert_allclose(got[on], m.predict(X[on], raw_score=True), atol=1e-12)
    new = row_loans.to_numpy() == 999
    np.testing.assert_allclose(got[new], merged.predict(X[new], raw_score=True), atol=1e-12)


def test_merged_booster_is_the_mean_of_its_members_in_score_and_shap() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "a": rng.normal(size=3000),
            "b": np.where(rng.random(3000) < 0.1, np.nan, rng.normal(size=3000)),
            "c": pd.Categorical(rng.choice(["x", "y", "z"], 3000)),
        }
    )
    y = ((X["a"] + (X["c"] == "y") + rng.normal(size=3000)) > 0.8).astype(int)
    members = [
        lgb.train(
            {
                "objective": "binary",
                "num_leaves": 4,
                "verbose": -1,
                "seed": s,
                "bagging_fraction": 0.7,
                "bagging_freq": 1,
            },
            lgb.Dataset(X, y),
            30 + 10 * s,
        )
        for s in range(3)
    ]
    merged = merge(members)
    assert merged.num_trees() == sum(m.num_trees() for m in members)
    mean_raw = np.mean([m.predict(X, raw_score=True) for m in members], axis=0)
    np.testing.assert_allclose(merged.predict(X, raw_score=True), mean_raw, atol=1e-12)
    mean_shap = np.mean([m.predict(X, pred_contrib=True) for m in members], axis=0)
    np.testing.assert_allclose(merged.predict(X, pred_contrib=True), mean_shap, atol=1e-12)
    assert merge(members[:1]) is members[0]


def test_a_loan_keeps_its_fold_when_other_loans_leave_or_join_the_book() -> None:
    """Folds follow each loan's id and the seed alone: setting one early loan aside (a bad row in next
    month's extract) or adding new loans moves no other loan, and the folds stay balanced."""
    ids = np.array([f"L{i:06d}" for i in range(3000)])
    before = loan_folds(pd.Series(ids), 3, 7)
    after = loan_folds(pd.Series(np.r_[ids[1:], ["L999998", "L999999"]]), 3, 7)
    np.testing.assert_array_equal(after[:-2], before[1:])
    assert np.bincount(before, minlength=3).min() > 900
    assert (loan_folds(pd.Series(ids), 3, 8) != before).mean() > 0.5  # another seed, other folds
    held = loan_draws(ids, 7, "holdout") < 0.25  # the held-out loans spread over every fold
    assert np.bincount(before[held], minlength=3).min() > 200


def test_the_held_out_calibration_loans_stay_held_out_when_a_loan_is_set_aside() -> None:
    """The held-out share of a short book's spec (no calibration window) draws by loan id too."""
    from model.spec import ModelSpec
    from training.fit import split_windows

    months = pd.date_range("2024-01-01", periods=3, freq="MS")
    ids = [f"L{i:05d}" for i in range(800)]
    panel = pd.DataFrame(
        {
            "loan_id": np.repeat(ids, 3),
            "as_of": np.tile(months, 800),
            "label": (np.arange(2400) % 7 == 0).astype(int),  # defaults in every month
            "dpd_now": 0,
        }
    )
    spec = ModelSpec.model_validate(
        {
            "name": "t",
            "windows": {
                "train": ["2024-01", "2024-02"],
                "calibration_months": 0,
                "test": ["2024-03", "2024-03"],
            },
        }
    )
    w = {"train": (months[0], months[1]), "calibration": None, "test": (months[2], months[2])}
    held = set(split_windows(panel, spec, w)["calibration"]["loan_id"])
    fewer = split_windows(panel[panel["loan_id"] != ids[0]], spec, w)
    assert set(fewer["calibration"]["loan_id"]) == held - {ids[0]}
    assert 0.2 < len(held) / len(ids) < 0.3
