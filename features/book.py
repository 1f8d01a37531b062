"""Reading and writing a book folder: five tables as Parquet (or CSV) files named after the tables.

Reading keeps values as stored (CSV columns stay text); `features.validation` decides what parses and
turns the raw tables into a typed `Book`. Nothing here coerces a bad value silently.

A CSV file is one record per line. A line that is not a record of the header's fields (too many or too
few, an unterminated quote, not UTF-8) does not stop the read: it becomes a row that holds only the table's
first key (the loan id of a performance or loans line, the borrower id of a borrowers line, ...) when that
field can be read, with the line number and what is wrong in the `CSV_LINE` column; validation reports it
as a `csv_line` error, so the loan it belongs to is set aside and every other line is used. The line
that closes a quote another line left open (a line break inside a quoted value) is an error of that
line's owner, never a record of an owner named by a fragment of the value.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.schema import TABLES, arrow_schema

log = logging.getLogger(__name__)

TABLE_NAMES = tuple(TABLES)
CSV_LINE = "__csv_line__"  # column of a raw CSV frame: what is wrong with a line that is not a record
OPEN_QUOTE = "has a quote that is never closed"


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
    """The table's file: Parquet if there is one, else CSV. Both present is a warning (once per folder
    and table in a process): the CSV file is then not read."""
    found = [p for p in (folder / f"{table}.parquet", folder / f"{table}.csv") if p.exists()]
    if len(found) == 2 and (key := (str(Path(folder).resolve()), table)) not in _WARNED_BOTH:
        _WARNED_BOTH.add(key)
        log.warning("%s and %s both exist: reading %s, not the CSV file", *(p.name for p in found), found[0])
    return found[0] if found else None


_WARNED_BOTH: set[tuple[str, str]] = set()


def book_folder(folder: str | Path) -> Path:
    """The folder as a Path; ValueError if it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"book folder {str(folder)!r} does not exist")
    return folder


def read_raw_tables(
    folder: str | Path, tables: tuple[str, ...] = TABLE_NAMES
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Read every table file present; return the frames and the names of the missing tables.

    Parquet keeps its stored types; CSV is read as text so that validation sees exactly what was written,
    and its malformed lines come as rows marked in `CSV_LINE` (see the module docstring).
    """
    folder = book_folder(folder)
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
            frames[name] = read_csv_table(path, owner=TABLES[name].key[0])
    return frames, missing


def _names_its_file(fn):
    """Arrow's errors name the file only sometimes ("Parquet magic bytes not found in footer" does not):
    the error of a read names the file it read, keeping its kind (ValueError or OSError)."""

    @functools.wraps(fn)
    def read(path, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except pa.ArrowException as e:
            if str(path) in str(e) or not isinstance(e, (ValueError, OSError)):
                raise
            raise (OSError if isinstance(e, OSError) else ValueError)(f"{path}: {e}") from e

    return read


@_names_its_file
def read_table_columns(
    path: Path, columns: Sequence[str], months: tuple[pd.Timestamp, pd.Timestamp] | None = None
) -> pd.DataFrame:
    """The columns of a table file that it has (Parquet: stored types; CSV: text, malformed lines as
    missing values): for the passes that need a few columns of the whole table (months, context).

    `months` (first, last; first days): a Parquet file whose `month` column is stored as dates gives only
    the rows dated in those months, filtered in Arrow before any row reaches pandas (the batch's context
    needs 13 months of a book's history). Any other file gives every row: the caller still filters."""
    if path.suffix == ".parquet":
        schema = pq.ParquetFile(path).schema_arrow
        cols = [c for c in columns if c in schema.names]
        if months is not None and "month" in schema.names and pa.types.is_date(schema.field("month").type):
            lo, end = months[0].date(), (months[1] + pd.offsets.MonthBegin(1)).date()
            filters = [("month", ">=", lo), ("month", "<", end)]  # any day of the last month too
            return pq.read_table(path, columns=cols, filters=filters).to_pandas(date_as_object=False)
        return read_parquet_columns(path, cols)
    df = read_csv_table(path, columns=columns)
    return df.drop(columns=CSV_LINE, errors="ignore")


@_names_its_file
def month_span(path: Path, month: pd.Timestamp) -> tuple[bool, pd.Timestamp | None, pd.Timestamp | None]:
    """(whether the table has rows dated `month`, its first and last readable months) from its `month`
    column alone. Parquet dates are compared in Arrow; anything else (CSV text) is parsed, unreadable
    dates ignored."""
    if path.suffix == ".parquet":
        schema = pq.ParquetFile(path).schema_arrow
        if "month" in schema.names and pa.types.is_date(schema.field("month").type):
            col = pq.read_table(path, columns=["month"]).column("month")
            has = bool(pc.any(pc.equal(col, pa.scalar(month.date(), col.type))).as_py() or False)
            span = pc.min_max(col).as_py()
            return has, _stamp(span["min"]), _stamp(span["max"])
    perf = read_table_columns(path, ["month"])
    if "month" not in perf.columns:
        raise KeyError("month")
    months = pd.to_datetime(perf["month"], errors="coerce")
    return bool((months == month).any()), _stamp(months.min()), _stamp(months.max())


def _stamp(d) -> pd.Timestamp | None:
    """A date as a Timestamp; None for none (an empty or unreadable column)."""
    return None if d is None or pd.isna(d) else pd.Timestamp(d)


def read_csv_table(
    path: Path, owner: str | None = None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """A CSV table file as text (an empty field is missing), one record per line, never aborted by a bad
    line: each line that is not a record of the header's fields becomes a row holding only its `owner`
    field (if the line has one) and, in `CSV_LINE`, `line N ...what is wrong` (the header is line 1).

    The fast path is Arrow's multithreaded reader; only a file it refuses (a line with the wrong number
    of fields, a quote left open, bytes that are not UTF-8) is read again line by line in Python.
    `columns`: only these columns, where the header has them."""
    head = _csv_header(path)
    if head is None:  # an empty file: no columns (validation reports them missing)
        return pd.DataFrame()
    names, header_bytes = head
    keep = list(names) if columns is None else [c for c in names if c in set(columns)]
    if not keep:  # none of the columns asked for (Arrow would read them all)
        return pd.DataFrame()
    frame = _read_csv_fast(path, names, keep)
    if frame is not None:
        return frame
    log.info("%s has lines that are not CSV records of its header: reading it line by line", path)
    return _read_csv_lines(path, names, keep, owner, header_bytes)


def _csv_header(path: Path) -> tuple[list[str], int] | None:
    """The header's column names (a repeated name renamed `a.1`, `a.2`, as pandas does) and its length in
    bytes; None for an empty file."""
    with path.open("rb") as f:
        first = f.readline()
    if not first:
        return None
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"the header line of {str(path)!r} is not UTF-8 text") from e
    fields, open_quote = _split_line(text)
    if open_quote:
        raise ValueError(f"the header line of {str(path)!r} has a quote that is never closed")
    names: list[str] = []
    seen: dict[str, int] = {}
    for name in fields:
        n = seen.get(name, 0)
        seen[name] = n + 1
        names.append(name if n == 0 else f"{name}.{n}")
    return names, len(first)


def _split_line(text: str) -> tuple[list[str], bool]:
    """The fields of one line, read as pandas and Arrow read them, and whether it leaves a quote open.

    The reader gets an empty second line: a record that runs on into it had a quote left open."""
    if '"' not in text:  # the common line: no quoting to read
        return text.split(","), False
    reader = csv.reader((text, ""))
    fields = next(reader)
    return fields, reader.line_num > 1


def _read_csv_fast(
    source: Path | io.BytesIO, names: list[str], keep: list[str], skip_rows: int = 1
) -> pd.DataFrame | None:
    """Arrow's reader, strict: None when some line is not a record, else the frame."""
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip_rows),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in keep},
                include_columns=keep,
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid:
        return None
    if isinstance(source, Path) and table.num_rows != _lines_after_header(source):
        # a quote left open makes Arrow drop the rest of its block without a word (17,789 rows of a
        # 400,571-row file); a blank line also lands here, and the careful reader reads both right
        return None
    # Arrow lets a quote run on over line ends into one value; here a line is a record, so refuse it
    for col in table.columns:
        if pc.any(pc.match_substring_regex(col, "[\r\n]")).as_py():
            return None
    return table.to_pandas()


def _lines_after_header(path: Path, block: int = 1 << 24) -> int:
    """The lines of a file after its first, counted in blocks (a last line needs no line end)."""
    n, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(block):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n - 1 + (last != b"\n")


def _read_csv_lines(
    path: Path, names: list[str], keep: list[str], owner: str | None, header_bytes: int
) -> pd.DataFrame:
    """The careful reader: each physical line on its own. The lines that are records are parsed again by
    Arrow, all at once; each malformed line becomes a row (after them) holding only its `owner` field."""
    width = len(names)
    owner_at = names.index(owner) if owner in names else None
    records: list[bytes] = []
    owners: list[str | None] = []
    notes: list[str] = []
    # a line break inside a quoted value: the line that left the quote open, and its owner; the line
    # that closes it (an odd number of quotes) is the rest of that record, not a record of an owner named
    # by its first fragment. A line between them without quotes is read on its own (it may be another
    # loan's line after a stray quote, and a loan's line must never be lost to another)
    open_at: tuple[int, str | None] | None = None
    with path.open("rb") as f:
        f.seek(header_bytes)
        for number, raw in enumerate(f, start=2):
            line = raw.rstrip(b"\r\n")
            if not line:
                continue  # a blank line is no record (Arrow and pandas skip it too)
            if open_at is not None and line.count(b'"') % 2 == 1:  # closes the value a line left open
                first, owner_id = open_at
                notes.append(
                    f"line {number} is the rest of a quoted value that line {first} left open "
                    "(a line break inside quotes: a record must be one line)"
                )
                owners.append(owner_id)
                open_at = None
                continue
            if b'"' not in line and line.count(b",") + 1 == width and _is_utf8(line):
                records.append(line)  # the common line, told apart without splitting it
                open_at = None
                continue
            fields, problem = _line_problem(line, width)
            if problem is None:
                records.append(line)
                open_at = None
                continue
            owner_id = fields[owner_at] or None if owner_at is not None and owner_at < len(fields) else None
            notes.append(f"line {number} {problem}")
            owners.append(owner_id)
            if problem == OPEN_QUOTE:
                open_at = (number, owner_id)
    good = _read_csv_fast(io.BytesIO(b"\n".join(records)), names, keep, skip_rows=0) if records else None
    if good is None:  # no records, or a line Arrow reads otherwise than Python's csv module: read in Python
        good = _records_in_python(records, names, keep)
    bad = pd.DataFrame(
        {c: pd.Series(owners if c == owner else [None] * len(notes), dtype="str") for c in keep}
    )
    good[CSV_LINE] = pd.Series([None] * len(good), dtype="str")
    bad[CSV_LINE] = pd.Series(notes, dtype="str")
    return pd.concat([good, bad], ignore_index=True)


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _line_problem(line: bytes, width: int) -> tuple[list[str], str | None]:
    """The fields of one line and what keeps it from being a record of `width` fields (None: nothing)."""
    if not _is_utf8(line):
        return _split_line(line.decode("utf-8", errors="replace"))[0], "is not UTF-8 text"
    fields, open_quote = _split_line(line.decode("utf-8"))
    if open_quote:
        return fields, OPEN_QUOTE
    if len(fields) != width:
        n = len(fields)
        return fields, f"has {n} field{'' if n == 1 else 's'} where the header has {width}"
    return fields, None


def _records_in_python(records: list[bytes], names: list[str], keep: list[str]) -> pd.DataFrame:
    """Lines known to be records, split by Python's csv module (empty fields missing)."""
    rows = [_split_line(line.decode("utf-8"))[0] for line in records]
    cols = {c: [r[names.index(c)] or None for r in rows] for c in keep}
    return pd.DataFrame(
        {c: pd.Series(v, dtype="str") for c, v in cols.items()}, index=pd.RangeIndex(len(rows))
    )


@_names_its_file
def parquet_rows(path: Path) -> int:
    """The number of rows a Parquet file says it holds (its footer only)."""
    return pq.ParquetFile(path).metadata.num_rows


@_names_its_file
def read_parquet(path: Path, filters: list | None = None) -> pd.DataFrame:
    """A Parquet table file as stored, with dates as datetime64 rather than Python date objects (the same
    values; validation parses them ten times faster)."""
    return pq.read_table(path, filters=filters).to_pandas(date_as_object=False)


@_names_its_file
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
    check_replaceable(folder, {f"{name}.parquet" for name in extras or {}} | set(texts or {}))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_dir(folder.parent, f".{folder.name}.")
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


def check_replaceable(folder: Path, side_files: set[str] = frozenset()) -> None:
    """A book replaces only an empty folder or a book holding nothing but its tables (Parquet or CSV) and
    `side_files` (the generator's oracle, say): `--out .` or a project folder must never be wiped."""
    ours = {f"{t}.{ext}" for t in TABLE_NAMES for ext in ("parquet", "csv")} | set(side_files)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a book folder")
    if not folder.is_dir():
        return
    entries = list(folder.iterdir())
    if not entries:
        return
    is_book = any((folder / f"loans.{ext}").is_file() for ext in ("parquet", "csv"))
    others = sorted(p.name for p in entries if not (p.is_file() and p.name in ours))
    if not is_book or others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(
            f"{folder} is not an empty folder or a book: it holds {shown or 'no loans table'}; "
            "nothing was written (write the book to a new or empty folder)"
        )


def new_dir(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new folder of a unique name that the owner's group may read as the umask allows, and nobody
    else: books and outputs hold loan-level data (income, balances, PDs), so never world-readable, but a
    risk team's group can share them (`tempfile.mkdtemp` made them the owner's alone)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            path.mkdir(mode=0o770)  # and the umask
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for a new folder in {parent}")


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished folder into place, keeping the old one until the new one is there."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(old, dst)  # the old folder goes back where it was: never neither of the two
            raise
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
