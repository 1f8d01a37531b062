"""Gated promotion against a real MLflow SQLite store: who becomes champion, who is refused, and why."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

import training.registry
from model.registry import CHALLENGER, CHAMPION, ModelRef, resolve
from model.spec import GateSpec, resolve_windows
from tests.conftest import new_mlflow_store
from training.evaluate import Evaluation
from training.fit import train_model
from training.promote import decide
from training.registry import history, promote
from training.tracking import log_training

NAME = "loan-ews-pd-12m"


def _ev(
    version: str, auc: float, ece: float = 0.005, psi: float = 0.05, mono: bool = True, **m
) -> Evaluation:
    metrics = {"auc": auc, "ece": ece, "score_psi": psi, "distinct_pds": 5000.0, "flagged_over_capacity": 1.0}
    return Evaluation(version, {**metrics, **m}, {"ltv": mono, "dpd_now": True})


class _Bundle:  # the training facts a gate reads from a bundle
    def __init__(
        self, best_iteration: int = 500, tuned_auc: float | None = None, holdout: bool = False
    ) -> None:
        self.training = {
            "best_iteration": best_iteration,
            "tuned_auc": tuned_auc,
            "calibration_holdout": holdout,
        }


def test_gates_compare_with_the_champion_and_name_every_failure() -> None:
    g = GateSpec()
    ok, _, why = decide(g, _Bundle(), _ev("2", 0.896), _ev("1", 0.900))
    assert ok and "champion v1" in why
    ok, gates, why = decide(g, _Bundle(), _ev("2", 0.890, mono=False), _ev("1", 0.900))
    assert not ok
    assert "0.0100 below champion v1" in why and "monotonicity fails for ltv" in why
    assert [x.name for x in gates if not x.passed] == ["auc", "monotonicity"]
    ok, _, why = decide(g, _Bundle(), _ev("1", 0.70), None)
    assert not ok and "AUC 0.7000, at least 0.7500" in why
    ok, _, why = decide(g, _Bundle(), _ev("1", 0.80, ece=0.02, psi=0.3), None)
    assert (
        not ok and "ECE 0.0200, at most 0.01" in why and "score PSI vs the calibration window 0.3000" in why
    )
    # calibrated on held-out training loans, there is no calibration window to name
    _, _, why = decide(g, _Bundle(holdout=True), _ev("1", 0.80, psi=0.3), None)
    assert "score PSI vs the held-out calibration loans 0.3000" in why and "window" not in why


def test_a_degenerate_model_is_refused_whatever_its_auc() -> None:
    g = GateSpec()
    ok, gates, why = decide(
        g,
        _Bundle(best_iteration=1, tuned_auc=0.46),
        _ev("1", 0.9, distinct_pds=6.0, flagged_over_capacity=20.0),
        None,
    )
    assert not ok
    assert {x.name for x in gates if not x.passed} == {"iterations", "distinct_pds", "watchlist", "tuned_auc"}
    assert "stopped after 1 boosting rounds (at least 10 expected)" in why
    assert "flags 20.00x its review capacity" in why and "no better than chance" in why


def test_the_report_checks_a_bundle_with_the_promotion_gates_and_catches_a_leak() -> None:
    from training.promote import describe, gates_of
    from training.report import checks

    metrics = {"auc": 0.95, "ece": 0.004, "score_psi": 0.1, "distinct_pds": 5000.0}
    ev = _ev("1", **metrics, mono=False, flagged_over_capacity=1.0, oracle_auc=0.93)

    class _Stored:  # what `ews report` reads: the bundle's stored test metrics and training facts
        model_spec = type("S", (), {"gates": GateSpec()})()
        test_metrics = ev.metrics
        training = {"best_iteration": 500, "monotone": False, "monotone_failures": ["ltv"]}

    promo = gates_of(GateSpec(), _Stored(), ev, None)
    report = checks(_Stored())
    assert [c.text for c in report] == [describe(g) for g in promo]  # one set of gates, one wording
    failed = {g.name for g in promo if not g.passed}
    assert failed == {"no_leak", "monotonicity"}  # 0.95 > oracle 0.93 + 0.005: a leak
    assert [c.text for c in report if not c.passed] == [
        "1 declared risk directions do not hold",
        "AUC 0.9500 above the oracle's + margin, 0.9350: a leak of the label",
    ]


@pytest.fixture(scope="module")
def store(demo_trained, demo_book_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("promote")
    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(new_mlflow_store(root))
    yield root, MlflowClient()
    mlflow.set_tracking_uri(prev)


def _window(panel: pd.DataFrame):
    def window_panel(bundle):
        rows = panel[panel["as_of"].between("2024-07-01", "2024-12-01")]
        return rows, ("2024-07", "2024-12")

    return window_panel


def _register(result, spec, book_dir: Path, root: Path) -> str:
    _, version = log_training(result, spec, Path("models/pd_90d_12m.yaml"), book_dir, 0, root / "art")
    assert version is not None
    return version


def test_first_model_becomes_champion_then_worse_and_non_monotone_ones_are_refused(
    store, demo_trained, demo_panel_sample, demo_book_dir, demo_generated, monkeypatch
) -> None:
    root, client = store
    spec, _, result = demo_trained
    panel = demo_panel_sample  # the challengers train and every promotion compares on a quarter of the loans
    book = demo_generated.book

    def win(s):
        return resolve_windows(s, book.performance["month"].min(), book.last_month)

    def alias_version(client, name, alias):
        return resolve(client, ModelRef(name, alias=alias))

    v1 = _register(result, spec, demo_book_dir, root)

    def no_window(bundle):
        raise ValueError("the book has no test window for this model")

    with pytest.raises(ValueError, match="no test window"):  # fails before a decision: no alias moves
        promote(client, NAME, v1, no_window, who="alice", artifact_root=root / "art")
    assert alias_version(client, NAME, CHALLENGER) is None and history(client, NAME) == []

    def audit_store_down(decision, artifact_root=None):
        raise OSError("the audit store is unreachable")

    with monkeypatch.context() as m:  # decided, but its audit record cannot be written: nothing moves
        m.setattr(training.registry, "log_decision", audit_store_down)
        with pytest.raises(OSError, match="audit store"):
            promote(client, NAME, v1, _window(panel), who="alice", artifact_root=root / "art")
    assert alias_version(client, NAME, CHAMPION) is None and alias_version(client, NAME, CHALLENGER) is None
    assert "loan_ews.promotion" not in (client.get_model_version(NAME, v1).tags or {})
    d1 = promote(client, NAME, v1, _window(panel), who="alice", artifact_root=root / "art")
    assert d1.promoted and d1.champion_before is None and d1.champion_after == v1
    assert alias_version(client, NAME, CHAMPION) == v1 and alias_version(client, NAME, CHALLENGER) is None

    # a challenger that knows only two weak features: clearly worse than the champion
    weak = spec.model_copy(
        update={
            "features": ["product", "interest_rate"],
            "lightgbm": spec.lightgbm.model_copy(update={"n_estimators": 100, "folds": 1}),
        }
    )
    v2 = _register(train_model(weak, panel, win(weak)), weak, demo_book_dir, root)
    d2 = promote(client, NAME, v2, _window(panel), who="bob", artifact_root=root / "art")
    assert not d2.promoted and "below champion v" + v1 in d2.reason
    assert alias_version(client, NAME, CHAMPION) == v1 and alias_version(client, NAME, CHALLENGER) == v2

    # a challenger fitted without monotone constraints: deep trees break some declared direction
    free = spec.model_copy(
        update={
            "windows": spec.windows.model_copy(update={"train_months": 12}),
            "lightgbm": spec.lightgbm.model_copy(
                update={
                    "monotone": False,
                    "num_leaves": 31,
                    "min_child_samples": 50,
                    "n_estimators": 200,
                    "folds": 1,
                }
            ),
        }
    )
    v3 = _register(train_model(free, panel, win(free)), free, demo_book_dir, root)
    d3 = promote(client, NAME, v3, _window(panel), who="carol", artifact_root=root / "art")
    assert not d3.promoted and "monotonicity fails for" in d3.reason
    assert alias_version(client, NAME, CHAMPION) == v1

    # the audit log has all three decisions in order, with who, versions, metrics and the reason
    h = history(client, NAME)
    assert [r["decision"] for r in h] == ["promoted", "refused", "refused"]
    assert [r["who"] for r in h] == ["alice", "bob", "carol"]
    assert [r["challenger_version"] for r in h] == [v1, v2, v3]
    assert h[1]["champion_before"] == v1 and h[1]["champion_after"] == v1
    assert h[1]["champion_auc"] == pytest.approx(d1.challenger["auc"])
    assert h[2]["reason"] == d3.reason
    assert client.get_model_version(NAME, v2).tags["loan_ews.promotion"].startswith("refused")
    with pytest.raises(ValueError, match="already the champion"):
        promote(client, NAME, v1, _window(panel), who="alice")
