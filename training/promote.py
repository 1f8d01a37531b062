"""Gated promotion, the pure part: score champion and challenger on the same out-of-time window, apply the
spec's gates, and say why. The MLflow side (aliases, audit log) lives in `training.registry`.
"""

from __future__ import annotations

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

    def to_dict(self) -> dict:
        return asdict(self)


def same_label(a: ModelBundle, b: ModelBundle) -> bool:
    sa, sb = a.model_spec, b.model_spec
    return sa.label == sb.label and sa.population == sb.population


def gates_of(
    gates: GateSpec, bundle: ModelBundle, challenger: Evaluation, champion: Evaluation | None
) -> list[Gate]:
    """Every gate of the spec on the challenger's evaluation (and against the champion's, if any).

    Discrimination: AUC within `max_auc_drop` of the champion, or above the floor for a first champion.
    Calibration: ECE. Stability: score PSI against the calibration window (adjacent in time, so a cycle
    between the training window and now does not read as a broken model). Monotonicity. And the signs of a
    degenerate model: too few boosting rounds, too few distinct PDs, a watchlist far over capacity, tuning
    to a chance-level validation AUC."""
    c = challenger.metrics
    out: list[Gate] = []
    if champion is not None:
        floor = champion.metrics["auc"] - gates.max_auc_drop
        out.append(
            Gate(
                "auc", c["auc"], floor, bool(c["auc"] >= floor), f"auc >= champion auc - {gates.max_auc_drop}"
            )
        )
    else:
        out.append(Gate("auc", c["auc"], gates.min_auc, bool(c["auc"] >= gates.min_auc), "auc >= floor"))
    out.append(Gate("ece", c["ece"], gates.max_ece, bool(c["ece"] <= gates.max_ece), "ece <= max_ece"))
    out.append(
        Gate(
            "score_psi",
            c["score_psi"],
            gates.max_score_psi,
            bool(c["score_psi"] <= gates.max_score_psi),
            "score psi vs the calibration window <= max_score_psi",
        )
    )
    bad = sorted(f for f, ok in challenger.monotonicity.items() if not ok)
    out.append(Gate("monotonicity", float(len(bad)), 0.0, not bad, "every declared direction holds"))
    it = float(bundle.training.get("best_iteration", 0))
    out.append(
        Gate("iterations", it, gates.min_iterations, it >= gates.min_iterations, "boosting rounds >= min")
    )
    out.append(
        Gate(
            "distinct_pds",
            c["distinct_pds"],
            gates.min_distinct_pds,
            c["distinct_pds"] >= gates.min_distinct_pds,
            "distinct PDs >= min",
        )
    )
    out.append(
        Gate(
            "watchlist",
            c["flagged_over_capacity"],
            gates.max_watchlist_over_capacity,
            c["flagged_over_capacity"] <= gates.max_watchlist_over_capacity,
            "flagged share / capacity <= max",
        )
    )
    tuned = bundle.training.get("tuned_auc")
    if tuned is not None:
        out.append(
            Gate("tuned_auc", tuned, gates.min_tuned_auc, tuned >= gates.min_tuned_auc, "tuned AUC >= min")
        )
    return out


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
            op = "<=" if g.name in ("ece", "score_psi", "watchlist") else ">="
            parts.append(f"{g.name} {g.value:.4f} breaks {g.name} {op} {g.limit}")
    return False, out, "refused: " + "; ".join(parts)
