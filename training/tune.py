"""Optuna search over LightGBM parameters, scored on the calibration window only (never the test window)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import optuna
import pandas as pd

from model.bundle import FeatureEncoder
from model.spec import ModelSpec, Windows
from training import metrics
from training.fit import fit_model, screen_features, split_windows

log = logging.getLogger(__name__)


def tune(
    spec: ModelSpec,
    panel: pd.DataFrame,
    windows: Windows,
    n_trials: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[ModelSpec, list[dict], float]:
    """Search tree shape, learning rate and regularisation by the calibration data's out-of-fold AUC (fitted
    and early-stopped as in training). Returns the spec with the best parameters, every trial's record and the
    best calibration AUC (a value at or below 0.5 means tuning found nothing, and training says so)."""
    if n_trials < 1:
        raise ValueError(f"--tune needs at least 1 trial, got {n_trials}")
    parts = split_windows(panel, spec, windows)
    names, _ = screen_features(parts["train"], spec.feature_names)
    enc = FeatureEncoder.fit(parts["train"], names)
    X_tr, X_cal = enc.frame(parts["train"]), enc.frame(parts["calibration"])
    y_tr, y_cal = parts["train"]["label"].to_numpy(), parts["calibration"]["label"].to_numpy()
    trials: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        params = {
            "num_leaves": trial.suggest_int("num_leaves", 3, 31, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 100, 2000, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.1, log=True),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 0.9),
            "reg_lambda": trial.suggest_float("reg_lambda", 0.5, 50.0, log=True),
        }
        s = spec.model_copy(update={"lightgbm": spec.lightgbm.model_copy(update=params)})
        _, oof, rounds = fit_model(
            s, names, X_tr, y_tr, X_cal, y_cal, parts["train"]["loan_id"], parts["calibration"]["loan_id"]
        )
        value = metrics.auc(y_cal, oof)  # out of fold: loans the scoring booster never trained on
        trials.append({"params": params, "value": value, "iterations": int(round(sum(rounds) / len(rounds)))})
        if progress:
            progress("tuning (trials)", len(trials), n_trials)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.seed))
    study.optimize(objective, n_trials=n_trials)
    best = spec.model_copy(update={"lightgbm": spec.lightgbm.model_copy(update=study.best_params)})
    log.info("tuning: best calibration AUC %.4f with %s", study.best_value, study.best_params)
    if study.best_value <= 0.5:
        log.warning("tuning: the best calibration AUC is %.4f, no better than chance", study.best_value)
    return best, trials, float(study.best_value)
