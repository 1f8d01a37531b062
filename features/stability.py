"""Population stability: reference bins from a training sample and PSI against them.

Lives in the shared kernel because training (validation) and serving (the nightly batch's drift report)
must compute PSI the same way, from the reference stored in the model bundle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BINS = 10
EPS = 1e-4


def reference_bins(values: pd.Series | np.ndarray, categorical: bool = False, n_bins: int = N_BINS) -> dict:
    """Reference of one variable: quantile edges (numeric) or category shares, plus the missing share."""
    s = pd.Series(values)
    missing = float(s.isna().mean()) if len(s) else 0.0
    s = s.dropna()
    if categorical:
        shares = s.astype(str).value_counts(normalize=True).sort_index()
        return {
            "kind": "cat",
            "categories": list(shares.index),
            "shares": [float(x) for x in shares.to_numpy()],
            "missing": missing,
        }
    x = s.to_numpy(dtype=float)
    qs = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)[1:-1])) if len(x) else np.empty(0)
    # a value many loans share (0 days past due, 0 missed payments) gets a bin of its own: with the
    # quantile edge alone it shares its bin with every larger value, and arrears could rise unseen
    heavy = [q for q in qs if np.mean(x == q) >= 1 / (2 * n_bins)]
    if heavy:
        qs = _own_bins(np.unique(x), qs, heavy)
    qs = _merge_thin_bins(x, qs, 1 / (4 * n_bins))
    counts = _numeric_counts(x, qs)
    total = max(len(s), 1)
    return {
        "kind": "num",
        "edges": [float(x) for x in qs],
        "shares": [float(c / total) for c in counts],
        "missing": missing,
        "median": float(np.median(x)) if len(x) else None,  # the scorer's "typical loan" (reasons)
    }


def _own_bins(distinct: np.ndarray, edges: np.ndarray, heavy: list[float]) -> np.ndarray:
    """Edges that give each heavy value a bin of its own, reaching halfway to the nearest other values
    seen (a value recomputed in another order, a PD off in its last bits, stays in its bin)."""
    out = set(edges) - set(heavy)
    for v in heavy:
        i = int(np.searchsorted(distinct, v))
        pad = abs(v) * 1e-9 + 1e-12  # beyond the smallest or largest value seen
        out.add((distinct[i - 1] + v) / 2 if i > 0 else v - pad)
        out.add((v + distinct[i + 1]) / 2 if i + 1 < len(distinct) else v + pad)
    return np.array(sorted(out), dtype=float)


def _merge_thin_bins(x: np.ndarray, edges: np.ndarray, min_share: float) -> np.ndarray:
    """Drop the upper edge of each bin between two edges that holds less than `min_share` (a quantile
    interpolated just above a heavy value leaves such a bin): a reference bin with almost nothing in it
    turns a few values into a large PSI."""
    edges = list(edges)
    j = 1
    while j < len(edges):
        share = np.mean((x >= edges[j - 1]) & (x < edges[j])) if len(x) else 0.0
        if share < min_share:
            del edges[j]
        else:
            j += 1
    return np.asarray(edges, dtype=float)


def _numeric_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(edges, x, side="right")
    return np.bincount(idx, minlength=len(edges) + 1)


def psi(reference: dict, values: pd.Series | np.ndarray) -> float:
    """Population stability index of `values` against a reference (bins plus a missing bin)."""
    s = pd.Series(values)
    n = len(s)
    if n == 0:
        return float("nan")
    miss = float(s.isna().mean())
    s = s.dropna()
    if reference["kind"] == "cat":
        cats = reference["categories"]
        vc = s.astype(str).value_counts()
        actual = np.array(
            [vc.get(c, 0) for c in cats] + [len(s) - vc.reindex(cats).fillna(0).sum()], dtype=float
        )
        expected = np.array([*reference["shares"], 0.0])
    else:
        actual = _numeric_counts(s.to_numpy(dtype=float), np.asarray(reference["edges"])).astype(float)
        expected = np.asarray(reference["shares"], dtype=float)
    nonmissing = 1.0 - miss
    a = np.append(actual / max(len(s), 1) * nonmissing, miss)
    e = np.append(expected * (1.0 - reference["missing"]), reference["missing"])
    a, e = np.clip(a, EPS, None), np.clip(e, EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def with_history(values, history_months, need: int) -> np.ndarray:
    """The values of a feature that needs `need` months of history (a catalog entry's `history`), on the
    rows that have it: the values its reference is made of and its PSI compares. A 6-month trend a short
    book's training rows lacked for want of history, not because of the loan, read as drift (PSI 1.2)
    once the book was older; a like-for-like comparison measures the values. `need` 0: every row."""
    v = np.asarray(values)
    if not need or history_months is None:
        return v
    return v[np.asarray(history_months, dtype=float) >= need]


PSI_WATCH, PSI_SHIFTED = 0.10, 0.25  # the industry's PSI bands (DESIGN.md §6), the one place they live


def psi_band(value: float) -> str:
    """< PSI_WATCH stable, up to PSI_SHIFTED watch, above it shifted."""
    if np.isnan(value):
        return "n/a"
    return "stable" if value < PSI_WATCH else ("watch" if value <= PSI_SHIFTED else "shifted")
