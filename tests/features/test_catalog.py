"""Reason sentences a credit officer reads: grammatical for every feature and value."""

from __future__ import annotations

import re

import numpy as np
import pytest

from features.catalog import BY_NAME, FEATURES, HISTORY_MONTHS


@pytest.mark.parametrize(
    ("feature", "value", "text"),
    [
        ("missed_payments_3m", 1.0, "1 missed payment in the last 3 months"),
        ("missed_payments_3m", 2.0, "2 missed payments in the last 3 months"),
        ("months_since_delinquency", 0.0, "Behind on payments now"),
        ("months_since_delinquency", 1.0, "Last behind on payments 1 month ago"),
        ("months_since_delinquency", float(HISTORY_MONTHS), "Not behind on payments in the last 24 months"),
        ("restructured_24m", 1.0, "Restructured once in the last 24 months"),
        ("lien_position", 2.0, "Second lien, behind a prior lender"),
        ("dpd_now", 1.0, "1 day past due now"),
        ("current_ltv", 0.84, "Loan-to-value is 84% on today's house prices"),
        ("industry", "construction", "Works in construction, a higher-risk industry in this model"),
        ("borrower_type", "sme", "Small or medium enterprise"),
        ("utilisation", 0.92, "Using 92% of the credit limit"),
        ("city_tier", "other", "City tier: other"),  # was "Located in a other city"
        ("city_tier", "new_tier1", "City tier: new tier1"),
        ("book_arrears_rate", 0.042, "4.2% of the book is behind on payments now"),
        # a change of a share is told in points: 0.30 -> 0.49 is '+19 points', not '+19%' (that is 0.357)
        ("utilisation_change_3m", 0.19, "Use of the credit limit moved +19 points in 3 months"),
        ("book_arrears_change_6m", -0.004, "The book's arrears rate moved -0.4 points in 6 months"),
        ("ltv_change", 0.12, "Loan-to-value has moved +12 points since origination"),
        ("balance_trend_6m", 0.054, "Balance changed +5.4% over 6 months"),  # a relative change stays one
        ("utilisation_change_3m", 2e12, "Use of the credit limit moved +2e+14 points in 3 months"),
        ("utilisation_change_3m", -0.01, "Use of the credit limit moved -1 point in 3 months"),
        ("ltv_change", np.float32(0.25), "Loan-to-value has moved +25 points since origination"),
        # a card's payment due is its minimum, not an installment
        ("payment_to_income", 0.31, "Payments due take 31% of declared income"),
        # a valid but absurd value stays a sentence (three significant digits, not three hundred)
        ("utilisation", 9.43e305, "Using 9.43e+307% of the credit limit"),
        ("annual_income", 1.5e20, "Declared income of 1.5e+20"),
        ("annual_income", 120_000.0, "Declared income of 120,000"),
        ("bureau_score", None, None),
        ("current_ltv", float("nan"), None),
    ],
)
def test_reason_sentences(feature: str, value: object, text: str | None) -> None:
    """A missing value is never a reason: it has no sentence at all."""
    assert BY_NAME[feature].reason_text(value) == text


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_no_feature_says_one_in_the_plural_or_leaves_a_placeholder(feature) -> None:
    values = ["retail", None] if feature.dtype == "cat" else [0.0, 1.0, 2.0, 0.25, 12.0, None, float("nan")]
    for v in values:
        text = feature.reason_text(v)
        if v is None or v != v:
            assert text is None
            continue
        assert text and "{" not in text and "}" not in text, (v, text)
        assert not re.search(
            r"(?<![\d.])1 (months|days|payments|times|missed payments|partial payments)\b", text
        ), (
            v,
            text,
        )


def test_every_feature_has_a_known_concept_and_a_revolving_text_says_credit_limit() -> None:
    from features.catalog import CONCEPTS

    assert all(f.concept in CONCEPTS for f in FEATURES)
    assert all("amount lent" not in f.reason for f in FEATURES if f.concept == "utilisation")
    assert "credit limit" in BY_NAME["utilisation"].reason
    # the borrower's city's prices and the collateral's are one fact where the cities are one: a measure
    assert BY_NAME["local_hpi_change_12m"].measure == BY_NAME["hpi_change_12m"].measure == "hpi_12m"
    assert BY_NAME["local_hpi_change_12m"].concept == BY_NAME["hpi_change_12m"].concept


def test_points_show_as_the_sentence_rounds_them() -> None:
    """Two values the sentence shows alike read alike: the comparison with the typical value uses it."""
    assert BY_NAME["utilisation_change_3m"].display_step == pytest.approx(0.01)
    assert BY_NAME["book_arrears_change_6m"].display_step == pytest.approx(0.001)
    assert BY_NAME["balance_trend_6m"].display_step == pytest.approx(0.001)
