"""The validation summary of a registered model, checked against its own spec's gates (not constants)."""

from __future__ import annotations

from dataclasses import dataclass

from model.bundle import ModelBundle
from training.promote import describe, gate_list


@dataclass(frozen=True)
class Check:
    name: str  # the gate's (training.promote.Gate.name)
    text: str
    passed: bool


def checks(bundle: ModelBundle) -> list[Check]:
    """The gates of the bundle's spec (`training.promote.gate_list`, the promotion gates) on its stored
    out-of-time test metrics and training facts, with the oracle's no-leak bound on a generated book. A
    degenerate model fails whatever its AUC."""
    t = bundle.training
    failures = t.get("monotone_failures")
    if failures is None:  # a bundle trained before the failures were kept: only whether all held
        failures = [] if t.get("monotone", True) else ["(not recorded)"]
    gates = gate_list(bundle.model_spec.gates, bundle.test_metrics, list(failures), t)
    return [Check(g.name, describe(g), g.passed) for g in gates]
