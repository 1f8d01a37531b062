"""From panel to model bundle: out-of-time windows, LightGBM, calibration, grades and tiers, evaluation.

The test window is never used for fitting, early stopping, calibration, thresholds or parameter choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from features.catalog import BY_NAME
from features.stability import psi, reference_bins
from model.bundle import Calibrator, FeatureEncoder, ModelBundle
from model.spec import ModelSpec, resolve_windows
from training import metrics
from training.panel import ORACLE_COL, TTD_COL

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    bundle: ModelBundle
    windows: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    test_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    calibration_metrics: dict[str, dict[str, float]]
    deciles: pd.DataFrame
    grades: pd.DataFrame
    psi: dict[str, float]
    monotonicity: dict[str, bool]
    auc_by: dict[str, dict[str, float]]
    test_scores: pd.DataFrame  # loan_id, as_of, label, pd, raw, oracle (test window)
    train_scores: np.ndarray
    best_iteration: int
    counts: dict[str, int] = field(default_factory=dict)
    example_rows: pd.DataFrame | None = None  # model input example: categoricals as strings, floats
    shap_sample: pd.DataFrame | None = None  # model input frame of test snapshots, for the SHAP summary


def split_windows(panel: pd.DataFrame, spec: ModelSpec, last_month: pd.Timestamp) -> tuple[dict, dict]:
    """Labelled snapshots of the spec's population in each window (censored rows left out)."""
    windows = resolve_windows(spec, last_month)
    pop = population(panel, spec)
    parts = {}
    for name, (a, b) in windows.items():
        part = pop[(pop["as_of"] >= a) & (pop["as_of"] <= b)].reset_index(drop=True)
        if len(part) == 0 or part["label"].nunique() < 2:
            raise ValueError(
                f"the {name} window {a:%Y-%m}..{b:%Y-%m} has no labelled defaults and non-defaults; "
                "the book is too short for this spec's windows"
            )
        parts[name] = part
    return parts, windows


def population(panel: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The spec's labelled population: censored snapshots out; loans current at t only, if asked."""
    pop = panel[panel["label"] >= 0]
    if spec.population.current_only:
        pop = pop[pop["dpd_now"] == 0]
    return pop


def fit_booster(spec: ModelSpec, X_tr: pd.DataFrame, y_tr, X_cal: pd.DataFrame, y_cal) -> lgb.Booster:
    p = spec.lightgbm
    params = {
        "objective": "binary",
        "learning_rate": p.learning_rate,
        "num_leaves": p.num_leaves,
        "min_child_samples": p.min_child_samples,
        "subsample": p.subsample,
        "subsample_freq": p.subsample_freq,
        "colsample_bytree": p.colsample_bytree,
        "reg_lambda": p.reg_lambda,
        "seed": spec.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
        "monotone_constraints": spec.monotone_constraints(),
        # "advanced" can break the constraints (LightGBM issues 5358, 6155): the monotonicity check caught it
        "monotone_constraints_method": "intermediate",
    }
    dtr = lgb.Dataset(X_tr, label=y_tr, categorical_feature="auto", free_raw_data=False)
    dcal = lgb.Dataset(X_cal, label=y_cal, reference=dtr)
    return lgb.train(
        params,
        dtr,
        num_boost_round=p.n_estimators,
        valid_sets=[dcal],
        valid_names=["calibration"],
        callbacks=[lgb.early_stopping(p.early_stopping_rounds, verbose=False)],
    )


def fit_calibrator(raw: np.ndarray, y: np.ndarray, months: pd.Series) -> tuple[Calibrator, dict[str, dict]]:
    """Isotonic or Platt, whichever has the lower Brier score out of fold (2 folds by alternating month)."""
    m = pd.DatetimeIndex(months)
    fold = ((m.year * 12 + m.month) % 2).to_numpy()
    scores: dict[str, dict[str, float]] = {}
    for method in ("isotonic", "platt"):
        oof = np.empty(len(y))
        for k in (0, 1):
            tr, te = fold != k, fold == k
            oof[te] = _calibrator(method, raw[tr], y[tr])(raw[te])
        scores[method] = {"brier": float(np.mean((oof - y) ** 2)), "ece": metrics.ece(y, oof)}
    best = min(scores, key=lambda k: (scores[k]["brier"], scores[k]["ece"]))
    return _calibrator(best, raw, y), scores


def _calibrator(method: str, raw: np.ndarray, y: np.ndarray) -> Calibrator:
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6).fit(raw, y)
        return Calibrator(
            "isotonic", x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_]
        )
    lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
    return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


class ScorecardBins(BaseEstimator, TransformerMixin):
    """Fine classing for a scorecard: quantile bins of each numeric feature over all values and over its
    non-zero tail (so mostly-zero delinquency counts keep their risky bins), a bin for missing, one-hot."""

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        self.edges_ = []
        for j in range(X.shape[1]):
            x = X[:, j][~np.isnan(X[:, j])]
            qs = np.linspace(0.1, 0.9, 9)
            tail = x[x != 0]
            e = np.quantile(x, qs) if len(x) else np.array([])
            if len(tail):
                e = np.concatenate([e, np.quantile(tail, qs), [0.0]])
            self.edges_.append(np.unique(e))
        return self

    def transform(self, X):
        """One-hot bin membership as a sparse matrix (one 1 per feature per row; dense would not fit
        in memory on a 200,000-loan panel)."""
        X = np.asarray(X, dtype=float)
        n = len(X)
        idx, offset = [], 0
        for j, e in enumerate(self.edges_):
            b = np.where(np.isnan(X[:, j]), len(e) + 1, np.searchsorted(e, X[:, j], side="right"))
            idx.append(b + offset)
            offset += len(e) + 2
        k = len(self.edges_)
        indices = np.column_stack(idx).ravel() if k else np.empty(0, dtype=np.int64)
        indptr = np.arange(0, n * k + 1, k) if k else np.zeros(n + 1, dtype=np.int64)
        return sparse.csr_matrix((np.ones(n * k), indices, indptr), shape=(n, offset))


def fit_challenger(train: pd.DataFrame, names: list[str], seed: int) -> Pipeline:
    """Scorecard-style benchmark: binned numeric and one-hot categorical features, L2 logistic regression."""
    num = [c for c in names if BY_NAME[c].dtype == "num"]
    cat = [c for c in names if BY_NAME[c].dtype == "cat"]
    cat_pipe = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", min_frequency=50),
    )
    pre = ColumnTransformer([("num", ScorecardBins(), num), ("cat", cat_pipe, cat)])
    model = Pipeline([("pre", pre), ("lr", LogisticRegression(C=0.05, max_iter=3000, random_state=seed))])
    return model.fit(challenger_frame(train, names), train["label"].to_numpy())


def challenger_frame(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    X = df[names].copy()
    for c in names:
        if BY_NAME[c].dtype == "cat":
            X[c] = X[c].astype(object).where(X[c].notna(), "missing")
    return X


def check_monotonicity(bundle: ModelBundle, sample: pd.DataFrame, n_grid: int = 12) -> dict[str, bool]:
    """For each feature with a declared direction, the raw score moves only that way along a value grid."""
    out: dict[str, bool] = {}
    X = bundle.frame(sample)
    for f in bundle.features:
        d = BY_NAME[f].direction
        if d == 0 or BY_NAME[f].dtype != "num":
            continue
        vals = X[f].dropna()
        if vals.nunique() < 2:
            out[f] = True
            continue
        grid = np.unique(np.quantile(vals, np.linspace(0, 1, n_grid)))
        scores = []
        for v in grid:
            Xv = X.copy()
            Xv[f] = v
            scores.append(bundle.booster.predict(Xv, raw_score=True))
        diffs = np.diff(np.vstack(scores), axis=0) * d
        out[f] = bool((diffs >= -1e-9).all())
    return out


def train_model(spec: ModelSpec, panel: pd.DataFrame, last_month: pd.Timestamp) -> TrainResult:
    """Fit, calibrate, set grades and tiers, and evaluate on the out-of-time test window."""
    parts, windows = split_windows(panel, spec, last_month)
    names = spec.feature_names
    train, cal, test = parts["train"], parts["calibration"], parts["test"]
    enc = FeatureEncoder.fit(train, names)
    X_tr, X_cal, X_te = enc.frame(train), enc.frame(cal), enc.frame(test)
    y_tr, y_cal, y_te = (p["label"].to_numpy() for p in (train, cal, test))
    booster = fit_booster(spec, X_tr, y_tr, X_cal, y_cal)
    raw_cal = booster.predict(X_cal, raw_score=True)
    calibrator, cal_scores = fit_calibrator(raw_cal, y_cal, cal["as_of"])
    pd_cal = calibrator(raw_cal)
    red = float(np.quantile(pd_cal, 1 - spec.tiers.red_share))
    amber = float(np.quantile(pd_cal, 1 - spec.tiers.red_share - spec.tiers.amber_share))
    raw_tr = booster.predict(X_tr, raw_score=True)
    pd_tr = calibrator(raw_tr)
    reference = {f: reference_bins(train[f], BY_NAME[f].dtype == "cat") for f in names}
    reference["__score__"] = reference_bins(pd_tr)
    raw_te = booster.predict(X_te, raw_score=True)
    pd_te = calibrator(raw_te)
    m = metrics.summary(y_te, pd_te)
    m["precision_red"] = metrics.precision_at(y_te, pd_te, spec.tiers.red_share)
    m["precision_amber"] = metrics.precision_at(y_te, pd_te, spec.tiers.red_share + spec.tiers.amber_share)
    if ORACLE_COL in test.columns and test[ORACLE_COL].notna().all():
        m["oracle_auc"] = metrics.auc(y_te, test[ORACLE_COL].to_numpy())
        m["model_over_oracle"] = m["auc"] / m["oracle_auc"]
    challenger = fit_challenger(train, names, spec.seed)
    ch = metrics.summary(y_te, challenger.predict_proba(challenger_frame(test, names))[:, 1])
    psis = {"__score__": psi(reference["__score__"], pd_te)}
    psis.update({f: psi(reference[f], test[f]) for f in names})
    auc_by = {
        key: {
            str(k): metrics.auc(g["label"], pd_te[g.index])
            for k, g in test.groupby(key)
            if g["label"].nunique() == 2
        }
        for key in ("product", "city_tier")
        if key in test.columns
    }
    shell = ModelBundle(
        booster=booster,
        encoder=enc,
        calibrator=calibrator,
        tier_thresholds={"red": red, "amber": amber},
        reference=reference,
        spec=spec.model_dump(),
        windows={k: [f"{a:%Y-%m}", f"{b:%Y-%m}"] for k, (a, b) in windows.items()},
        name=spec.name,
        reference_rows=enc.matrix(train.sample(min(2000, len(train)), random_state=spec.seed)),
    )
    sample = test.sample(min(400, len(test)), random_state=spec.seed)
    mono = check_monotonicity(shell, sample)
    grades = shell.grade(pd_te)
    tiers = shell.tier(pd_te)
    if TTD_COL in test.columns:
        m.update(metrics.lead_time(test["loan_id"], test[TTD_COL], tiers != "green"))
    shell.test_metrics = {k: float(v) for k, v in m.items()}
    test_scores = pd.DataFrame(
        {
            "loan_id": test["loan_id"],
            "as_of": test["as_of"],
            "label": y_te,
            "raw": raw_te,
            "pd": pd_te,
            "grade": grades,
            "tier": tiers,
            "oracle": test.get(ORACLE_COL, pd.Series(np.nan, index=test.index)).to_numpy(),
        }
    )
    return TrainResult(
        bundle=shell,
        windows=windows,
        test_metrics=m,
        challenger_metrics=ch,
        calibration_metrics=cal_scores,
        deciles=metrics.decile_table(y_te, pd_te),
        grades=metrics.calibration_by_grade(y_te, pd_te, grades),
        psi=psis,
        monotonicity=mono,
        auc_by=auc_by,
        test_scores=test_scores,
        train_scores=pd_tr,
        best_iteration=int(booster.best_iteration or booster.current_iteration()),
        example_rows=challenger_frame(test.head(5), names).reset_index(drop=True),
        shap_sample=X_te.sample(min(2000, len(X_te)), random_state=spec.seed),
        counts={
            "train": len(train),
            "calibration": len(cal),
            "test": len(test),
            "train_defaults": int(y_tr.sum()),
            "test_defaults": int(y_te.sum()),
        },
    )
