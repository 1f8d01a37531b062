"""Month arithmetic on one integer axis (`year * 12 + month - 1`), shared by every module.

A horizon of H months is exactly H calendar months whatever the day counts.
"""

from __future__ import annotations

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


def as_month(value) -> pd.Timestamp:
    """A month given as '2024-06', a date or a timestamp, as the first day of that month."""
    ts = pd.Timestamp(value)
    return pd.Timestamp(year=ts.year, month=ts.month, day=1)
