"""Validation measures a model-validation team expects (DESIGN.md §6). Pure functions of labels and scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import beta, chi2
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


def ks_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative shares of loans, defaulters and non-defaulters, riskiest first, at the end of each run of
    tied scores (a tie is never split, so the curve and its KS do not depend on row order)."""
    y, p = _check(y, p)
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    n1, n0 = ys.sum(), len(ys) - ys.sum()
    ends = np.r_[ps[1:] != ps[:-1], True]
    share = (np.arange(1, len(ys) + 1) / len(ys))[ends]
    bad = np.cumsum(ys)[ends] / max(n1, 1)
    good = np.cumsum(1 - ys)[ends] / max(n0, 1)
    return share, bad, good


def ks(y, p) -> float:
    """Max distance between the score CDFs of defaulters and non-defaulters (the one KS: plots use it too)."""
    y, p = _check(y, p)
    if y.sum() == 0 or y.sum() == len(y):
        return float("nan")
    _, bad, good = ks_curve(y, p)
    return float(np.max(np.abs(bad - good)))


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
    """Deciles of the score, riskiest first: count, defaults, rate, cumulative capture and the KS
    distance at the decile's end. A run of tied scores is never split: it goes whole to the decile it
    starts in (a coarse model's deciles differ in size), so every row is a point of `ks_curve` and the
    table does not depend on row order."""
    y, p = _check(y, p)
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    n = len(ys)
    starts = np.r_[True, ps[1:] != ps[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))  # where each score's tie run begins
    decile = first * 10 // n + 1
    n1, n0 = ys.sum(), n - ys.sum()
    rows = []
    cum_bad = cum_good = 0.0
    for i in range(1, 11):
        m = decile == i
        count, bad = int(m.sum()), float(ys[m].sum())
        cum_bad += bad
        cum_good += count - bad
        rows.append(
            {
                "decile": i,
                "count": count,
                "defaults": int(bad),
                "default_rate": bad / count if count else np.nan,
                "mean_pd": ps[m].mean() if count else np.nan,
                "cum_capture": cum_bad / n1 if n1 else np.nan,
                "ks": abs(cum_bad / n1 - cum_good / n0) if n1 and n0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def jeffreys_pvalue(defaults: int, n: int, pd_: float) -> float:
    """Two-sided Jeffreys test of a grade's mean PD against its observed defaults (ECB TRIM style): the
    posterior of the default rate under a Jeffreys prior is Beta(d + 1/2, n - d + 1/2); the p-value is
    twice the smaller tail beyond the PD."""
    if n == 0:
        return float("nan")
    cdf = float(beta.cdf(pd_, defaults + 0.5, n - defaults + 0.5))
    return float(min(1.0, 2 * min(cdf, 1 - cdf)))


def calibration_by_grade(y, p, grades, n_grades: int = 10) -> pd.DataFrame:
    """Observed vs expected defaults for every grade of the master scale (empty grades included), with
    the Jeffreys interval of the default rate and the two-sided Jeffreys test of the grade's mean PD."""
    y, p = _check(y, p)
    g = np.asarray(grades)
    rows = []
    for grade in range(1, n_grades + 1):
        m = g == grade
        n, obs = int(m.sum()), int(y[m].sum())
        exp_pd = float(p[m].mean()) if n else float("nan")
        lo, hi = beta.ppf([0.025, 0.975], obs + 0.5, n - obs + 0.5) if n else (np.nan, np.nan)
        # the usual boundary rule (Brown, Cai and DasGupta 2001): the interval holds the observed rate
        lo, hi = (0.0 if obs == 0 else lo), (1.0 if n and obs == n else hi)
        rows.append(
            {
                "grade": grade,
                "count": n,
                "observed": obs,
                "expected": exp_pd * n if n else 0.0,
                "observed_rate": obs / n if n else np.nan,
                "mean_pd": exp_pd,
                "rate_low": float(lo),
                "rate_high": float(hi),
                "jeffreys_pvalue": jeffreys_pvalue(obs, n, exp_pd) if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def calibration_in_the_large(y, p) -> dict[str, float]:
    """O/E (observed over expected defaults) with its 95% interval (Poisson on the observed count), and
    the calibration slope (logistic regression of the outcome on logit PD: 1 is right, below 1 means
    the PDs are too spread out)."""
    y, p = _check(y, p)
    obs, exp = float(y.sum()), float(p.sum())
    if exp <= 0:
        return {
            "oe": float("nan"),
            "oe_low": float("nan"),
            "oe_high": float("nan"),
            "calibration_slope": float("nan"),
        }
    # exact Poisson limits of the observed count (Garwood)
    lo = chi2.ppf(0.025, 2 * obs) / 2 if obs > 0 else 0.0
    hi = chi2.ppf(0.975, 2 * obs + 2) / 2
    return {
        "oe": obs / exp,
        "oe_low": float(lo / exp),
        "oe_high": float(hi / exp),
        "calibration_slope": calibration_slope(y, p),
    }


def calibration_slope(y, p) -> float:
    y, p = _check(y, p)
    if not 0 < y.sum() < len(y):
        return float("nan")
    from sklearn.linear_model import LogisticRegression

    q = np.clip(p, 1e-9, 1 - 1e-9)
    z = np.log(q / (1 - q)).reshape(-1, 1)
    return float(LogisticRegression(C=1e6, max_iter=1000).fit(z, y).coef_[0, 0])


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
