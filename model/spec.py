"""Model specs: text files in `models/` that say everything a model needs (label, windows, features, ...).

A new model is a new spec, not new code: the 30+ DPD in 3 months early-deterioration model and the 30+
DPD in 1 month card model differ from the 12-month PD model only in their YAML files.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.catalog import BY_NAME, FEATURE_NAMES, HISTORY_MONTHS
from features.labels import LabelRule
from features.months import month_number, month_range, parse_month
from model.ref import NAME

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSpec(_Strict):
    dpd_threshold: int = Field(90, gt=0)
    horizon_months: int = Field(12, gt=0)
    probation_months: int = Field(
        3,
        ge=1,
        le=HISTORY_MONTHS,
        description="months below the threshold before a cured loan is scored again",
    )

    @property
    def rule(self) -> LabelRule:
        return LabelRule(self.dpd_threshold, self.probation_months)


class PopulationSpec(_Strict):
    current_only: bool = False


def _month_text(v: str) -> str:
    """A spec's month: exactly YYYY-MM, parsed as on the command line (`features.months.parse_month`)."""
    return f"{parse_month(v):%Y-%m}"


class WindowSpec(_Strict):
    """As-of windows: month counts back from the test window's end, or explicit YYYY-MM ranges.

    The test window ends at `test_end` (default: the last month whose horizon lies inside the book).
    Early stopping and calibration use the calibration window: with `holdout_share` set, only a held-out
    share of the loans (grouped by loan, seeded) in it, and the other loans train through it too, so the
    model learns from the months nearest the test window. `calibration_months: 0` holds loans out over the
    whole training window instead, for books with no room for a window of its own.
    """

    test_months: int = Field(6, gt=0)
    calibration_months: int = Field(6, ge=0)
    train_months: int = Field(24, gt=0)
    test_end: str | None = None
    train: tuple[str, str] | None = None  # explicit ranges override the counts
    calibration: tuple[str, str] | None = None
    test: tuple[str, str] | None = None
    holdout_share: float | None = Field(None, gt=0, lt=1)

    @field_validator("test_end")
    @classmethod
    def _month(cls, v):
        return None if v is None else _month_text(v)

    @field_validator("train", "calibration", "test")
    @classmethod
    def _range(cls, v):
        if v is None:
            return v
        a, b = _month_text(v[0]), _month_text(v[1])
        if b < a:
            raise ValueError(f"range {a}..{b} ends before it starts")
        return (a, b)

    @property
    def holdout(self) -> float | None:
        """The share of loans held out for early stopping and calibration (None: the whole window)."""
        if self.calibration is None and self.calibration_months == 0:
            return self.holdout_share or 0.25
        return self.holdout_share


class LightGBMSpec(_Strict):
    """LightGBM's parameters, within the ranges LightGBM accepts (checked here, before any work)."""

    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(15, ge=2, le=131_072)
    min_child_samples: int = Field(200, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    subsample_freq: int = Field(1, ge=0)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(5.0, ge=0)
    n_estimators: int = Field(2000, ge=1)
    early_stopping_rounds: int = Field(100, ge=1)
    # AUC is blind to a level shift (a single booster stopped on a later window); log loss is smooth where
    # a cross-fitted member stops on a fold of few defaults (the default spec uses it)
    early_stopping_metric: Literal["auc", "binary_logloss"] = "auc"
    # cross-fitting (training.ensemble): K boosters, each early-stopped on loans it never trained on,
    # merged into one; 1 fits a single booster stopped on the calibration data
    folds: int = Field(3, ge=1, le=10)
    monotone: bool = True  # enforce each feature's declared risk direction (off only for research)


# a flagged loan is on the early-warning list (not in arrears at t) or the in-arrears list
LISTS = ("early_warning", "in_arrears")


class TierSpec(_Strict):
    """Review capacity: red is the riskiest `red_share`, amber the next `amber_share`, of each list
    (early_warning: loans not in arrears at t; in_arrears: the rest), set on the calibration window."""

    red_share: float = Field(0.01, gt=0, lt=1)
    amber_share: float = Field(0.04, gt=0, lt=1)

    @model_validator(mode="after")
    def _within_the_book(self) -> TierSpec:
        if self.red_share + self.amber_share >= 1:
            raise ValueError(
                f"red_share + amber_share is {self.red_share + self.amber_share:g}: the watchlist must be "
                "less than the whole book"
            )
        return self


class GradeSpec(_Strict):
    """The master scale: 10 grades by fixed PD bands (the upper PD of grades 1 to 9). `auto` designs the
    scale once, at training, from the calibration window's PDs (a geometric scale from their 1st to their
    99th percentile, edges rounded to two significant digits), so that the book populates every grade;
    the bands are then fixed in the model bundle for the model's life. A list fixes them by hand."""

    bands: Literal["auto"] | list[float] = "auto"

    @field_validator("bands")
    @classmethod
    def _nine_increasing(cls, v):
        if v == "auto":
            return v
        if len(v) != 9 or any(not 0 < a < b < 1 for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("grade bands must be 9 strictly increasing PDs between 0 and 1")
        return v


class CalibrationSpec(_Strict):
    method: Literal["auto", "isotonic", "platt"] = "auto"  # auto: the lower out-of-fold Brier score
    pd_floor: float = Field(0.0003, ge=0, lt=0.05)


class GateSpec(_Strict):
    max_auc_drop: float = Field(0.005, ge=0, le=1)
    max_ece: float = Field(0.01, ge=0, le=1)
    max_score_psi: float = Field(0.25, ge=0)
    min_auc: float = Field(0.75, ge=0, le=1)
    # a degenerate model fails whatever its AUC
    min_iterations: int = Field(10, ge=1)
    min_distinct_pds: int = Field(50, ge=1)
    max_watchlist_over_capacity: float = Field(
        1.5, ge=1
    )  # flagged share on the calibration window / capacity
    min_tuned_auc: float = Field(0.5, ge=0, le=1)
    # on a generated book: an AUC this far above the oracle's (the true PD's) on the same rows is a leak
    max_auc_over_oracle: float = Field(0.005, ge=0)


class ModelSpec(_Strict):
    # the registered model's name: NAME@alias and NAME:version must be able to name it
    name: str = Field(pattern=f"^{NAME}$", max_length=100)
    description: str = ""
    label: LabelSpec = LabelSpec()
    population: PopulationSpec = PopulationSpec()
    windows: WindowSpec = WindowSpec()
    features: Literal["all"] | list[str] = "all"
    exclude_features: list[str] = []
    protected: list[str] = ["age"]  # never a reason code
    exclude_protected: bool = False  # leave the protected attributes out of the model altogether
    lightgbm: LightGBMSpec = LightGBMSpec()
    seed: int = 7
    calibration: CalibrationSpec = CalibrationSpec()
    grades: GradeSpec = GradeSpec()
    tiers: TierSpec = TierSpec()
    gates: GateSpec = GateSpec()

    @field_validator("features")
    @classmethod
    def _known_features(cls, v):
        if v == "all":
            return v
        if not v:
            raise ValueError("the feature list is empty: give features, or `all`")
        return _known(v)

    @field_validator("exclude_features", "protected")
    @classmethod
    def _known_list(cls, v):
        return _known(v)

    @property
    def feature_names(self) -> list[str]:
        names = list(FEATURE_NAMES) if self.features == "all" else list(self.features)
        drop = set(self.exclude_features) | (set(self.protected) if self.exclude_protected else set())
        return [f for f in names if f not in drop]

    def monotone_constraints(self, names: list[str] | None = None) -> list[int]:
        """LightGBM monotone constraints from each feature's declared risk direction."""
        names = names or self.feature_names
        if not self.lightgbm.monotone:
            return [0] * len(names)
        return [BY_NAME[f].direction if BY_NAME[f].dtype == "num" else 0 for f in names]


def _known(v: list[str]) -> list[str]:
    unknown = [f for f in v if f not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown features {unknown}; see features/catalog.py")
    repeated = sorted({f for f in v if v.count(f) > 1})
    if repeated:
        raise ValueError(f"features listed more than once: {repeated}")
    return v


def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model spec {str(path)!r} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ValueError(f"model spec {str(path)!r} is not valid YAML: {' '.join(str(e).split())}") from e
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"model spec {str(path)!r}: {spec_problems(e)}") from e
    except ValueError as e:
        raise ValueError(f"model spec {str(path)!r}: {e}") from e


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last one silently:
    `seed: 7` then `seed: 8` would train with 8)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool) or key is None:
                continue  # an odd key: the spec's own validation names it
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(problem=f"key {key!r} is given twice (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def spec_problems(e: ValidationError) -> str:
    """Pydantic's errors as one line, `where: what` for each, without its type codes and links."""
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"]) or "the spec"
        kind, value = err["type"], err.get("input")
        if kind == "extra_forbidden":
            what = "unknown key"
        elif isinstance(value, dt.date) and not isinstance(value, str):
            what = f"{value} is a date; give a month as 'YYYY-MM' in quotes"
        else:
            what = err["msg"].removeprefix("Value error, ")
            if kind not in ("value_error", "missing") and not isinstance(value, dict | list):
                what += f" (got {value!r})"
        parts.append(f"{where}: {what}")
    return "; ".join(parts)


Windows = dict[str, tuple[pd.Timestamp, pd.Timestamp] | None]


def resolve_test_window(
    spec: ModelSpec, first_month: pd.Timestamp, last_month: pd.Timestamp
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The spec's out-of-time test window in a book observed first_month..last_month, alone: what
    promotion scores the challenger and the champion on. A newer extract that no longer holds the
    training months can still promote; a ValueError names the test window and why when it cannot."""
    first, test, span = _test_in_book(spec, first_month, last_month)
    if test[0] < first:
        raise ValueError(f"the test window {test[0]}..{test[1]} starts before the book: {span}")
    return test[0].to_timestamp(), test[1].to_timestamp()


def short_history_note(first_month: pd.Timestamp, test: tuple[pd.Timestamp, pd.Timestamp]) -> str | None:
    """What promotion says when the book holds fewer months before the test window than the features
    look back (a short extract): both versions are scored on the same shortened histories, which moves
    the 12- and 24-month features off what the versions were trained on. None when the history is whole."""
    before = month_number(test[0]) - month_number(first_month)
    if before >= HISTORY_MONTHS:
        return None
    return (
        f"note: the book holds {before} month{'s' * (before != 1)} before the test window "
        f"{test[0]:%Y-%m}..{test[1]:%Y-%m}: features over longer windows (up to {HISTORY_MONTHS} months) "
        "see only those, for the challenger and the champion alike"
    )


def test_months_of_book(spec: ModelSpec, end_month: str, n_months: int) -> list[pd.Timestamp]:
    """The as-of months of the spec's test window in a book observed over `n_months` months to
    `end_month` ("YYYY-MM"): what a generated book's point-in-time oracle is asked for, before the book
    exists (`ews book generate --pit-spec`, the quality benchmark, the test suite's demo book)."""
    last = pd.Timestamp(end_month + "-01")
    return month_range(*resolve_windows(spec, last - pd.DateOffset(months=n_months - 1), last)["test"])


def _test_in_book(spec: ModelSpec, first_month: pd.Timestamp, last_month: pd.Timestamp):
    """The book's first month, the test window (months) and the book's span in words; a ValueError when
    the test window ends after the last month with a whole label window."""
    h = spec.label.horizon_months
    first, last = pd.Timestamp(first_month).to_period("M"), pd.Timestamp(last_month).to_period("M")
    labelled = last - h  # the last as-of month whose whole horizon lies inside the book
    test = _test_periods(spec, labelled)
    if labelled < first:  # "complete up to" a month before the book would say nothing a user can act on
        n = (last - first).n + 1
        raise ValueError(
            f"the book has months {first}..{last} ({n} months): a {h}-month label needs a book of "
            f"{h + 1} months or more (no as-of month has its whole label window inside the book)"
        )
    span = f"the book has months {first}..{last} and a {h}-month label is complete up to {labelled}"
    if test[1] > labelled:
        raise ValueError(f"the test window {test[0]}..{test[1]} ends after {labelled}: {span}")
    return first, test, span


def _test_periods(spec: ModelSpec, labelled: pd.Period) -> tuple[pd.Period, pd.Period]:
    """The test window as months: the spec's own, else its last `test_months` up to `test_end` or the
    last labelled month."""
    w = spec.windows
    if w.test:
        return pd.Period(w.test[0], "M"), pd.Period(w.test[1], "M")
    end = pd.Period(w.test_end, "M") if w.test_end else labelled
    return end - (w.test_months - 1), end


def resolve_windows(spec: ModelSpec, first_month: pd.Timestamp, last_month: pd.Timestamp) -> Windows:
    """Consecutive train / calibration / test as-of ranges in a book observed first_month..last_month.

    The calibration entry is None when the spec calibrates on held-out training loans. The train window
    is clipped to the book's first month (with a log line); any window the book cannot fill (no month
    with a complete label window, overlapping or out of order) is a ValueError naming it and why, raised
    before any work."""
    w = spec.windows
    first, test, span = _test_in_book(spec, first_month, last_month)
    P = lambda s: pd.Period(s, "M")  # noqa: E731
    if w.calibration:
        cal = (P(w.calibration[0]), P(w.calibration[1]))
    elif w.calibration_months:
        cal = (test[0] - w.calibration_months, test[0] - 1)
    else:
        cal = None
    before = cal[0] if cal else test[0]
    train = (P(w.train[0]), P(w.train[1])) if w.train else (before - w.train_months, before - 1)
    order = [("train", train), ("calibration", cal), ("test", test)]
    present = [(n, r) for n, r in order if r is not None]
    for (n1, r1), (n2, r2) in zip(present, present[1:], strict=False):
        if r1[1] >= r2[0]:
            raise ValueError(
                f"the {n1} window {r1[0]}..{r1[1]} overlaps or follows the {n2} window {r2[0]}..{r2[1]}"
            )
    for name, r in present:
        if r[1] < first:
            raise ValueError(f"the {name} window {r[0]}..{r[1]} lies before the book: {span}")
    if train[0] < first:
        log.info(
            "train window %s..%s starts before the book; using %s..%s", train[0], train[1], first, train[1]
        )
        train = (first, train[1])
    for name, r in (("calibration", cal), ("test", test)):
        if r is not None and r[0] < first:
            raise ValueError(f"the {name} window {r[0]}..{r[1]} starts before the book: {span}")
    ts = lambda p: p.to_timestamp()  # noqa: E731
    return {
        "train": (ts(train[0]), ts(train[1])),
        "calibration": (ts(cal[0]), ts(cal[1])) if cal else None,
        "test": (ts(test[0]), ts(test[1])),
    }
