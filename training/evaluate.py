"""One evaluation of a model bundle on labelled snapshots, used by training (the out-of-time test window),
promotion (the latest window of the book) and the report: discrimination, calibration in the large and
by grade, stability, monotonicity, lead time, capacity and fairness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.catalog import BY_NAME
from features.stability import psi, with_history
from model.bundle import LISTS, ModelBundle
from training import metrics
from training.panel import ORACLE_COL, PIT_ORACLE_COL, TTD_COL

AGE_BANDS = (0, 30, 40, 50, 60, 200)


@dataclass
class Evaluation:
    """A bundle's measures on one window of labelled snapshots."""

    version: str
    metrics: dict[str, float]
    monotonicity: dict[str, bool]
    grades: pd.DataFrame = field(default_factory=pd.DataFrame)
    deciles: pd.DataFrame = field(default_factory=pd.DataFrame)
    psi: dict[str, float] = field(default_factory=dict)
    by_segment: dict[str, dict[str, float]] = field(default_factory=dict)
    fairness: pd.DataFrame = field(default_factory=pd.DataFrame)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def monotone(self) -> bool:
        return all(self.monotonicity.values())

    @property
    def failed_grades(self) -> list[int]:
        g = self.grades
        if g.empty:
            return []
        return [int(x) for x in g.loc[g["jeffreys_pvalue"] < 0.05, "grade"]]


def population(panel: pd.DataFrame, current_only: bool) -> pd.DataFrame:
    """The labelled population: censored snapshots out; loans current at t only, if the spec says so."""
    pop = panel[panel["label"] >= 0]
    if current_only:
        pop = pop[pop["dpd_now"] == 0]
    return pop


def check_monotonicity(bundle: ModelBundle, sample: pd.DataFrame, n_grid: int = 12) -> dict[str, bool]:
    """For each feature with a declared direction, the raw score moves only that way along a value grid
    (every sampled row moved to each grid value; one LightGBM call per feature on the float matrix)."""
    out: dict[str, bool] = {}
    X = bundle.matrix(sample)
    for j, f in enumerate(bundle.features):
        d = BY_NAME[f].direction
        if d == 0 or BY_NAME[f].dtype != "num":
            continue
        vals = X[:, j][~np.isnan(X[:, j])]
        if np.unique(vals).size < 2:
            out[f] = True
            continue
        grid = np.unique(np.quantile(vals, np.linspace(0, 1, n_grid)))
        Xv = np.tile(X, (len(grid), 1))
        Xv[:, j] = np.repeat(grid, len(X))
        scores = bundle.booster.predict(Xv, raw_score=True).reshape(len(grid), len(X))
        diffs = np.diff(scores, axis=0) * d
        out[f] = bool((diffs >= -1e-9).all())
    return out


def evaluate(
    bundle: ModelBundle, rows: pd.DataFrame, version: str = "", seed: int = 7, directions: bool = True
) -> Evaluation:
    """Score labelled snapshots (panel rows of the bundle's population) and measure everything.
    `directions=False` skips the monotonicity sweep (a property of the model, not of these rows: a
    second evaluation of the same model need not pay for it again)."""
    rows = rows.reset_index(drop=True)
    if len(rows) == 0 or rows["label"].nunique() < 2:
        raise ValueError("the window has no labelled defaults and non-defaults to evaluate on")
    spec = bundle.model_spec
    y = rows["label"].to_numpy(dtype=float)
    raw = bundle.raw_score(rows)
    p = bundle.pd_from_raw(raw)
    lists = bundle.list_of(rows["dpd_now"])
    tiers = bundle.tier(p, lists)
    grades = bundle.grade(p)
    m = metrics.summary(y, p)
    m.update(metrics.calibration_in_the_large(y, p))
    m["precision_red"] = float(y[tiers == "red"].mean()) if (tiers == "red").any() else float("nan")
    flagged = tiers != "green"
    m["precision_flagged"] = float(y[flagged].mean()) if flagged.any() else float("nan")
    m["distinct_pds"] = float(len(np.unique(np.round(p, 12))))
    capacity = spec.tiers.red_share + spec.tiers.amber_share
    for name in LISTS:
        on = lists == name
        m[f"{name}_share"] = float(on.mean())
        if on.any():
            m[f"{name}_red_share"] = float((tiers[on] == "red").mean())
            m[f"{name}_amber_share"] = float((tiers[on] == "amber").mean())
    m["flagged_over_capacity"] = float(flagged.mean() / capacity)
    if ORACLE_COL in rows.columns and rows[ORACLE_COL].notna().all():
        m["oracle_auc"] = metrics.auc(y, rows[ORACLE_COL].to_numpy())
        m["model_over_oracle"] = m["auc"] / m["oracle_auc"]
    ref = bundle.reference
    m["score_psi_train"] = psi(ref["__score__"], p)
    m["score_psi"] = psi(ref.get("__score_calibration__", ref["__score__"]), p)
    if TTD_COL in rows.columns:
        m.update(metrics.lead_time(rows["loan_id"], rows[TTD_COL], flagged))
    grade_table = metrics.calibration_by_grade(y, p, grades, len(bundle.grade_bands) + 1)
    m["grades_populated"] = float((grade_table["count"] > 0).sum())
    m["grades_failing_jeffreys"] = float((grade_table["jeffreys_pvalue"] < 0.05).sum())
    if PIT_ORACLE_COL in rows.columns and rows[PIT_ORACLE_COL].notna().all() and len(rows):
        # the calibration a PIT model can reach at best (generated books where asked for): the true state,
        # the scenario frozen at the as-of month, on this model's master scale
        pit = rows[PIT_ORACLE_COL].to_numpy()
        m["pit_oracle_oe"] = metrics.calibration_in_the_large(y, pit)["oe"]
        pit_table = metrics.calibration_by_grade(y, pit, bundle.grade(pit), len(bundle.grade_bands) + 1)
        m["pit_oracle_grades_failing_jeffreys"] = float((pit_table["jeffreys_pvalue"] < 0.05).sum())
    hist = rows.get("history_months")
    feature_psi = {
        f: psi(ref[f], with_history(rows[f], hist, bundle.catalog[f].history))
        for f in bundle.features
        if f in ref
    }
    by_segment = {
        key: {
            str(k): metrics.auc(y[g.index], p[g.index])
            for k, g in rows.groupby(key, observed=True)
            if g["label"].nunique() == 2
        }
        for key in ("product", "city_tier")
        if key in rows.columns
    }
    scores = pd.DataFrame(
        {
            "loan_id": rows["loan_id"],
            "as_of": rows["as_of"],
            "label": y.astype(np.int8),
            "raw": raw,
            "pd": p,
            "grade": grades,
            "tier": tiers,
            "list": lists,
            "oracle": rows[ORACLE_COL].to_numpy() if ORACLE_COL in rows else np.nan,
            "pit_oracle": rows[PIT_ORACLE_COL].to_numpy() if PIT_ORACLE_COL in rows else np.nan,
        }
    )
    return Evaluation(
        version=version,
        metrics={k: float(v) for k, v in m.items()},
        monotonicity=(
            check_monotonicity(bundle, rows.sample(min(400, len(rows)), random_state=seed))
            if directions
            else {}
        ),
        grades=grade_table,
        deciles=metrics.decile_table(y, p),
        psi=feature_psi,
        by_segment=by_segment,
        fairness=fairness_table(rows, y, p, flagged),
        scores=scores,
    )


def fairness_table(rows: pd.DataFrame, y: np.ndarray, p: np.ndarray, flagged: np.ndarray) -> pd.DataFrame:
    """Flag rate, mean PD, default rate, AUC and O/E by age band and by borrower type: whether the warning
    falls on some groups more than their outcomes justify."""
    out = []
    groups = {}
    if "age" in rows.columns:
        age = pd.cut(
            rows["age"],
            AGE_BANDS,
            right=False,
            # the last band is open: "60+", not "60-199"
            labels=[f"{a}-{b - 1}" for a, b in zip(AGE_BANDS[:-2], AGE_BANDS[1:-1], strict=True)]
            + [f"{AGE_BANDS[-2]}+"],
        )
        groups["age band"] = age.astype(object).where(age.notna(), "unknown")
    if "borrower_type" in rows.columns:
        groups["borrower type"] = (
            rows["borrower_type"].astype(object).where(rows["borrower_type"].notna(), "unknown")
        )
    for attr, g in groups.items():
        for value in sorted(pd.unique(g), key=str):
            m = (g == value).to_numpy()
            if not m.any():
                continue
            yy, pp = y[m], p[m]
            out.append(
                {
                    "attribute": attr,
                    "group": str(value),
                    "snapshots": int(m.sum()),
                    "flag_rate": float(flagged[m].mean()),
                    "mean_pd": float(pp.mean()),
                    "default_rate": float(yy.mean()),
                    "auc": metrics.auc(yy, pp),
                    "oe": float(yy.sum() / pp.sum()) if pp.sum() > 0 else float("nan"),
                }
            )
    return pd.DataFrame(out)
