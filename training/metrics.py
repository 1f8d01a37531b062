"""Validation measures a model-validation team expects (DESIGN.md §6). Pure functions of labels and scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {p.shape}")
    if len(y) == 0:
        raise ValueError("no observations")
    return y, p


def auc(y, p) -> float:
    y, p = _check(y, p)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def ks(y, p) -> float:
    """Max distance between the score CDFs of defaulters and non-defaulters."""
    y, p = _check(y, p)
    order = np.argsort(-p, kind="stable")
    ys = y[order]
    n1, n0 = ys.sum(), len(ys) - ys.sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    # evaluate only at the ends of runs of tied scores
    ps = p[order]
    ends = np.r_[ps[1:] != ps[:-1], True]
    tpr = np.cumsum(ys)[ends] / n1
    fpr = np.cumsum(1 - ys)[ends] / n0
    return float(np.max(np.abs(tpr - fpr)))


def ece(y, p, n_bins: int = 10) -> float:
    """Expected calibration error over equal-count bins."""
    y, p = _check(y, p)
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, n_bins)
    return float(sum(len(b) * abs(y[b].mean() - p[b].mean()) for b in bins if len(b)) / len(y))


def capture_at(y, p, share: float) -> float:
    """Share of all defaulters found in the riskiest `share` of loans."""
    y, p = _check(y, p)
    k = max(1, int(round(share * len(y))))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].sum() / y.sum()) if y.sum() else float("nan")


def precision_at(y, p, share: float) -> float:
    y, p = _check(y, p)
    k = max(1, int(round(share * len(y))))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean())


def summary(y, p) -> dict[str, float]:
    """The headline measures of a PD on labelled snapshots."""
    y, p = _check(y, p)
    a = auc(y, p)
    return {
        "auc": a,
        "gini": 2 * a - 1,
        "ks": ks(y, p),
        "pr_auc": float(average_precision_score(y, p)) if y.sum() else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "ece": ece(y, p),
        "oe": float(y.sum() / p.sum()) if p.sum() > 0 else float("nan"),
        "capture_1pct": capture_at(y, p, 0.01),
        "capture_5pct": capture_at(y, p, 0.05),
        "default_rate": float(y.mean()),
        "mean_pd": float(p.mean()),
        "n": float(len(y)),
    }


def decile_table(y, p) -> pd.DataFrame:
    """Deciles of the score, riskiest first: count, defaults, rate, cumulative capture and KS."""
    y, p = _check(y, p)
    order = np.argsort(-p, kind="stable")
    parts = np.array_split(order, 10)
    rows = []
    cum_bad = cum_good = 0.0
    n1, n0 = y.sum(), len(y) - y.sum()
    for i, idx in enumerate(parts, start=1):
        bad = y[idx].sum()
        cum_bad += bad
        cum_good += len(idx) - bad
        rows.append(
            {
                "decile": i,
                "count": len(idx),
                "defaults": int(bad),
                "default_rate": bad / max(len(idx), 1),
                "mean_pd": p[idx].mean() if len(idx) else np.nan,
                "cum_capture": cum_bad / n1 if n1 else np.nan,
                "ks": abs(cum_bad / n1 - cum_good / n0) if n1 and n0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def calibration_by_grade(y, p, grades) -> pd.DataFrame:
    """Observed vs expected defaults per grade, with a two-sided binomial test of the grade's mean PD."""
    y, p = _check(y, p)
    g = np.asarray(grades)
    rows = []
    for grade in sorted(np.unique(g)):
        m = g == grade
        n, obs, exp_pd = int(m.sum()), int(y[m].sum()), float(p[m].mean())
        pval = binomtest(obs, n, min(max(exp_pd, 1e-9), 1 - 1e-9)).pvalue if n else np.nan
        rows.append(
            {
                "grade": int(grade),
                "count": n,
                "observed": obs,
                "expected": exp_pd * n,
                "observed_rate": obs / n if n else np.nan,
                "mean_pd": exp_pd,
                "binom_pvalue": float(pval),
            }
        )
    return pd.DataFrame(rows)


def lead_time(loan_id, months_to_default, flagged) -> dict[str, float]:
    """Lead time: for each loan that defaults within the horizon of some snapshot, the months between its
    earliest red/amber flag and the default event. Returns the share of those defaulters ever flagged, the
    median and mean lead time of the flagged ones, and the share flagged at least 3 months ahead."""
    df = pd.DataFrame(
        {
            "loan": np.asarray(loan_id),
            "ttd": np.asarray(months_to_default, float),
            "flag": np.asarray(flagged),
        }
    )
    bad = df[df["ttd"].notna()]
    n = bad["loan"].nunique()
    if n == 0:
        return {
            "lead_flagged_share": float("nan"),
            "lead_median_months": float("nan"),
            "lead_mean_months": float("nan"),
            "lead_3m_share": float("nan"),
        }
    lead = bad[bad["flag"].astype(bool)].groupby("loan")["ttd"].max()
    return {
        "lead_flagged_share": len(lead) / n,
        "lead_median_months": float(lead.median()) if len(lead) else float("nan"),
        "lead_mean_months": float(lead.mean()) if len(lead) else float("nan"),
        "lead_3m_share": float((lead >= 3).sum() / n),
    }
