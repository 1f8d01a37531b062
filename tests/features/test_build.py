"""The feature builder: point in time (property-based, the book's context included), parity of one loan
alone with the book-wide path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from features.book import Book, write_book
from features.build import build_features
from features.catalog import FEATURE_NAMES, HISTORY_MONTHS
from features.context import context_table
from features.generate import CITIES_WITHOUT_HPI
from features.labels import LabelRule
from features.months import month_range
from training.panel import iter_panel_chunks

PROP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def sub_book(small_generated) -> Book:
    """200 loans of the small book, secured and unsecured, with all their rows."""
    book = small_generated.book
    ids = book.loans["loan_id"].iloc[::7].head(200)
    return book.subset_loans(ids)


def copy_book(book: Book) -> Book:
    return Book(**{k: v.copy() for k, v in book.tables().items()})


def months_of(book: Book) -> list[pd.Timestamp]:
    return sorted(book.performance["month"].unique())


def features(book: Book, t) -> pd.DataFrame:
    """Features at t with the book's own portfolio context, as the batch computes them."""
    return build_features(book, t, context=context_table(book.performance, book.loans, book.borrowers))


@PROP
@given(data=st.data())
def test_rows_after_t_change_no_feature_at_t(sub_book: Book, data) -> None:
    """Alter, append and drop performance rows after t, and alter and append house prices after t, at once."""
    ms = months_of(sub_book)
    t = data.draw(st.sampled_from(ms[3:-1]), label="as_of")
    base = features(sub_book, t)
    assert len(base) > 0
    book = copy_book(sub_book)
    perf, hp = book.performance, book.house_prices
    later = list(perf.index[perf["month"] > t])
    rows = data.draw(st.lists(st.sampled_from(later), min_size=2, max_size=40, unique=True), label="rows")
    altered, dropped = rows[::2], rows[1::2]
    perf.loc[altered, "days_past_due"] = data.draw(st.integers(0, 400), label="dpd")
    perf.loc[altered, "status"] = data.draw(
        st.sampled_from(["open", "paid_off", "charged_off"]), label="status"
    )
    perf.loc[altered, "paid_amount"] = data.draw(st.floats(0, 1e6), label="paid")
    perf.loc[altered, "balance"] = data.draw(st.floats(0, 1e7), label="balance")
    perf.loc[altered, "restructured"] = True
    extra = perf.loc[altered].copy()
    extra["month"] = perf["month"].max() + pd.DateOffset(months=data.draw(st.integers(1, 6), label="ahead"))
    book.performance = pd.concat([perf.drop(index=dropped), extra], ignore_index=True)
    factor = data.draw(st.floats(0.3, 3.0).filter(lambda x: abs(x - 1) > 0.01), label="hpi factor")
    hp.loc[hp["month"] > t, "index"] *= factor
    more = hp[hp["month"] == hp["month"].max()].copy()
    more["month"] = more["month"] + pd.DateOffset(months=1)
    book.house_prices = pd.concat([hp, more], ignore_index=True)
    assert_frame_equal(base, features(book, t))


@PROP
@given(data=st.data())
def test_rows_at_or_before_t_change_the_features_they_should(sub_book: Book, data) -> None:
    ms = months_of(sub_book)
    t = data.draw(st.sampled_from(ms[8:]), label="as_of")
    base = build_features(sub_book, t).set_index("loan_id")
    perf = sub_book.performance
    current = perf[
        (perf["month"] == t)
        & (perf["days_past_due"] == 0)
        & (perf["scheduled_payment"] > 0)
        & (perf["paid_amount"] > 0)
        & perf["loan_id"].isin(base.index)
    ]
    assert len(current) > 0
    i = data.draw(st.sampled_from(list(current.index)), label="row")
    lid = perf.at[i, "loan_id"]
    book = copy_book(sub_book)
    kind = data.draw(st.sampled_from(["dpd_now", "missed_now", "dpd_5_months_ago", "hpi_now"]), label="kind")
    if kind == "dpd_now":
        new = data.draw(st.integers(1, 89))
        book.performance.loc[i, "days_past_due"] = new
        after = build_features(book, t).set_index("loan_id")
        assert after.at[lid, "dpd_now"] == new and after.at[lid, "max_dpd_3m"] >= new
        assert after.at[lid, "months_since_delinquency"] == 0
    elif kind == "missed_now":
        book.performance.loc[i, "paid_amount"] = 0.0
        after = build_features(book, t).set_index("loan_id")
        assert after.at[lid, "pay_ratio_1m"] == 0.0
        assert after.at[lid, "missed_payments_3m"] == base.at[lid, "missed_payments_3m"] + 1
    elif kind == "dpd_5_months_ago":
        j = perf.index[(perf["loan_id"] == lid) & (perf["month"] == t - pd.DateOffset(months=5))]
        assume(len(j) > 0 and perf.at[j[0], "days_past_due"] == 0)
        book.performance.loc[j[0], "days_past_due"] = 20
        after = build_features(book, t).set_index("loan_id")
        assert after.at[lid, "max_dpd_6m"] >= 20
        assert after.at[lid, "months_delinquent_12m"] == base.at[lid, "months_delinquent_12m"] + 1
        assert after.at[lid, "max_dpd_3m"] == base.at[lid, "max_dpd_3m"]
    else:
        # collateral appraised before t: an index change at t moves today's value, not the appraisal base
        app = sub_book.loans.merge(sub_book.collateral, on="collateral_id").set_index("loan_id")[
            "appraisal_date"
        ]
        appraised_before = base.index.map(lambda x: x in app.index and app[x] < t).to_numpy(dtype=bool)
        secured = base[base["current_ltv"].notna() & (base["hpi_missing"] == 0) & appraised_before]
        assume(not secured.empty)
        lid = data.draw(st.sampled_from(list(secured.index)), label="secured loan")
        coll = sub_book.loans.set_index("loan_id").at[lid, "collateral_id"]
        city = sub_book.collateral.set_index("collateral_id").at[coll, "city"]
        hp = book.house_prices
        hp.loc[(hp["city"] == city) & (hp["month"] == t), "index"] *= 0.8
        after = build_features(book, t).set_index("loan_id")
        assert after.at[lid, "current_ltv"] == pytest.approx(base.at[lid, "current_ltv"] / 0.8)
        assert after.at[lid, "hpi_change_12m"] < base.at[lid, "hpi_change_12m"]


def alone(book: Book, loan_id: str, t: pd.Timestamp, context: pd.DataFrame) -> pd.DataFrame:
    """Features of one loan as the online service computes them: its last 24 months of rows only, and the
    context of the book the service holds."""
    sub = book.subset_loans([loan_id])
    perf = sub.performance
    first = t - pd.DateOffset(months=HISTORY_MONTHS - 1)
    sub = replace(sub, performance=perf[(perf["month"] <= t) & (perf["month"] >= first)])
    return build_features(sub, t, context=context)


@pytest.fixture(scope="module")
def book_wide(demo_generated, tmp_path_factory) -> pd.DataFrame:
    folder = tmp_path_factory.mktemp("parity") / "book"
    write_book(demo_generated.book, folder)
    ms = month_range("2023-01", "2025-12")
    n = demo_generated.book.loans["loan_id"].nunique()
    parts = list(iter_panel_chunks(folder, ms, LabelRule(), 12, chunk_loans=-(-n // 3)))
    assert len(parts) == 3
    return pd.concat(parts, ignore_index=True)


def test_single_loan_features_equal_the_book_wide_rows(
    demo_generated, demo_context, book_wide: pd.DataFrame
) -> None:
    book = demo_generated.book
    perf = book.performance.sort_values(["loan_id", "month"])
    rng = np.random.default_rng(3)
    cases: dict[str, list[tuple[str, pd.Timestamp]]] = {}
    performing = book_wide[["loan_id", "as_of"]]

    def pick(name: str, frame: pd.DataFrame, n: int = 8) -> None:
        frame = frame.merge(performing, on=["loan_id", "as_of"])
        assert len(frame) > 0, f"no case of {name}"
        take = frame.iloc[rng.choice(len(frame), size=min(n, len(frame)), replace=False)]
        cases[name] = list(zip(take["loan_id"], take["as_of"], strict=True))

    gap = perf["month"].diff().dt.days.gt(31) & perf["loan_id"].eq(perf["loan_id"].shift())
    pick("missing months", perf.loc[gap, ["loan_id", "month"]].rename(columns={"month": "as_of"}))
    # the month just before the request's window is present and the window's first month is missing: the
    # request cannot see the earlier row, so the history must start at the window's first row either way
    missing = perf.loc[gap.shift(-1, fill_value=False), ["loan_id", "month"]]  # the row before each gap
    starts = missing.assign(as_of=missing["month"] + pd.DateOffset(months=HISTORY_MONTHS))
    pick("missing first month of the window", starts[["loan_id", "as_of"]])
    second = book.loans.loc[book.loans["lien_position"] == 2, "loan_id"]
    pick("2nd lien", performing[performing["loan_id"].isin(second)])
    no_hpi = book.loans.loc[
        book.loans["collateral_id"].isin(
            book.collateral.loc[book.collateral["city"].isin(CITIES_WITHOUT_HPI), "collateral_id"]
        ),
        "loan_id",
    ]
    pick("no price series", performing[performing["loan_id"].isin(no_hpi)])
    restr = perf.loc[perf["restructured"], ["loan_id", "month"]]
    after_restr = performing.merge(restr, on="loan_id")
    pick("restructured", after_restr[after_restr["as_of"] >= after_restr["month"]][["loan_id", "as_of"]])
    cured = book_wide.loc[book_wide["defaulted_24m"] == 1, ["loan_id", "as_of"]]
    pick("cured after a default", cured)
    pick("random", performing.sample(20, random_state=1))
    wide = book_wide.set_index(["loan_id", "as_of"])
    checked = 0
    for name, pairs in cases.items():
        for lid, t in pairs:
            one = alone(book, lid, t, demo_context)
            assert len(one) == 1, (name, lid, t)
            expected = wide.loc[[(lid, t)], list(FEATURE_NAMES)].reset_index()
            got = one[["loan_id", "as_of", *FEATURE_NAMES]]
            assert_frame_equal(
                got.reset_index(drop=True),
                expected,
                check_dtype=False,
                rtol=1e-12,
                obj=f"{name} {lid} {t:%Y-%m}",
            )
            checked += 1
    assert checked >= 40
    no_hpi_rows = wide.loc[[k for k in cases["no price series"]]]
    assert (no_hpi_rows["hpi_missing"] == 1).all()


def test_features_have_the_declared_columns_and_one_row_per_loan_and_month(sub_book: Book) -> None:
    f = build_features(sub_book, months_of(sub_book)[-6:])
    assert list(f.columns) == ["loan_id", "as_of", *FEATURE_NAMES]
    assert f[["loan_id", "as_of"]].duplicated().sum() == 0


def test_features_that_cannot_apply_are_missing(demo_generated, card_generated) -> None:
    """Collateral of an unsecured loan, a credit line's use for an installment loan, a card's term."""
    f = build_features(demo_generated.book, "2025-06")
    unsecured = f["product"] == "unsecured_consumer"
    assert f.loc[unsecured, ["current_ltv", "combined_ltv", "hpi_change_12m"]].isna().all().all()
    assert f.loc[~unsecured, "current_ltv"].notna().mean() > 0.99
    assert f[["utilisation", "min_payment_months_6m"]].isna().all().all()
    c = build_features(card_generated.book, card_generated.book.last_month)
    assert c["remaining_term"].isna().all() and c["current_ltv"].isna().all()
    assert c["utilisation"].between(0, 1.2).all() and c["min_payment_months_6m"].notna().all()


def test_panel_has_labels_and_oracle(small_book_dir: Path) -> None:
    ms = month_range("2024-01", "2024-12")
    panel = pd.concat(list(iter_panel_chunks(small_book_dir, ms, LabelRule(), 12, chunk_loans=500)))
    assert set(panel["label"].unique()) <= {-1, 0, 1} and (panel["label"] == 1).any()
    assert panel["oracle_pd"].notna().all()


def test_an_income_of_zero_is_one_not_declared(sub_book: Book) -> None:
    """A declared income of 0 left payment-to-income out and scored below the loan's real income; it is
    now read as not declared, the same features as a missing income."""
    t = months_of(sub_book)[-1]
    base = build_features(sub_book, t).set_index("loan_id")
    lid = base.index[base["payment_to_income"].notna()][0]
    bid = sub_book.loans.set_index("loan_id").at[lid, "borrower_id"]
    zero, none = copy_book(sub_book), copy_book(sub_book)
    zero.borrowers.loc[zero.borrowers["borrower_id"] == bid, "annual_income"] = 0.0
    none.borrowers.loc[none.borrowers["borrower_id"] == bid, "annual_income"] = np.nan
    fz = build_features(zero, t).set_index("loan_id")
    assert np.isnan(fz.at[lid, "annual_income"]) and np.isnan(fz.at[lid, "payment_to_income"])
    assert_frame_equal(fz, build_features(none, t).set_index("loan_id"))
    assert_frame_equal(fz.drop(index=lid), base.drop(index=lid))


def test_an_appraisal_dated_after_t_is_not_known_at_t(sub_book: Book) -> None:
    """The collateral table holds the latest appraisal; one dated after t (a revaluation) was not known
    at t, so the loan's features at t leave the collateral value out instead of using the later value,
    and the same appraisal is used from its own month on."""
    ms = months_of(sub_book)
    t = ms[-6]
    base = build_features(sub_book, t).set_index("loan_id")
    still_open = build_features(sub_book, ms[-4])["loan_id"]
    lid = base.index[(base["hpi_missing"] == 0) & base.index.isin(still_open)][0]  # valued, with an HPI
    coll = sub_book.loans.set_index("loan_id").at[lid, "collateral_id"]
    later = copy_book(sub_book)
    c = later.collateral
    c.loc[c["collateral_id"] == coll, "appraisal_date"] = t + pd.DateOffset(months=2, days=3)
    c.loc[c["collateral_id"] == coll, "appraisal_value"] *= 1.5
    after = build_features(later, t).set_index("loan_id")
    for name in ("indexed_value", "current_ltv", "combined_ltv", "ltv_change", "hpi_missing"):
        assert np.isnan(after.at[lid, name]), name
    assert after.at[lid, "hpi_change_12m"] == base.at[lid, "hpi_change_12m"]  # its city's prices are known
    others = [x for x in base.index if x != lid]
    assert_frame_equal(after.loc[others], base.loc[others])
    at_revaluation = build_features(later, ms[-4]).set_index("loan_id")
    assert at_revaluation.at[lid, "indexed_value"] > 0 and at_revaluation.at[lid, "current_ltv"] > 0


def test_a_price_index_of_whole_series_is_the_index_of_their_entries() -> None:
    from features.build import HousePriceIndex

    rng = np.random.default_rng(7)
    series = [
        (city, np.sort(rng.choice(np.arange(24_000, 24_060), size=n, replace=False)), rng.uniform(50, 150, n))
        for city, n in (("A", 30), (("own", 0), 12), ("B", 0), ("C", 45))
    ]
    whole = HousePriceIndex.of_series(series)
    entries = HousePriceIndex(
        [c for c, m, _ in series for _ in m],
        np.concatenate([m for _, m, _ in series]),
        np.concatenate([v for _, _, v in series]),
    )
    cities = ["A", ("own", 0), "B", "C", "nowhere"] * 20
    months = rng.integers(23_990, 24_070, size=len(cities))
    got = whole.at(whole.codes(cities), months)
    want = entries.at(entries.codes(cities), months)
    assert np.array_equal(got, want, equal_nan=True) and np.isfinite(got).sum() > 20
    assert np.isnan(HousePriceIndex.of_series([]).at(np.array([-1]), np.array([24_000])))[0]
