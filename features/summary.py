"""Book summary: size, realised default rates by product, city tier and year, and the oracle's AUC.

Rates are for any label (DPD threshold, horizon, probation), so a short card book with a 30+ DPD in one
month event is described as sensibly as the 90+ in 12 months book.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.book import Book
from features.generate.oracle import oracle_column
from features.labels import CENSORED, LabelRule, performing_snapshots
from features.months import month_index


def complete_windows(snaps: pd.DataFrame, book: Book, horizon: int) -> pd.DataFrame:
    """Labelled snapshots whose whole horizon lies inside the book (no censoring bias in rates)."""
    limit = month_index([book.last_month])[0] - horizon
    m = month_index(snaps["month"])
    return snaps[(m <= limit) & (snaps["label"] != CENSORED)]


def labelled_snapshots(book: Book, rule: LabelRule, horizon: int) -> pd.DataFrame:
    return complete_windows(performing_snapshots(book.performance, rule, horizon), book, horizon)


def default_rates(book: Book, rule: LabelRule, horizon: int) -> dict[str, pd.DataFrame]:
    """Share of labelled performing loan-months that default within the horizon, by product, tier and year."""
    snaps = labelled_snapshots(book, rule, horizon)
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


def oracle_auc(book: Book, oracle: pd.DataFrame, rule: LabelRule, horizon: int) -> float | None:
    """AUC of the generator's true PD over the book's labelled performing snapshots (None: no oracle for
    this label, NaN: no defaults and non-defaults to rank)."""
    col = oracle_column(rule.dpd_threshold, horizon)
    if col not in oracle.columns:
        return None
    snaps = labelled_snapshots(book, rule, horizon).merge(
        oracle[["loan_id", "month", col]], on=["loan_id", "month"]
    )
    if snaps["label"].nunique() < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # only here: the feature kernel stays free of sklearn

    return float(roc_auc_score(snaps["label"], snaps[col]))


def oracle_aucs(book: Book, oracle: pd.DataFrame, rule: LabelRule, horizon: int) -> dict[int, float | None]:
    """The oracle AUC of a generated book at the label's horizon; beside a 12-month label also at 3 and 6
    months, so the summary shows how much of the risk is knowable early (None: no exact oracle)."""
    horizons = (3, 6, 12) if horizon == 12 else (horizon,)
    return {h: oracle_auc(book, oracle, rule, h) for h in horizons}
