"""Validation of a book against the contract of `features.schema`.

`validate_tables` never stops at the first problem: it checks everything it can and returns every
problem with the table, column, rule, count, a few example row ids and the loans each problem touches.
It also returns the typed `Book`, in which values that did not parse are missing, never guessed.

Two severities (DESIGN.md §2). An error breaks the contract (a missing table or column, a wrong type,
a broken key or foreign key, an impossible value): the loans it touches are set aside with their rule
and every command goes on with the rest. A warning is a plausibility rule that coarse real servicing
data breaks all the time (arrears rising faster than the calendar, rows reported after a loan closed):
counted and shown, nothing set aside. Only a whole-book problem, or more loans set aside than the
settings allow (`max_reject_share`), stops a command.

A CSV line that is not a record (`features.book.read_csv_table`) is a `csv_line` error of its table that
names the line; the loan it belongs to is set aside, and no other rule looks at that row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.book import CSV_LINE, TABLE_NAMES, Book, isin, order_by_loan_month, read_raw_tables
from features.months import index_to_month, month_index
from features.schema import TABLES, Column, Table

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5
REQUIRED_NONEMPTY = ("borrowers", "loans", "performance")
NS_RANGE = (pd.Timestamp("1677-09-22"), pd.Timestamp("2262-04-11"))  # dates the typed book can hold
LOAN_ROW_TABLES = ("loans", "performance")  # tables whose rows belong to a loan by their own loan_id


@dataclass
class Problem:
    severity: str  # "error" or "warning"
    table: str
    column: str | None
    rule: str
    message: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    loan_ids: frozenset[str] = frozenset()
    whole_book: bool = False  # the book cannot be used at all (missing or empty table)
    rows_of_no_loan: int = 0  # loans or performance rows among `count` that have no loan id at all
    details: dict[str, str] = field(default_factory=dict)  # loan id -> what exactly (the CSV line)
    # a warning's rows per loan id (loan-level tables), so it can say how many belong to loans set aside
    rows_by_loan: dict[str, int] = field(default_factory=dict, repr=False)
    rows_set_aside: int = 0  # of `count`: rows of loans an error sets aside (a warning's; see above)

    @property
    def rule_name(self) -> str:
        """`table.column:rule` (`table:rule` for a problem of whole rows): how rejects name it."""
        where = f"{self.table}.{self.column}" if self.column else self.table
        return f"{where}:{self.rule}"

    def describe(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        ex = f" e.g. {', '.join(self.examples)}" if self.examples else ""
        n = f"{self.count} row{'' if self.count == 1 else 's'}"
        rows = f" ({n})" if self.count else ""  # a problem of the table itself has none
        if self.rows_set_aside:  # those rows are not used: their loans go to rejects
            rows = f" ({n}, {self.rows_set_aside} of them of loans set aside)"
        return f"{self.severity.upper():7s} {where} [{self.rule}] {self.message}{rows}{ex}"


@dataclass
class ValidationReport:
    problems: list[Problem]
    book: Book | None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def unusable(self) -> bool:
        return any(p.whole_book for p in self.errors)

    def first_errors(self) -> dict[str, Problem]:
        """Loan id → the first error that touches it, for every loan id an error touches (ids that are
        not in the loans table too)."""
        out: dict[str, Problem] = {}
        for p in self.errors:
            for lid in sorted(p.loan_ids):
                out.setdefault(lid, p)
        return out

    def rejected_loans(self) -> dict[str, str]:
        """Loan id → the first rule it broke, for every loan touched by an error (rows of no loan too)."""
        return {lid: p.rule_name for lid, p in self.first_errors().items()}

    def set_aside(self) -> SetAside:
        """The book without the loans an error touches (and without rows of no loan), and what went."""
        if self.unusable or self.book is None:
            lines = "; ".join(p.describe() for p in self.errors if p.whole_book)
            raise ValueError(f"the book cannot be used at all: {lines}")
        book = self.book
        rejected = self.rejected_loans()
        ids = book.loans["loan_id"].dropna().astype(str)
        bad = isin(ids, list(rejected)) if rejected else np.zeros(len(ids), dtype=bool)
        in_table = set(ids[bad])
        good = book.subset_loans(ids[~bad]) if self.errors else book
        no_id = sum(int(df["loan_id"].isna().sum()) for df in (book.loans, book.performance))
        return SetAside(good, rejected, ids.nunique(), len(in_table), no_id if self.errors else 0)


@dataclass
class SetAside:
    """A book with the loans that break the contract set aside: what remains and what went (and why)."""

    book: Book
    rejected: dict[str, str]  # loan id -> first rule broken (ids not in the loans table included)
    loans_in_book: int  # distinct loan ids of the loans table
    loans_rejected: int  # of the loans table's loans
    rows_of_no_loan: int = 0  # loans and performance rows with no loan id at all (dropped too)

    @property
    def share(self) -> float:
        return self.loans_rejected / self.loans_in_book if self.loans_in_book else 0.0

    def by_rule(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rule in self.rejected.values():
            out[rule] = out.get(rule, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def describe(self) -> str:
        rules = ", ".join(f"{r} {n}" for r, n in self.by_rule().items())
        orphans = len(self.rejected) - self.loans_rejected
        ids = f"{orphans:,} loan id{'' if orphans == 1 else 's'}"
        extra = f" and the rows of {ids} not in the loans table" if orphans else ""
        if self.rows_of_no_loan:
            n = self.rows_of_no_loan
            extra += f" and {n:,} row{'' if n == 1 else 's'} with no loan id"
        return f"set aside {self.loans_rejected:,} of {self.loans_in_book:,} loans{extra}" + (
            f" ({rules})" if rules else ""
        )


def check_reject_share(loans_rejected: int, loans_in_book: int, max_share: float, what: str) -> None:
    """Stop when more of the book breaks the contract than the settings allow (`max_reject_share`)."""
    share = loans_rejected / loans_in_book if loans_in_book else 0.0
    if share > max_share:
        raise ValueError(
            f"{what}: {loans_rejected:,} of {loans_in_book:,} loans ({share:.1%}) break the contract, more "
            f"than the {max_share * 100:g}% allowed (EWS_MAX_REJECT_SHARE); fix the book or raise the limit"
        )


def _row_ids(table: str, df: pd.DataFrame) -> pd.Series:
    spec = TABLES[table]
    if all(k in df.columns for k in spec.key):
        parts = [df[k].astype("string").fillna("?") for k in spec.key]
        out = parts[0]
        for p in parts[1:]:
            out = out + "@" + p.str.slice(0, 10)
        return out
    return pd.Series(df.index.astype(str), index=df.index)


class _Checker:
    """Collects problems; maps bad rows of any table to the loans they touch."""

    def __init__(self, raw: dict[str, pd.DataFrame]):
        self.raw = raw
        self.problems: list[Problem] = []
        # rows that are malformed CSV lines: one csv_line error each, and no other rule looks at them
        self.csv_lines = {
            name: df[CSV_LINE].notna().to_numpy(dtype=bool) for name, df in raw.items() if CSV_LINE in df
        }

    def no_loan(self, table: str, mask: pd.Series) -> int:
        """How many rows of `mask` are rows of a loan-level table with no loan id."""
        df = self.raw[table]
        if table not in LOAN_ROW_TABLES or "loan_id" not in df.columns:
            return 0
        return int((mask & df["loan_id"].isna()).sum())

    def loans_of_rows(self, table: str, mask: pd.Series) -> frozenset[str]:
        df = self.raw[table]
        rows = df[mask]
        if table in ("loans", "performance") and "loan_id" in df.columns:
            return frozenset(rows["loan_id"].dropna().astype(str))
        loans = self.raw.get("loans")
        if loans is None:
            return frozenset()
        if table == "borrowers" and "borrower_id" in df.columns and "borrower_id" in loans.columns:
            hit = isin(loans["borrower_id"], rows["borrower_id"].dropna())
        elif table == "collateral" and "collateral_id" in df.columns and "collateral_id" in loans.columns:
            hit = isin(loans["collateral_id"], rows["collateral_id"].dropna())
        elif table == "house_prices" and "city" in df.columns:
            coll = self.raw.get("collateral")
            if coll is None or "city" not in coll.columns or "collateral_id" not in loans.columns:
                return frozenset()
            cids = coll.loc[coll["city"].isin(rows["city"].dropna()), "collateral_id"]
            hit = loans["collateral_id"].isin(cids)
        else:
            return frozenset()
        return (
            frozenset(loans.loc[hit, "loan_id"].dropna().astype(str)) if "loan_id" in loans else frozenset()
        )

    def add_rows(
        self,
        table: str,
        column: str | None,
        rule: str,
        message: str,
        mask: pd.Series,
        severity: str = "error",
    ) -> None:
        mask = mask.fillna(False).astype(bool)
        if table in self.csv_lines:
            mask = mask & ~self.csv_lines[table]
        n = int(mask.sum())
        if n == 0:
            return
        examples = _row_ids(table, self.raw[table][mask].head(MAX_EXAMPLES)).tolist()
        error = severity == "error"
        df = self.raw[table]
        by_loan = (
            df.loc[mask.to_numpy(), "loan_id"].dropna().astype(str).value_counts().to_dict()
            if not error and table in LOAN_ROW_TABLES and "loan_id" in df.columns
            else {}
        )
        self.problems.append(
            Problem(
                severity,
                table,
                column,
                rule,
                message,
                n,
                examples,
                self.loans_of_rows(table, mask) if error else frozenset(),
                rows_of_no_loan=self.no_loan(table, mask) if error else 0,
                rows_by_loan=by_loan,
            )
        )

    def add_csv_lines(self, table: str) -> None:
        """One error for the table's lines that are not CSV records, naming each line: the loans they
        belong to (by the key field, where the line has it) are set aside."""
        if table not in self.csv_lines or not self.csv_lines[table].any():
            return
        df = self.raw[table]
        mask = pd.Series(self.csv_lines[table], index=df.index)
        rows = df[mask]
        notes = rows[CSV_LINE].astype(str)
        n = len(rows)
        shown = "; ".join(notes.head(3))
        more = f"; and {n - 3} more" if n > 3 else ""
        details: dict[str, str] = {}
        if table in LOAN_ROW_TABLES and "loan_id" in df.columns:
            for lid, note in zip(rows["loan_id"], notes, strict=True):
                key = "" if pd.isna(lid) else str(lid)
                details[key] = f"{details[key]}; {note}" if key in details else note
        self.problems.append(
            Problem(
                "error",
                table,
                None,
                "csv_line",
                f"{n} line{'s' if n > 1 else ''} of the file {'are' if n > 1 else 'is'} not a record of "
                f"its header: {shown}{more}",
                n,
                [" ".join(note.split(" ", 2)[:2]) for note in notes.head(MAX_EXAMPLES)],  # "line 57"
                self.loans_of_rows(table, mask),
                rows_of_no_loan=self.no_loan(table, mask),
                details=details,
            )
        )

    def add_table(
        self,
        table: str,
        rule: str,
        message: str,
        severity: str = "error",
        column: str | None = None,
        whole_book: bool = False,
    ) -> None:
        self.problems.append(Problem(severity, table, column, rule, message, 0, [], frozenset(), whole_book))


def _parse_column(col: Column, s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse one raw column to its contract type; return (typed values, mask of unparsable values)."""
    present = s.notna()
    if col.kind == "str":
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            return s.astype("string").astype("str").where(present, None), present
        return s.astype("str").where(present, None), pd.Series(False, index=s.index)
    if col.kind in ("int", "float"):
        if pd.api.types.is_bool_dtype(s):
            return pd.Series(np.nan, index=s.index), present
        vals = pd.to_numeric(s, errors="coerce").astype("float64")
        bad = present & (vals.isna() | np.isinf(vals))  # an infinite amount is no number of the contract
        vals = vals.where(~bad)
        if col.kind == "int":
            frac = vals.notna() & (vals != np.floor(vals.fillna(0)))
            bad = bad | frac
            vals = vals.where(~frac)
            return vals.round().astype("Int64"), bad
        return vals, bad
    if col.kind in ("date", "month"):
        none = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
        if isinstance(s.dtype, pd.DatetimeTZDtype):  # a time zone says which day only with a rule we lack
            return none, present
        if pd.api.types.is_datetime64_any_dtype(s):  # already dates (Parquet): only the range to check
            ok = s.notna() & (s >= NS_RANGE[0]) & (s <= NS_RANGE[1])
            return s.where(ok).astype("datetime64[ns]"), present & ~ok
        if pd.api.types.is_numeric_dtype(s):
            return none, present
        text = s.astype("str").where(present)
        timed = text.str.contains(":", regex=False, na=False)  # only a value with a time can have a zone
        zoned = timed & text.where(timed).str.contains(_ZONED, regex=True, na=False)
        try:
            vals = pd.to_datetime(text.where(~zoned), errors="coerce", format="ISO8601")
        except (ValueError, TypeError):  # a form the zone test missed: value by value, never the book
            vals = text.where(~zoned).map(_one_date)
        vals = pd.Series(vals, index=s.index).astype("datetime64[ns]")
        return vals, present & vals.isna()
    if col.kind == "bool":
        if pd.api.types.is_bool_dtype(s):
            return s.astype("boolean"), pd.Series(False, index=s.index)
        txt = s.astype("string").str.strip().str.lower()
        mapped = txt.map({"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False})
        bad = present & mapped.isna()
        return mapped.astype("boolean"), bad
    raise ValueError(f"unknown column kind {col.kind!r}")


TYPE_HINTS = {
    "int": " (a finite number)",
    "float": " (a finite number)",
    "date": " (a plain date, no time zone)",
    "month": " (a plain date, no time zone)",
}
# a time and a zone after a date (2021-06-25T00:00:00Z, ...+08:00): a contract date has no zone, and
# one such value made pandas refuse the whole column ("Mixed timezones detected")
_ZONED = r"\d[T ]?\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})$"


def _one_date(value: object) -> pd.Timestamp:
    """One text date as `_parse_column` reads a column of them; NaT for what is not a plain date."""
    try:
        t = pd.to_datetime(value, format="ISO8601")
    except (ValueError, TypeError):
        return pd.NaT
    return pd.NaT if t is pd.NaT or t.tzinfo is not None else t


def typed_records(name: str, records: list[dict]) -> pd.DataFrame:
    """Build a table with its contract dtypes straight from Python values already checked field by field
    upstream (the API's request models): the dtypes `validate_tables` gives, at a fraction of the cost."""
    spec = TABLES[name]
    cols: dict[str, object] = {}
    for col in spec.columns:
        default = spec.defaults.get(col.name)
        vals = [r.get(col.name, default) for r in records]
        if col.kind == "str":
            cols[col.name] = pd.Series(vals, dtype="str")
        elif col.kind == "int":
            cols[col.name] = pd.Series(pd.array(vals, dtype="Int64"))
        elif col.kind == "float":
            cols[col.name] = pd.Series(vals, dtype="float64")
        elif col.kind in ("date", "month"):
            cols[col.name] = pd.Series(pd.to_datetime(vals), dtype="datetime64[ns]")
        elif col.kind == "bool":
            cols[col.name] = pd.Series(pd.array(vals, dtype="boolean"))
        else:
            raise ValueError(f"unknown column kind {col.kind!r}")
    return pd.DataFrame(cols, index=pd.RangeIndex(len(records)))


def _check_table(ck: _Checker, spec: Table, df: pd.DataFrame) -> pd.DataFrame:
    """Column-level checks of one table; returns the typed frame."""
    name = spec.name
    extra = [c for c in df.columns if c not in spec.column_names and c != CSV_LINE]
    if extra:
        ck.add_table(name, "extra_column", f"columns not in the contract are ignored: {extra}", "warning")
    typed = pd.DataFrame(index=df.index)
    for col in spec.columns:
        if col.name not in df.columns:
            if col.name in spec.defaults:
                typed[col.name] = spec.defaults[col.name]
                ck.add_table(
                    name,
                    "defaulted",
                    f"column missing, filled with {spec.defaults[col.name]!r}",
                    "warning",
                    col.name,
                )
                continue
            ck.add_table(
                name, "missing_column", "required column is missing", column=col.name, whole_book=True
            )
            typed[col.name] = pd.Series(pd.NA, index=df.index, dtype="object")
            continue
        vals, bad = _parse_column(col, df[col.name])
        hint = TYPE_HINTS.get(col.kind, "")
        ck.add_rows(name, col.name, "type", f"value is not a valid {col.kind}{hint}", bad)
        typed[col.name] = vals
        missing = vals.isna() & ~bad
        if not col.nullable:
            if col.name in spec.defaults:
                typed[col.name] = vals.fillna(spec.defaults[col.name])
            else:
                ck.add_rows(name, col.name, "not_null", "value is missing", missing)
        v = vals
        if col.allowed is not None:
            allowed = set(col.allowed)
            outside = v.notna() & ~v.isin(allowed)
            ck.add_rows(name, col.name, "allowed", f"value is not one of {sorted(allowed, key=str)}", outside)
        if col.kind in ("int", "float"):
            num = v.astype("float64")
            if col.min is not None:
                ck.add_rows(name, col.name, "range", f"value is below {col.min:g}", num < col.min)
            if col.min_exclusive is not None:
                ck.add_rows(
                    name,
                    col.name,
                    "range",
                    f"value must be above {col.min_exclusive:g}",
                    num <= col.min_exclusive,
                )
            if col.max_exclusive is not None:
                ck.add_rows(
                    name,
                    col.name,
                    "range",
                    f"value must be below {col.max_exclusive:g}",
                    num >= col.max_exclusive,
                )
        if col.kind == "month":
            ck.add_rows(
                name,
                col.name,
                "month_start",
                "month is not the first day of a month",
                v.notna() & (v.dt.day != 1),
            )
    key_cols = list(spec.key)
    if all(k in df.columns for k in key_cols):
        dup = pd.Series(_duplicated(df, key_cols), index=df.index)
        ck.add_rows(name, "+".join(key_cols), "unique", "duplicate key", dup)
    return typed


def _duplicated(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Rows whose key (all of `cols`) occurs more than once; a key with a missing part never counts.

    Each column becomes sorted integer codes, combined into one integer key; equal neighbours after a
    stable sort are the duplicates (linear time on a table already in key order, as books usually are)."""
    key = np.zeros(len(df), dtype=np.int64)
    complete = np.ones(len(df), dtype=bool)
    span = 1
    for c in cols:
        codes, uniques = pd.factorize(df[c], sort=True)
        complete &= codes >= 0
        if span * (len(uniques) + 1) >= 2**62:  # keep the combined key inside int64
            key = pd.factorize(key, sort=True)[0].astype(np.int64)
            span = int(key.max()) + 1 if len(key) else 1
        key = key * (len(uniques) + 1) + codes + 1
        span *= len(uniques) + 1
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    dup = np.zeros(len(df), dtype=bool)
    dup[order[1:][same]] = True
    dup[order[:-1][same]] = True
    return complete & dup


def _check_performance(ck: _Checker, perf: pd.DataFrame, loans: pd.DataFrame) -> None:
    """Rules across rows: DPD jumps, rows before origination, rows after close.

    Works on integer codes: rows are ordered by (loan, month) with one integer sort, and each rule's
    mask is mapped back to the original rows."""
    needed = {"loan_id", "month", "days_past_due", "status"}
    if not needed <= set(perf.columns) or perf.empty:
        return
    codes, ids = pd.factorize(perf["loan_id"])  # -1: missing loan id (a row of no loan)
    month = month_index(perf["month"]).astype(float)  # NaN: missing month
    order = order_by_loan_month(codes, month)
    c, mi = codes[order], month[order]
    same = np.r_[False, (c[1:] == c[:-1]) & (c[1:] >= 0)]  # row continues the previous row's loan
    dpd = perf["days_past_due"].to_numpy(dtype=float, na_value=np.nan)[order]
    with np.errstate(invalid="ignore"):
        gap = np.where(same, mi - np.r_[np.nan, mi[:-1]], np.nan)
        jump = np.where(same, dpd - np.r_[np.nan, dpd[:-1]], np.nan)
        bad_jump = jump > 31 * np.maximum(gap, 1)

    def to_orig(sorted_mask: np.ndarray) -> pd.Series:
        out = np.zeros(len(perf), dtype=bool)
        out[order[sorted_mask]] = True
        return pd.Series(out, index=perf.index)

    ck.add_rows(
        "performance",
        "days_past_due",
        "dpd_jump",
        "days past due rose by more than the days elapsed since the previous row (coarse reporting?)",
        to_orig(bad_jump),
        severity="warning",
    )
    closed = perf["status"].isin(["paid_off", "charged_off"]).to_numpy()[order].astype(np.int64)
    total = np.cumsum(closed) - closed  # closed rows strictly before, over the whole sorted table
    before_loan = np.maximum.accumulate(np.where(same, 0, total))  # ... before the loan's first row
    ck.add_rows(
        "performance",
        "status",
        "after_close",
        "row after the loan was paid off or charged off (ignored: the loan is closed)",
        to_orig(same & (total - before_loan > 0)),
        severity="warning",
    )
    if {"loan_id", "origination_date"} <= set(loans.columns) and not loans.empty:
        by_id = loans.drop_duplicates("loan_id").set_index("loan_id")["origination_date"]
        orig_of_id = month_index(by_id.reindex(pd.Index(ids))).astype(float)
        orig = np.where(codes >= 0, orig_of_id[np.maximum(codes, 0)] if len(ids) else np.nan, np.nan)
        with np.errstate(invalid="ignore"):
            early = month < orig
        ck.add_rows(
            "performance",
            "month",
            "before_origination",
            "reporting month is before the loan's origination month",
            pd.Series(early, index=perf.index),
        )


def _check_coverage(ck: _Checker, typed: dict[str, pd.DataFrame]) -> None:
    """Warnings for what an extract can lose without breaking a row (a truncated file, a month or a
    price feed left out): each still scores, but PDs move, so it is said, never silent. Judged on the
    loans that are kept: one row dated mid-month or before its loan was drawn (an error of its loan,
    which is set aside) had also warned that the prices end early or that dozens of months are missing."""
    perf, loans, hp = typed["performance"], typed["loans"], typed["house_prices"]
    bad = sorted({lid for p in ck.problems if p.severity == "error" for lid in p.loan_ids})
    if "loan_id" in perf:
        perf = perf[perf["loan_id"].notna() & ~isin(perf["loan_id"], bad)]
    months = perf["month"].dropna() if "month" in perf else pd.Series([], dtype="datetime64[ns]")
    if len(months):
        have = set(month_index(pd.Series(months.unique())).astype(int).tolist())
        missing = sorted(set(range(min(have), max(have) + 1)) - have)
        if missing:
            names = ", ".join(f"{index_to_month(np.array([m]))[0]:%Y-%m}" for m in missing[:6])
            more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
            ck.add_table(
                "performance",
                "month_gap",
                f"no loan has a row for {names}{more}: a month left out of the extract? (the loans are "
                "scored as if they had missed reporting it)",
                "warning",
                column="month",
            )
        if len(hp) and hp["month"].notna().any() and hp["month"].max() < months.max():
            ck.add_table(
                "house_prices",
                "prices_end_early",
                f"the house prices end at {hp['month'].max():%Y-%m}, before the book's last month "
                f"{months.max():%Y-%m}: later months have no price level (a feed not updated?)",
                "warning",
                column="month",
            )
    if len(loans) and "loan_id" in perf:
        kept = loans["loan_id"].notna() & ~isin(loans["loan_id"], bad)
        rowless = kept & ~isin(loans["loan_id"], perf["loan_id"].dropna().unique())
        ck.add_rows(
            "loans",
            "loan_id",
            "no_rows",
            "loan has no performance rows (a truncated extract?): it is not scored",
            rowless,
            severity="warning",
        )


def _check_foreign_keys(ck: _Checker, typed: dict[str, pd.DataFrame]) -> None:
    for spec in TABLES.values():
        df = typed.get(spec.name)
        if df is None:
            continue
        for fk in spec.foreign_keys:
            ref = typed.get(fk.table)
            if fk.column not in df.columns:
                continue
            known = ref[fk.ref_column] if ref is not None and fk.ref_column in ref.columns else pd.Series([])
            broken = df[fk.column].notna() & ~isin(df[fk.column], known)
            ck.add_rows(
                spec.name,
                fk.column,
                "foreign_key",
                f"refers to a {fk.table}.{fk.ref_column} that does not exist",
                broken,
            )


def _empty_typed(spec: Table) -> pd.DataFrame:
    empty = pd.DataFrame({c.name: pd.Series(dtype="str") for c in spec.columns})
    return _parse_all(spec, empty)


def _parse_all(spec: Table, df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c.name: _parse_column(c, df[c.name])[0] for c in spec.columns}, index=df.index)


def validate_tables(
    raw: dict[str, pd.DataFrame],
    missing: list[str] | tuple[str, ...] = (),
    empty_ok: frozenset[str] = frozenset(),
) -> ValidationReport:
    """Check raw tables against the contract; never stops at the first problem. `empty_ok`: tables that
    may be empty here (a partition of a book whose table has rows for other loans)."""
    ck = _Checker(raw)
    for name in missing:
        if name in REQUIRED_NONEMPTY:
            ck.add_table(name, "missing_table", "table file is missing", whole_book=True)
        else:
            ck.add_table(name, "missing_table", "table file is missing; treated as empty", "warning")
    typed: dict[str, pd.DataFrame] = {}
    for name in TABLE_NAMES:
        spec = TABLES[name]
        df = raw.get(name)
        if df is None:
            typed[name] = _empty_typed(spec)
            continue
        if df.empty and not spec.may_be_empty and name not in empty_ok:
            ck.add_table(name, "empty_table", "table has no rows", whole_book=True)
        ck.add_csv_lines(name)
        typed[name] = _check_table(ck, spec, df)
    _check_foreign_keys(ck, typed)
    _check_performance(ck, typed["performance"], typed["loans"])
    _check_coverage(ck, typed)
    book = Book(**typed)
    report = ValidationReport(ck.problems, book)
    rejected = report.rejected_loans()
    for p in report.warnings:
        p.rows_set_aside = sum(n for lid, n in p.rows_by_loan.items() if lid in rejected)
    return report


def validate_folder(folder: str | Path) -> ValidationReport:
    raw, missing = read_raw_tables(folder)
    return validate_tables(raw, missing)


DEFAULT_MAX_REJECT_SHARE = 0.2


def load_book(folder: str | Path, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE) -> SetAside:
    """Read and validate a book and set aside the loans that break the contract; ValueError if the book
    cannot be used at all or more than `max_reject_share` of its loans break it."""
    report = validate_folder(folder)
    for p in report.problems:
        (log.warning if p.severity == "error" else log.info)("%s", p.describe())
    try:
        kept = report.set_aside()
    except ValueError as e:
        raise ValueError(f"book {str(folder)!r}: {e}") from e
    check_reject_share(kept.loans_rejected, kept.loans_in_book, max_reject_share, f"book {str(folder)!r}")
    if kept.rejected:
        log.warning("book %s: %s", folder, kept.describe())
    return kept
