"""A model spec is checked before any work: every bad value is refused naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from model.spec import ModelSpec, load_spec


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "t3bad@x"}, "name"),  # no command could name it (NAME@alias)
        ({"name": "has space"}, "name"),
        ({"features": ["bureau_score", "bureau_score"]}, "features"),
        ({"features": []}, "features"),
        ({"tiers": {"red_share": 0.6, "amber_share": 0.6}}, "tiers"),
        ({"tiers": {"red_share": 0.5, "amber_share": 0.5}}, "tiers"),
        ({"lightgbm": {"learning_rate": 0}}, "lightgbm.learning_rate"),
        ({"lightgbm": {"learning_rate": -0.1}}, "lightgbm.learning_rate"),
        ({"lightgbm": {"num_leaves": 1}}, "lightgbm.num_leaves"),
        ({"lightgbm": {"subsample": 0}}, "lightgbm.subsample"),
        ({"lightgbm": {"colsample_bytree": 2}}, "lightgbm.colsample_bytree"),
        ({"lightgbm": {"reg_lambda": -1}}, "lightgbm.reg_lambda"),
        ({"lightgbm": {"n_estimators": 0}}, "lightgbm.n_estimators"),
        ({"gates": {"max_ece": -1}}, "gates.max_ece"),
        ({"gates": {"min_auc": 1.5}}, "gates.min_auc"),
        # a spec's months parse as the command line's: exactly YYYY-MM
        ({"windows": {"test_end": "Dec 2025"}}, "windows.test_end"),
        ({"windows": {"train": ["2024Q1", "2024-06"]}}, "windows.train"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(change: dict, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        ModelSpec(**{"name": "x", **change})
    assert field in {".".join(map(str, err["loc"])) for err in e.value.errors()}, e.value


def test_the_shipped_specs_and_reasonable_variants_load() -> None:
    for path in sorted((Path(__file__).parents[2] / "models").glob("*.yaml")):
        assert load_spec(path).name
    ModelSpec(name="a.b_c-1", lightgbm={"n_estimators": 1, "num_leaves": 2}, tiers={"red_share": 0.1})
