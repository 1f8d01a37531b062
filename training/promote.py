"""Gated promotion, the pure part: score champion and challenger on the same out-of-time window, apply the
spec's gates, and say why. The MLflow side (aliases, audit log) lives in `training.registry`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from features.stability import psi
from model.bundle import ModelBundle
from model.spec import GateSpec, ModelSpec
from training import metrics
from training.fit import check_monotonicity, population


@dataclass
class Evaluation:
    """One model's measures on the promotion window."""

    version: str
    metrics: dict[str, float]
    monotonicity: dict[str, bool]

    @property
    def monotone(self) -> bool:
        return all(self.monotonicity.values())


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
    challenger: Evaluation
    champion: Evaluation | None = None
    who: str = ""
    when: str = ""
    book_sha256: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def same_label(a: ModelBundle, b: ModelBundle) -> bool:
    sa, sb = ModelSpec.model_validate(a.spec), ModelSpec.model_validate(b.spec)
    return sa.label == sb.label and sa.population == sb.population


def evaluate_bundle(bundle: ModelBundle, version: str, snapshots: pd.DataFrame, seed: int = 7) -> Evaluation:
    """AUC, ECE and the rest, score PSI against the bundle's own training reference, and the monotonicity
    check, on labelled snapshots of the promotion window (the panel rows of the bundle's population)."""
    spec = ModelSpec.model_validate(bundle.spec)
    pop = population(snapshots, spec).reset_index(drop=True)
    if len(pop) == 0 or pop["label"].nunique() < 2:
        raise ValueError("the promotion window has no labelled defaults and non-defaults")
    p = bundle.pd_from_raw(bundle.raw_score(pop))
    m = metrics.summary(pop["label"].to_numpy(), p)
    m["score_psi"] = psi(bundle.reference["__score__"], p)
    mono = check_monotonicity(bundle, pop.sample(min(400, len(pop)), random_state=seed))
    return Evaluation(version=version, metrics={k: float(v) for k, v in m.items()}, monotonicity=mono)


def decide(
    gates: GateSpec, challenger: Evaluation, champion: Evaluation | None
) -> tuple[bool, list[Gate], str]:
    """Apply the gates. With a champion: AUC may trail it by at most `max_auc_drop`; without one the
    challenger must clear the absolute AUC floor. Always: ECE, score PSI and monotonicity within bounds."""
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
            "score psi <= max_score_psi",
        )
    )
    bad = sorted(f for f, ok in challenger.monotonicity.items() if not ok)
    out.append(Gate("monotonicity", float(len(bad)), 0.0, not bad, "every declared direction holds"))
    failed = [g for g in out if not g.passed]
    if not failed:
        who = f"champion v{champion.version}" if champion else "the absolute floors"
        return True, out, f"all gates pass against {who}"
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
            op = ">=" if g.name == "auc" else "<="
            parts.append(f"{g.name} {g.value:.4f} breaks {g.name} {op} {g.limit}")
    return False, out, "refused: " + "; ".join(parts)
