"""The model bundle: what training hands to serving (DESIGN.md §5), as one folder.

booster.txt (LightGBM), bundle.json (features and dtypes, categorical vocabularies, calibrator, grade
cut-offs, tier thresholds, reason texts, training reference distributions, spec, schema version). It is
logged to MLflow as one model; serving loads it with `ModelBundle.load` and refuses unknown schema versions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.catalog import BY_NAME
from features.schema import SCHEMA_VERSION

KNOWN_SCHEMA_VERSIONS = (SCHEMA_VERSION,)
# master scale: grade g covers PDs up to GRADE_BANDS[g-1]; grade 10 is everything above the last band
GRADE_BANDS = (0.0025, 0.005, 0.01, 0.02, 0.035, 0.06, 0.10, 0.18, 0.30)


@dataclass
class Calibrator:
    """Raw LightGBM score (log-odds) to PD: isotonic (piecewise linear interpolation) or Platt."""

    method: str  # "isotonic" or "platt"
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            return np.clip(np.interp(raw, self.x, self.y), 1e-6, 1 - 1e-6)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * raw + self.b)))
        raise ValueError(f"unknown calibration method {self.method!r}")


@dataclass
class ModelBundle:
    booster: lgb.Booster
    features: list[str]
    categories: dict[str, list[str]]
    calibrator: Calibrator
    tier_thresholds: dict[str, float]  # {"red": pd, "amber": pd}
    reference: dict[str, dict]  # feature name or "__score__" -> reference bins (features.stability)
    spec: dict
    test_metrics: dict[str, float] = field(default_factory=dict)
    windows: dict[str, list[str]] = field(default_factory=dict)
    grade_bands: tuple[float, ...] = GRADE_BANDS
    schema_version: str = SCHEMA_VERSION
    name: str = ""
    version: str = ""

    # ---------------------------------------------------------------------------------------- scoring
    def frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The model's input matrix: the bundle's columns, categoricals on the training vocabulary.

        A category never seen in training becomes missing (LightGBM routes it like a missing value).
        """
        missing = [c for c in self.features if c not in features.columns]
        if missing:
            raise ValueError(f"feature rows lack columns {missing}")
        X = features[self.features].copy()
        for c, vocab in self.categories.items():
            X[c] = pd.Categorical(X[c].astype("object"), categories=vocab)
        for c in self.features:
            if c not in self.categories:
                X[c] = pd.to_numeric(X[c], errors="raise").astype(float)
        return X

    def matrix(self, features: pd.DataFrame) -> np.ndarray:
        """The model input as a float matrix (categoricals as codes on the training vocabulary, unseen or
        missing as NaN): the same numbers LightGBM derives from `frame`, without the pandas overhead."""
        missing = [c for c in self.features if c not in features.columns]
        if missing:
            raise ValueError(f"feature rows lack columns {missing}")
        self._check_vocab()
        n = len(features)
        out = np.empty((n, len(self.features)), dtype=np.float64)
        num = [j for j, c in enumerate(self.features) if c not in self.categories]
        if num:
            cols = [self.features[j] for j in num]
            out[:, num] = features[cols].to_numpy(dtype=np.float64, na_value=np.nan)
        maps = self._code_maps()
        for j, c in enumerate(self.features):
            if c in maps:
                m = maps[c]
                out[:, j] = np.fromiter((m.get(v, np.nan) for v in features[c].to_numpy(object)), float, n)
        return out

    def _code_maps(self) -> dict[str, dict[str, float]]:
        if getattr(self, "_maps", None) is None:
            self._maps = {
                c: {v: float(i) for i, v in enumerate(vocab)} for c, vocab in self.categories.items()
            }
        return self._maps

    def _check_vocab(self) -> None:
        """The booster's own categorical lists must be the bundle's vocabularies, in feature order."""
        if getattr(self, "_vocab_ok", False):
            return
        mine = [self.categories[c] for c in self.features if c in self.categories]
        theirs = [list(map(str, v)) for v in (self.booster.pandas_categorical or [])]
        if theirs != mine:
            raise ValueError("the booster's categorical vocabularies differ from the bundle's")
        self._vocab_ok = True

    def raw_score(self, features: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(self.matrix(features), raw_score=True)

    def pd_from_raw(self, raw: np.ndarray) -> np.ndarray:
        return self.calibrator(raw)

    def grade(self, pd_: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.grade_bands), np.asarray(pd_), side="left") + 1

    def tier(self, pd_: np.ndarray) -> np.ndarray:
        pd_ = np.asarray(pd_)
        return np.where(
            pd_ >= self.tier_thresholds["red"],
            "red",
            np.where(pd_ >= self.tier_thresholds["amber"], "amber", "green"),
        )

    def reason_text(self, feature: str, value: object) -> str:
        return BY_NAME[feature].reason_text(value)

    # ------------------------------------------------------------------------------------------- I/O
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "booster.txt"))
        meta = {
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "features": self.features,
            "dtypes": {f: BY_NAME[f].dtype for f in self.features},
            "categories": self.categories,
            "calibrator": asdict(self.calibrator),
            "grade_bands": list(self.grade_bands),
            "tier_thresholds": self.tier_thresholds,
            "reasons": {f: BY_NAME[f].reason for f in self.features},
            "reference": self.reference,
            "spec": self.spec,
            "test_metrics": self.test_metrics,
            "windows": self.windows,
        }
        (folder / "bundle.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=float))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ModelBundle:
        folder = Path(folder)
        meta_path = folder / "bundle.json"
        if not meta_path.exists():
            raise ValueError(f"{str(folder)!r} is not a loan-ews model bundle (no bundle.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("schema_version") not in KNOWN_SCHEMA_VERSIONS:
            raise ValueError(
                f"model bundle schema version {meta.get('schema_version')!r} is not one this code "
                f"knows ({', '.join(KNOWN_SCHEMA_VERSIONS)})"
            )
        unknown = [f for f in meta["features"] if f not in BY_NAME]
        if unknown:
            raise ValueError(f"model bundle uses features this code does not define: {unknown}")
        booster = lgb.Booster(model_file=str(folder / "booster.txt"))
        return cls(
            booster=booster,
            features=meta["features"],
            categories=meta["categories"],
            calibrator=Calibrator(**meta["calibrator"]),
            tier_thresholds=meta["tier_thresholds"],
            reference=meta["reference"],
            spec=meta["spec"],
            test_metrics=meta.get("test_metrics", {}),
            windows=meta.get("windows", {}),
            grade_bands=tuple(meta["grade_bands"]),
            schema_version=meta["schema_version"],
            name=meta.get("name", ""),
            version=meta.get("version", ""),
        )
