"""MLflow tracking and registry for training runs: everything a validator needs to reproduce a model."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from features.book import book_fingerprint
from model.pyfunc import BUNDLE_ARTIFACT, PYFUNC_ENTRY
from model.registry import ensure_experiment
from model.spec import ModelSpec
from training import plots
from training.card import model_card
from training.fit import TrainResult

log = logging.getLogger(__name__)
LIBRARIES = ("pandas", "numpy", "lightgbm", "scikit-learn", "mlflow", "bentoml", "shap", "pyarrow")


def code_version() -> str:
    """The commit of this code (`-dirty` with uncommitted changes), asked of the checkout this module
    lies in, not of the folder the command runs from; the package version where there is no checkout."""
    here = Path(__file__).resolve().parent
    try:  # this file must be tracked there: a venv inside another project's checkout is not this code
        subprocess.run(
            ["git", "ls-files", "--error-unmatch", Path(__file__).name],
            capture_output=True,
            check=True,
            cwd=here,
        )
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=here
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        try:
            return f"loan-ews {metadata.version('loan-ews')}"
        except metadata.PackageNotFoundError:
            return "unknown"


def label_params(spec: ModelSpec) -> dict[str, object]:
    """What a version predicts, as its training run logs it (and `ews train` compares before it trains)."""
    return {
        "dpd_threshold": spec.label.dpd_threshold,
        "horizon_months": spec.label.horizon_months,
        "probation_months": spec.label.probation_months,
        "current_only": spec.population.current_only,
    }


def log_training(
    result: TrainResult,
    spec: ModelSpec,
    spec_path: Path,
    book_dir: Path,
    panel_rows: int,
    artifact_root: Path | None = None,
    register: bool = True,
    trials: list[dict] | None = None,
) -> tuple[str, str | None]:
    """Log a training run (params, data fingerprint, metrics, tables, plots, model card, model) and
    register the model. Tuning trials, if any, become nested runs of it."""
    exp_id = ensure_experiment(spec.name, artifact_root)
    libs = {lib: metadata.version(lib) for lib in LIBRARIES}
    sha = book_fingerprint(book_dir)
    code = code_version()
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{spec.name}") as run:
        mlflow.set_tags(
            {
                "loan_ews.kind": "train",
                "code_version": code,
                "python": platform.python_version(),
                **{f"lib.{k}": v for k, v in libs.items()},
            }
        )
        w = result.windows
        params = {
            "spec_path": str(spec_path),
            **label_params(spec),
            "seed": spec.seed,
            "n_features": len(result.bundle.features),
            "features_dropped": ",".join(result.dropped) or "none",
            "best_iteration": result.best_iteration,
            "calibration_method": result.bundle.calibrator.method,
            "book_dir": str(book_dir),
            "book_sha256": sha,
            "panel_rows": panel_rows,
            **{f"lgb_{k}": v for k, v in spec.lightgbm.model_dump().items()},
            **{
                f"window_{k}": (
                    f"{v[0]:%Y-%m}..{v[1]:%Y-%m}"
                    if v
                    else f"holdout {spec.windows.holdout:.0%} of training loans"
                )
                for k, v in w.items()
            },
            **{f"rows_{k}": v for k, v in result.counts.items()},
        }
        ev = result.evaluation
        mlflow.log_params(params)
        mlflow.set_tag("loan_ews.degenerate", "; ".join(result.warnings) or "no")
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in ev.metrics.items() if pd.notna(v)})
        mlflow.log_metrics(
            {f"challenger_{k}": float(v) for k, v in result.challenger_metrics.items() if pd.notna(v)}
        )
        mlflow.log_metrics({f"psi_{k}": float(v) for k, v in ev.psi.items() if pd.notna(v)})
        mlflow.log_metric("monotonicity_pass", float(ev.monotone))
        mlflow.log_metric("degenerate_signs", float(len(result.warnings)))
        mlflow.log_artifact(str(spec_path), "spec")
        mlflow.log_dict(spec.model_dump(), "spec/effective_spec.json")
        for i, trial in enumerate(trials or []):
            with mlflow.start_run(experiment_id=exp_id, run_name=f"trial-{i:03d}", nested=True):
                mlflow.set_tag("loan_ews.kind", "tuning_trial")
                mlflow.log_params({f"lgb_{k}": v for k, v in trial["params"].items()})
                mlflow.log_metrics({"calibration_auc": trial["value"], "best_iteration": trial["iterations"]})
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            plots_dir = t / "plots"
            plots_dir.mkdir()
            _plots(result, plots_dir)
            mlflow.log_artifacts(str(plots_dir), "plots")
            (t / "model_card.md").write_text(model_card(result, spec, sha, code))
            ev.deciles.to_csv(t / "deciles.csv", index=False)
            ev.grades.to_csv(t / "calibration_by_grade.csv", index=False)
            ev.fairness.to_csv(t / "fairness.csv", index=False)
            (t / "psi.json").write_text(json.dumps(ev.psi, indent=1, sort_keys=True))
            (t / "monotonicity.json").write_text(json.dumps(ev.monotonicity, indent=1, sort_keys=True))
            (t / "auc_by_segment.json").write_text(json.dumps(ev.by_segment, indent=1, sort_keys=True))
            (t / "features_dropped.json").write_text(json.dumps(result.dropped, indent=1, sort_keys=True))
            (t / "calibration_choice.json").write_text(json.dumps(result.calibration_metrics, indent=1))
            for f in sorted(t.iterdir()):
                if f.is_file():
                    mlflow.log_artifact(str(f), "validation")
            bundle_dir = result.bundle.save(t / BUNDLE_ARTIFACT)
            X = result.example_rows
            raw = result.bundle.raw_score(X)
            signature = infer_signature(
                X, pd.DataFrame({"raw_score": raw, "pd": result.bundle.pd_from_raw(raw)})
            )
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_ENTRY),  # models from code: no pickle
                artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                signature=signature,
                input_example=X,
                pip_requirements=model_requirements(),
                registered_model_name=spec.name if register else None,
            )
        version = str(info.registered_model_version) if register and info.registered_model_version else None
        return run.info.run_id, version


# what loading the bundle imports (model/ and features/); named, so MLflow does not infer them by importing
# the model in a subprocess (seconds per logged model)
MODEL_PACKAGES = (
    "mlflow",
    "lightgbm",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "scipy",
    "numba",
    "pydantic",
    "pyyaml",
)


def model_requirements() -> list[str]:
    """The logged model's pip requirements: each package the bundle needs, pinned to the version here."""
    return [f"{p}=={metadata.version(p)}" for p in MODEL_PACKAGES]


def _plots(result: TrainResult, folder: Path) -> None:
    ts = result.evaluation.scores
    y, p = ts["label"].to_numpy(float), ts["pd"].to_numpy(float)
    oracle = ts["oracle"].to_numpy(float)
    plots.roc_ks(y, p, folder / "roc_ks.png", "out-of-time test", result.challenger_scores, oracle)
    plots.reliability_by_grade(result.evaluation.grades, folder / "reliability_by_grade.png")
    plots.score_distribution(y, p, result.bundle.tier_thresholds, folder / "score_distribution.png")
    if result.shap_sample is not None:
        plots.shap_summary(result.bundle.booster, result.shap_sample, folder / "shap_summary.png")
