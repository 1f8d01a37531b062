"""Validation plots as PNG files a validator reads: ROC with AUC and Gini beside the challenger and the
oracle, KS from the one KS function, reliability by grade with counts and Jeffreys intervals, SHAP with
categories shown as categories, and score distributions of defaulters and non-defaulters with the tier
cut-offs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalog import BY_NAME
from training import metrics

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_ks(
    y: np.ndarray,
    p: np.ndarray,
    path: Path,
    title: str,
    challenger: np.ndarray | None = None,
    oracle: np.ndarray | None = None,
) -> Path:
    from sklearn.metrics import roc_curve

    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    curves = [("model", p, "C0")]
    if challenger is not None:
        curves.append(("scorecard challenger", challenger, "C2"))
    if oracle is not None and np.isfinite(oracle).all():
        curves.append(("oracle (true PD)", oracle, "C3"))
    for name, score, colour in curves:
        fpr, tpr, _ = roc_curve(y, score)
        auc = metrics.auc(y, score)
        a.plot(fpr, tpr, color=colour, label=f"{name}: AUC {auc:.4f}, Gini {2 * auc - 1:.4f}")
    a.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    a.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {title}")
    a.legend(loc="lower right", fontsize=8)
    share, bad, good = metrics.ks_curve(y, p)
    k = int(np.argmax(np.abs(bad - good)))
    b.plot(share, bad, label="defaulters")
    b.plot(share, good, label="non-defaulters")
    b.vlines(share[k], good[k], bad[k], colors="red", label=f"KS {metrics.ks(y, p):.4f}")
    b.set(xlabel="share of loans, riskiest first", ylabel="cumulative share", title="KS")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def reliability_by_grade(grades: pd.DataFrame, path: Path) -> Path:
    """Observed default rate against mean PD per grade (log scales), with Jeffreys 95% intervals and the
    count of each grade; grades failing the Jeffreys test in red."""
    plt = _plt()
    g = grades[grades["count"] > 0]
    obs = np.maximum(g["observed_rate"].to_numpy(float), 1e-4)
    lo = np.maximum(g["rate_low"].to_numpy(float), 1e-4)
    hi = np.maximum(g["rate_high"].to_numpy(float), 1e-4)
    fail = (g["jeffreys_pvalue"] < 0.05).to_numpy()
    fig, ax = plt.subplots(figsize=(7, 6))
    for mask, colour, label in ((~fail, "C0", "Jeffreys test passes"), (fail, "C3", "fails at 5%")):
        if mask.any():
            ax.errorbar(
                g["mean_pd"].to_numpy()[mask],
                obs[mask],
                # clipped at 1e-4 for the log scale, an interval can end on the wrong side of its point
                yerr=np.nan_to_num(np.clip([obs[mask] - lo[mask], hi[mask] - obs[mask]], 0, None)),
                fmt="o",
                capsize=3,
                color=colour,
                label=label,
            )
    for r, o in zip(g.itertuples(), obs, strict=True):
        ax.annotate(
            f"{r.grade} (n={r.count:,})",
            (r.mean_pd, o),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    ax.plot([1e-4, 1], [1e-4, 1], "--", color="grey", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="mean PD (expected)", ylabel="observed default rate")
    ax.set_title("Calibration by grade (test window), Jeffreys 95% intervals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def score_distribution(
    y: np.ndarray, test_pd: np.ndarray, thresholds: dict[str, dict[str, float]], path: Path
) -> Path:
    """PD of defaulters and non-defaulters on the test window, with each list's red and amber cut-offs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(np.log10(1e-4), 0, 50)
    lp = np.log10(np.clip(test_pd, 1e-4, 1))
    ax.hist(lp[y == 0], bins=bins, density=True, alpha=0.5, label="non-defaulters")
    ax.hist(lp[y == 1], bins=bins, density=True, alpha=0.5, label="defaulters")
    styles = {"early_warning": "-", "in_arrears": ":"}
    for name, t in thresholds.items():
        for tier, colour in (("red", "red"), ("amber", "orange")):
            ax.axvline(
                np.log10(max(t[tier], 1e-4)),
                color=colour,
                ls=styles.get(name, "--"),
                lw=1,
                label=f"{tier}, {name.replace('_', ' ')}",
            )
    ax.set(xlabel="log10 PD", ylabel="density", title="Score distribution on the out-of-time test window")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def shap_summary(booster, X: pd.DataFrame, path: Path, max_display: int = 20) -> Path:
    """Beeswarm of exact TreeSHAP contributions (LightGBM pred_contrib) of the numeric features, and for the
    categorical ones a strip per category (a category has no 'high' or 'low' to colour by)."""
    import shap

    plt = _plt()
    contrib = booster.predict(X, pred_contrib=True)[:, :-1]
    cats = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    num = [j for j, c in enumerate(X.columns) if c not in cats]
    names = [BY_NAME[c].title if c in BY_NAME else c for c in X.columns]
    fig = plt.figure(figsize=(14, 0.35 * max_display + 2))
    plt.subplot(1, 2, 1)
    shap.summary_plot(
        contrib[:, num],
        X.iloc[:, num].to_numpy(float),
        feature_names=[names[j] for j in num],
        max_display=max_display,
        show=False,
        plot_size=None,
    )
    ax = plt.subplot(1, 2, 2)
    rows = []
    for c in cats:
        j = list(X.columns).index(c)
        vals = X[c].astype(object).where(X[c].notna(), "(missing)")
        for v in pd.unique(vals):
            m = (vals == v).to_numpy()
            rows.append((f"{BY_NAME[c].title}: {v}", contrib[m, j]))
    rows.sort(key=lambda r: float(np.mean(r[1])))
    rows = rows[-max_display:]
    ax.boxplot([r[1] for r in rows], vert=False, showfliers=False)
    ax.set_yticks(range(1, len(rows) + 1), [r[0] for r in rows], fontsize=7)
    ax.axvline(0, color="grey", lw=1)
    ax.set(xlabel="SHAP contribution (log-odds)", title="Categorical features by category")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
