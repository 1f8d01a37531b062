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


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("num_leaves: 4 ", "num_leafs: 4 "), "lightgbm.num_leafs: unknown key"),
        (
            ("red_share: 0.01 ", "red_share: -0.01 "),
            "tiers.red_share: Input should be greater than 0 (got -0.01)",
        ),
        (
            ("learning_rate: 0.05", "learning_rate: fast"),
            "lightgbm.learning_rate: Input should be a valid number",
        ),
        (
            ("features: all ", "features: [bureau_score, utilisaton] "),
            "features: unknown features ['utilisaton']",
        ),
        (
            ("  test_months: 6", "  test: [2025-08-01, 2025-10]"),
            "windows.test.0: 2025-08-01 is a date; give a month",
        ),
        (("seed: 7", "seed: 7\nseed: 8"), "is not valid YAML: key 'seed' is given twice (line 28)"),
    ],
)
def test_a_bad_spec_file_is_one_line_naming_the_field(edit, message, tmp_path) -> None:
    """A spec file's error was pydantic's block (type codes, input dumps, a documentation link on its
    own line); a key given twice was accepted, the last one winning."""
    text = (Path(__file__).parents[2] / "models" / "pd_90d_12m.yaml").read_text()
    assert edit[0] in text
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ValueError) as e:
        load_spec(path)
    text = str(e.value)
    assert message in text and "\n" not in text and "pydantic" not in text, text


def test_promotion_needs_only_the_test_window_in_the_book() -> None:
    """A newer 24-month extract no longer holds a model's training months: training on it fails naming
    the train window, promotion scores on the test window alone, and says so when that is missing."""
    import pandas as pd

    from model.spec import resolve_test_window, resolve_windows

    spec = load_spec(Path("models/pd_90d_12m.yaml"))
    first, last = pd.Timestamp("2024-01-01"), pd.Timestamp("2025-12-01")  # 24 months
    with pytest.raises(ValueError, match="the train window .* lies before the book"):
        resolve_windows(spec, first, last)
    assert resolve_test_window(spec, first, last) == (pd.Timestamp("2024-07-01"), pd.Timestamp("2024-12-01"))
    with pytest.raises(ValueError, match=r"the test window 2024-07..2024-12 starts before the book"):
        resolve_test_window(spec, pd.Timestamp("2024-09-01"), last)
    with pytest.raises(ValueError, match=r"the test window 2024-07..2024-12 ends after 2024-10"):
        fixed = spec.model_copy(update={"windows": spec.windows.model_copy(update={"test_end": "2024-12"})})
        resolve_test_window(fixed, first, pd.Timestamp("2025-10-01"))
    # scored all the same, on histories shorter than the features look back: said
    from model.spec import short_history_note

    note = short_history_note(first, resolve_test_window(spec, first, last))
    assert note and note.startswith("note: the book holds 6 months before the test window 2024-07..2024-12")
    assert short_history_note(pd.Timestamp("2022-07-01"), resolve_test_window(spec, first, last)) is None
    full = resolve_windows(spec, pd.Timestamp("2022-01-01"), last)
    assert resolve_test_window(spec, pd.Timestamp("2022-01-01"), last) == full["test"]  # one definition
    # a book shorter than the label (a 9-month card extract, a 12-month label): said as such, not as a
    # label "complete up to" a month before the book
    for resolve in (resolve_windows, resolve_test_window):
        said = r"2025-04..2025-12 \(9 months\): a 12-month label needs a book of 13"
        with pytest.raises(ValueError, match=said):
            resolve(spec, pd.Timestamp("2025-04-01"), last)
