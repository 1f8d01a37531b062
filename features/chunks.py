"""The book-wide path: a book folder as partitions of loans with all their rows.

Static tables (borrowers, loans, collateral, house prices) are read once; performance is read one range
of loan ids at a time (Parquet row-group statistics skip the rest), so memory follows the chunk size,
not the book. The ranges tile the whole id axis (the first open below, the last open above), so a row
whose loan id sorts outside the loans table's ids still lands in a partition, where validation reports it
as a row of no loan. Each partition is validated on its own, so the caller sees the typed sub-book and
the problems of exactly those loans.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features.book import (
    book_folder,
    find_table_file,
    isin,
    parquet_rows,
    read_parquet,
    read_raw_tables,
    read_table_columns,
)
from features.months import add_months, as_month, month_index, month_number
from features.validation import ValidationReport, validate_tables

log = logging.getLogger(__name__)

STATIC = ("borrowers", "loans", "collateral", "house_prices")


def iter_book_chunks(folder: str | Path, chunk_loans: int = 50_000) -> Iterator[ValidationReport]:
    """Yield one validation report (with its typed sub-book) per partition of `chunk_loans` loans."""
    if chunk_loans < 1:
        raise ValueError(f"chunk_loans must be positive, got {chunk_loans}")
    folder = Path(folder)
    static, missing = read_raw_tables(folder, STATIC)
    perf_path = find_table_file(folder, "performance")
    if perf_path is None or "loans" not in static:
        yield validate_tables(static, [*missing, *(["performance"] if perf_path is None else [])])
        return
    loans = static["loans"]
    if "loan_id" not in loans.columns:
        yield validate_tables({**static, "performance": pd.DataFrame()}, missing)
        return
    ids = pd.Series(loans["loan_id"].dropna().astype(str).unique()).sort_values(ignore_index=True)
    whole_perf = None if perf_path.suffix == ".parquet" else read_raw_tables(folder, ("performance",))[0]
    whole_perf = whole_perf["performance"] if whole_perf is not None else None
    perf_rows = len(whole_perf) if whole_perf is not None else parquet_rows(perf_path)
    # loans without rows yet (new loans, a servicer's late file) leave a partition empty: not the book
    empty_ok = frozenset({"performance"}) if perf_rows else frozenset()
    # a partition's borrowers are its loans' borrowers: none when it has no loans (an empty loans table
    # is the loans table's error, not the borrowers')
    if static.get("borrowers") is not None and len(static["borrowers"]):
        empty_ok |= {"borrowers"}
    starts = ids.iloc[::chunk_loans].tolist() if len(ids) else [None]
    bounds = [
        (None if k == 0 else lo, starts[k + 1] if k + 1 < len(starts) else None)
        for k, lo in enumerate(starts)
    ]
    for lo, hi in bounds:
        if whole_perf is None:
            perf = read_parquet(perf_path, filters=_range_filter(lo, hi))
        else:
            perf = whole_perf[_in_range(whole_perf["loan_id"], lo, hi)]
        sub_loans = loans[_in_range(loans["loan_id"], lo, hi)]
        raw = {
            "borrowers": _subset(static.get("borrowers"), "borrower_id", sub_loans.get("borrower_id")),
            "loans": sub_loans,
            "collateral": _subset(static.get("collateral"), "collateral_id", sub_loans.get("collateral_id")),
            "house_prices": static.get("house_prices"),
            "performance": perf,
        }
        yield validate_tables({k: v for k, v in raw.items() if v is not None}, missing, empty_ok)


def _range_filter(lo: str | None, hi: str | None):
    """The Arrow filter of `_in_range` (a missing id in the first range)."""
    f = pc.field("loan_id")
    if lo is None:
        return None if hi is None else (f < hi) | f.is_null()
    return (f >= lo) if hi is None else (f >= lo) & (f < hi)


def _in_range(values: pd.Series, lo: str | None, hi: str | None) -> np.ndarray:
    """lo <= id < hi as text (None: open); a missing id belongs to the first range."""
    s = values.astype("string")
    ok = np.ones(len(s), dtype=bool)
    if lo is not None:
        ok &= (s >= lo).fillna(False).to_numpy(dtype=bool)
    if hi is not None:
        ok &= (s < hi).fillna(lo is None).to_numpy(dtype=bool)
    return ok


def _subset(df: pd.DataFrame | None, key: str, values: pd.Series | None) -> pd.DataFrame | None:
    if df is None or values is None or key not in df.columns:
        return df
    return df[isin(df[key], values.dropna())]


def book_context(folder: str | Path, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """The book's portfolio context table (`features.context`), from one read of the four columns it needs.
    With `as_of` (the batch's one month), only the rows the rates at that month look back on are used:
    the same values at `as_of`, a fraction of the work on a long book.

    Rows that do not parse are ignored here; the loans they belong to are set aside by validation."""
    from features.context import LOOKBACK_MONTHS, context_table

    folder = book_folder(folder)
    static = _static_columns(
        folder, {"loans": ("loan_id", "borrower_id"), "borrowers": ("borrower_id", "industry")}
    )
    perf_path = find_table_file(folder, "performance")
    if perf_path is None or "loans" not in static or "borrowers" not in static:
        return context_table(
            pd.DataFrame(columns=CONTEXT_COLUMNS),
            pd.DataFrame(columns=["loan_id", "borrower_id"]),
            pd.DataFrame(columns=["borrower_id", "industry"]),
        )
    span = None if as_of is None else (add_months(as_of, -LOOKBACK_MONTHS), as_month(as_of))
    perf = read_table_columns(perf_path, CONTEXT_COLUMNS, span)  # a malformed CSV line: missing values
    for c in CONTEXT_COLUMNS:
        if c not in perf.columns:
            perf[c] = pd.NA
    if as_of is not None:
        m = month_index(pd.to_datetime(perf["month"], errors="coerce"))
        t = month_number(as_of)
        perf = perf[(m >= t - LOOKBACK_MONTHS) & (m <= t)]
    loans, borrowers = static["loans"], static["borrowers"]
    for df, cols in ((loans, ("loan_id", "borrower_id")), (borrowers, ("borrower_id", "industry"))):
        for c in cols:
            if c not in df.columns:
                df[c] = pd.NA
    return context_table(perf, loans, borrowers)


CONTEXT_COLUMNS = ("loan_id", "month", "days_past_due", "status")


def _static_columns(folder: Path, wanted: dict[str, tuple[str, ...]]) -> dict[str, pd.DataFrame]:
    """Static tables with only the columns the context needs where the file is Parquet (a tenth of the
    read on a 200,000-loan book); a CSV table is read as `read_raw_tables` reads it, malformed lines
    included, so the context counts the same rows whatever the format."""
    out: dict[str, pd.DataFrame] = {}
    for name, cols in wanted.items():
        path = find_table_file(folder, name)
        if path is not None and path.suffix == ".parquet":
            out[name] = read_table_columns(path, cols)  # the columns it has; an Arrow error names the file
        elif path is not None:
            out.update(read_raw_tables(folder, (name,))[0])
    return out
