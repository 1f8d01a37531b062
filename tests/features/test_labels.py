"""Labels and the performing population on hand-built books (DESIGN.md §3), cures and probation included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.book import Book
from features.build import build_features
from features.labels import CENSORED, LabelRule, label_snapshots, performing_snapshots


def one_loan_book(rows: list[tuple[str, int, str]], start: str = "2023-01-01") -> Book:
    """A book with one unsecured loan L1; rows are (month 'YYYY-MM', dpd, status) in order."""
    borrowers = pd.DataFrame(
        {
            "borrower_id": ["B1"],
            "borrower_type": ["individual"],
            "birth_year": [1980],
            "industry": ["retail"],
            "years_in_business": [None],
            "annual_income": [200000.0],
            "bureau_score": [650.0],
        }
    )
    loans = pd.DataFrame(
        {
            "loan_id": ["L1"],
            "borrower_id": ["B1"],
            "product": ["unsecured_consumer"],
            "origination_date": [pd.Timestamp(start)],
            "term_months": [36],
            "principal": [50000.0],
            "interest_rate": [0.1],
            "repayment_type": ["amortizing"],
            "city": ["Wuhan"],
            "city_tier": ["new_tier1"],
            "collateral_id": [None],
            "lien_position": [None],
            "funding_partner": [None],
        }
    )
    perf = pd.DataFrame(
        {
            "loan_id": "L1",
            "month": [pd.Timestamp(m + "-01") for m, _, _ in rows],
            "balance": 40000.0,
            "scheduled_payment": 1600.0,
            "paid_amount": [0.0 if d > 0 else 1600.0 for _, d, _ in rows],
            "days_past_due": [d for _, d, _ in rows],
            "status": [s for _, _, s in rows],
            "restructured": False,
        }
    )
    empty_c = pd.DataFrame(
        {
            "collateral_id": pd.Series(dtype="str"),
            "property_type": pd.Series(dtype="str"),
            "city": pd.Series(dtype="str"),
            "appraisal_value": pd.Series(dtype=float),
            "appraisal_date": pd.Series(dtype="datetime64[ns]"),
            "prior_lien_balance": pd.Series(dtype=float),
        }
    )
    empty_hp = pd.DataFrame(
        {
            "city": pd.Series(dtype="str"),
            "month": pd.Series(dtype="datetime64[ns]"),
            "index": pd.Series(dtype=float),
        }
    )
    return Book(borrowers, loans, empty_c, empty_hp, perf)


def months(first: str, n: int) -> list[str]:
    return [f"{d:%Y-%m}" for d in pd.date_range(first + "-01", periods=n, freq="MS")]


def label_at(book: Book, as_of: str, horizon: int = 12, dpd: int = 90, probation: int = 3) -> int | None:
    """The label of L1 at as_of, or None when L1 is not performing then."""
    snaps = performing_snapshots(book.performance, LabelRule(dpd, probation), horizon)
    row = snaps[snaps["month"] == pd.Timestamp(as_of + "-01")]
    return None if row.empty else int(row["label"].iloc[0])


def test_cure_then_default_counts_the_later_default() -> None:
    ms = months("2023-01", 20)
    dpds = [0, 0, 15, 45, 0, 0, 0, 0, 0, 15, 45, 75, 105, 135, 165, 0, 0, 0, 0, 0]
    book = one_loan_book(list(zip(ms, dpds, ["open"] * 20, strict=True)))
    assert label_at(book, "2023-05") == 1  # cured at 2023-05, 90+ at 2024-01 within 12 months
    assert label_at(book, "2023-04") == 1  # 45 DPD is still performing at the 90 threshold
    assert label_at(book, "2024-01") is None  # defaulted


def test_a_cured_loan_performs_again_after_probation_and_not_before() -> None:
    ms = months("2023-01", 24)
    # 90+ in 2023-04 and 2023-05, back to 0 from 2023-06: probation 3 months -> performing from 2023-08
    dpds = [0, 30, 60, 95, 125, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 30, 60, 95, 0, 0, 0, 0, 0, 0]
    book = one_loan_book(list(zip(ms, dpds, ["open"] * 24, strict=True)))
    assert [label_at(book, m) for m in ("2023-05", "2023-06", "2023-07")] == [None, None, None]
    assert label_at(book, "2023-08") == 1  # performing again, and re-defaults at 2024-06
    assert label_at(book, "2023-08", probation=6) is None  # a longer probation keeps it out longer
    assert label_at(book, "2023-11", probation=6) == 1
    feats = build_features(book, [pd.Timestamp("2023-08-01"), pd.Timestamp("2024-03-01")]).set_index("as_of")
    aug, mar = feats.loc[pd.Timestamp("2023-08-01")], feats.loc[pd.Timestamp("2024-03-01")]
    assert aug["defaulted_24m"] == 1 and aug["months_since_cure"] == 2 and aug["default_episodes_24m"] == 1
    assert mar["months_since_cure"] == 9 and mar["default_episodes_24m"] == 1
    # a loan that never defaulted has no cure history: missing by design, not zero
    clean = one_loan_book([(m, 0, "open") for m in ms])
    f = build_features(clean, pd.Timestamp("2023-08-01")).iloc[0]
    assert f["defaulted_24m"] == 0 and np.isnan(f["months_since_cure"]) and f["default_episodes_24m"] == 0


def test_default_exactly_at_t_plus_h_is_a_one_and_one_month_later_a_zero() -> None:
    ms = months("2023-01", 30)
    dpds = [0] * 30
    dpds[12], dpds[13], dpds[14], dpds[15] = 10, 40, 70, 100  # 90+ at index 15 = 2024-04
    book = one_loan_book(list(zip(ms, dpds, ["open"] * 30, strict=True)))
    assert label_at(book, "2023-04") == 1  # 2023-04 + 12 = 2024-04
    assert label_at(book, "2023-03") == 0  # window ends 2024-03, observed, no event


def test_charge_off_without_90_dpd_is_a_default() -> None:
    ms = months("2023-01", 8)
    rows = [(m, 0, "open") for m in ms[:-1]] + [(ms[-1], 30, "charged_off")]
    book = one_loan_book(rows)
    assert label_at(book, "2023-01", horizon=12) == 1
    assert label_at(book, "2023-07", horizon=1) == 1
    assert label_at(book, "2023-08") is None  # the charge-off month is not performing


def test_observed_through_horizon_without_event_is_zero() -> None:
    ms = months("2023-01", 8)
    rows = [(m, 0, "open") for m in ms[:-1]] + [(ms[-1], 30, "charged_off")]
    book = one_loan_book(rows)
    assert label_at(book, "2023-02", horizon=3) == 0
    assert label_at(book, "2023-05", horizon=3) == 1


def test_paid_off_early_is_zero_and_rows_after_a_close_are_ignored() -> None:
    ms = months("2023-01", 9)
    rows = [(m, 0, "open") for m in ms[:5]] + [(ms[5], 0, "paid_off")] + [(m, 100, "open") for m in ms[6:]]
    book = one_loan_book(rows)
    assert label_at(book, "2023-02", horizon=12) == 0  # closed clean before the late garbage rows
    assert label_at(book, "2023-06") is None  # paid off: not performing
    assert label_at(book, "2023-08") is None  # a row reported after the close does not reopen the loan


def test_observation_ending_before_t_plus_h_is_censored() -> None:
    ms = months("2023-01", 10)
    book = one_loan_book([(m, 0, "open") for m in ms])
    assert label_at(book, "2023-01", horizon=12) == CENSORED
    assert label_at(book, "2023-01", horizon=9) == 0


def test_loans_in_default_or_probation_are_not_in_the_population() -> None:
    ms = months("2023-01", 14)
    dpds = [0, 20, 50, 80, 110, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    book = one_loan_book(list(zip(ms, dpds, ["open"] * 14, strict=True)))
    feats = build_features(book, [pd.Timestamp(m + "-01") for m in ms])
    # 2023-05 in default, 2023-06 and 07 in probation, back from 2023-08
    assert list(feats["as_of"].dt.strftime("%Y-%m")) == ms[:4] + ms[7:]


def test_spec_threshold_changes_population_and_event() -> None:
    ms = months("2023-01", 8)
    dpds = [0, 0, 35, 0, 0, 0, 0, 0]
    book = one_loan_book(list(zip(ms, dpds, ["open"] * 8, strict=True)))
    assert label_at(book, "2023-01", horizon=3, dpd=30) == 1
    assert label_at(book, "2023-01", horizon=3, dpd=90) == 0
    assert label_at(book, "2023-04", horizon=3, dpd=30) is None  # in probation after the 30+ event
    assert label_at(book, "2023-06", horizon=2, dpd=30) == 0  # back after 3 months below 30


def test_bad_parameters_raise() -> None:
    book = one_loan_book([("2023-01", 0, "open")])
    with pytest.raises(ValueError, match="dpd_threshold"):
        LabelRule(0)
    with pytest.raises(ValueError, match="probation"):
        LabelRule(90, 0)
    with pytest.raises(ValueError, match="horizon"):
        label_snapshots(
            book.performance, book.performance["loan_id"], book.performance["month"], LabelRule(), 0
        )
