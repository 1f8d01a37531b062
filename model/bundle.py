"""The model bundle: what training hands to serving (DESIGN.md §5), as one folder.

booster.txt (LightGBM) and bundle.json (features, dtypes and categorical vocabularies, calibrator, grade
cut-offs, tier thresholds, the catalog entries that word the reasons, training reference distributions,
spec, schema version, the booster's SHA-256), reference_rows.npy (a sample of training input rows, to
verify the SHAP tables on) and shap_tables.npz (the booster's SHAP tables, compiled and verified when the
bundle is saved, so a service or batch loads them instead of compiling; still checked against
pred_contrib on the reference rows before first use). It is built once from fitted parts, logged to
MLflow as one model, and loaded whole: a score is explained with the texts of the model that made it,
not the current code's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.catalog import BY_NAME, Feature
from features.schema import SCHEMA_VERSION
from model.shap_tables import ShapTables, compile_tables, load_tables, save_tables
from model.spec import LISTS, ModelSpec

log = logging.getLogger(__name__)

KNOWN_SCHEMA_VERSIONS = (SCHEMA_VERSION,)
# master scale: grade g covers PDs up to grade_bands[g-1]; grade 10 is everything above the last band. A
# model's bands are set at training (`training.fit.master_scale`, from its calibration PDs by default);
# this doubling scale is the fallback for a model whose PDs cannot fill nine bands, and older bundles'.
GRADE_BANDS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256)
REFERENCE_ROWS_FILE = "reference_rows.npy"
SHAP_TABLES_FILE = "shap_tables.npz"  # the booster's SHAP tables, compiled when the bundle was saved
_SHAP_TABLES_LOCK = threading.Lock()  # concurrent first calls compile a bundle's tables once


@dataclass
class Calibrator:
    """Raw LightGBM score (log-odds) to PD, never below the spec's PD floor.

    `isotonic`: a monotone piecewise-linear map through the centroids of the isotonic fit's blocks (smooth,
    strictly increasing between the end blocks, so nearby scores get nearby PDs); `platt`: a logistic map."""

    method: str  # "isotonic" or "platt"
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0
    floor: float = 0.0

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            p = np.interp(raw, self.x, self.y)
        elif self.method == "platt":
            p = 1.0 / (1.0 + np.exp(-(self.a * raw + self.b)))
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return np.clip(p, max(self.floor, 1e-9), 1 - 1e-6)


@dataclass(frozen=True)
class FeatureEncoder:
    """Feature rows to the model's input: the model's columns, categoricals on the training vocabulary.

    A category never seen in training becomes missing (LightGBM routes it like a missing value)."""

    features: tuple[str, ...]
    categories: dict[str, list[str]]

    @classmethod
    def fit(cls, rows: pd.DataFrame, names: list[str]) -> FeatureEncoder:
        cats = {c: sorted(rows[c].dropna().astype(str).unique()) for c in names if BY_NAME[c].dtype == "cat"}
        return cls(tuple(names), cats)

    def _check_columns(self, rows: pd.DataFrame | Mapping[str, np.ndarray]) -> None:
        missing = [
            c for c in self.features if c not in (rows.columns if isinstance(rows, pd.DataFrame) else rows)
        ]
        if missing:
            raise ValueError(f"feature rows lack columns {missing}")

    def frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        """A pandas frame LightGBM reads with its categorical columns (training, plots)."""
        self._check_columns(rows)
        X = rows[list(self.features)].copy()
        for c, vocab in self.categories.items():
            X[c] = pd.Categorical(X[c].astype("object"), categories=vocab)
        for c in self.features:
            if c not in self.categories:
                X[c] = pd.to_numeric(X[c], errors="raise").astype(float)
        return X

    def matrix(self, rows: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        """The same input as a float matrix (categoricals as codes on the training vocabulary, unseen or
        missing as NaN): the numbers LightGBM derives from `frame`, without the pandas overhead. `rows` is
        a feature frame or a mapping of feature name to array (the service's one-loan path)."""
        self._check_columns(rows)
        frame = isinstance(rows, pd.DataFrame)
        n = len(rows) if frame else len(rows[self.features[0]])
        out = np.empty((n, len(self.features)), dtype=np.float64)
        num = [j for j, c in enumerate(self.features) if c not in self.categories]
        if num and frame:
            cols = [self.features[j] for j in num]
            out[:, num] = rows[cols].to_numpy(dtype=np.float64, na_value=np.nan)
        elif num:
            for j in num:
                out[:, j] = rows[self.features[j]]
        for j, c in enumerate(self.features):
            if c in self.categories:
                m = self._code_map(c)
                values = rows[c].to_numpy(object) if frame else np.asarray(rows[c], dtype=object)
                out[:, j] = np.fromiter((m.get(v, np.nan) for v in values), float, n)
        return out

    def _code_map(self, c: str) -> dict[str, float]:
        maps = self.__dict__.setdefault("_maps", {})
        if c not in maps:
            maps[c] = {v: float(i) for i, v in enumerate(self.categories[c])}
        return maps[c]


TIE_RTOL = 1e-9  # a PD this close (relative) to a threshold is at it


def capacity_cut(
    pd_: np.ndarray, red_share: float, amber_share: float, at_least_one: bool = False
) -> dict[str, float]:
    """The PD thresholds that put the riskiest `red_share` of these loans in red and the next
    `amber_share` in amber: the PD of the last loan that fits each tier (so ties at it all go up). Where
    the loans are too few for one loan of a tier (35 loans hold no 1% red) the threshold is infinite,
    or, `at_least_one`, the top loan's PD (a model's stored thresholds must stay finite: they are JSON
    and tier loans the window never saw). One rule, used when training sets the bundle's thresholds and
    when the batch re-tiers a book to capacity."""
    order = np.sort(np.asarray(pd_, dtype=float))[::-1]
    least = 1 if at_least_one and len(order) else 0
    n_red = max(int(round(red_share * len(order))), least)
    n_flag = max(int(round((red_share + amber_share) * len(order))), n_red)
    return {
        "red": float(order[n_red - 1]) if n_red else float("inf"),
        "amber": float(order[n_flag - 1]) if n_flag else float("inf"),
    }


def tiers_at(pd_: np.ndarray, lists: np.ndarray, thresholds: dict[str, dict[str, float]]) -> np.ndarray:
    """red / amber / green against the thresholds of each score's list. A threshold is a PD of the
    calibration window, where many loans can share the top PD (a coarse card model): the same loan's PD
    computed again (summed in another order) can differ in its last bits, so a PD within `TIE_RTOL` of a
    threshold counts as at it, or the list's top loans could never be red."""
    pd_, lists = np.asarray(pd_), np.asarray(lists)
    out = np.full(len(pd_), "green", dtype=object)
    for name, t in thresholds.items():
        m = lists == name
        red, amber = t["red"] * (1 - TIE_RTOL), t["amber"] * (1 - TIE_RTOL)
        out[m] = np.where(pd_[m] >= red, "red", np.where(pd_[m] >= amber, "amber", "green"))
    return out.astype(str)


@dataclass
class ModelBundle:
    booster: lgb.Booster
    encoder: FeatureEncoder
    calibrator: Calibrator
    tier_thresholds: dict[str, dict[str, float]]  # list -> {"red": pd, "amber": pd}
    reference: dict[str, dict]  # feature name or "__score__" -> reference bins (features.stability)
    spec: dict
    catalog: dict[str, Feature] = field(default_factory=dict)  # the texts that word each feature's reason
    test_metrics: dict[str, float] = field(default_factory=dict)
    windows: dict[str, list[str]] = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # best iteration, tuned AUC, features left out and why
    grade_bands: tuple[float, ...] = GRADE_BANDS
    schema_version: str = SCHEMA_VERSION
    name: str = ""
    version: str = ""
    # a sample of training input rows (the model matrix) that the SHAP tables are verified on
    reference_rows: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        mine = [self.encoder.categories[c] for c in self.features if c in self.encoder.categories]
        theirs = [list(map(str, v)) for v in (self.booster.pandas_categorical or [])]
        if theirs != mine:
            raise ValueError("the booster's categorical vocabularies differ from the bundle's")
        if not self.catalog:
            self.catalog = {f: BY_NAME[f] for f in self.features}

    @property
    def model_spec(self) -> ModelSpec:
        """The spec the model was trained from, typed (label, population, tiers, gates)."""
        if "_spec" not in self.__dict__:
            self.__dict__["_spec"] = ModelSpec.model_validate(self.spec)
        return self.__dict__["_spec"]

    @property
    def features(self) -> list[str]:
        return list(self.encoder.features)

    @property
    def categories(self) -> dict[str, list[str]]:
        return self.encoder.categories

    # ---------------------------------------------------------------------------------------- scoring
    def frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        return self.encoder.frame(rows)

    def matrix(self, rows: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        return self.encoder.matrix(rows)

    def raw_score(self, rows: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(self.matrix(rows), raw_score=True)

    def pd_from_raw(self, raw: np.ndarray) -> np.ndarray:
        return self.calibrator(raw)

    def grade(self, pd_: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.grade_bands), np.asarray(pd_), side="left") + 1

    @staticmethod
    def list_of(dpd_now: np.ndarray) -> np.ndarray:
        """The list a score belongs to: in_arrears when any days past due at t, else early_warning."""
        return np.where(np.asarray(dpd_now, dtype=float) > 0, LISTS[1], LISTS[0])

    def tier(self, pd_: np.ndarray, lists: np.ndarray) -> np.ndarray:
        """red / amber / green against the thresholds of each score's list."""
        return tiers_at(pd_, lists, self.tier_thresholds)

    def reason_text(self, feature: str, value: object) -> str:
        return self.catalog[feature].reason_text(value)

    # ------------------------------------------------------------------------------ SHAP contributions
    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP of the model matrix X in `pred_contrib`'s layout (n x (features + 1), log-odds,
        bias last): from the SHAP tables when the model has them, else from LightGBM's pred_contrib."""
        tables = self.shap_tables()
        if tables is None:
            return self.booster.predict(X, pred_contrib=True)
        return tables.contributions(X)

    def shap_tables(self) -> ShapTables | None:
        """The booster's SHAP tables, verified on first use, then kept (None: the model is too big for
        tables, contributions come from pred_contrib). Lazy, because most users of a bundle (promotion,
        reports, the pyfunc face) never explain a score; a service calls it at start-up.

        Tables saved with the bundle (read at load: a few MB at most) are verified against pred_contrib
        on the bundle's reference rows; tables compiled here (an older bundle, or saved tables that fail
        that check, which are logged and compiled afresh) on the reference rows plus rows on the
        booster's own split thresholds (the only rows an older bundle has). Compiled tables that differ
        by over 1e-9 refuse the bundle with a ValueError, never a silent fallback to pred_contrib: it
        would mean the tables misread this model."""
        if "_shap_tables" not in self.__dict__:
            with _SHAP_TABLES_LOCK:
                if "_shap_tables" not in self.__dict__:
                    self.__dict__["_shap_tables"] = self._verified_shap_tables()
        return self.__dict__["_shap_tables"]

    def _verified_shap_tables(self) -> ShapTables | None:
        stored = self.__dict__.pop("_stored_shap_tables", None)
        have_rows = self.reference_rows is not None and len(self.reference_rows)
        if stored is not None and have_rows:
            try:
                diff = stored.verify(self.booster, self.reference_rows)
            except ValueError as e:
                log.warning("the saved SHAP tables fail their check (%s): compiling them afresh", e)
            else:
                n = len(self.reference_rows)
                log.info("SHAP tables verified on %d rows (max difference %.1e)", n, diff)
                return stored
        tables = compile_tables(self.booster)
        if tables is None:
            return None
        rows = [tables.edge_rows()] + ([self.reference_rows] if have_rows else [])
        try:
            diff = tables.verify(self.booster, np.vstack(rows))
        except ValueError as e:
            raise ValueError(f"model bundle {self.name!r} {self.version!r} refused: {e}") from e
        log.info("SHAP tables verified on %d rows (max difference %.1e)", sum(map(len, rows)), diff)
        return tables

    # ------------------------------------------------------------------------------------------- I/O
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        booster_path = folder / "booster.txt"
        self.booster.save_model(str(booster_path))
        meta = {
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "features": self.features,
            "categories": self.categories,
            "catalog": {f: asdict(self.catalog[f]) for f in self.features},
            "calibrator": asdict(self.calibrator),
            "grade_bands": list(self.grade_bands),
            "tier_thresholds": self.tier_thresholds,
            "reference": self.reference,
            "spec": self.spec,
            "test_metrics": self.test_metrics,
            "windows": self.windows,
            "training": self.training,
            "booster_sha256": _sha256(booster_path),
        }
        (folder / "bundle.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=float))
        (folder / REFERENCE_ROWS_FILE).unlink(missing_ok=True)
        if self.reference_rows is not None:
            np.save(folder / REFERENCE_ROWS_FILE, np.asarray(self.reference_rows, dtype=np.float64))
        (folder / SHAP_TABLES_FILE).unlink(missing_ok=True)
        tables = self.shap_tables()  # compiled and verified now, so loading the bundle need not compile
        if tables is not None:
            save_tables(tables, folder / SHAP_TABLES_FILE, meta["booster_sha256"])
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ModelBundle:
        """Load a saved bundle; ValueError (never a crash) for a folder that is not a whole, known bundle."""
        folder = Path(folder)
        meta_path = folder / "bundle.json"
        if not meta_path.exists():
            raise ValueError(f"{str(folder)!r} is not a loan-ews model bundle (no bundle.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"model bundle {str(folder)!r} has an unreadable bundle.json: {e}") from e
        if meta.get("schema_version") not in KNOWN_SCHEMA_VERSIONS:
            raise ValueError(
                f"model bundle schema version {meta.get('schema_version')!r} is not one this code "
                f"knows ({', '.join(KNOWN_SCHEMA_VERSIONS)})"
            )
        booster_path = folder / "booster.txt"
        if not booster_path.exists():
            raise ValueError(f"model bundle {str(folder)!r} has no booster.txt")
        # a truncated or altered booster file can crash LightGBM's parser: check it before parsing
        if meta.get("booster_sha256") and _sha256(booster_path) != meta["booster_sha256"]:
            raise ValueError(f"model bundle {str(folder)!r}: booster.txt does not match its checksum")
        try:
            catalog = {f: _feature(d) for f, d in meta["catalog"].items()}
            booster = lgb.Booster(model_file=str(booster_path))
            bundle = cls(
                booster=booster,
                encoder=FeatureEncoder(tuple(meta["features"]), meta["categories"]),
                calibrator=Calibrator(**meta["calibrator"]),
                tier_thresholds=meta["tier_thresholds"],
                reference=meta["reference"],
                spec=meta["spec"],
                catalog=catalog,
                test_metrics=meta.get("test_metrics", {}),
                windows=meta.get("windows", {}),
                training=meta.get("training", {}),
                grade_bands=tuple(meta["grade_bands"]),
                schema_version=meta["schema_version"],
                name=meta.get("name", ""),
                version=meta.get("version", ""),
                reference_rows=_reference_rows(folder, len(meta["features"])),
            )
        except (KeyError, TypeError, lgb.basic.LightGBMError) as e:
            raise ValueError(f"model bundle {str(folder)!r} is incomplete or corrupt: {e}") from e
        tables_path = folder / SHAP_TABLES_FILE
        if tables_path.exists():  # else (an older bundle) the tables are compiled on first use
            stored = load_tables(tables_path, meta.get("booster_sha256"), booster.num_feature())
            if stored is not None:
                bundle.__dict__["_stored_shap_tables"] = stored
        return bundle


def _reference_rows(folder: Path, n_features: int) -> np.ndarray | None:
    """The bundle's reference rows, or None for an older bundle saved without them."""
    path = folder / REFERENCE_ROWS_FILE
    if not path.exists():
        return None
    try:
        rows = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"model bundle {str(folder)!r} has an unreadable {REFERENCE_ROWS_FILE}: {e}") from e
    if rows.ndim != 2 or rows.shape[1] != n_features:
        raise ValueError(
            f"model bundle {str(folder)!r}: {REFERENCE_ROWS_FILE} has shape {rows.shape}, "
            f"not rows of {n_features} features"
        )
    return rows.astype(np.float64, copy=False)


RULE_FIELDS = ("measure", "told_by", "signed")  # how reasons are chosen, not worded: today's catalog's


def _feature(d: dict) -> Feature:
    """A stored catalog entry; the reason rules it predates come from today's catalog (its texts stay the
    bundle's own, so a score is worded by the model that made it)."""
    d = dict(d)
    now = BY_NAME.get(d.get("name", ""))
    if now is not None:
        for k in RULE_FIELDS:
            d.setdefault(k, getattr(now, k))
    d["exact"] = tuple(tuple(x) for x in d.get("exact", ()))
    return Feature(**d)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
