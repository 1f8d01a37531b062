"""Month arithmetic on one integer axis (`year * 12 + month - 1`), shared by every module.

A horizon of H months is exactly H calendar months whatever the day counts.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd


def month_index(values) -> np.ndarray:
    """Integer month index of dates (Series, Index, array or list of timestamps).

    Missing dates (NaT) give NaN, and then the result is float: never a made-up month.
    """
    s = pd.DatetimeIndex(values)
    if s.hasnans:
        return np.asarray(s.year * 12 + s.month - 1, dtype=float)
    return np.asarray(s.year * 12 + s.month - 1, dtype=np.int64)


def index_to_month(idx) -> pd.DatetimeIndex:
    """First day of the month of each integer month index."""
    idx = np.asarray(idx, dtype=np.int64)
    return pd.DatetimeIndex((idx - 1970 * 12).astype("datetime64[M]").astype("datetime64[ns]"))


MONTH_TEXT = re.compile(r"([0-9]{4})-([0-9]{2})")


def parse_month(text: str) -> pd.Timestamp:
    """A month an operator typed: exactly 'YYYY-MM' (ASCII digits), never whatever pandas can read
    ('2025Q4' or 'Dec 2025' would name another month, or overwrite the outputs of one)."""
    m = MONTH_TEXT.fullmatch(text)
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"{text!r} is not a month: use YYYY-MM, e.g. 2025-12")
    return pd.Timestamp(year=int(m.group(1)), month=int(m.group(2)), day=1)


def as_month(value) -> pd.Timestamp:
    """A month given as '2024-06', a date or a timestamp, as the first day of that month."""
    ts = pd.Timestamp(value)
    return pd.Timestamp(year=ts.year, month=ts.month, day=1)


def month_number(d) -> int:
    """The month index of one date (a date, datetime or Timestamp), without building an index: the
    service's one-loan path calls this per performance row."""
    return d.year * 12 + d.month - 1


def add_months(value, n: int) -> pd.Timestamp:
    """The first day of the month `n` months after (before, when negative) the month of `value`."""
    return index_to_month([month_number(as_month(value)) + n])[0]


def month_range(start, end) -> list[pd.Timestamp]:
    """Every month from `start` to `end` inclusive (first days); ValueError when it ends before it starts."""
    a, b = as_month(start), as_month(end)
    if b < a:
        raise ValueError(f"as-of range ends ({b:%Y-%m}) before it starts ({a:%Y-%m})")
    return list(pd.date_range(a, b, freq="MS"))


def months_text(n: int) -> str:
    """'1 month', '12 months': a count of months as a sentence says it."""
    return f"{n} month{'' if n == 1 else 's'}"
