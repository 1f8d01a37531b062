"""The default event, the performing population and the horizon label (DESIGN.md §3).

Month arithmetic is on integer month indices (`year * 12 + month - 1`), so a horizon of H months is
exactly H calendar months whatever the day counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.months import month_index

CENSORED = -1


def loan_outcomes(performance: pd.DataFrame, dpd_threshold: int = 90) -> pd.DataFrame:
    """Per loan: first default month, last reported month, month paid off (month indices, NaN if none).

    The default event is the first month with days_past_due >= dpd_threshold or status charged_off.
    """
    if dpd_threshold <= 0:
        raise ValueError(f"dpd_threshold must be positive, got {dpd_threshold}")
    p = performance
    m = month_index(p["month"])
    event = (p["days_past_due"] >= dpd_threshold) | (p["status"] == "charged_off")
    g = pd.DataFrame(
        {
            "loan_id": p["loan_id"].to_numpy(),
            "m": m,
            "ev": np.where(event, m, np.nan),
            "po": np.where(p["status"] == "paid_off", m, np.nan),
        }
    )
    agg = g.groupby("loan_id", sort=True).agg(
        default_m=("ev", "min"), last_m=("m", "max"), paid_off_m=("po", "min")
    )
    return agg


def performing_mask(performance: pd.DataFrame, outcomes: pd.DataFrame, dpd_threshold: int = 90) -> pd.Series:
    """Rows at which the loan is performing: open, below the threshold, never defaulted at or before."""
    m = month_index(performance["month"])
    dm = performance["loan_id"].map(outcomes["default_m"])
    never = dm.isna() | (dm > m)
    return (performance["status"] == "open") & (performance["days_past_due"] < dpd_threshold) & never


def label_snapshots(loan_id: pd.Series, as_of: pd.Series, outcomes: pd.DataFrame, horizon: int) -> pd.Series:
    """Label of each (loan, as-of month): 1 default in (t, t+H], 0 observed or paid off clean, -1 censored."""
    if horizon <= 0:
        raise ValueError(f"horizon must be positive, got {horizon}")
    t = month_index(as_of)
    o = outcomes.reindex(loan_id.to_numpy())
    dm = o["default_m"].to_numpy()
    last = o["last_m"].to_numpy()
    po = o["paid_off_m"].to_numpy()
    end = t + horizon
    bad = (dm > t) & (dm <= end)
    observed = (last >= end) | (po <= end)
    lab = np.where(bad, 1, np.where(observed, 0, CENSORED))
    return pd.Series(lab.astype(np.int8), index=loan_id.index, name="label")
