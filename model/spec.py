"""Model specs: text files in `models/` that say everything a model needs (label, windows, features, ...).

A new model is a new spec, not new code: the 30+ DPD in 3 months early-deterioration model differs from
the 12-month PD model only in its YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.catalog import BY_NAME, FEATURE_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSpec(_Strict):
    dpd_threshold: int = Field(90, gt=0)
    horizon_months: int = Field(12, gt=0)


class PopulationSpec(_Strict):
    current_only: bool = False


class WindowSpec(_Strict):
    """As-of windows: explicit YYYY-MM ranges, or month counts back from the last labelled month."""

    test_months: int = Field(6, gt=0)
    calibration_months: int = Field(6, gt=0)
    train_months: int = Field(24, gt=0)
    test_end: str | None = None  # default: the last month whose horizon lies inside the book


class LightGBMSpec(_Strict):
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 200
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 5.0
    n_estimators: int = 2000
    early_stopping_rounds: int = 100
    monotone: bool = True  # enforce each feature's declared risk direction (off only for research)


class TierSpec(_Strict):
    red_share: float = Field(0.01, gt=0, lt=1)
    amber_share: float = Field(0.04, gt=0, lt=1)


class GateSpec(_Strict):
    max_auc_drop: float = 0.005
    max_ece: float = 0.01
    max_score_psi: float = 0.25
    min_auc: float = 0.75


class ModelSpec(_Strict):
    name: str
    description: str = ""
    label: LabelSpec = LabelSpec()
    population: PopulationSpec = PopulationSpec()
    windows: WindowSpec = WindowSpec()
    features: Literal["all"] | list[str] = "all"
    lightgbm: LightGBMSpec = LightGBMSpec()
    seed: int = 7
    tiers: TierSpec = TierSpec()
    gates: GateSpec = GateSpec()

    @field_validator("features")
    @classmethod
    def _known_features(cls, v):
        if v == "all":
            return v
        unknown = [f for f in v if f not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown features {unknown}; see features/catalog.py")
        return v

    @property
    def feature_names(self) -> list[str]:
        return list(FEATURE_NAMES) if self.features == "all" else list(self.features)

    def monotone_constraints(self) -> list[int]:
        """LightGBM monotone constraints from each feature's declared risk direction."""
        if not self.lightgbm.monotone:
            return [0] * len(self.feature_names)
        return [BY_NAME[f].direction if BY_NAME[f].dtype == "num" else 0 for f in self.feature_names]


def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model spec {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"model spec {str(path)!r} is not valid YAML: {e}") from e
    return ModelSpec.model_validate(data)


def resolve_windows(
    spec: ModelSpec, book_last_month: pd.Timestamp
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Consecutive train / calibration / test as-of ranges ending at the last fully labelled month."""
    w = spec.windows
    last = pd.Timestamp(book_last_month).to_period("M")
    test_end = pd.Period(w.test_end, "M") if w.test_end else last - spec.label.horizon_months
    test_start = test_end - (w.test_months - 1)
    cal_end = test_start - 1
    cal_start = cal_end - (w.calibration_months - 1)
    train_end = cal_start - 1
    train_start = train_end - (w.train_months - 1)
    ts = lambda p: p.to_timestamp()  # noqa: E731
    return {
        "train": (ts(train_start), ts(train_end)),
        "calibration": (ts(cal_start), ts(cal_end)),
        "test": (ts(test_start), ts(test_end)),
    }
