"""Book summary: size, realised default rates by product, city tier and year, and the oracle's AUC."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.book import Book
from features.labels import CENSORED, label_snapshots, loan_outcomes, performing_mask
from features.months import month_index


def performing_snapshots(book: Book, horizon: int = 12, dpd_threshold: int = 90) -> pd.DataFrame:
    """Every performing (loan, month) of the book with its label (censored ones included, label -1)."""
    perf = book.performance
    out = loan_outcomes(perf, dpd_threshold)
    mask = performing_mask(perf, out, dpd_threshold)
    snaps = perf.loc[mask, ["loan_id", "month"]].reset_index(drop=True)
    snaps["label"] = label_snapshots(snaps["loan_id"], snaps["month"], out, horizon).to_numpy()
    return snaps


def complete_windows(snaps: pd.DataFrame, book: Book, horizon: int) -> pd.DataFrame:
    """Labelled snapshots whose whole horizon lies inside the book (no censoring bias in rates)."""
    last = book.last_month
    limit = month_index([last])[0] - horizon
    m = month_index(snaps["month"])
    return snaps[(m <= limit) & (snaps["label"] != CENSORED)]


def default_rates(book: Book, horizon: int = 12, dpd_threshold: int = 90) -> dict[str, pd.DataFrame]:
    """Share of labelled performing loan-months that default within the horizon, by product, tier and year."""
    snaps = performing_snapshots(book, horizon, dpd_threshold)
    snaps = complete_windows(snaps, book, horizon)
    attrs = book.loans.set_index("loan_id")[["product", "city_tier"]]
    snaps = snaps.join(attrs, on="loan_id")
    snaps["year"] = snaps["month"].dt.year
    out = {}
    for key in ("product", "city_tier", "year"):
        g = snaps.groupby(key, observed=True)["label"]
        out[key] = pd.DataFrame({"snapshots": g.size(), "defaults": g.sum(), "rate": g.mean()})
    out["all"] = pd.DataFrame(
        {
            "snapshots": [len(snaps)],
            "defaults": [int(snaps["label"].sum())],
            "rate": [snaps["label"].mean() if len(snaps) else np.nan],
        },
        index=["all"],
    )
    return out


def oracle_auc(book: Book, oracle: pd.DataFrame, horizon: int = 12) -> float:
    """AUC of the generator's true PD over the book's labelled performing snapshots."""
    col = f"pd_{horizon}m"
    if col not in oracle.columns:
        raise ValueError(f"oracle has no column {col!r}")
    snaps = complete_windows(performing_snapshots(book, horizon), book, horizon).merge(
        oracle[["loan_id", "month", col]], on=["loan_id", "month"]
    )
    if snaps["label"].nunique() < 2:
        return float("nan")
    return float(roc_auc_score(snaps["label"], snaps[col]))
