"""The training panel: one row per (loan, as-of month) with features, label and, on a generated book, the
oracle PD (for evaluation only; never a feature).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.book import Book
from features.build import build_features
from features.catalog import FEATURES
from features.chunks import book_context, iter_book_chunks
from features.generate import oracle_column, pit_oracle_column
from features.labels import LabelRule, label_snapshots
from features.validation import check_reject_share

log = logging.getLogger(__name__)

ORACLE_COL = "oracle_pd"
# the point-in-time oracle (features.generate.oracle.pit_oracle), where the generator was asked for it
PIT_ORACLE_COL = "pit_oracle_pd"
TTD_COL = "months_to_default"  # months from the as-of month to the default event, for labelled defaults


def panel_schema() -> pa.Schema:
    fields = [pa.field("loan_id", pa.string()), pa.field("as_of", pa.timestamp("ns"))]
    fields += [pa.field(f.name, pa.string() if f.dtype == "cat" else pa.float64()) for f in FEATURES]
    fields += [
        pa.field("label", pa.int8()),
        pa.field(TTD_COL, pa.float64()),
        pa.field(ORACLE_COL, pa.float64()),
        pa.field(PIT_ORACLE_COL, pa.float64()),
    ]
    return pa.schema(fields)


def build_panel(
    book: Book,
    months: Iterable[pd.Timestamp],
    rule: LabelRule,
    horizon: int,
    oracle: pd.DataFrame | None = None,
    context: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Features, label (-1 when censored), months to default and oracle PD for every performing loan at
    each month. Months to default is set only where the label is 1; validation uses it for lead time."""
    X = build_features(book, months, rule, context)
    label, ttd = label_snapshots(book.performance, X["loan_id"], X["as_of"], rule, horizon)
    X["label"] = label
    X[TTD_COL] = ttd
    for col, name in (
        (oracle_column(rule.dpd_threshold, horizon), ORACLE_COL),
        (pit_oracle_column(rule.dpd_threshold, horizon), PIT_ORACLE_COL),
    ):
        if oracle is not None and col in oracle.columns and len(X):
            o = oracle[["loan_id", "month", col]].rename(columns={"month": "as_of", col: name})
            X = X.merge(o, on=["loan_id", "as_of"], how="left")
        else:
            X[name] = np.nan
    return X


def read_oracle(
    book_dir: Path, loan_lo: str | None = None, loan_hi: str | None = None
) -> pd.DataFrame | None:
    path = Path(book_dir) / "oracle.parquet"
    if not path.exists():
        return None
    filters = [("loan_id", ">=", loan_lo), ("loan_id", "<=", loan_hi)] if loan_lo is not None else None
    return pq.read_table(path, filters=filters).to_pandas()


@dataclass
class Rejects:
    """Loans set aside while reading a book chunk by chunk, counted against the book's size."""

    loans_in_book: int = 0
    loans_rejected: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)

    def add(self, kept) -> None:
        self.loans_in_book += kept.loans_in_book
        self.loans_rejected += kept.loans_rejected
        for rule, n in kept.by_rule().items():
            self.by_rule[rule] = self.by_rule.get(rule, 0) + n

    def describe(self) -> str:
        rules = ", ".join(f"{r} {n}" for r, n in sorted(self.by_rule.items(), key=lambda kv: -kv[1]))
        return f"set aside {self.loans_rejected:,} of {self.loans_in_book:,} loans ({rules or 'none'})"


def iter_panel_chunks(
    book_dir: Path,
    months: list[pd.Timestamp],
    rule: LabelRule,
    horizon: int,
    chunk_loans: int = 50_000,
    progress: Callable[[str, int, int], None] | None = None,
    rejects: Rejects | None = None,
    max_reject_share: float = 1.0,
) -> Iterator[pd.DataFrame]:
    """The panel of a book folder, one partition of loans at a time (bounded memory). Loans that break
    the contract are set aside (counted in `rejects`); more than `max_reject_share` of them stops."""
    n_loans = (
        len(pq.read_table(Path(book_dir) / "loans.parquet", columns=["loan_id"]))
        if (Path(book_dir) / "loans.parquet").exists()
        else None
    )
    rejects = rejects if rejects is not None else Rejects()
    context = book_context(book_dir)
    done = 0
    for report in iter_book_chunks(book_dir, chunk_loans):
        try:
            kept = report.set_aside()
        except ValueError as e:
            raise ValueError(f"book {str(book_dir)!r}: {e}") from e
        rejects.add(kept)
        book = kept.book
        ids = book.loans["loan_id"]
        oracle = read_oracle(book_dir, ids.min(), ids.max()) if len(ids) else None
        yield build_panel(book, months, rule, horizon, oracle, context)
        done += kept.loans_in_book
        if progress and n_loans:
            progress("panel (loans)", done, n_loans)
    check_reject_share(
        rejects.loans_rejected, rejects.loans_in_book, max_reject_share, f"book {str(book_dir)!r}"
    )
    if rejects.loans_rejected:
        log.warning("book %s: %s", book_dir, rejects.describe())


def write_panel(
    book_dir: Path,
    out: Path,
    months: list[pd.Timestamp],
    rule: LabelRule,
    horizon: int,
    chunk_loans: int = 50_000,
    progress=None,
    max_reject_share: float = 1.0,
) -> tuple[int, Rejects]:
    """Stream the panel to a Parquet file (written to a temp name, then renamed); returns the row count."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    schema = panel_schema()
    rows = 0
    rejects = Rejects()
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for chunk in iter_panel_chunks(
                book_dir, months, rule, horizon, chunk_loans, progress, rejects, max_reject_share
            ):
                writer.write_table(
                    pa.Table.from_pandas(chunk[schema.names], schema=schema, preserve_index=False)
                )
                rows += len(chunk)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows, rejects
