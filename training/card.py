"""The validation report: one Markdown model card per training run, for the model-validation team."""

from __future__ import annotations

import pandas as pd

from features.stability import psi_band
from model.spec import ModelSpec
from training.fit import TrainResult

HEADLINE = ("auc", "gini", "ks", "pr_auc", "brier", "ece", "oe", "capture_1pct", "capture_5pct")


def _table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(result: TrainResult, spec: ModelSpec, book_sha256: str, code_version: str) -> str:
    m, ch = result.test_metrics, result.challenger_metrics
    w = result.windows
    lbl = spec.label
    pop = "loans current (0 DPD) at the as-of month" if spec.population.current_only else "performing loans"
    rows = [
        {"measure": k, "LightGBM": float(m[k]), "challenger (scorecard LR)": float(ch.get(k, float("nan")))}
        for k in HEADLINE
    ]
    metric_tbl = pd.DataFrame(rows)
    oracle = (
        f"Oracle AUC on the same test snapshots {m['oracle_auc']:.4f}; model / oracle "
        f"{m['model_over_oracle']:.4f}."
        if "oracle_auc" in m
        else "No oracle (not a generated book)."
    )
    psis = {k: v for k, v in result.psi.items() if k != "__score__" and pd.notna(v)}
    shifted = sorted(((v, k) for k, v in psis.items() if v > 0.10), reverse=True)
    shifted_txt = ", ".join(f"{k} {v:.3f} ({psi_band(v)})" for v, k in shifted) or "none above 0.10"
    bad = [f for f, ok in result.monotonicity.items() if not ok]
    lead = (
        f"{m['lead_flagged_share']:.1%} of test-window defaulters were flagged red or amber before they "
        f"defaulted; median lead time {m['lead_median_months']:.0f} months, "
        f"{m['lead_3m_share']:.1%} flagged at least 3 months ahead."
        if "lead_flagged_share" in m
        else ""
    )
    segments = "\n".join(
        f"- AUC by {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in vals.items())
        for key, vals in result.auc_by.items()
    )
    return f"""# Model card: {spec.name}

## Purpose
{spec.description or "Probability of default for performing loans."} Used to rank the book for early
warning: red (riskiest {spec.tiers.red_share:.0%}) and amber (next {spec.tiers.amber_share:.0%}) loans go
to credit officers for review, restructuring, collateral revaluation or sale.

## Data
- Book fingerprint (SHA-256 of the five tables): `{book_sha256}`
- Code version: `{code_version}`
- As-of windows (out of time, consecutive): train {w["train"][0]:%Y-%m}..{w["train"][1]:%Y-%m},
  calibration {w["calibration"][0]:%Y-%m}..{w["calibration"][1]:%Y-%m},
  test {w["test"][0]:%Y-%m}..{w["test"][1]:%Y-%m}
- Snapshots: {result.counts.get("train", 0):,} train ({result.counts.get("train_defaults", 0):,} defaults),
  {result.counts.get("calibration", 0):,} calibration, {result.counts.get("test", 0):,} test
  ({result.counts.get("test_defaults", 0):,} defaults)

## Label and exclusions
- Label: {lbl.dpd_threshold}+ days past due or charge-off within {lbl.horizon_months} months after the
  as-of month.
- Population: {pop}. Excluded: loans not open or already at or past the threshold at the as-of month,
  loans that defaulted before, and snapshots whose {lbl.horizon_months}-month window is censored.
- The test window is never used for fitting, early stopping, calibration, thresholds or tuning.

## Performance on the out-of-time test window
{_table(metric_tbl)}

{oracle}
Precision in the red tier {m["precision_red"]:.1%}, in red + amber {m["precision_amber"]:.1%}.
{lead}
{segments}

## Calibration
Calibrator: {result.bundle.calibrator.method} (chosen on the calibration window by out-of-fold Brier score).
O/E on the test window {m["oe"]:.2f}. Observed vs expected defaults by grade (two-sided binomial test):

{_table(result.grades)}

## Stability
Score PSI train vs test {result.psi["__score__"]:.4f} ({psi_band(result.psi["__score__"])}).
Features with PSI above 0.10: {shifted_txt}.

## Monotonicity
{"Every declared risk direction holds in the fitted model." if not bad else f"FAILS for: {', '.join(bad)}"}
({len(result.monotonicity)} features checked along a grid of their values.)

## Limitations
- Trained on {w["train"][0]:%Y-%m}..{w["train"][1]:%Y-%m}; a regime unlike that period (a sharper house-price
  fall, a new product) needs monitoring of PSI and O/E before the scores are trusted.
- PDs are calibrated to the calibration window's default rate; O/E far from 1 on later windows means the
  level has moved even if the ranking holds.
- Categories never seen in training (a new city, a new funding partner) are scored as missing and flagged.
- Borrowers hold one loan each in the generated book; cross-loan contagion is not modelled.
"""
