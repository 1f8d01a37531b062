"""The one scorer: feature rows to PD, grade, list, tier and reason codes, for the API and the batch alike.

Reasons are concepts (arrears now, payment history, collateral and LTV, ...; `features.catalog.CONCEPTS`),
ranked by their contribution to the raw score: the exact sum of the SHAP values (exact TreeSHAP in
log-odds, from the bundle's compiled SHAP tables, equal to LightGBM's `pred_contrib` to 1e-9) of the
concept's features; a loan 30+ days past due has its arrears first. Contributions plus the base value
equal the raw score; the scorer checks it on every call, so a reason can never explain a score it did
not produce.

A concept is a reason only if it pushes the risk up and the loan has a telling value in it: a feature
that applies to the loan (not missing), may be told to an officer, has a declared risk direction (a
number without one, such as the remaining term, has no risky side) and is on its risky side of the
typical training loan, whose fact no other telling value already says (`told_by`), and that itself
pushes the risk up, and only if those values carry at least half of the concept's weight
(`MIN_TOLD_SHARE`). Its sentence combines up to two such values, the loan's state first ("75 days past
due now; 2 missed payments in the last 3 months"), never a fact an earlier sentence told (`measure`): a
concept left with nothing new gives no reason, and the next concept down takes its slot.
Protected attributes (the spec's `protected`, age by default) are never a reason: their contribution is
kept out of every concept. Texts come from the bundle, so a score is explained by the model that made it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import CONCEPTS
from model.bundle import ModelBundle

log = logging.getLogger(__name__)

ADDITIVITY_TOL = 1e-6
ADDITIVITY_SAMPLE = 2_000  # rows checked per call (every row when a call has fewer): LightGBM's raw
# prediction of 10,000 rows cost as much as the tables' contributions of a 50,000-loan chunk
SMALL_CALL = 256  # rows below which LightGBM predicts in the calling thread (OpenMP start-up costs more)
SMALL_FACTORIZE = 64  # values below which the reasons deduplicate in a loop, not with pd.factorize
REASON_MODES = ("all", "flagged", "none")
PER_REASON = 2  # values combined in one reason sentence
ARREARS_FIRST_DPD = 30  # a loan this far behind is told its arrears first, whatever else weighs more
# a reason's telling values carry at least this share of its concept's weight, or its words would
# misstate it ("City tier: tier1; Product: ..." for a weight that came from a funding partner, which is
# never told): the concept gives no reason and the next one down does (arrears first for 30+ DPD apart)
MIN_TOLD_SHARE = 0.5
LEADS = {"arrears": "dpd_now"}  # the loan's state, told first when it is telling
REASON_FIELDS = ("concept", "title", "feature", "value", "contribution", "text")

Columns = Mapping[str, "np.ndarray | pd.Series"]  # feature name -> values: a feature frame or plain arrays


@dataclass(frozen=True)
class Explanation:
    """The full contribution vector of one loan: base value + sum(contributions) = raw score."""

    base_value: float
    raw_score: float
    contributions: dict[str, float]
    concepts: dict[str, float]  # each concept's contribution: the sum of its features' (protected apart)
    values: dict[str, object]


class ConceptMap:
    """The bundle's features grouped into reason concepts, and which values are telling."""

    def __init__(self, bundle: ModelBundle) -> None:
        protected = set(bundle.model_spec.protected)
        self.features = bundle.features
        self.concepts = [c for c in CONCEPTS if any(bundle.catalog[f].concept == c for f in self.features)]
        self.member = np.zeros((len(self.features), len(self.concepts)))
        for j, f in enumerate(self.features):
            c = bundle.catalog[f].concept
            if f not in protected and c in self.concepts:
                self.member[j, self.concepts.index(c)] = 1.0
        self.protected = [j for j, f in enumerate(self.features) if f in protected]
        self.direction = np.array([bundle.catalog[f].direction for f in self.features])
        self.signed = np.array([bundle.catalog[f].signed for f in self.features], dtype=bool)
        self.numeric = np.array([bundle.catalog[f].dtype == "num" for f in self.features], dtype=bool)
        # a number without a declared risk direction (months on book, remaining term, balance over
        # principal) has no risky side: "171 months to maturity" is an ordinary value, never a reason
        self.tellable = np.array(
            [bundle.catalog[f].telling and f not in protected for f in self.features], dtype=bool
        ) & ~(self.numeric & (self.direction == 0))
        by = [bundle.catalog[f].told_by for f in self.features]
        self.told_by = [(j, self.features.index(b)) for j, b in enumerate(by) if b in self.features]
        self.median = np.array([_median(bundle.reference.get(f)) for f in self.features])
        # per category code: riskier than the book in training (every code where the bundle keeps no
        # rates, or for a category too rare to have one: then only its contribution decides, as before)
        self.riskier = {
            j: _riskier_codes(bundle.reference.get(f), bundle.categories[f])
            for j, f in enumerate(self.features)
            if f in bundle.categories
        }
        # compared as the sentence shows them: "Paid 100% of the amounts due" is never a risk because
        # 99.6% sits below a median of 100% (an officer reads the typical value as a reason)
        self.step = np.array([bundle.catalog[f].display_step for f in self.features])
        m = [bundle.catalog[f].measure for f in self.features]
        measures = sorted(set(m) - {""})
        self.measure = np.array([measures.index(x) if x else -1 for x in m])  # -1: a measure of its own

    def shown(self, X: np.ndarray) -> np.ndarray:
        """Values as the sentences show them, in units of their display step: equal ones read alike."""
        with np.errstate(invalid="ignore", over="ignore"):
            return np.where(self.step > 0, np.round(X / np.where(self.step > 0, self.step, 1.0)), X)

    def telling(self, X: np.ndarray, contrib: np.ndarray) -> np.ndarray:
        """Per (row, feature): the value may be told as a reason for this row."""
        shown = self.shown(X)
        with np.errstate(invalid="ignore", over="ignore"):
            typical = np.where(
                self.step > 0, np.round(self.median / np.where(self.step > 0, self.step, 1.0)), self.median
            )
            risky = np.where(
                self.direction > 0,
                typical < shown,
                np.where(self.direction < 0, typical > shown, True),
            )
        known = ~np.isnan(X)
        risky = np.where(self.numeric & np.isnan(self.median), True, risky)
        with np.errstate(invalid="ignore"):  # a change on the safe side of zero, as shown, is no risk
            risky &= ~self.signed | (self.direction * shown > 0)
        for j, codes in self.riskier.items():  # a category that defaults less than the book is no reason
            x = X[:, j]
            ok = ~np.isnan(x)
            risky[ok, j] &= codes[x[ok].astype(int)]
        tell = known & self.tellable & risky & (contrib > 0)
        for j, by in self.told_by:  # its fact is told by the other's sentence
            tell[:, j] &= ~tell[:, by]
        return tell


def _riskier_codes(ref: dict | None, vocab: list[str]) -> np.ndarray:
    """Per category code: may it be a reason (its training default rate above the book's, or unknown)."""
    rates = (ref or {}).get("default_rates") or {}
    base = (ref or {}).get("base_rate")
    if base is None:
        return np.ones(len(vocab), dtype=bool)
    return np.array([rates.get(c, np.inf) > base for c in vocab], dtype=bool)


def _median(ref: dict | None) -> float:
    """The training median of a numeric feature (NaN if unknown): stored in the reference; for a bundle
    older than that, estimated from its bins, as the lower edge of the bin where the cumulative share
    reaches one half (bin i holds edges[i-1] <= x < edges[i])."""
    if not ref or ref.get("kind") != "num":
        return float("nan")
    if ref.get("median") is not None:
        return float(ref["median"])
    if not ref.get("edges"):
        return float("nan")
    edges = ref["edges"]
    i = int(np.searchsorted(np.cumsum(ref["shares"]), 0.5))
    return float(edges[max(i - 1, 0)])


class RiskScorer:
    """Wraps a model bundle; stateless after construction, safe to share between threads."""

    def __init__(self, bundle: ModelBundle, top_k: int = 3) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.bundle = bundle
        self.top_k = top_k
        self.concepts = ConceptMap(bundle)

    @property
    def model_name(self) -> str:
        return self.bundle.name

    @property
    def model_version(self) -> str:
        return self.bundle.version

    def unknown_categories(self, features: pd.DataFrame) -> pd.Series:
        """Per row, 'field=value' for each categorical value the model never saw in training ('' if none).
        Such values are scored as missing (LightGBM routes them) and flagged, never rejected."""
        flags = self._unknown(features, self.bundle.matrix(features))
        return pd.Series(flags, index=features.index, dtype=object)

    def _unknown(self, columns: Columns, X: np.ndarray) -> np.ndarray:
        """`unknown_categories` from the model matrix: a value that is there but encodes as missing."""
        flags = np.full(len(X), "", dtype=object)
        features = self.bundle.features
        for c in self.bundle.categories:
            values = _objects(columns[c])
            unseen = np.isnan(X[:, features.index(c)])
            if not unseen.any():  # the usual case: every category known (or missing)
                continue
            unseen &= ~pd.isna(values)
            for i, v in zip(np.flatnonzero(unseen), values[unseen], strict=True):
                flags[i] = f"{flags[i]};{c}={v}" if flags[i] else f"{c}={v}"
        return flags

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw score, contributions [rows x features], base value per row) of the model input matrix.
        The raw score is the sum of the contributions, checked against LightGBM's own raw score (every
        row of a small call, 2,000 evenly spaced rows of a large one; the tables were verified at load)."""
        contrib = self.bundle.contributions(X)  # SHAP tables when the model has them, else pred_contrib
        check = slice(None) if len(X) <= ADDITIVITY_SAMPLE else slice(None, None, len(X) // ADDITIVITY_SAMPLE)
        raw = self._raw_score(X[check])
        total = contrib.sum(axis=1)
        gap = np.max(np.abs(total[check] - raw)) if len(raw) else 0.0
        if gap > ADDITIVITY_TOL:
            raise RuntimeError(f"SHAP contributions do not add up to the raw score (max gap {gap:.2e})")
        return total, contrib[:, :-1], contrib[:, -1]

    def concept_contributions(self, contrib: np.ndarray) -> np.ndarray:
        """[rows x concepts]: each concept's contribution, the exact sum of its features' SHAP values.

        Summed row by row in feature order (not a matrix product, whose rounding depends on how many rows
        a call has), so a loan gets the same figures alone, in a request batch or in the nightly batch."""
        cm = self.concepts
        out = np.zeros((len(contrib), len(cm.concepts)))
        for k in range(len(cm.concepts)):
            cols = np.flatnonzero(cm.member[:, k] > 0)
            if len(cols):  # a running sum along the row: left to right, the same rounding for any n
                out[:, k] = np.cumsum(contrib[:, cols], axis=1)[:, -1] + 0.0  # + 0.0: -0.0 reads 0.0
        return out

    def _raw_score(self, X: np.ndarray) -> np.ndarray:
        """LightGBM's own raw score; a small call in this thread (a single loan: ~0.05 ms, not ~0.4)."""
        if len(X) == 0:
            return np.empty(0)
        threads = {"num_threads": 1} if len(X) < SMALL_CALL else {}
        return self.bundle.booster.predict(X, raw_score=True, **threads)

    def score(self, features: pd.DataFrame, reasons: str = "all") -> pd.DataFrame:
        """Score feature rows (the output of `features.build.build_features`).

        Returns loan_id, as_of, raw_score, pd, grade, watch_list, tier, unknown_categories and, for
        k = 1..top_k,
        reason_k_concept / _title / _feature / _value / _contribution / _text (`_feature` and `_value` are
        the first value the sentence tells). `reasons` is 'all' (every loan), 'flagged' (red and amber
        only) or 'none'.
        """
        features = features.reset_index(drop=True)
        scored = self.score_columns(features, reasons)
        out = pd.DataFrame({"loan_id": features["loan_id"], "as_of": features["as_of"]})
        for key in ("raw_score", "pd", "grade", "watch_list", "tier", "unknown_categories"):
            out[key] = scored[key]
        for k in range(1, self.top_k + 1):
            for key in REASON_FIELDS:  # object columns keep None for "no reason" (not NaN)
                col = scored[f"reason_{k}_{key}"]
                out[f"reason_{k}_{key}"] = pd.Series(col, dtype=object if col.dtype == object else float)
        return out

    def score_columns(self, columns: Columns, reasons: str = "all") -> dict[str, np.ndarray]:
        """`score` on feature columns (a frame or a mapping of arrays, e.g. `features.build.features_at`)
        without building a frame: one array per output column of `score` but loan_id and as_of."""
        if reasons not in REASON_MODES:
            raise ValueError(f"reasons must be one of {REASON_MODES}, got {reasons!r}")
        X = self.bundle.matrix(columns)
        if reasons == "none":
            raw = self._raw_score(X)
            contrib = None
        else:
            raw, contrib, _ = self.contributions(X)
        pd_ = self.bundle.pd_from_raw(raw)
        lists = self.bundle.list_of(columns["dpd_now"])
        tier = self.bundle.tier(pd_, lists)
        out: dict[str, np.ndarray] = {
            "raw_score": raw,
            "pd": pd_,
            "grade": self.bundle.grade(pd_).astype(np.int8),
            "watch_list": lists,
            "tier": tier,
            "unknown_categories": self._unknown(columns, X),
        }
        want = np.ones(len(X), bool) if reasons == "all" else tier != "green"
        for k, cols in enumerate(self._reasons(columns, X, contrib, want), start=1):
            for key, col in cols.items():
                out[f"reason_{k}_{key}"] = col
        return out

    def _reasons(
        self, features: Columns, X: np.ndarray, contrib: np.ndarray | None, want: np.ndarray
    ) -> list[dict[str, np.ndarray]]:
        n, cm = len(X), self.concepts
        result = [
            {
                "concept": np.full(n, None, object),
                "title": np.full(n, None, object),
                "feature": np.full(n, None, object),
                "value": np.full(n, None, object),
                "contribution": np.full(n, np.nan),
                "text": np.full(n, None, object),
            }
            for _ in range(self.top_k)
        ]
        if contrib is None or n == 0 or not cm.concepts:
            return result
        tell = cm.telling(X, contrib)
        shown = cm.shown(X)
        told_all = np.full((n, self.top_k * PER_REASON), -1)  # every feature told so far, per row
        group = self.concept_contributions(contrib)
        eligible = ((tell.astype(float) @ cm.member) > 0) & (group > 0) & want[:, None]
        ranked = np.where(eligible, group, -np.inf)
        forced = np.zeros(ranked.shape, bool)  # first whatever its words carry
        if "arrears" in cm.concepts and "dpd_now" in features:  # 30+ DPD: the arrears come first
            a = cm.concepts.index("arrears")  # (from the loan's DPD: a model may not use it as an input)
            with np.errstate(invalid="ignore"):
                behind = np.asarray(features["dpd_now"], dtype=float) >= ARREARS_FIRST_DPD
            forced[:, a] = behind & eligible[:, a]
            ranked[:, a] = np.where(forced[:, a], np.finfo(float).max, ranked[:, a])
        # each row's concepts by weight; a slot takes the next one that has a reason to give: a fresh
        # value to tell (not only a fact an earlier reason told) and words that carry most of its weight
        order = np.argsort(-ranked, axis=1, kind="stable")
        with np.errstate(invalid="ignore"):
            carried = (np.where(tell, contrib, 0.0) @ cm.member) >= MIN_TOLD_SHARE * group
        nxt = np.zeros(n, dtype=int)  # each row's next candidate in `order`
        rows_all = np.arange(n)
        texts = _TextCache(self.bundle, features)
        for k in range(min(self.top_k, len(cm.concepts))):
            slot = result[k]
            pending = rows_all
            while True:
                pending = pending[nxt[pending] < len(cm.concepts)]
                ci = order[pending, nxt[pending]]
                live = np.isfinite(ranked[pending, ci])
                pending, ci = pending[live], ci[live]
                if not len(pending):
                    break
                nxt[pending] += 1
                filled = np.zeros(len(pending), bool)
                for c in np.unique(ci):
                    at = np.flatnonzero(ci == c)
                    r = pending[at]
                    concept = cm.concepts[c]
                    cols = np.flatnonzero(cm.member[:, c] > 0)
                    sub = np.where(tell[np.ix_(r, cols)], contrib[np.ix_(r, cols)], -np.inf)
                    lead = LEADS.get(concept)
                    if lead in cm.features:  # the loan's state first, whenever it is a telling value
                        is_lead = cols == cm.features.index(lead)
                        sub = np.where(is_lead[None, :] & np.isfinite(sub), np.inf, sub)
                    told = _pick(sub, cols, shown[r], cm.measure, told_all[r, : k * PER_REASON])
                    ok = (told[:, 0] >= 0) & (carried[r, c] | forced[r, c])
                    r, told = r[ok], told[ok]
                    filled[at[ok]] = True
                    told_all[r, k * PER_REASON : (k + 1) * PER_REASON] = told
                    slot["concept"][r] = concept
                    slot["title"][r] = CONCEPTS[concept]
                    slot["contribution"][r] = group[r, c]
                    slot["feature"][r] = np.array([*cm.features, None], dtype=object)[told[:, 0]]
                    values, sentences = texts.told(told, r)
                    slot["value"][r] = values
                    slot["text"][r] = sentences
                pending = pending[~filled]  # a concept with no reason to give: the next one down
        return result

    def explain(self, features: Columns) -> Explanation:
        """The full contribution vector for one loan (one feature row), and its concepts' sums."""
        X = self.bundle.matrix(features)
        if len(X) != 1:
            raise ValueError(f"explain takes exactly one feature row, got {len(X)}")
        raw, contrib, base = self.contributions(X)
        group = self.concept_contributions(contrib)[0]
        return Explanation(
            base_value=float(base[0]),
            raw_score=float(raw[0]),
            contributions={f: float(v) for f, v in zip(self.bundle.features, contrib[0], strict=True)},
            concepts={c: float(v) for c, v in zip(self.concepts.concepts, group, strict=True)},
            values={f: _plain(_objects(features[f])[0]) for f in self.bundle.features},
        )


def _pick(
    sub: np.ndarray, cols: np.ndarray, shown: np.ndarray, measure: np.ndarray, before: np.ndarray
) -> np.ndarray:
    """Up to PER_REASON features of one concept per row (positions in the bundle, best first, -1 for
    none), from their ranks `sub` (-inf: not telling). A value that repeats one told already, of the
    same measure and shown alike (in an earlier reason or this one), is never told again: a concept with
    nothing else to tell has no first value (-1), and the next concept takes its place."""
    rows = np.arange(len(sub))
    told = np.full((len(sub), PER_REASON), -1)
    sub = sub.copy()
    for p in range(PER_REASON):
        seen = np.concatenate([before, told[:, :p]], axis=1)
        ok = seen >= 0
        seen_measure = np.where(ok, measure[np.where(ok, seen, 0)], -1)
        seen_value = np.take_along_axis(shown, np.where(ok, seen, 0), axis=1)
        repeats = np.zeros(sub.shape, bool)
        for i, j in enumerate(cols):
            if measure[j] >= 0:
                same = (seen_measure == measure[j]) & (seen_value == shown[:, [j]])
                repeats[:, i] = same.any(axis=1)
        fresh = np.where(repeats, -np.inf, sub)
        best = np.argmax(fresh, axis=1)  # the first of equal ranks, as a stable sort would
        got = fresh[rows, best] > -np.inf
        told[:, p] = np.where(got, cols[best], -1)
        sub[rows[got], best[got]] = -np.inf  # told: not again
    return told


class _TextCache:
    """Feature values as JSON-friendly scalars and reason sentences, each distinct value of a feature
    formatted once, and gathered for many rows at a time (no Python work per row but the joins)."""

    def __init__(self, bundle: ModelBundle, features: Columns) -> None:
        self.bundle, self.features = bundle, features
        self.names = bundle.features
        self._cols: dict[int, np.ndarray] = {}

    def column(self, j: int) -> np.ndarray:
        if j not in self._cols:
            self._cols[j] = _plain_column(self.features[self.names[j]])
        return self._cols[j]

    def told(self, told: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For rows `rows` and their told features `told` (feature positions per row, best first, -1 for
        none): the first feature's value, and the sentences of all of them joined by "; "."""
        n, width = told.shape
        values = np.full(n, None, dtype=object)
        parts = np.full((n, width), "", dtype=object)
        for p in range(width):
            for j in np.unique(told[:, p][told[:, p] >= 0]):
                sel = np.flatnonzero(told[:, p] == j)
                vals = self.column(int(j))[rows[sel]]
                codes, uniq = _distinct(vals)
                words = [self.bundle.reason_text(self.names[j], _plain(u)) or "" for u in uniq]
                parts[sel, p] = np.array(words, dtype=object)[codes]
                if p == 0:
                    values[sel] = vals
        text = parts[:, 0].copy()
        for p in range(1, width):
            text = np.where(told[:, p] >= 0, text + "; " + parts[:, p], text)
        return values, text


def _plain_column(col: np.ndarray | pd.Series) -> np.ndarray:
    """`_plain` of every value of a column, as an object array (numbers vectorised)."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        num = col.to_numpy(dtype=np.float64, na_value=np.nan) if isinstance(col, pd.Series) else col
        num = np.asarray(num, dtype=np.float64)
        out = num.astype(object)
        out[np.isnan(num)] = None
        return out
    objs = _objects(col)
    if len(objs) <= SMALL_FACTORIZE:  # a request's few rows: a loop costs less than a hash table
        return np.array([None if _missing(v) else _plain(v) for v in objs], dtype=object)
    codes, uniques = pd.factorize(objs)  # each distinct value once; missing (code -1): None
    return np.array([*(_plain(u) for u in uniques), None], dtype=object)[codes]


def _missing(v: object) -> bool:
    """Missing as pandas' factorize takes it (None, NaN, NA, NaT of any kind, a Decimal NaN)."""
    return not isinstance(v, (str, tuple, list, np.ndarray)) and bool(pd.isna(v))


def _distinct(vals: np.ndarray) -> tuple[np.ndarray, list]:
    """(code per value, the distinct values in order of first appearance) of plain values (`_plain`:
    None, float or str), as `pd.factorize(vals, use_na_sentinel=False)` gives them; a loop for a
    request's few rows, where factorize's fixed cost is most of the reasons' time."""
    if len(vals) > SMALL_FACTORIZE:
        codes, uniq = pd.factorize(vals, use_na_sentinel=False)
        return codes, list(uniq)
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in vals), np.int64, len(vals))
    return codes, list(index)


def _objects(col: np.ndarray | pd.Series) -> np.ndarray:
    """A column as an object array (a frame's missing values as they are: NaN or None)."""
    return col.to_numpy(dtype=object) if isinstance(col, pd.Series) else np.asarray(col, dtype=object)


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
