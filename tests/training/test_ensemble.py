"""The merged booster is exactly the mean of its members, for LightGBM's prediction and its SHAP."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.ensemble import merge


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
