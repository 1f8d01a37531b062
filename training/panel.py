"""The training panel: one row per (loan, as-of month) with features, label and, on a generated book, the
oracle PD (for evaluation only; never a feature).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.book import Book
from features.build import build_features
from features.catalog import FEATURES
from features.chunks import iter_book_chunks
from features.labels import label_snapshots, loan_outcomes
from features.months import as_month, month_index

log = logging.getLogger(__name__)

ORACLE_COL = "oracle_pd"
TTD_COL = "months_to_default"  # months from the as-of month to the default event, for labelled defaults


def month_range(start: str | pd.Timestamp, end: str | pd.Timestamp) -> list[pd.Timestamp]:
    a, b = as_month(start), as_month(end)
    if b < a:
        raise ValueError(f"as-of range ends ({b:%Y-%m}) before it starts ({a:%Y-%m})")
    return list(pd.date_range(a, b, freq="MS"))


def panel_schema() -> pa.Schema:
    fields = [pa.field("loan_id", pa.string()), pa.field("as_of", pa.timestamp("ns"))]
    fields += [pa.field(f.name, pa.string() if f.dtype == "cat" else pa.float64()) for f in FEATURES]
    fields += [
        pa.field("label", pa.int8()),
        pa.field(TTD_COL, pa.float64()),
        pa.field(ORACLE_COL, pa.float64()),
    ]
    return pa.schema(fields)


def oracle_column(horizon: int, dpd_threshold: int) -> str | None:
    """The oracle file holds 90+ DPD PDs at 3, 6 and 12 months; other labels have no oracle."""
    if dpd_threshold == 90 and horizon in (3, 6, 12):
        return f"pd_{horizon}m"
    return None


def build_panel(
    book: Book,
    months: Iterable[pd.Timestamp],
    horizon: int = 12,
    dpd_threshold: int = 90,
    oracle: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Features, label (-1 when censored), months to default and oracle PD for every performing loan at
    each month. Months to default is set only where the label is 1; validation uses it for lead time."""
    X = build_features(book, months, dpd_threshold)
    outcomes = loan_outcomes(book.performance, dpd_threshold)
    X["label"] = label_snapshots(X["loan_id"], X["as_of"], outcomes, horizon).to_numpy()
    ttd = X["loan_id"].map(outcomes["default_m"]).to_numpy(dtype=float) - month_index(X["as_of"])
    X[TTD_COL] = np.where(X["label"].to_numpy() == 1, ttd, np.nan)
    col = oracle_column(horizon, dpd_threshold)
    if oracle is not None and col is not None and len(X):
        o = oracle[["loan_id", "month", col]].rename(columns={"month": "as_of", col: ORACLE_COL})
        X = X.merge(o, on=["loan_id", "as_of"], how="left")
    else:
        X[ORACLE_COL] = np.nan
    return X


def read_oracle(
    book_dir: Path, loan_lo: str | None = None, loan_hi: str | None = None
) -> pd.DataFrame | None:
    path = Path(book_dir) / "oracle.parquet"
    if not path.exists():
        return None
    filters = [("loan_id", ">=", loan_lo), ("loan_id", "<=", loan_hi)] if loan_lo is not None else None
    return pq.read_table(path, filters=filters).to_pandas()


def iter_panel_chunks(
    book_dir: Path,
    months: list[pd.Timestamp],
    horizon: int = 12,
    dpd_threshold: int = 90,
    chunk_loans: int = 50_000,
    progress: Callable[[str, int, int], None] | None = None,
):
    """The panel of a book folder, one partition of loans at a time (bounded memory)."""
    n_loans = (
        len(pq.read_table(Path(book_dir) / "loans.parquet", columns=["loan_id"]))
        if (Path(book_dir) / "loans.parquet").exists()
        else None
    )
    done = 0
    for report in iter_book_chunks(book_dir, chunk_loans):
        if not report.ok:
            lines = "\n".join(p.describe() for p in report.errors[:20])
            raise ValueError(f"book {str(book_dir)!r} breaks the contract:\n{lines}")
        book = report.book
        assert book is not None
        ids = book.loans["loan_id"]
        oracle = read_oracle(book_dir, ids.min(), ids.max()) if len(ids) else None
        yield build_panel(book, months, horizon, dpd_threshold, oracle)
        done += len(ids)
        if progress and n_loans:
            progress("panel (loans)", done, n_loans)


def write_panel(
    book_dir: Path,
    out: Path,
    months: list[pd.Timestamp],
    horizon: int = 12,
    dpd_threshold: int = 90,
    chunk_loans: int = 50_000,
    progress=None,
) -> int:
    """Stream the panel to a Parquet file (written to a temp name, then renamed); returns the row count."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    schema = panel_schema()
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for chunk in iter_panel_chunks(book_dir, months, horizon, dpd_threshold, chunk_loans, progress):
                writer.write_table(
                    pa.Table.from_pandas(chunk[schema.names], schema=schema, preserve_index=False)
                )
                rows += len(chunk)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows
