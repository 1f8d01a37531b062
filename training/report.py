"""The validation summary of a registered model, checked against its own spec's gates (not constants)."""

from __future__ import annotations

from dataclasses import dataclass

from model.bundle import ModelBundle


@dataclass(frozen=True)
class Check:
    text: str
    passed: bool


def checks(bundle: ModelBundle) -> list[Check]:
    """The gates of the bundle's spec on its out-of-time test metrics and training facts, plus the
    oracle's no-leak bound on a generated book. A degenerate model fails whatever its AUC."""
    g = bundle.model_spec.gates
    m, t = bundle.test_metrics, bundle.training
    out = [
        Check(f"AUC {m['auc']:.4f} at least the floor {g.min_auc}", m["auc"] >= g.min_auc),
        Check(f"ECE {m['ece']:.4f} at most {g.max_ece}", m["ece"] <= g.max_ece),
        Check(
            f"score PSI vs the calibration window {m['score_psi']:.4f} at most {g.max_score_psi}",
            m["score_psi"] <= g.max_score_psi,
        ),
        Check(
            f"{t.get('best_iteration', 0)} boosting rounds, at least {g.min_iterations}",
            t.get("best_iteration", 0) >= g.min_iterations,
        ),
        Check(
            f"{m['distinct_pds']:.0f} distinct PDs on the test window, at least {g.min_distinct_pds}",
            m["distinct_pds"] >= g.min_distinct_pds,
        ),
        Check(
            f"flags {m['flagged_over_capacity']:.2f}x its review capacity, "
            f"at most {g.max_watchlist_over_capacity}x",
            m["flagged_over_capacity"] <= g.max_watchlist_over_capacity,
        ),
    ]
    if t.get("tuned_auc") is not None:
        out.append(
            Check(
                f"tuned to calibration AUC {t['tuned_auc']:.4f}, at least {g.min_tuned_auc}",
                t["tuned_auc"] >= g.min_tuned_auc,
            )
        )
    if "monotone" in t:
        out.append(Check("every declared risk direction holds", bool(t["monotone"])))
    if "oracle_auc" in m:
        out.append(
            Check(
                f"AUC at most oracle {m['oracle_auc']:.4f} + {g.max_auc_over_oracle} (no leak)",
                m["auc"] <= m["oracle_auc"] + g.max_auc_over_oracle,
            )
        )
    return out
