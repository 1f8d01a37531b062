"""Gated promotion against a real MLflow SQLite store: who becomes champion, who is refused, and why."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from model.spec import GateSpec
from training.fit import train_model
from training.promote import Evaluation, decide
from training.registry import CHALLENGER, CHAMPION, alias_version, history, promote
from training.tracking import log_training

NAME = "loan-ews-pd-12m"


def _ev(version: str, auc: float, ece: float = 0.005, psi: float = 0.05, mono: bool = True) -> Evaluation:
    return Evaluation(version, {"auc": auc, "ece": ece, "score_psi": psi}, {"ltv": mono, "dpd_now": True})


def test_gates_compare_with_the_champion_and_name_every_failure() -> None:
    g = GateSpec()
    ok, _, why = decide(g, _ev("2", 0.896), _ev("1", 0.900))
    assert ok and "champion v1" in why
    ok, gates, why = decide(g, _ev("2", 0.890, mono=False), _ev("1", 0.900))
    assert not ok
    assert "0.0100 below champion v1" in why and "monotonicity fails for ltv" in why
    assert [x.name for x in gates if not x.passed] == ["auc", "monotonicity"]
    ok, _, why = decide(g, _ev("1", 0.70), None)
    assert not ok and "auc 0.7000 breaks auc >= 0.75" in why
    ok, _, why = decide(g, _ev("1", 0.80, ece=0.02, psi=0.3), None)
    assert not ok and "ece 0.0200" in why and "score_psi 0.3000" in why


@pytest.fixture(scope="module")
def store(demo_trained, demo_book_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("promote")
    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    yield root, MlflowClient()
    mlflow.set_tracking_uri(prev)


def _window(panel: pd.DataFrame):
    def window_panel(spec):
        rows = panel[panel["as_of"].between("2024-07-01", "2024-12-01")]
        return rows, ("2024-07", "2024-12")

    return window_panel


def _register(result, spec, book_dir: Path, root: Path) -> str:
    _, version = log_training(result, spec, Path("models/pd_90d_12m.yaml"), book_dir, 0, root / "art")
    assert version is not None
    return version


def test_first_model_becomes_champion_then_worse_and_non_monotone_ones_are_refused(
    store, demo_trained, demo_book_dir, demo_generated
) -> None:
    root, client = store
    spec, panel, result = demo_trained
    last = demo_generated.book.last_month
    v1 = _register(result, spec, demo_book_dir, root)
    d1 = promote(client, NAME, v1, _window(panel), who="alice", artifact_root=root / "art")
    assert d1.promoted and d1.champion_before is None and d1.champion_after == v1
    assert alias_version(client, NAME, CHAMPION) == v1 and alias_version(client, NAME, CHALLENGER) is None

    # a challenger that knows only two weak features: clearly worse than the champion
    weak = spec.model_copy(
        update={
            "features": ["product", "interest_rate"],
            "lightgbm": spec.lightgbm.model_copy(update={"n_estimators": 100}),
        }
    )
    v2 = _register(train_model(weak, panel, last), weak, demo_book_dir, root)
    d2 = promote(client, NAME, v2, _window(panel), who="bob", artifact_root=root / "art")
    assert not d2.promoted and "below champion v" + v1 in d2.reason
    assert alias_version(client, NAME, CHAMPION) == v1 and alias_version(client, NAME, CHALLENGER) == v2

    # a challenger fitted without monotone constraints: deep trees break some declared direction
    free = spec.model_copy(
        update={
            "windows": spec.windows.model_copy(update={"train_months": 12}),
            "lightgbm": spec.lightgbm.model_copy(
                update={"monotone": False, "num_leaves": 31, "min_child_samples": 50, "n_estimators": 200}
            ),
        }
    )
    v3 = _register(train_model(free, panel, last), free, demo_book_dir, root)
    d3 = promote(client, NAME, v3, _window(panel), who="carol", artifact_root=root / "art")
    assert not d3.promoted and "monotonicity fails for" in d3.reason
    assert alias_version(client, NAME, CHAMPION) == v1

    # the audit log has all three decisions in order, with who, versions, metrics and the reason
    h = history(client, NAME)
    assert [r["decision"] for r in h] == ["promoted", "refused", "refused"]
    assert [r["who"] for r in h] == ["alice", "bob", "carol"]
    assert [r["challenger_version"] for r in h] == [v1, v2, v3]
    assert h[1]["champion_before"] == v1 and h[1]["champion_after"] == v1
    assert h[1]["champion_auc"] == pytest.approx(d1.challenger.metrics["auc"])
    assert h[2]["reason"] == d3.reason
    assert client.get_model_version(NAME, v2).tags["loan_ews.promotion"].startswith("refused")
    with pytest.raises(ValueError, match="already the champion"):
        promote(client, NAME, v1, _window(panel), who="alice")
