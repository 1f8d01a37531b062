"""The validation report: one Markdown model card per training run, for the model-validation team."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from features.catalog import BY_NAME
from features.months import months_text
from features.stability import PSI_WATCH, psi_band
from model.spec import ModelSpec
from training.fit import TrainResult

HEADLINE = ("auc", "gini", "ks", "pr_auc", "brier", "ece", "oe", "capture_1pct", "capture_5pct")


def _cell(v: object, floatfmt: str) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, numbers.Real):
        if np.isnan(v):
            return "-"
        return (
            f"{int(v):,}"
            if float(v).is_integer() and abs(v) >= 1 and floatfmt != "raw"
            else format(v, floatfmt)
        )
    return str(v)


def table(df: pd.DataFrame, floatfmt: str = ".4f", ints: tuple[str, ...] = ()) -> str:
    """A Markdown table; counts and grades print as integers, measures with `floatfmt`."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [f"{int(r[c]):,}" if c in ints and pd.notna(r[c]) else _cell(r[c], floatfmt) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _list_line(name: str, m: dict, spec: ModelSpec) -> str:
    """One list's share of the test window and its tiers against capacity; a list with no snapshot (an
    in-arrears list under a current-only population) says so rather than 'nan%'."""
    share, red, amber = (m.get(f"{name}{k}", float("nan")) for k in ("_share", "_red_share", "_amber_share"))
    title = name.replace("_", " ")
    if not share > 0 or pd.isna(red) or pd.isna(amber):
        return f"- {title}: no test snapshot on this list"
    return (
        f"- {title}: {share:.1%} of test snapshots; red {red:.2%} and amber {amber:.2%} of the list "
        f"(capacity {spec.tiers.red_share:.0%} and {spec.tiers.amber_share:.0%})"
    )


def model_card(result: TrainResult, spec: ModelSpec, book_sha256: str, code_version: str) -> str:
    ev = result.evaluation
    m, ch = ev.metrics, result.challenger_metrics
    w = result.windows
    lbl = spec.label
    pop = "loans current (0 DPD) at the as-of month" if spec.population.current_only else "performing loans"
    # a card model knows no collateral: its card speaks of the actions and risks its loans can have
    kept = [BY_NAME[f] for f in result.bundle.features if f in BY_NAME]
    secured = any(f.concept == "collateral" for f in kept)
    revolving = any(f.concept == "utilisation" for f in kept)
    actions = ", ".join(
        ["call the borrower", "restructure"]
        + (["revalue collateral"] if secured else [])
        + (["cut or freeze the credit line"] if revolving else [])
    )
    regime = "a sharper house-price fall" if secured else "a sharper downturn"
    metric_tbl = pd.DataFrame(
        [
            {
                "measure": k,
                "LightGBM": float(m[k]),
                "challenger (scorecard LR)": float(ch.get(k, float("nan"))),
            }
            for k in HEADLINE
        ]
    )
    pit = (
        " The point-in-time oracle (each loan's true state, the scenario frozen at the as-of month: the"
        f" calibration the book's own data allow at best) has O/E {m['pit_oracle_oe']:.3f} and"
        f" {m['pit_oracle_grades_failing_jeffreys']:.0f} grades failing on this master scale."
        if "pit_oracle_oe" in m
        else ""
    )
    oracle = (
        f"Oracle AUC on the same test snapshots {m['oracle_auc']:.4f}; "
        f"model / oracle {m['model_over_oracle']:.4f}."
        if "oracle_auc" in m
        else "No oracle (not a generated book, or no exact oracle for this label)."
    )
    if "unseen_auc" in m:
        oracle += (
            f" Scored by the cross-fitted member that never trained on each loan, test AUC "
            f"{m['unseen_auc']:.4f}"
            + (f" ({m['unseen_over_oracle']:.4f} of the oracle's)" if "unseen_over_oracle" in m else "")
            + ": the test window's loans are the training windows' loans, and a training label's "
            f"{months_text(lbl.horizon_months)} reach into the test window's outcomes, so part of the gap"
            " to the model's AUC can be loans"
            " recognised, which production scoring never gets (one member is also weaker than the mean of"
            " all)."
        )
    psis = {k: v for k, v in ev.psi.items() if pd.notna(v)}
    shifted = sorted(((v, k) for k, v in psis.items() if v > PSI_WATCH), reverse=True)
    none = f"none above {PSI_WATCH:.2f}"
    shifted_txt = ", ".join(f"{k} {v:.3f} ({psi_band(v)})" for v, k in shifted) or none
    bad = [f for f, ok in ev.monotonicity.items() if not ok]
    lead = (
        f"{m['lead_flagged_share']:.1%} of test-window defaulters were flagged red or amber before they "
        f"defaulted; median lead time {m['lead_median_months']:.0f} "
        f"month{'' if round(m['lead_median_months']) == 1 else 's'}, "
        f"{m['lead_3m_share']:.1%} flagged at least 3 months ahead."
        if pd.notna(m.get("lead_median_months", float("nan")))
        else ""
    )
    segments = "\n".join(
        f"- AUC by {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in vals.items())
        for key, vals in ev.by_segment.items()
    )
    cal = w["calibration"]
    cal_txt = (
        f"calibration {cal[0]:%Y-%m}..{cal[1]:%Y-%m}"
        if cal
        else f"calibration on {spec.windows.holdout:.0%} of the training loans held out"
    )
    dropped = "\n".join(f"- `{f}`: {why}" for f, why in result.dropped.items()) or "- none"
    warnings = "\n".join(f"- {x}" for x in result.warnings) or "- none"
    grades = ev.grades[
        [
            "grade",
            "count",
            "observed",
            "expected",
            "observed_rate",
            "mean_pd",
            "rate_low",
            "rate_high",
            "jeffreys_pvalue",
        ]
    ]
    lists = "\n".join(_list_line(name, m, spec) for name in ("early_warning", "in_arrears"))
    fairness = (
        table(ev.fairness, ".4f", ints=("snapshots",))
        if not ev.fairness.empty
        else "no attributes to compare"
    )
    protected = ", ".join(spec.protected) or "none"
    left_out = " (left out of the model)" if spec.exclude_protected else ""
    return f"""# Model card: {spec.name}

## Purpose
{spec.description or "Probability of default for performing loans."} Used to rank the book for early
warning. Each score is on one of two lists: **early warning** (not in arrears at the as-of month) and
**in arrears**; within each list the riskiest {spec.tiers.red_share:.0%} are red and the next
{spec.tiers.amber_share:.0%} amber, for credit officers to {actions} or sell.

## Data
- Book fingerprint (SHA-256 of the five tables): `{book_sha256}`
- Code version: `{code_version}`
- As-of windows (out of time, consecutive): train {w["train"][0]:%Y-%m}..{w["train"][1]:%Y-%m}, {cal_txt},
  test {w["test"][0]:%Y-%m}..{w["test"][1]:%Y-%m}
- Snapshots: {result.counts.get("train", 0):,} train ({result.counts.get("train_defaults", 0):,} defaults),
  {result.counts.get("calibration", 0):,} calibration
  ({result.counts.get("calibration_defaults", 0):,} defaults),
  {result.counts.get("test", 0):,} test ({result.counts.get("test_defaults", 0):,} defaults)
- Boosting rounds: {result.best_iteration} (early stopping on the calibration data's
  {spec.lightgbm.early_stopping_metric})

Features left out of this model:
{dropped}

## Label and exclusions
- Label: {lbl.dpd_threshold}+ days past due or charge-off within {months_text(lbl.horizon_months)} after the
  as-of month.
- Population: {pop}. A loan that defaulted and cured is scored again after {months_text(lbl.probation_months)}
  below the threshold (its cure history is a feature). Excluded: loans not open, at or past the threshold,
  in default or probation at the as-of month, and snapshots whose {lbl.horizon_months}-month window is
  censored.
- The test window is never used for fitting, early stopping, calibration, thresholds or tuning.

## Performance on the out-of-time test window
{table(metric_tbl)}

{oracle}
Precision in red {m["precision_red"]:.1%}, in red + amber {m["precision_flagged"]:.1%}.
{lead}
{segments}

## Lists and capacity
{lists}

## Calibration
Calibrator: {result.bundle.calibrator.method} (chosen on the calibration data by out-of-fold Brier score),
PD floor {spec.calibration.pd_floor:.2%}. Calibration in the large on the test window: O/E {m["oe"]:.3f}
(95% interval {m["oe_low"]:.3f} to {m["oe_high"]:.3f}), calibration slope {m["calibration_slope"]:.3f}.
{m["grades_populated"]:.0f} of 10 grades populated; {m["grades_failing_jeffreys"]:.0f} fail the two-sided
Jeffreys test at 5%.{pit} Observed vs expected defaults by grade:

{table(grades, ".4f", ints=("grade", "count", "observed"))}

## Stability
Score PSI on the test window: {m["score_psi"]:.4f} against the calibration window
({psi_band(m["score_psi"])}),
{m["score_psi_train"]:.4f} against the training window ({psi_band(m["score_psi_train"])}).
Features with PSI above {PSI_WATCH:.2f} against training: {shifted_txt}.

## Monotonicity
{"Every declared risk direction holds in the fitted model." if not bad else f"FAILS for: {', '.join(bad)}"}
({len(ev.monotonicity)} features checked along a grid of their values.)

## Fairness
Protected attributes (never reason codes): {protected}{left_out}.
Flag rate, mean PD, default rate, AUC and O/E by group on the test window:

{fairness}

## Signs of a degenerate model
{warnings}

## Limitations
- Trained on {w["train"][0]:%Y-%m}..{w["train"][1]:%Y-%m}; a regime unlike that period ({regime}, a new
  product) needs monitoring of PSI and O/E before the scores are trusted.
- PDs follow the book's own arrears and roll rates (portfolio context), which lag the economy; O/E far from 1
  on later windows means the level has moved even if the ranking holds.
- Categories never seen in training (a new city, a new funding partner) are scored as missing and flagged.
- Borrowers hold one loan each in the generated book; cross-loan contagion is not modelled.
"""
