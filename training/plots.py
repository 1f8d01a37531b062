"""Validation plots as PNG files: ROC and KS, reliability by grade, SHAP summary, score distributions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalog import BY_NAME

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_ks(y: np.ndarray, p: np.ndarray, path: Path, title: str) -> Path:
    from sklearn.metrics import roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(y, p)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    a.plot(fpr, tpr, label="model")
    a.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    a.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {title}")
    order = np.argsort(-p, kind="stable")
    ys = y[order]
    share = np.arange(1, len(ys) + 1) / len(ys)
    cb, cg = np.cumsum(ys) / max(ys.sum(), 1), np.cumsum(1 - ys) / max((1 - ys).sum(), 1)
    k = int(np.argmax(cb - cg))
    b.plot(share, cb, label="defaulters")
    b.plot(share, cg, label="non-defaulters")
    b.vlines(share[k], cg[k], cb[k], colors="red", label=f"KS {cb[k] - cg[k]:.3f}")
    b.set(xlabel="share of loans, riskiest first", ylabel="cumulative share", title="KS")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def reliability_by_grade(grades: pd.DataFrame, path: Path) -> Path:
    """Observed default rate against mean PD per grade (log scales), with 95% binomial intervals."""
    plt = _plt()
    g = grades[grades["count"] > 0]
    n, obs = g["count"].to_numpy(float), g["observed_rate"].to_numpy(float)
    err = 1.96 * np.sqrt(np.maximum(obs * (1 - obs), 1e-12) / n)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.errorbar(g["mean_pd"], np.maximum(obs, 1e-4), yerr=err, fmt="o", capsize=3)
    for _, r in g.iterrows():
        ax.annotate(str(int(r["grade"])), (r["mean_pd"], max(r["observed_rate"], 1e-4)), fontsize=8)
    lo, hi = 1e-4, 1.0
    ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="mean PD (expected)", ylabel="observed default rate")
    ax.set_title("Calibration by grade (test window)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def score_distribution(train_pd: np.ndarray, test_pd: np.ndarray, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bins = np.linspace(np.log10(1e-4), 0, 50)
    ax.hist(np.log10(np.clip(train_pd, 1e-4, 1)), bins=bins, density=True, alpha=0.5, label="train")
    ax.hist(np.log10(np.clip(test_pd, 1e-4, 1)), bins=bins, density=True, alpha=0.5, label="test")
    ax.set(xlabel="log10 PD", ylabel="density", title="Score distribution, train vs out-of-time test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def shap_summary(booster, X: pd.DataFrame, path: Path, max_display: int = 20) -> Path:
    """Beeswarm of exact TreeSHAP contributions (LightGBM pred_contrib) on a sample of test snapshots."""
    import shap

    plt = _plt()
    contrib = booster.predict(X, pred_contrib=True)[:, :-1]
    values = X.copy()
    for c in values.columns:
        if isinstance(values[c].dtype, pd.CategoricalDtype):
            values[c] = values[c].cat.codes.replace(-1, np.nan).astype(float)
    names = [BY_NAME[c].title if c in BY_NAME else c for c in X.columns]
    plt.figure()
    shap.summary_plot(
        contrib, values.to_numpy(float), feature_names=names, max_display=max_display, show=False
    )
    fig = plt.gcf()
    fig.set_size_inches(9, 0.35 * max_display + 2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
