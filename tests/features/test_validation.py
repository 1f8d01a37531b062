"""`ews book validate` on books broken in each way the contract forbids, and the two severities: an error
sets the loans it touches aside (exit 3) and the rest goes on; a plausibility rule is a warning (exit 0);
only a whole-book problem or too many broken loans make a book unusable (exit 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ews.cli import app
from features.book import to_arrow, write_book
from features.build import build_features
from features.generate import generate_book
from features.validation import Problem, _duplicated, validate_folder

runner = CliRunner()


def run_validate(folder: Path):
    return runner.invoke(app, ["book", "validate", str(folder)])


@pytest.fixture()
def book_copy(small_book_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "book"
    shutil.copytree(small_book_dir, dst)
    return dst


def read(folder: Path, table: str) -> pd.DataFrame:
    return pq.read_table(folder / f"{table}.parquet").to_pandas()


def write_raw(folder: Path, table: str, df: pd.DataFrame) -> None:
    """Write a frame as the table's CSV (replacing its Parquet), so any bad value can be written."""
    (folder / f"{table}.parquet").unlink(missing_ok=True)
    df.to_csv(folder / f"{table}.csv", index=False)


def problems(folder: Path) -> list:
    return validate_folder(folder).problems


def find(folder: Path, table: str, column: str | None, rule: str):
    hits = [
        p
        for p in problems(folder)
        if p.table == table and p.rule == rule and (column is None or p.column == column)
    ]
    assert hits, f"expected {table}.{column} [{rule}] among {[p.describe() for p in problems(folder)]}"
    return hits[0]


def test_valid_book_passes_with_exit_zero(small_book_dir: Path) -> None:
    res = run_validate(small_book_dir)
    assert res.exit_code == 0, res.output
    assert "VALID" in res.output


def test_valid_book_from_another_seed_passes(tmp_path: Path) -> None:
    gen = generate_book(800, 24, 99)
    write_book(gen.book, tmp_path / "b", fmt="csv")
    res = run_validate(tmp_path / "b")
    assert res.exit_code == 0, res.output


def test_wrong_type_is_an_error_and_not_coerced(book_copy: Path) -> None:
    perf = read(book_copy, "performance").astype({"balance": "object", "days_past_due": "object"})
    perf.loc[3, "balance"] = "abc"
    perf.loc[5, "days_past_due"] = "12.5"
    write_raw(book_copy, "performance", perf)
    res = run_validate(book_copy)
    assert res.exit_code == 3, res.output
    assert "VALID WITH REJECTS: set aside 1 of 1,500 loans" in res.output  # both rows are one loan's
    assert "performance.balance [type]" in res.output
    assert "performance.days_past_due [type]" in res.output
    p = find(book_copy, "performance", "balance", "type")
    assert p.count == 1 and perf.loc[3, "loan_id"] in p.examples[0]
    # the typed book keeps the bad value missing, never a guessed number
    book = validate_folder(book_copy).book
    assert pd.isna(book.performance.loc[3, "balance"])


def test_an_infinite_amount_is_an_error_of_its_loan(book_copy: Path) -> None:
    """Infinity is no amount: each infinite value sets its loan aside (it silently moved PDs before)."""
    perf = read(book_copy, "performance").astype({"days_past_due": "float64"})
    loans = read(book_copy, "loans")
    borrowers = read(book_copy, "borrowers")
    perf.loc[3, "paid_amount"] = np.inf
    perf.loc[40, "days_past_due"] = np.inf
    loans.loc[7, "principal"] = np.inf
    borrowers.loc[9, "annual_income"] = -np.inf
    for name, df in (("performance", perf), ("loans", loans), ("borrowers", borrowers)):
        write_raw(book_copy, name, df)
    res = run_validate(book_copy)
    assert res.exit_code == 3, res.output
    for where in ("performance.paid_amount", "performance.days_past_due", "loans.principal"):
        assert f"{where} [type]" in res.output, res.output
    assert "a finite number" in res.output
    report = validate_folder(book_copy)
    rejected = set(report.rejected_loans())
    assert {perf.loc[3, "loan_id"], perf.loc[40, "loan_id"], loans.loc[7, "loan_id"]} <= rejected
    assert "borrowers.annual_income [type]" in res.output
    book = report.book
    assert np.isfinite(book.performance["paid_amount"].dropna()).all()
    assert np.isfinite(book.loans["principal"].dropna()).all()


def test_a_date_with_a_time_zone_is_an_error_of_its_loan_never_of_the_book(book_copy: Path) -> None:
    """One `2021-06-25T00:00:00Z` made pandas refuse the whole column ("Mixed timezones detected"),
    so the book was unusable with a message naming nothing; every date zoned gave a traceback."""
    loans = read(book_copy, "loans").astype({"origination_date": "object"})
    perf = read(book_copy, "performance").astype({"month": "object"})
    loans["origination_date"] = loans["origination_date"].astype(str).str[:10]
    loans.loc[4, "origination_date"] = loans.loc[4, "origination_date"] + "T00:00:00Z"
    loans.loc[6, "origination_date"] = loans.loc[6, "origination_date"] + " 00:00:00+08:00"
    perf["month"] = perf["month"].astype(str).str[:10]
    perf.loc[9, "month"] = perf.loc[9, "month"] + "T00:00:00Z"
    write_raw(book_copy, "loans", loans)
    write_raw(book_copy, "performance", perf)
    res = run_validate(book_copy)
    assert res.exit_code == 3 and "Traceback" not in res.output, res.output
    assert (
        "loans.origination_date [type] value is not a valid date (a plain date, no time zone)" in res.output
    )
    rejected = validate_folder(book_copy).rejected_loans()
    assert set(rejected) == {loans.loc[4, "loan_id"], loans.loc[6, "loan_id"], perf.loc[9, "loan_id"]}
    # every date zoned, in CSV text or a zoned Parquet column: type errors, one clear verdict
    loans["origination_date"] = loans["origination_date"].str[:10] + "T00:00:00Z"
    write_raw(book_copy, "loans", loans)
    res = run_validate(book_copy)
    assert res.exit_code == 1 and "Traceback" not in res.output and "break the contract" in res.output
    (book_copy / "loans.csv").unlink()
    loans["origination_date"] = pd.to_datetime(loans["origination_date"].str[:10]).dt.tz_localize("UTC")
    loans.to_parquet(book_copy / "loans.parquet")
    res = run_validate(book_copy)
    assert res.exit_code == 1 and "Traceback" not in res.output and "origination_date [type]" in res.output


def test_a_loan_set_aside_for_an_error_does_not_also_warn_of_the_whole_book(book_copy: Path) -> None:
    """One row dated mid-month in the last month, one dated years before its loan was drawn: errors of
    their loans, which are set aside. They had also warned that the house prices end before the book's
    last month ('end at 2025-12, before ... 2025-12') and that dozens of months had no loan's row."""
    perf = read(book_copy, "performance")
    last = pd.to_datetime(perf["month"]).max()
    months = pd.to_datetime(perf["month"])
    open_now = perf.loc[(months == last) & (perf["status"] == "open"), "loan_id"]
    ids = open_now.iloc[:2].tolist()  # loans still open: the rows moved are not their closing rows
    rows = [perf.index[perf["loan_id"] == ids[0]][-1], perf.index[perf["loan_id"] == ids[1]][0]]
    perf["month"] = pd.to_datetime(perf["month"]).dt.strftime("%Y-%m-%d")
    perf.loc[rows[0], "month"] = f"{last:%Y-%m}-15"
    perf.loc[rows[1], "month"] = "2019-01-01"
    write_raw(book_copy, "performance", perf)
    report = validate_folder(book_copy)
    assert set(report.rejected_loans()) == set(ids), report.rejected_loans()
    assert not report.warnings, [p.describe() for p in report.warnings]


def test_what_an_extract_can_lose_without_breaking_a_row_is_a_warning(book_copy: Path) -> None:
    """A month left out, a price feed not updated, a file cut short: each still validates and scores,
    but PDs move (218 and 9,098 of the demo book's), so each is said (they passed without a word)."""
    assert not validate_folder(book_copy).warnings  # a whole generated book: none of these
    perf, hp, loans = (
        read(book_copy, "performance"),
        read(book_copy, "house_prices"),
        read(book_copy, "loans"),
    )
    months = pd.to_datetime(perf["month"])
    gap = months.sort_values().unique()[-3]
    cut = loans["loan_id"].iloc[-3:]
    perf = perf[(months != gap).to_numpy() & ~perf["loan_id"].isin(cut).to_numpy()]
    hp = hp[pd.to_datetime(hp["month"]) < months.max() - pd.DateOffset(months=2)]
    write_raw(book_copy, "performance", perf)
    write_raw(book_copy, "house_prices", hp)
    res = run_validate(book_copy)
    assert res.exit_code == 0, res.output  # warnings only
    text = " ".join(res.output.split())
    assert f"[month_gap] no loan has a row for {pd.Timestamp(gap):%Y-%m}" in text
    assert "[prices_end_early] the house prices end at" in text
    nr = find(book_copy, "loans", "loan_id", "no_rows")
    assert nr.count == 3 and set(nr.examples) == set(cut)
    assert "(0 rows)" not in res.output
    assert text.endswith("3 warnings"), text[-200:]  # and "1 warning", never "1 warnings"


def test_missing_table(book_copy: Path) -> None:
    (book_copy / "loans.parquet").unlink()
    res = run_validate(book_copy)
    assert res.exit_code == 1
    assert "loans [missing_table]" in res.output


def test_missing_column(book_copy: Path) -> None:
    loans = read(book_copy, "loans").drop(columns=["principal"])
    write_raw(book_copy, "loans", loans)
    assert run_validate(book_copy).exit_code == 1
    find(book_copy, "loans", "principal", "missing_column")


def test_duplicate_ids(book_copy: Path) -> None:
    loans = read(book_copy, "loans")
    loans = pd.concat([loans, loans.iloc[[7]]], ignore_index=True)
    write_raw(book_copy, "loans", loans)
    p = find(book_copy, "loans", "loan_id", "unique")
    assert p.count == 2 and p.examples[0] == loans.iloc[7]["loan_id"]


def test_broken_foreign_keys(book_copy: Path) -> None:
    loans = read(book_copy, "loans")
    loans.loc[0, "borrower_id"] = "B_UNKNOWN"
    write_raw(book_copy, "loans", loans)
    perf = read(book_copy, "performance")
    perf.loc[0, "loan_id"] = "L_UNKNOWN"
    write_raw(book_copy, "performance", perf)
    res = run_validate(book_copy)
    assert res.exit_code == 3, res.output
    assert "loans.borrower_id [foreign_key]" in res.output
    assert "and the rows of 1 loan id not in the loans table" in res.output  # not "1 loan ids"
    assert "performance.loan_id [foreign_key]" in res.output


def test_negative_balance(book_copy: Path) -> None:
    perf = read(book_copy, "performance")
    perf.loc[10, "balance"] = -5.0
    write_raw(book_copy, "performance", perf)
    p = find(book_copy, "performance", "balance", "range")
    assert "below 0" in p.message and p.count == 1


def test_dpd_jump_is_a_warning_and_the_loan_is_still_scored(book_copy: Path) -> None:
    """Coarse servicing data reports arrears in buckets: 0 -> 60 or 120 in a month is a fact of the data."""
    perf = read(book_copy, "performance").sort_values(["loan_id", "month"]).reset_index(drop=True)
    open_at_end = perf[(perf["month"] == perf["month"].max()) & (perf["status"] == "open")]["loan_id"]
    lid = perf[perf["loan_id"].isin(open_at_end)]["loan_id"].value_counts().index[0]
    rows = perf.index[perf["loan_id"] == lid]
    perf.loc[rows[5], "days_past_due"] = 60
    perf.loc[rows[4], "days_past_due"] = 0
    perf.loc[rows[6:], "days_past_due"] = 0
    write_raw(book_copy, "performance", perf)
    p = find(book_copy, "performance", "days_past_due", "dpd_jump")
    assert p.severity == "warning" and any(e.startswith(lid) for e in p.examples)
    res = run_validate(book_copy)
    assert res.exit_code == 0, res.output
    assert "WARNING performance.days_past_due [dpd_jump]" in res.output and "VALID:" in res.output
    kept = validate_folder(book_copy).set_aside()
    assert lid not in kept.rejected
    feats = build_features(kept.book, perf["month"].max())
    assert lid in set(feats["loan_id"])


def test_a_warning_says_how_many_of_its_rows_belong_to_loans_set_aside(book_copy: Path) -> None:
    """A DPD-jump count that included the rows of loans an error set aside overstated what would be
    used: the warning now says how many of its rows go to rejects with their loans."""
    perf = read(book_copy, "performance").sort_values(["loan_id", "month"]).reset_index(drop=True)
    two = perf["loan_id"].value_counts().index[:2]
    for lid in two:  # one jump 0 -> 60 in each of two loans
        rows = perf.index[perf["loan_id"] == lid]
        perf.loc[rows, "days_past_due"] = 0
        perf.loc[rows[5], "days_past_due"] = 60
    write_raw(book_copy, "performance", perf)
    loans = read(book_copy, "loans")
    loans.loc[loans["loan_id"] == two[0], "interest_rate"] = 2.0  # the first loan breaks the contract
    write_raw(book_copy, "loans", loans)
    report = validate_folder(book_copy)
    jump = next(p for p in report.warnings if p.rule == "dpd_jump")
    mine = {lid: n for lid, n in jump.rows_by_loan.items() if lid in set(two)}
    assert mine == {two[0]: 1, two[1]: 1}
    assert jump.rows_set_aside == 1 and two[0] in report.rejected_loans()
    assert f"({jump.count} rows, 1 of them of loans set aside)" in jump.describe()
    res = run_validate(book_copy)
    assert "1 of them of loans set aside" in res.output and res.exit_code == 3, res.output


def test_too_many_broken_loans_make_the_book_unusable(book_copy: Path) -> None:
    loans = read(book_copy, "loans")
    loans.loc[: len(loans) // 3, "interest_rate"] = 2.0  # a third of the book breaks the contract
    write_raw(book_copy, "loans", loans)
    res = run_validate(book_copy)
    assert res.exit_code == 1 and "more than the 20% allowed" in res.output, res.output
    res = runner.invoke(app, ["book", "validate", str(book_copy)], env={"EWS_MAX_REJECT_SHARE": "0.5"})
    assert res.exit_code == 3, res.output
    res = runner.invoke(app, ["book", "validate", str(book_copy)], env={"EWS_MAX_REJECT_SHARE": "0.001"})
    assert res.exit_code == 1 and "more than the 0.1% allowed" in res.output, res.output  # not "0%"


def test_rows_before_origination_and_after_close(book_copy: Path) -> None:
    perf = read(book_copy, "performance")
    loans = read(book_copy, "loans")
    first = loans.iloc[0]
    early = perf[perf["loan_id"] == first["loan_id"]].iloc[[0]].copy()
    early["month"] = (pd.Timestamp(first["origination_date"]) - pd.DateOffset(months=3)).replace(day=1).date()
    closed = perf[perf["status"] == "paid_off"].iloc[[0]].copy()
    after = closed.copy()
    after["month"] = (pd.Timestamp(closed["month"].iloc[0]) + pd.DateOffset(months=1)).date()
    after["status"] = "open"
    perf = pd.concat([perf, early, after], ignore_index=True)
    write_raw(book_copy, "performance", perf)
    res = run_validate(book_copy)
    assert res.exit_code == 3, res.output  # the early row breaks the contract: that loan is set aside
    assert "ERROR   performance.month [before_origination]" in res.output
    assert "WARNING performance.status [after_close]" in res.output  # reported, ignored: the loan closed


def test_month_not_a_month_start(book_copy: Path) -> None:
    perf = read(book_copy, "performance")
    perf["month"] = perf["month"].astype(str)
    perf.loc[2, "month"] = perf.loc[2, "month"][:8] + "15"
    write_raw(book_copy, "performance", perf)
    p = find(book_copy, "performance", "month", "month_start")
    assert p.count == 1


@pytest.mark.parametrize("table", ["borrowers", "loans", "performance"])
def test_empty_required_table(book_copy: Path, table: str) -> None:
    df = read(book_copy, table).iloc[0:0]
    pq.write_table(to_arrow(table, df), book_copy / f"{table}.parquet")
    res = run_validate(book_copy)
    assert res.exit_code == 1
    assert f"{table} [empty_table]" in res.output


def test_unsecured_only_book_with_empty_collateral_and_prices_is_valid(
    small_generated, tmp_path: Path
) -> None:
    book = small_generated.book
    unsecured = book.loans.loc[book.loans["collateral_id"].isna(), "loan_id"]
    sub = book.subset_loans(unsecured)
    sub.collateral = sub.collateral.iloc[0:0]
    sub.house_prices = sub.house_prices.iloc[0:0]
    write_book(sub, tmp_path / "u")
    res = run_validate(tmp_path / "u")
    assert res.exit_code == 0, res.output


def test_every_problem_is_reported_not_only_the_first(book_copy: Path) -> None:
    loans = read(book_copy, "loans")
    loans.loc[1, "interest_rate"] = 1.5
    loans.loc[2, "product"] = "payday"
    write_raw(book_copy, "loans", loans)
    perf = read(book_copy, "performance")
    perf.loc[4, "status"] = "closed"
    write_raw(book_copy, "performance", perf)
    rules = {(p.table, p.column, p.rule) for p in problems(book_copy)}
    assert {
        ("loans", "interest_rate", "range"),
        ("loans", "product", "allowed"),
        ("performance", "status", "allowed"),
    } <= rules


def test_extra_column_is_a_warning_only(book_copy: Path) -> None:
    b = read(book_copy, "borrowers")
    b["nickname"] = "x"
    write_raw(book_copy, "borrowers", b)
    res = run_validate(book_copy)
    assert res.exit_code == 0, res.output
    assert "WARNING" in res.output and "nickname" in res.output


def test_rejected_loans_map_bad_rows_to_their_loans(book_copy: Path) -> None:
    b = read(book_copy, "borrowers")
    b.loc[0, "borrower_type"] = "alien"
    write_raw(book_copy, "borrowers", b)
    loans = read(book_copy, "loans")
    owner_loans = set(loans.loc[loans["borrower_id"] == b.loc[0, "borrower_id"], "loan_id"])
    rejected = validate_folder(book_copy).rejected_loans()
    assert owner_loans and owner_loans <= set(rejected)
    assert all("borrower_type:allowed" in rejected[lid] for lid in owner_loans)


def _broken_performance(book_copy: Path) -> pd.DataFrame:
    """Performance with one row of each cross-row problem, a duplicate, and rows of no loan / no month."""
    perf = read(book_copy, "performance").sort_values(["loan_id", "month"], ignore_index=True)
    loans = read(book_copy, "loans")
    ids = perf["loan_id"].value_counts().index[:3]
    jump = perf.index[perf["loan_id"] == ids[0]]
    perf.loc[jump[4], "days_past_due"], perf.loc[jump[5], "days_past_due"] = 0, 120
    orig = pd.Timestamp(loans.set_index("loan_id").loc[ids[1], "origination_date"])
    early = (
        perf[perf["loan_id"] == ids[1]]
        .iloc[[0]]
        .assign(month=(orig - pd.DateOffset(months=3)).replace(day=1).date())
    )
    paid = perf[perf["status"] == "paid_off"].iloc[[0]]
    after = paid.assign(month=(pd.Timestamp(paid["month"].iloc[0]) + pd.DateOffset(months=1)).date())
    after["status"] = "open"
    dup = perf[perf["loan_id"] == ids[2]].iloc[[3]]
    orphan = perf.iloc[[10]].assign(loan_id=None)
    return pd.concat([perf, early, after, dup, orphan], ignore_index=True)


def test_cross_row_rules_do_not_depend_on_row_order(book_copy: Path, tmp_path: Path) -> None:
    perf = _broken_performance(book_copy)
    found = {}
    for order, frame in {
        "sorted": perf,
        "shuffled": perf.sample(frac=1.0, random_state=3).reset_index(drop=True),
    }.items():
        folder = tmp_path / order
        shutil.copytree(book_copy, folder)
        frame.to_parquet(folder / "performance.parquet", index=False)
        found[order] = {(p.table, p.column, p.rule, p.count, p.loan_ids) for p in problems(folder)}
    rules = {(t, c, r) for t, c, r, _, _ in found["sorted"]}
    assert {
        ("performance", "days_past_due", "dpd_jump"),
        ("performance", "month", "before_origination"),
        ("performance", "status", "after_close"),
        ("performance", "loan_id+month", "unique"),
        ("performance", "loan_id", "not_null"),
    } <= rules
    assert found["sorted"] == found["shuffled"]


def test_a_parquet_date_the_book_cannot_hold_is_a_type_error(book_copy: Path) -> None:
    loans = read(book_copy, "loans")
    loans.loc[0, "origination_date"] = pd.Timestamp("2400-01-01").date()  # beyond datetime64[ns]
    pq.write_table(to_arrow("loans", loans), book_copy / "loans.parquet")
    p = find(book_copy, "loans", "origination_date", "type")
    assert p.count == 1 and p.examples == [loans.loc[0, "loan_id"]]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["L1", "L2", "L10", None]),
            st.sampled_from(["2024-01-01", "2024-02-01", None]),
            st.sampled_from([1.0, 2.0, None]),
        ),
        max_size=30,
    )
)
def test_duplicate_keys_are_the_rows_pandas_calls_duplicated(rows) -> None:
    """The fast duplicate-key check (integer codes, one sort) flags exactly pandas' duplicates, missing
    parts excluded, for one, two and three key columns in any order."""
    df = pd.DataFrame(rows, columns=["id", "month", "x"])
    df["month"] = pd.to_datetime(df["month"])
    for cols in (["id"], ["id", "month"], ["month", "id"], ["id", "month", "x"]):
        want = df.duplicated(cols, keep=False) & df[cols].notna().all(axis=1)
        assert _duplicated(df, cols).tolist() == want.tolist(), cols


def test_a_problem_counts_its_rows_in_words() -> None:
    """'(1 row)', never '(1 rows)'; a problem of a whole table shows no count."""
    one = Problem("error", "loans", None, "csv_line", "a line is not a record", 1, ["line 175"])
    assert "(1 row) e.g. line 175" in one.describe()
    assert "(3 rows)" in Problem("warning", "performance", "status", "after_close", "m", 3).describe()
    assert "row" not in Problem("error", "loans", None, "empty_table", "the table is empty").describe()


def test_rows_with_no_loan_id_are_counted_in_what_is_set_aside(book_copy: Path) -> None:
    """`book validate` said 'set aside 0 of 1,500 loans ()' of a book whose only errors were performance
    rows without a loan id: the rows it drops were in no count."""
    perf = read(book_copy, "performance").astype({"loan_id": "object"})
    perf.loc[[4, 9], "loan_id"] = None
    write_raw(book_copy, "performance", perf)
    res = run_validate(book_copy)
    assert res.exit_code == 3, res.output
    assert "VALID WITH REJECTS: set aside 0 of 1,500 loans and 2 rows with no loan id;" in res.output
    kept = validate_folder(book_copy).set_aside()
    assert kept.rows_of_no_loan == 2 and len(kept.book.performance) == len(perf) - 2
