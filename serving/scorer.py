"""The one scorer: feature rows to PD, grade, tier and SHAP reason codes, for the API and the batch alike.

Reasons are the features with the largest positive contributions to the raw score (exact TreeSHAP from
LightGBM's `pred_contrib`, in log-odds). Contributions plus the base value must equal the raw score; the
scorer checks it on every call, so a reason can never explain a score it did not produce.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import BY_NAME
from model.bundle import ModelBundle

log = logging.getLogger(__name__)

ADDITIVITY_TOL = 1e-6
ADDITIVITY_SAMPLE = 10_000  # rows checked per call; every row when a call has fewer
REASON_MODES = ("all", "flagged", "none")


@dataclass(frozen=True)
class Explanation:
    """The full contribution vector of one loan: base value + sum(contributions) = raw score."""

    base_value: float
    raw_score: float
    contributions: dict[str, float]
    values: dict[str, object]


class RiskScorer:
    """Wraps a model bundle; stateless after construction, safe to share between threads."""

    def __init__(self, bundle: ModelBundle, top_k: int = 3) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.bundle = bundle
        self.top_k = top_k

    @property
    def model_name(self) -> str:
        return self.bundle.name

    @property
    def model_version(self) -> str:
        return self.bundle.version

    def unknown_categories(self, features: pd.DataFrame) -> pd.Series:
        """Per row, 'field=value' for each categorical value the model never saw in training ('' if none).
        Such values are scored as missing (LightGBM routes them) and flagged, never rejected."""
        flags = np.full(len(features), "", dtype=object)
        for c, vocab in self.bundle.categories.items():
            col = features[c]
            unseen = (col.notna() & ~col.isin(vocab)).to_numpy(dtype=bool)
            for i, v in zip(np.flatnonzero(unseen), col.to_numpy(object)[unseen], strict=True):
                flags[i] = f"{flags[i]};{c}={v}" if flags[i] else f"{c}={v}"
        return pd.Series(flags, index=features.index, dtype=object)

    def contributions(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw score, contributions [rows x features], base value per row). The raw score is the sum of the
        contributions, checked against LightGBM's own raw score (all rows, or 10,000 evenly spaced)."""
        X = self.bundle.matrix(features)
        contrib = self.bundle.booster.predict(X, pred_contrib=True)
        # the independent raw score, on every row of a small call and an even sample of a large one
        check = slice(None) if len(X) <= ADDITIVITY_SAMPLE else slice(None, None, len(X) // ADDITIVITY_SAMPLE)
        raw = self.bundle.booster.predict(X[check], raw_score=True)
        total = contrib.sum(axis=1)
        gap = np.max(np.abs(total[check] - raw)) if len(raw) else 0.0
        if gap > ADDITIVITY_TOL:
            raise RuntimeError(f"SHAP contributions do not add up to the raw score (max gap {gap:.2e})")
        return total, contrib[:, :-1], contrib[:, -1]

    def score(self, features: pd.DataFrame, reasons: str = "all") -> pd.DataFrame:
        """Score feature rows (the output of `features.build.build_features`).

        Returns loan_id, as_of, raw_score, pd, grade, tier, unknown_categories and, for k = 1..top_k,
        reason_k_feature / _title / _value / _contribution / _text. `reasons` is 'all' (every loan),
        'flagged' (red and amber only) or 'none'.
        """
        if reasons not in REASON_MODES:
            raise ValueError(f"reasons must be one of {REASON_MODES}, got {reasons!r}")
        features = features.reset_index(drop=True)
        out = pd.DataFrame({"loan_id": features["loan_id"], "as_of": features["as_of"]})
        if reasons == "none":
            raw = self.bundle.raw_score(features) if len(features) else np.empty(0)
            contrib = None
        else:
            raw, contrib, _ = self.contributions(features)
        pd_ = self.bundle.pd_from_raw(raw)
        out["raw_score"] = raw
        out["pd"] = pd_
        out["grade"] = self.bundle.grade(pd_).astype(np.int8)
        out["tier"] = self.bundle.tier(pd_)
        out["unknown_categories"] = self.unknown_categories(features).to_numpy()
        want = np.ones(len(out), bool) if reasons == "all" else (out["tier"] != "green").to_numpy()
        for k, cols in enumerate(self._reasons(features, contrib, want), start=1):
            for key, col in cols.items():
                out[f"reason_{k}_{key}"] = col
        return out

    def _reasons(self, features: pd.DataFrame, contrib: np.ndarray | None, want: np.ndarray) -> list[dict]:
        n, names = len(features), self.bundle.features
        empty = {
            "feature": np.full(n, None, object),
            "title": np.full(n, None, object),
            "value": np.full(n, None, object),
            "contribution": np.full(n, np.nan),
            "text": np.full(n, None, object),
        }
        result = [{k: v.copy() for k, v in empty.items()} for _ in range(self.top_k)]
        if contrib is None or n == 0:
            return result
        k = min(self.top_k, contrib.shape[1])
        # the k largest contributions per row, largest first (stable order on ties: by feature position)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
        plain: dict[str, np.ndarray] = {}  # each feature column as JSON-friendly values, built once
        for j in range(k):
            fidx = order[:, j]
            c = contrib[np.arange(n), fidx]
            use = want & (c > 0)  # only features that push the risk up are reasons
            rows = np.flatnonzero(use)
            slot = result[j]
            slot["contribution"][rows] = c[rows]
            for f_i in np.unique(fidx[rows]):
                name = names[f_i]
                r = rows[fidx[rows] == f_i]
                if name not in plain:
                    plain[name] = _plain_column(features[name])
                vals = plain[name][r]
                feat = BY_NAME[name]
                texts = {v: feat.reason_text(v) for v in set(vals)}  # one format per distinct value
                slot["feature"][r] = name
                slot["title"][r] = feat.title
                slot["value"][r] = vals
                slot["text"][r] = [texts[v] for v in vals]
        return result

    def explain(self, features: pd.DataFrame) -> Explanation:
        """The full contribution vector for one loan (one feature row)."""
        if len(features) != 1:
            raise ValueError(f"explain takes exactly one feature row, got {len(features)}")
        raw, contrib, base = self.contributions(features)
        row = features.iloc[0]
        return Explanation(
            base_value=float(base[0]),
            raw_score=float(raw[0]),
            contributions={f: float(v) for f, v in zip(self.bundle.features, contrib[0], strict=True)},
            values={f: _plain(row[f]) for f in self.bundle.features},
        )


def _plain_column(col: pd.Series) -> np.ndarray:
    """`_plain` of every value of a column, as an object array (numbers vectorised)."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        num = col.to_numpy(dtype=np.float64, na_value=np.nan)
        out = num.astype(object)
        out[np.isnan(num)] = None
        return out
    return np.array([_plain(v) for v in col.to_numpy(dtype=object)], dtype=object)


def _plain(v: object) -> object:
    """A JSON-friendly scalar: None for missing, float for numbers, str for categories."""
    if isinstance(v, float):
        return None if v != v else v
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (np.floating, int, np.integer)):
        f = float(v)
        return None if f != f else f
    return str(v)
