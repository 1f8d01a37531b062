"""The book-wide chunked reader: partitions tile every loan id, in Parquet and CSV books alike."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.book import write_book
from features.chunks import book_context, iter_book_chunks
from features.context import context_table


def _rows_by_chunk(folder: Path, chunk: int) -> list[pd.DataFrame]:
    return [r.book.performance for r in iter_book_chunks(folder, chunk)]


def test_every_row_lands_in_one_partition_even_of_ids_outside_the_loans_table(
    small_generated, tmp_path
) -> None:
    book = small_generated.book
    perf = book.performance
    orphans = perf.iloc[:3].assign(loan_id=["A-before-every-id", "L000700x-between", "ZZZ-after-every-id"])
    bad = type(book)(
        book.borrowers, book.loans, book.collateral, book.house_prices, pd.concat([perf, orphans])
    )
    for fmt in ("parquet", "csv"):
        folder = write_book(bad, tmp_path / fmt, fmt=fmt)
        reports = list(iter_book_chunks(folder, 400))
        assert len(reports) == 4  # 1,500 loans in chunks of 400
        seen = pd.concat([r.book.performance for r in reports])
        assert len(seen) == len(perf) + 3, fmt
        rejected = {}
        for r in reports:
            rejected.update(r.set_aside().rejected)
        assert set(orphans["loan_id"]) <= set(rejected), fmt
        assert all(rejected[x] == "performance.loan_id:foreign_key" for x in orphans["loan_id"])


def test_loans_without_rows_yet_leave_a_partition_empty_not_the_book_unusable(
    small_generated, tmp_path
) -> None:
    """The last 500 loans have no performance rows yet: their partition is valid (they are simply not
    performing), in both formats; a book with no performance rows at all is still unusable."""
    book = small_generated.book
    ids = sorted(book.loans["loan_id"])
    perf = book.performance[book.performance["loan_id"] < ids[1000]]
    gap = type(book)(book.borrowers, book.loans, book.collateral, book.house_prices, perf)
    for fmt in ("parquet", "csv"):
        reports = list(iter_book_chunks(write_book(gap, tmp_path / fmt, fmt=fmt), 500))
        assert [r.unusable for r in reports] == [False, False, False], fmt
        assert len(reports[-1].book.performance) == 0 and len(reports[-1].book.loans) == 500
        assert sum(len(r.book.performance) for r in reports) == len(perf)
    empty = type(book)(book.borrowers, book.loans, book.collateral, book.house_prices, perf.iloc[:0])
    reports = list(iter_book_chunks(write_book(empty, tmp_path / "empty"), 500))
    assert all(r.unusable for r in reports)
    assert "empty_table" in {p.rule for r in reports for p in r.errors}


def test_an_empty_loans_table_is_the_loans_tables_error_alone(small_generated, tmp_path) -> None:
    """With a header-only loans table, score-book, train and features build (which read by partition)
    said the borrowers table had no rows too, though it held 1,500 (book validate named loans alone)."""
    book = small_generated.book
    empty = type(book)(
        book.borrowers, book.loans.iloc[:0], book.collateral, book.house_prices, book.performance
    )
    for fmt in ("parquet", "csv"):
        reports = list(iter_book_chunks(write_book(empty, tmp_path / fmt, fmt=fmt), 500))
        assert reports and all(r.unusable for r in reports), fmt
        empty_tables = {p.table for r in reports for p in r.errors if p.rule == "empty_table"}
        assert empty_tables == {"loans"}, fmt


def test_the_context_of_a_folder_is_the_context_of_the_book(small_generated, small_book_dir) -> None:
    b = small_generated.book
    pd.testing.assert_frame_equal(
        book_context(small_book_dir), context_table(b.performance, b.loans, b.borrowers)
    )


def test_the_context_is_the_same_from_parquet_and_csv_and_a_broken_file_is_named(
    small_generated, tmp_path
) -> None:
    """The context reads only the key columns of a Parquet loans table and the whole of a CSV one: the
    same table either way; a loans file that is not Parquet is an error naming that file."""
    b = small_generated.book
    want = context_table(b.performance, b.loans, b.borrowers)
    for fmt in ("parquet", "csv"):
        got = book_context(write_book(b, tmp_path / fmt, fmt=fmt))
        pd.testing.assert_frame_equal(got, want, obj=fmt)
    broken = write_book(b, tmp_path / "broken")
    (broken / "loans.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match="loans.parquet"):
        book_context(broken)


def test_the_context_at_one_month_reads_only_its_look_back_and_gives_the_same_rates(
    small_generated, small_book_dir
) -> None:
    """The batch's context (one as-of month): the same values at that month as the whole book's table,
    for a month deep in the book and for its last month; earlier months are not all there."""
    b = small_generated.book
    full = context_table(b.performance, b.loans, b.borrowers)
    for as_of in (pd.Timestamp("2025-01-01"), b.last_month):
        t = as_of.year * 12 + as_of.month - 1
        part = book_context(small_book_dir, as_of)
        assert part["m"].min() >= t - 12 and part["m"].max() == t and len(part) < len(full)
        want = full[full["m"] == t].reset_index(drop=True)
        got = part[part["m"] == t].reset_index(drop=True)
        assert want["book_roll_rate_change_3m"].notna().all()  # the longest look-back has a value
        pd.testing.assert_frame_equal(got, want)


def test_a_month_range_read_keeps_exactly_the_rows_of_those_months(tmp_path) -> None:
    """The Arrow filter of a Parquet date column against the month-index filter on every row: any day of
    the first and last months is in, the days either side are out, missing months are out, and a CSV
    file (text) gives every row for the caller to filter."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.book import month_span, read_table_columns
    from features.months import month_index

    days = [dt.date(2024, 12, 31), dt.date(2025, 1, 1), dt.date(2025, 1, 31), dt.date(2025, 6, 15)]
    days += [dt.date(2025, 12, 1), dt.date(2025, 12, 31), dt.date(2026, 1, 1), None]
    table = pa.table({"loan_id": [f"L{i}" for i in range(len(days))], "month": pa.array(days, pa.date32())})
    path = tmp_path / "performance.parquet"
    pq.write_table(table, path)
    got = read_table_columns(
        path, ["loan_id", "month"], (pd.Timestamp("2025-01-01"), pd.Timestamp("2025-12-01"))
    )
    every = read_table_columns(path, ["loan_id", "month"])
    m = month_index(every["month"])
    want = every[(m >= 2025 * 12) & (m <= 2025 * 12 + 11)]
    assert got["loan_id"].tolist() == want["loan_id"].tolist() == ["L1", "L2", "L3", "L4", "L5"]
    first, last = pd.Timestamp("2024-12-31"), pd.Timestamp("2026-01-01")
    assert month_span(path, pd.Timestamp("2025-12-01")) == (True, first, last)
    assert month_span(path, pd.Timestamp("2025-02-01"))[0] is False
    csv = tmp_path / "performance.csv"
    every.to_csv(csv, index=False)
    assert len(read_table_columns(csv, ["loan_id", "month"], (pd.Timestamp("2025-01-01"),) * 2)) == len(days)


def test_a_truncated_parquet_table_is_an_error_naming_its_file(small_book_dir, tmp_path) -> None:
    folder = tmp_path / "book"
    folder.mkdir()
    for f in small_book_dir.glob("*.parquet"):
        data = f.read_bytes()
        (folder / f.name).write_bytes(data[: len(data) // 2] if f.name == "performance.parquet" else data)
    with pytest.raises(ValueError, match="performance.parquet: .*magic bytes"):
        list(iter_book_chunks(folder, 400))
