"""Gated promotion, the pure part: score champion and challenger on the same out-of-time window, apply the
spec's gates, and say why. The MLflow side (aliases, audit log) lives in `training.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from model.bundle import ModelBundle
from model.spec import GateSpec
from training.evaluate import Evaluation


@dataclass
class Gate:
    name: str
    value: float
    limit: float
    passed: bool
    rule: str  # e.g. "auc >= champion auc - 0.005"
    basis: str = ""  # what the value is measured against, where the wording needs it (score PSI)


@dataclass
class Decision:
    model: str
    challenger_version: str
    champion_before: str | None
    champion_after: str | None
    promoted: bool
    reason: str
    window: tuple[str, str]
    gates: list[Gate]
    challenger: dict[str, float]
    champion: dict[str, float] | None = None
    who: str = ""
    when: str = ""
    book_sha256: str = ""
    kind: str = "promotion"  # or "rollback": champion moved back to a version promoted before, no gates

    def to_dict(self) -> dict:
        return asdict(self)


def same_label(a: ModelBundle, b: ModelBundle) -> bool:
    sa, sb = a.model_spec, b.model_spec
    return sa.label == sb.label and sa.population == sb.population


def gates_of(
    gates: GateSpec, bundle: ModelBundle, challenger: Evaluation, champion: Evaluation | None
) -> list[Gate]:
    """Every gate of the spec on the challenger's evaluation (and against the champion's, if any)."""
    bad = sorted(f for f, ok in challenger.monotonicity.items() if not ok)
    champion_auc = champion.metrics["auc"] if champion is not None else None
    return gate_list(gates, challenger.metrics, bad, bundle.training, champion_auc)


def gate_list(
    gates: GateSpec,
    m: Mapping[str, float],
    monotone_failures: list[str],
    training: Mapping,
    champion_auc: float | None = None,
) -> list[Gate]:
    """The gates, in one place for promotion, the report (`ews report`, on the bundle's stored test
    metrics) and training's degenerate-model warnings (on the calibration window).

    Discrimination: AUC within `max_auc_drop` of the champion, or above the floor for a first champion.
    Calibration: ECE. Stability: score PSI against the calibration window (adjacent in time, so a cycle
    between the training window and now does not read as a broken model). Monotonicity. The signs of a
    degenerate model: too few boosting rounds, too few distinct PDs, a watchlist far over capacity, tuning
    to a chance-level validation AUC. On a generated book, an AUC above the oracle's (the true PD's) by
    more than `max_auc_over_oracle`: a leak."""
    out: list[Gate] = []
    if champion_auc is not None:
        floor = champion_auc - gates.max_auc_drop
        rule = f"auc >= champion auc - {gates.max_auc_drop}"
        out.append(Gate("auc", m["auc"], floor, bool(m["auc"] >= floor), rule))
    else:
        out.append(Gate("auc", m["auc"], gates.min_auc, bool(m["auc"] >= gates.min_auc), "auc >= floor"))
    out.append(Gate("ece", m["ece"], gates.max_ece, bool(m["ece"] <= gates.max_ece), "ece <= max_ece"))
    basis = (
        "the held-out calibration loans" if training.get("calibration_holdout") else "the calibration window"
    )
    out.append(
        Gate(
            "score_psi",
            m["score_psi"],
            gates.max_score_psi,
            bool(m["score_psi"] <= gates.max_score_psi),
            f"score psi vs {basis} <= max_score_psi",
            basis,
        )
    )
    n_bad = float(len(monotone_failures))
    out.append(Gate("monotonicity", n_bad, 0.0, not monotone_failures, "every declared direction holds"))
    it = float(training.get("best_iteration", 0))
    out.append(
        Gate("iterations", it, gates.min_iterations, it >= gates.min_iterations, "boosting rounds >= min")
    )
    out.append(
        Gate(
            "distinct_pds",
            m["distinct_pds"],
            gates.min_distinct_pds,
            m["distinct_pds"] >= gates.min_distinct_pds,
            "distinct PDs >= min",
        )
    )
    out.append(
        Gate(
            "watchlist",
            m["flagged_over_capacity"],
            gates.max_watchlist_over_capacity,
            m["flagged_over_capacity"] <= gates.max_watchlist_over_capacity,
            "flagged share / capacity <= max",
        )
    )
    tuned = training.get("tuned_auc")
    if tuned is not None:
        out.append(
            Gate("tuned_auc", tuned, gates.min_tuned_auc, tuned >= gates.min_tuned_auc, "tuned AUC >= min")
        )
    if "oracle_auc" in m:
        limit = m["oracle_auc"] + gates.max_auc_over_oracle
        out.append(Gate("no_leak", m["auc"], limit, bool(m["auc"] <= limit), "auc <= oracle auc + margin"))
    return out


def describe(g: Gate) -> str:
    """A gate in words, for the report, the promotion table and the training log."""
    ok = g.passed
    words = {
        "auc": f"AUC {g.value:.4f}, at least {g.limit:.4f}",
        "ece": f"ECE {g.value:.4f}, at most {g.limit}",
        "score_psi": f"score PSI vs {g.basis or 'the calibration window'} {g.value:.4f}, at most {g.limit}",
        "monotonicity": "every declared risk direction holds"
        if ok
        else f"{g.value:.0f} declared risk directions do not hold",
        "iterations": f"{g.value:.0f} boosting rounds, at least {g.limit:.0f}"
        if ok
        else f"stopped after {g.value:.0f} boosting rounds (at least {g.limit:.0f} expected)",
        "distinct_pds": f"{g.value:.0f} distinct PDs, at least {g.limit:.0f}",
        "watchlist": f"flags {g.value:.2f}x its review capacity, at most {g.limit}x",
        "tuned_auc": f"tuned to a calibration AUC of {g.value:.4f}, at least {g.limit}"
        if ok
        else f"tuned to a calibration AUC of {g.value:.4f}, no better than chance",
        "no_leak": f"AUC {g.value:.4f} at most the oracle's + margin, {g.limit:.4f} (no leak)"
        if ok
        else f"AUC {g.value:.4f} above the oracle's + margin, {g.limit:.4f}: a leak of the label",
    }
    return words.get(g.name, f"{g.name} {g.value:.4f} ({g.rule})")


def decide(
    gates: GateSpec, bundle: ModelBundle, challenger: Evaluation, champion: Evaluation | None
) -> tuple[bool, list[Gate], str]:
    """Apply the gates and say why, naming every failure."""
    out = gates_of(gates, bundle, challenger, champion)
    failed = [g for g in out if not g.passed]
    if not failed:
        who = f"champion v{champion.version}" if champion else "the absolute floors"
        return True, out, f"all gates pass against {who}"
    bad = sorted(f for f, ok in challenger.monotonicity.items() if not ok)
    parts = []
    for g in failed:
        if g.name == "monotonicity":
            parts.append(f"monotonicity fails for {', '.join(bad)}")
        elif g.name == "auc" and champion is not None:
            parts.append(
                f"AUC {g.value:.4f} is {champion.metrics['auc'] - g.value:.4f} below champion "
                f"v{champion.version} ({champion.metrics['auc']:.4f}); at most {gates.max_auc_drop} allowed"
            )
        else:
            parts.append(describe(g))
    return False, out, "refused: " + "; ".join(parts)
