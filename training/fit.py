"""From panel to model bundle: out-of-time windows, LightGBM, calibration, tiers, evaluation.

The test window is never used for fitting, early stopping, calibration, thresholds or parameter choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

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
from features.stability import reference_bins, with_history
from model.bundle import GRADE_BANDS, LISTS, Calibrator, FeatureEncoder, ModelBundle, capacity_cut
from model.spec import CalibrationSpec, GateSpec, GradeSpec, ModelSpec, TierSpec, Windows
from training import ensemble, metrics
from training.evaluate import Evaluation, evaluate, population
from training.promote import Gate, describe, gates_of

log = logging.getLogger(__name__)

MIN_CONTEXT_MONTHS = 12  # fewer training months hold too little of the cycle to learn context from
CALENDAR_R2 = 0.98  # a feature whose variance is this much between months only counts calendar months


@dataclass
class TrainResult:
    bundle: ModelBundle
    windows: Windows
    evaluation: Evaluation  # the out-of-time test window
    challenger_metrics: dict[str, float]
    calibration_metrics: dict[str, dict[str, float]]
    train_scores: np.ndarray
    best_iteration: int
    dropped: dict[str, str] = field(default_factory=dict)  # feature -> why it was left out
    warnings: list[str] = field(default_factory=list)  # signs of a degenerate model
    warned_gates: tuple[str, ...] = ()  # the gates those signs failed (on the calibration window)
    counts: dict[str, int] = field(default_factory=dict)
    example_rows: pd.DataFrame | None = None  # model input example: categoricals as strings, floats
    shap_sample: pd.DataFrame | None = None  # model input frame of test snapshots, for the SHAP summary
    challenger_scores: np.ndarray | None = None  # scorecard PD on the test window, for plots

    @property
    def test_metrics(self) -> dict[str, float]:
        return self.evaluation.metrics


def split_windows(panel: pd.DataFrame, spec: ModelSpec, windows: Windows) -> dict[str, pd.DataFrame]:
    """Labelled snapshots of the spec's population for training, calibration and test.

    Without a holdout share: the train, calibration and test windows. With one, a seeded share of the
    loans (by loan id, `training.ensemble.loan_draws`) is held out of training: the calibration data are
    their snapshots in the calibration window (in the training window when there is none). Held-out
    loans never train, so early stopping cannot reward a model for recognising next month's row of a
    loan it was trained on (a loan's consecutive snapshots are near-duplicates with overlapping label
    windows)."""
    pop = population(panel, spec.population.current_only)

    def rows(rng) -> pd.DataFrame:
        a, b = rng
        return pop[(pop["as_of"] >= a) & (pop["as_of"] <= b)].reset_index(drop=True)

    cal_w, share = windows.get("calibration"), spec.windows.holdout
    parts = {"test": rows(windows["test"]), "train": rows(windows["train"])}
    parts["calibration"] = rows(cal_w) if cal_w else parts["train"]
    if share is not None:
        loans = np.sort(pd.concat([parts["train"]["loan_id"], parts["calibration"]["loan_id"]]).unique())
        held = loans[
            ensemble.loan_draws(loans, spec.seed, "holdout") < share
        ]  # a loan's place: its id and the seed
        parts["train"] = parts["train"][~parts["train"]["loan_id"].isin(held)].reset_index(drop=True)
        parts["calibration"] = parts["calibration"][parts["calibration"]["loan_id"].isin(held)].reset_index(
            drop=True
        )
    for name in ("train", "calibration", "test"):
        part = parts[name]
        rng = windows.get(name)
        where = f"window {rng[0]:%Y-%m}..{rng[1]:%Y-%m}" if rng else "data"
        if name == "calibration" and share is not None:
            where = (
                f"held-out loans ({share:.0%}) in the {'calibration ' + where if rng else 'training window'}"
            )
        if len(part) == 0 or part["label"].nunique() < 2:
            defaults = int(part["label"].sum()) if len(part) else 0
            raise ValueError(
                f"the {name} {where} has {len(part):,} labelled snapshots and {defaults} defaults: it needs "
                "both defaults and non-defaults; the book is too short or too small for this spec's windows"
            )
    return parts


MIN_CATEGORY_ROWS = 100  # training rows a category needs for its default rate to say it is riskier


def category_rates(values: pd.Series, y: np.ndarray) -> dict:
    """Each category's training default rate (categories with fewer than MIN_CATEGORY_ROWS rows: none)
    and the overall rate: a category is a reason only where it is riskier than the book ("City tier:
    tier1" was told of a loan although tier1 defaults least)."""
    df = pd.DataFrame({"c": pd.Series(values).astype("object").to_numpy(), "y": y}).dropna(subset=["c"])
    g = df.groupby("c")["y"].agg(["mean", "size"])
    g = g[g["size"] >= MIN_CATEGORY_ROWS]
    return {
        "default_rates": {str(k): float(v) for k, v in g["mean"].items()},
        "base_rate": float(np.mean(y)) if len(y) else None,
    }


def screen_features(train: pd.DataFrame, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Leave out features that carry nothing in training: constant or always missing, numbers that only
    count calendar months (every loan drawn in one month: months on book is the calendar), and the
    book's context when the training window holds too few months to learn the cycle from."""
    months = train["as_of"]
    n_months = months.nunique()
    kept, dropped = [], {}
    for f in names:
        col = train[f]
        if col.notna().sum() == 0:
            dropped[f] = "always missing in training"
            continue
        if col.nunique(dropna=True) < 2 and col.isna().sum() == 0:
            dropped[f] = "constant in training"
            continue
        if BY_NAME[f].concept == "portfolio":
            if n_months < MIN_CONTEXT_MONTHS:
                dropped[f] = f"book context needs {MIN_CONTEXT_MONTHS}+ training months (has {n_months})"
                continue
        elif BY_NAME[f].dtype == "num" and n_months >= 2:
            x = col.astype(float)
            ok = x.notna()
            total = x[ok].var()
            if total > 0:
                within = x[ok].groupby(months[ok]).var(ddof=0).fillna(0)
                weights = months[ok].value_counts().reindex(within.index)
                r2 = 1 - float((within * weights).sum() / weights.sum()) / float(x[ok].var(ddof=0))
                if r2 >= CALENDAR_R2:
                    dropped[f] = (
                        f"only counts calendar months in this book "
                        f"({r2:.1%} of its variance is between months)"
                    )
                    continue
        kept.append(f)
    for f, why in dropped.items():
        log.info("feature %s left out: %s", f, why)
    if not kept:
        raise ValueError("no feature varies in the training window: nothing to learn from")
    return kept, dropped


def fit_booster(
    spec: ModelSpec, names: list[str], X_tr: pd.DataFrame, y_tr, X_cal: pd.DataFrame, y_cal
) -> lgb.Booster:
    p = spec.lightgbm
    params = {
        "objective": "binary",
        "metric": p.early_stopping_metric,
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
        "monotone_constraints": spec.monotone_constraints(names),
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
        callbacks=[lgb.early_stopping(p.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )


def fit_model(
    spec: ModelSpec,
    names: list[str],
    X_tr: pd.DataFrame,
    y_tr: np.ndarray,
    X_cal: pd.DataFrame,
    y_cal: np.ndarray,
    train_loans: pd.Series,
    cal_loans: pd.Series,
) -> tuple[lgb.Booster, np.ndarray, list[int]]:
    """The model's booster, each calibration row's out-of-fold raw score (for the calibrator), and the
    boosting rounds of each member: cross-fitted over `spec.lightgbm.folds` folds of loans (each member
    fits the other folds' training and calibration rows; merged into one booster), or a single booster
    fitted on the training rows and early-stopped on the calibration data."""
    k = spec.lightgbm.folds
    if k == 1:
        b = fit_booster(spec, names, X_tr, y_tr, X_cal, y_cal)
        return b, b.predict(X_cal, raw_score=True), [int(b.best_iteration or b.current_iteration())]

    X_all = pd.concat([X_tr, X_cal], ignore_index=True)
    y_all = np.concatenate([y_tr, y_cal])

    def fit(rows: np.ndarray, stop: np.ndarray) -> lgb.Booster:
        return fit_booster(spec, names, X_all[rows], y_all[rows], X_cal[stop], y_cal[stop])

    members, fold = ensemble.cross_fit(fit, train_loans, cal_loans, k, spec.seed)
    oof = np.empty(len(y_cal))
    for j, m in enumerate(members):
        oof[fold == j] = m.predict(X_cal[fold == j], raw_score=True, num_iteration=m.best_iteration or None)
    rounds = [int(m.best_iteration or m.current_iteration()) for m in members]
    return ensemble.merge(members), oof, rounds


def fit_calibrator(
    raw: np.ndarray, y: np.ndarray, loan_id: pd.Series, spec: CalibrationSpec, seed: int
) -> tuple[Calibrator, dict[str, dict]]:
    """Isotonic (smooth) or Platt, whichever has the lower out-of-fold Brier score (2 folds by loan),
    unless the spec names one; PDs never below the spec's floor."""
    fold = ensemble.loan_folds(loan_id, 2, seed)
    methods = ("isotonic", "platt") if spec.method == "auto" else (spec.method,)
    scores: dict[str, dict[str, float]] = {}
    for method in methods:
        oof = np.empty(len(y))
        for k in (0, 1):
            tr, te = fold != k, fold == k
            if y[tr].sum() == 0 or y[tr].sum() == tr.sum() or not te.any():
                oof[te] = y[tr].mean() if tr.any() else y.mean()
                continue
            oof[te] = _calibrator(method, raw[tr], y[tr], spec.pd_floor)(raw[te])
        scores[method] = {"brier": float(np.mean((oof - y) ** 2)), "ece": metrics.ece(y, oof)}
    best = min(scores, key=lambda k: (scores[k]["brier"], scores[k]["ece"]))
    return _calibrator(best, raw, y, spec.pd_floor), scores


def _calibrator(method: str, raw: np.ndarray, y: np.ndarray, floor: float) -> Calibrator:
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip").fit(raw, y)
        fitted = iso.predict(raw)
        # knots at the centroid of each block of equal fitted values: interpolation between them is smooth
        blocks = pd.DataFrame({"raw": raw, "fit": fitted}).groupby("fit", sort=True)["raw"].mean()
        x, yy = blocks.to_numpy(), blocks.index.to_numpy()
        order = np.argsort(x, kind="stable")
        return Calibrator(
            "isotonic", x=[float(v) for v in x[order]], y=[float(v) for v in yy[order]], floor=floor
        )
    lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
    return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]), floor=floor)


def capacity_thresholds(pd_: np.ndarray, lists: np.ndarray, tiers: TierSpec) -> dict[str, dict[str, float]]:
    """PD thresholds that put the riskiest `red_share` of each list in red and the next `amber_share` in
    amber (on the calibration window), by the batch's own capacity rule. A list the window holds fewer
    than 100 loans of takes the pooled thresholds: too few to place a 1% cut of its own."""

    def cut(p: np.ndarray) -> dict[str, float]:
        return capacity_cut(p, tiers.red_share, tiers.amber_share, at_least_one=True)

    pooled = cut(pd_)
    return {name: cut(pd_[lists == name]) if (lists == name).sum() >= 100 else pooled for name in LISTS}


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


def master_scale(pd_cal: np.ndarray, spec: GradeSpec) -> tuple[float, ...]:
    """The upper PD of grades 1 to 9. `auto`: a geometric scale from the 1st to the 99th percentile of the
    calibration window's PDs, so grade 1 and grade 10 each hold about 1% of the loans (more where PDs tie
    at an end, e.g. at the PD floor) and the grades between span the rest (a scale the book does not
    populate grades nothing); rounded to two significant digits so the bands read as a master scale. PDs
    that cannot give nine distinct edges below 1 (a degenerate model) fall back to the fixed doubling
    scale, with a log line."""
    if spec.bands != "auto":
        return tuple(float(b) for b in spec.bands)
    lo, hi = np.quantile(np.asarray(pd_cal, dtype=float), [0.01, 0.99])
    if not (0 < lo < hi < 1):
        log.warning("calibration PDs span %.4g..%.4g: using the fixed master scale", lo, hi)
        return GRADE_BANDS
    edges = np.geomspace(lo, hi, 9)
    rounded = np.array([float(f"{e:.2g}") for e in edges])
    if len(np.unique(rounded)) < 9 or not np.all(np.diff(rounded) > 0) or rounded[-1] >= 1:
        log.warning("calibration PDs too concentrated for nine grades: using the fixed master scale")
        return GRADE_BANDS
    return tuple(float(e) for e in rounded)


DEGENERATE_GATES = ("iterations", "distinct_pds", "watchlist", "tuned_auc")


def degenerate_signs(bundle: ModelBundle, cal: Evaluation, gates: GateSpec) -> list[Gate]:
    """What makes a model useless whatever its AUC: it stopped at once, scores nearly everyone alike, puts
    more than its capacity on the watchlist, or was tuned to a validation AUC no better than chance. The
    promotion gates of those names (`training.promote.gate_list`) on the calibration window, failed."""
    on_cal = gates_of(gates, bundle, cal, None)
    return [g for g in on_cal if g.name in DEGENERATE_GATES and not g.passed]


def train_model(
    spec: ModelSpec, panel: pd.DataFrame, windows: Windows, tuned_auc: float | None = None
) -> TrainResult:
    """Fit, calibrate, set grades and tiers, and evaluate on the out-of-time test window."""
    parts = split_windows(panel, spec, windows)
    train, cal, test = parts["train"], parts["calibration"], parts["test"]
    names, dropped = screen_features(train, spec.feature_names)
    enc = FeatureEncoder.fit(train, names)
    X_tr, X_cal, X_te = enc.frame(train), enc.frame(cal), enc.frame(test)
    y_tr, y_cal = train["label"].to_numpy(), cal["label"].to_numpy()
    booster, oof_cal, rounds = fit_model(
        spec, names, X_tr, y_tr, X_cal, y_cal, train["loan_id"], cal["loan_id"]
    )
    best = int(round(np.mean(rounds)))
    calibrator, cal_scores = fit_calibrator(oof_cal, y_cal, cal["loan_id"], spec.calibration, spec.seed)
    raw_cal = booster.predict(X_cal, raw_score=True)
    pd_cal = calibrator(raw_cal)
    thresholds = capacity_thresholds(pd_cal, ModelBundle.list_of(cal["dpd_now"]), spec.tiers)
    pd_tr = calibrator(booster.predict(X_tr, raw_score=True))
    hist = train.get("history_months")
    reference = {
        f: reference_bins(with_history(train[f], hist, BY_NAME[f].history), BY_NAME[f].dtype == "cat")
        for f in names
    }
    for f in names:
        if BY_NAME[f].dtype == "cat":
            reference[f].update(category_rates(train[f], y_tr))
    reference["__score__"] = reference_bins(pd_tr)
    reference["__score_calibration__"] = reference_bins(pd_cal)
    bundle = ModelBundle(
        booster=booster,
        encoder=enc,
        calibrator=calibrator,
        tier_thresholds=thresholds,
        reference=reference,
        spec=spec.model_dump(),
        windows={
            k: [f"{a:%Y-%m}", f"{b:%Y-%m}"] for k, v in windows.items() if v is not None for a, b in [v]
        },
        name=spec.name,
        training={
            "best_iteration": best,
            "member_rounds": rounds,
            "tuned_auc": tuned_auc,
            "dropped": dropped,
            # a category every training loan shared (a card book's product): the batch says which loans
            # it scores with another one, since the model never saw it
            "constant_categories": {
                f: str(train[f].dropna().iloc[0])
                for f, why in dropped.items()
                if why == "constant in training" and BY_NAME[f].dtype == "cat"
            },
            "calibration_holdout": windows["calibration"] is None,  # what the score PSI compares with
        },
        reference_rows=enc.matrix(train.sample(min(2000, len(train)), random_state=spec.seed)),
        grade_bands=master_scale(pd_cal, spec.grades),
    )
    ev = evaluate(bundle, test, seed=spec.seed)
    if len(rounds) > 1:  # the test AUC of members blind to each loan (ensemble.unseen_raw says why)
        raw = ensemble.unseen_raw(
            booster, rounds, X_te, test["loan_id"], train["loan_id"], cal["loan_id"], spec.seed
        )
        unseen = {"unseen_auc": metrics.auc(test["label"].to_numpy(), calibrator(raw))}
        if "oracle_auc" in ev.metrics:
            unseen["unseen_over_oracle"] = unseen["unseen_auc"] / ev.metrics["oracle_auc"]
        ev = replace(ev, metrics={**ev.metrics, **unseen})
    signs = degenerate_signs(bundle, evaluate(bundle, cal, seed=spec.seed, directions=False), spec.gates)
    warnings = [describe(g) for g in signs]
    for w in warnings:
        log.warning("degenerate model: %s", w)
    challenger = fit_challenger(train, names, spec.seed)
    ch_pd = challenger.predict_proba(challenger_frame(test, names))[:, 1]
    challenger_metrics = metrics.summary(test["label"].to_numpy(), ch_pd)
    # the bundle the model ships as: the evaluated one with what its evaluation found (a new bundle, not
    # the evaluated one changed in place)
    bundle = replace(
        bundle,
        test_metrics=dict(ev.metrics),
        training={
            **bundle.training,
            "monotone": ev.monotone,
            "monotone_failures": sorted(f for f, ok in ev.monotonicity.items() if not ok),
            "challenger_auc": challenger_metrics["auc"],
            "degenerate": list(warnings),
        },
    )
    return TrainResult(
        bundle=bundle,
        windows=windows,
        evaluation=ev,
        challenger_metrics=challenger_metrics,
        calibration_metrics=cal_scores,
        train_scores=pd_tr,
        best_iteration=best,
        dropped=dropped,
        warnings=warnings,
        warned_gates=tuple(g.name for g in signs),
        counts={
            "train": len(train),
            "calibration": len(cal),
            "test": len(test),
            "train_defaults": int(y_tr.sum()),
            "calibration_defaults": int(y_cal.sum()),
            "test_defaults": int(test["label"].sum()),
        },
        example_rows=challenger_frame(test.head(5), names).reset_index(drop=True),
        shap_sample=X_te.sample(min(2000, len(X_te)), random_state=spec.seed),
        challenger_scores=ch_pd,
    )
