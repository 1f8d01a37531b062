"""The book-wide path: a book folder as partitions of loans with all their rows.

Static tables (borrowers, loans, collateral, house prices) are read once; performance is read one range
of loan ids at a time (Parquet row-group statistics skip the rest), so memory follows the chunk size,
not the book. Each partition is validated on its own, so the caller sees the typed sub-book and the
problems of exactly those loans.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from features.book import find_table_file, isin, read_parquet, read_raw_tables
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
    whole_perf = (
        None
        if perf_path.suffix == ".parquet"
        else read_raw_tables(folder, ("performance",))[0]["performance"]
    )
    if len(ids) == 0:
        yield validate_tables({**static, "performance": pd.DataFrame()}, missing)
        return
    for lo in range(0, len(ids), chunk_loans):
        chunk = ids.iloc[lo : lo + chunk_loans]
        first, last = chunk.iloc[0], chunk.iloc[-1]
        if whole_perf is None:
            perf = read_parquet(perf_path, filters=[("loan_id", ">=", first), ("loan_id", "<=", last)])
        else:
            perf = whole_perf[whole_perf["loan_id"].astype(str).between(first, last)]
        sub_loans = loans[loans["loan_id"].astype(str).between(first, last)]
        raw = {
            "borrowers": _subset(static.get("borrowers"), "borrower_id", sub_loans.get("borrower_id")),
            "loans": sub_loans,
            "collateral": _subset(static.get("collateral"), "collateral_id", sub_loans.get("collateral_id")),
            "house_prices": static.get("house_prices"),
            "performance": perf,
        }
        yield validate_tables({k: v for k, v in raw.items() if v is not None}, missing)


def _subset(df: pd.DataFrame | None, key: str, values: pd.Series | None) -> pd.DataFrame | None:
    if df is None or values is None or key not in df.columns:
        return df
    return df[isin(df[key], values.dropna())]
