"""Reading and writing a book folder: five tables as Parquet (or CSV) files named after the tables.

Reading keeps values as stored (CSV columns stay text); `features.validation` decides what parses and
turns the raw tables into a typed `Book`. Nothing here coerces a bad value silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.schema import TABLES, arrow_schema

log = logging.getLogger(__name__)

TABLE_NAMES = tuple(TABLES)


@dataclass
class Book:
    """A typed book: the five tables with the dtypes of the contract.

    Dates and months are `datetime64[ns]`, ids and categories `str`, nullable ints `Int64`.
    """

    borrowers: pd.DataFrame
    loans: pd.DataFrame
    collateral: pd.DataFrame
    house_prices: pd.DataFrame
    performance: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in TABLE_NAMES}

    def subset_loans(self, loan_ids) -> Book:
        """The book restricted to some loans with all their rows (the unit the feature builder maps over)."""
        ids = pd.Series(loan_ids, dtype=object)
        loans = self.loans[isin(self.loans["loan_id"], ids)]
        perf = self.performance[isin(self.performance["loan_id"], ids)]
        borrowers = self.borrowers[isin(self.borrowers["borrower_id"], loans["borrower_id"])]
        collateral = self.collateral[isin(self.collateral["collateral_id"], loans["collateral_id"].dropna())]
        return Book(borrowers, loans, collateral, self.house_prices, perf)

    @property
    def last_month(self) -> pd.Timestamp:
        return self.performance["month"].max()


def isin(values: pd.Series, known) -> np.ndarray:
    """`values.isin(known)` as a boolean array, through Arrow's hash kernel (10x faster than pandas on
    millions of id strings; missing values are never in)."""
    known_arr = _string_set(known)
    try:
        arr = pa.array(values, from_pandas=True)
        if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
            raise TypeError
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return values.isin(set(known_arr.to_pylist())).to_numpy(dtype=bool)
    return pc.fill_null(pc.is_in(arr, value_set=known_arr), False).to_numpy(zero_copy_only=False)


def order_by_loan_month(loan_codes: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Stable row order by (loan code, month index), a missing month (NaN) last within its loan.

    One integer key and a stable sort: linear time on a table already in that order, as books are written.
    """
    m = np.asarray(months, dtype=float)
    known = ~np.isnan(m)
    lo = int(m[known].min()) if known.any() else 0
    span = (int(m[known].max()) - lo + 2) if known.any() else 1
    rank = np.where(known, m - lo, span - 1).astype(np.int64)
    return np.argsort(np.asarray(loan_codes, dtype=np.int64) * span + rank, kind="stable")


def _string_set(values) -> pa.Array:
    """The distinct non-missing values as an Arrow string array (ids of any type compare as text)."""
    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        arr = None
    if arr is None or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return pa.array(pd.Series(values, dtype=object).dropna().astype(str).unique(), type=pa.string())
    return pc.unique(arr.drop_null()).cast(pa.string())


def find_table_file(folder: Path, table: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        p = folder / f"{table}{suffix}"
        if p.exists():
            return p
    return None


def read_raw_tables(
    folder: str | Path, tables: tuple[str, ...] = TABLE_NAMES
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Read every table file present; return the frames and the names of the missing tables.

    Parquet keeps its stored types; CSV is read as text so that validation sees exactly what was written.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"book folder {str(folder)!r} does not exist")
    frames: dict[str, pd.DataFrame] = {}
    missing: list[str] = []
    for name in tables:
        path = find_table_file(folder, name)
        if path is None:
            missing.append(name)
            continue
        if path.suffix == ".parquet":
            frames[name] = read_parquet(path)
        else:
            frames[name] = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return frames, missing


def read_parquet(path: Path, filters: list | None = None) -> pd.DataFrame:
    """A Parquet table file as stored, with dates as datetime64 rather than Python date objects (the same
    values; validation parses them ten times faster)."""
    return pq.read_table(path, filters=filters).to_pandas(date_as_object=False)


def read_parquet_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """Some columns of a Parquet table file (dates as datetime64)."""
    return pq.read_table(path, columns=columns).to_pandas(date_as_object=False)


def to_arrow(name: str, df: pd.DataFrame) -> pa.Table:
    """Arrow table of a typed frame in the contract's column order and types."""
    schema = arrow_schema(name)
    cols = []
    for f in schema:
        s = df[f.name]
        if pa.types.is_date32(f.type):
            arr = pa.array(pd.to_datetime(s).dt.date, type=f.type, from_pandas=True)
        else:
            arr = pa.array(s, type=f.type, from_pandas=True)
        cols.append(arr)
    return pa.Table.from_arrays(cols, schema=schema)


def write_book(
    book: Book,
    folder: str | Path,
    fmt: str = "parquet",
    extras: dict[str, pd.DataFrame] | None = None,
    texts: dict[str, str] | None = None,
) -> Path:
    """Write a book atomically: into a temp folder beside the target, then renamed into place.

    `extras` are side tables written as Parquet next to the five (e.g. the generator's oracle); the
    book reader never reads them.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, df in book.tables().items():
            table = to_arrow(name, df)
            if fmt == "parquet":
                # small row groups let a reader fetch one range of loan ids without the rest
                pq.write_table(table, tmp / f"{name}.parquet", compression="zstd", row_group_size=65_536)
            elif fmt == "csv":
                table.to_pandas().to_csv(tmp / f"{name}.csv", index=False)
            else:
                raise ValueError(f"unknown book format {fmt!r}; use parquet or csv")
        for name, df in (extras or {}).items():
            pq.write_table(
                pa.Table.from_pandas(df, preserve_index=False), tmp / f"{name}.parquet", compression="zstd"
            )
        for name, text in (texts or {}).items():
            (tmp / name).write_text(text)
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished folder into place, keeping the old one until the new one is there."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def book_fingerprint(book_dir: Path) -> str:
    """SHA-256 over the five table files (name and bytes): the data a model was trained on."""
    h = hashlib.sha256()
    for p in sorted(Path(book_dir).glob("*")):
        if p.stem in TABLE_NAMES:
            h.update(p.name.encode())
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()
