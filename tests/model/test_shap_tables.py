"""SHAP tables against LightGBM's own pred_contrib, on small seeded models and rows chosen to hit every edge:
thresholds and the doubles next to them, zeros, values LightGBM reads as zero (|x| <= 1e-35f), NaN under
each missing type, negative values, unseen, negative, fractional and missing category codes."""

from __future__ import annotations

import dataclasses
import io
import logging
import math

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.catalog import Feature
from model.bundle import Calibrator, FeatureEncoder, ModelBundle
from model.shap_tables import KZERO, SERIAL_ROWS, ShapTables, compile_tables

TOL = 1e-9
CAT_VOCAB = [f"c{i}" for i in range(8)]
KIND_VOCAB = ["k0", "k1", "k2", "k3"]
NAMES = ["wide", "zeroish", "tiny", "negative", "no_nan", "integer", "cat", "kind"]


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Training frame: NaN and zeros (wide), mostly zeros (zeroish), values around 1e-35 (tiny), negative
    values, a feature with no NaN in training (its splits read NaN as 0), integers, a categorical with
    missing values and one without."""
    rng = np.random.default_rng(seed)
    wide = rng.normal(0, 3, n)
    wide[rng.random(n) < 0.15] = np.nan
    wide[rng.random(n) < 0.2] = 0.0
    zeroish = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(2.0, n) * rng.choice([-1, 1], n))
    tiny = rng.choice([0.0, 1e-36, -1e-36, 1e-35, 3e-35, -3e-35, 1e-34, -1e-34, 1e-30, -1e-30], n)
    negative = -rng.exponential(50.0, n)
    no_nan = rng.uniform(-5, 5, n)
    integer = rng.poisson(2.0, n).astype(float)
    cat = rng.integers(0, len(CAT_VOCAB), n)
    cat_missing = rng.random(n) < 0.1
    kind = rng.integers(0, len(KIND_VOCAB), n)
    z = (
        0.8 * np.nan_to_num(wide, nan=4.0)
        + (zeroish != 0) * 1.5
        - 0.5 * zeroish
        + 2.0 * (tiny > 0)
        - 1.0 * (tiny < -1e-33)
        + negative / 40
        + np.sin(no_nan)
        + 0.4 * integer
        + np.where(cat_missing, 1.5, np.isin(cat, [1, 4, 6]) * 1.2)
        + (kind == 2) * 1.0
    )
    y = (z + rng.logistic(0, 1.0, n) > np.median(z)).astype(int)
    X = pd.DataFrame(
        {
            "wide": wide,
            "zeroish": zeroish,
            "tiny": tiny,
            "negative": negative,
            "no_nan": no_nan,
            "integer": integer,
            "cat": pd.Categorical(
                np.where(cat_missing, None, np.array(CAT_VOCAB, dtype=object)[cat]), categories=CAT_VOCAB
            ),
            "kind": pd.Categorical(np.array(KIND_VOCAB, dtype=object)[kind], categories=KIND_VOCAB),
        }
    )
    return X, y


def _train(rounds: int = 150, **params) -> lgb.Booster:
    X, y = _frame(6000, 3)
    base = {
        "objective": "binary",
        "num_leaves": 4,
        "learning_rate": 0.1,
        "min_child_samples": 20,
        "min_data_per_group": 10,
        "cat_smooth": 1.0,
        "max_cat_to_onehot": 2,
        "colsample_bytree": 0.8,
        "seed": 5,
        "deterministic": True,
        "num_threads": 2,
        "verbose": -1,
    }
    return lgb.train({**base, **params}, lgb.Dataset(X, y, categorical_feature=["cat", "kind"]), rounds)


def _matrix(X: pd.DataFrame) -> np.ndarray:
    """The scorer's float matrix: category codes, missing as NaN."""
    out = X.copy()
    for c in ("cat", "kind"):
        out[c] = X[c].cat.codes.astype(float).where(X[c].cat.codes >= 0, np.nan)
    return out.to_numpy(np.float64)


def _splits(booster: lgb.Booster) -> list[dict]:
    out, stack = [], [t["tree_structure"] for t in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            out.append(node)
            stack.extend((node["left_child"], node["right_child"]))
    return out


def _edge_values(booster: lgb.Booster) -> dict[int, np.ndarray]:
    """Per feature, values at and around every threshold of the booster (read from its dump here, not
    from the module under test), plus zeros, tiny values, NaN, infinities and odd category codes."""
    tiny = [0.0, -0.0, 1e-36, -1e-36, 1e-35, -1e-35, KZERO, -KZERO, 2e-35, -2e-35, 1e-34, -1e-34]
    vals: dict[int, list[float]] = {}
    for node in _splits(booster):
        f = node["split_feature"]
        if node["decision_type"] == "==":
            codes = [float(c) for c in str(node["threshold"]).split("||")]
            vals.setdefault(f, []).extend(codes + [c + 0.5 for c in codes] + [c - 0.5 for c in codes])
        else:
            t = float(node["threshold"])
            vals.setdefault(f, []).extend([t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), t * 1.5])
    for f in range(booster.num_feature()):
        vals.setdefault(f, []).extend(tiny + [np.nan, np.inf, -np.inf, -1.0, -0.5, 0.5, 1e3, -1e3, 8.0, 1e12])
    return {f: np.unique(np.array(v)) for f, v in vals.items()}


def _edge_rows(booster: lgb.Booster, seed: int = 0) -> np.ndarray:
    """Real rows; each edge value of each feature swept through a few of them; random edge combinations."""
    X, _ = _frame(300, seed + 100)
    real = _matrix(X)
    edges = _edge_values(booster)
    sweeps = []
    for f, vs in edges.items():
        block = np.repeat(real[:4], len(vs), axis=0)
        block[:, f] = np.tile(vs, 4)
        sweeps.append(block)
    rng = np.random.default_rng(seed)
    combos = np.column_stack([rng.choice(edges[f], 2000) for f in range(booster.num_feature())])
    nan, zero = np.full((1, real.shape[1]), np.nan), np.zeros((1, real.shape[1]))
    return np.vstack([real, *sweeps, combos, nan, zero])


def _assert_pred_contrib(got: np.ndarray, booster: lgb.Booster, X: np.ndarray) -> None:
    np.testing.assert_allclose(got, booster.predict(X, pred_contrib=True), rtol=0, atol=TOL)


def _assert_exact(booster: lgb.Booster, tables: ShapTables, X: np.ndarray) -> None:
    got, want = tables.contributions(X), booster.predict(X, pred_contrib=True)
    assert got.shape == want.shape == (len(X), booster.num_feature() + 1)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    raw = booster.predict(X, raw_score=True)
    np.testing.assert_allclose(got.sum(axis=1), raw, rtol=0, atol=TOL)  # additivity: the raw score


@pytest.fixture(scope="module")
def four_leaves() -> lgb.Booster:
    return _train()


@pytest.fixture(scope="module")
def zero_missing() -> lgb.Booster:
    """zero_as_missing: splits of missing_type Zero (0 and values read as 0 take the default side)."""
    return _train(zero_as_missing=True)


@pytest.fixture(scope="module")
def monotone() -> lgb.Booster:
    return _train(monotone_constraints=[1, 0, 1, 1, 0, 1, 0, 0], monotone_constraints_method="intermediate")


def test_the_models_have_every_kind_of_split(four_leaves, zero_missing) -> None:
    """The edges the other tests rely on exist in the models (else they would pass vacuously)."""
    splits = _splits(four_leaves) + _splits(zero_missing)
    kinds = {(s["decision_type"], s["missing_type"]) for s in splits}
    assert {("<=", "NaN"), ("<=", "None"), ("<=", "Zero"), ("==", "NaN"), ("==", "None")} <= kinds, kinds
    tiny_thresholds = [s for s in splits if s["decision_type"] == "<=" and abs(s["threshold"]) <= 1e-30]
    assert any(abs(s["threshold"]) <= KZERO for s in tiny_thresholds)  # a threshold LightGBM reads as 0
    assert max(len(str(s["threshold"]).split("||")) for s in splits if s["decision_type"] == "==") >= 2


def test_lightgbm_reads_tiny_values_and_unexpected_nan_as_zero(four_leaves) -> None:
    """The rules the tables copy, seen in LightGBM itself: 1e-35 scores as 0 and the next double above
    1e-35f does not (the tiny feature has a split between them); NaN on a feature whose splits have
    missing_type None (no NaN in training) scores as 0."""
    X = np.zeros((3, four_leaves.num_feature()))
    X[:, 2] = [0.0, 1e-35, math.nextafter(KZERO, 1.0) * 3]
    raw = four_leaves.predict(X, raw_score=True)
    assert raw[0] == raw[1] != raw[2]
    assert {s["missing_type"] for s in _splits(four_leaves) if s["split_feature"] == 4} == {"None"}
    X = np.zeros((3, four_leaves.num_feature()))
    X[:, 4] = [0.0, np.nan, 4.0]
    raw = four_leaves.predict(X, raw_score=True)
    assert raw[0] == raw[1] != raw[2]


def test_lightgbm_sends_a_missing_category_right_even_without_a_missing_type(zero_missing) -> None:
    """Seen in LightGBM 4.7: under zero_as_missing the categorical splits have missing_type None, and NaN
    still scores like an unseen code, not like code 0 (the tables give NaN its own bin either way)."""
    cat_splits = [s for s in _splits(zero_missing) if s["split_feature"] == 6]
    assert cat_splits and all(s["missing_type"] == "None" for s in cat_splits)
    X = np.ones((4, zero_missing.num_feature()))
    X[:, 6] = [0.0, np.nan, 99.0, -1.0]
    raw = zero_missing.predict(X, raw_score=True)
    assert raw[0] != raw[1] == raw[2] == raw[3]


@pytest.mark.parametrize("model", ["four_leaves", "zero_missing", "monotone"])
def test_tables_equal_pred_contrib_on_every_edge(model, request) -> None:
    booster = request.getfixturevalue(model)
    tables = compile_tables(booster)
    assert tables is not None and tables.n_trees == booster.num_trees()
    X = _edge_rows(booster)
    assert len(X) > SERIAL_ROWS  # the threaded path; the serial one below
    _assert_exact(booster, tables, X)
    _assert_exact(booster, tables, X[:50])
    _assert_exact(booster, tables, tables.edge_rows(3000, seed=1))  # the module's own edge rows


def test_tables_equal_pred_contrib_on_fresh_rows(four_leaves) -> None:
    tables = compile_tables(four_leaves)
    X, _ = _frame(5000, 42)
    _assert_exact(four_leaves, tables, _matrix(X))


def test_a_deeper_model_within_budget_is_exact() -> None:
    booster = _train(rounds=40, num_leaves=8)
    tables = compile_tables(booster)
    assert tables is not None and np.diff(tables.g_ptr).max() > 3  # groups of more than 3 features
    _assert_exact(booster, tables, _edge_rows(booster))


def test_a_model_over_budget_falls_back(caplog) -> None:
    booster = _train(rounds=30, num_leaves=64, min_child_samples=5)
    with caplog.at_level(logging.INFO, logger="model.shap_tables"):
        assert compile_tables(booster) is None
    assert "over the budget" in caplog.text
    bundle = _bundle(booster)
    X = _edge_rows(booster)[:500]
    np.testing.assert_array_equal(bundle.contributions(X), booster.predict(X, pred_contrib=True))
    assert bundle.shap_tables() is None


def test_budget_is_on_total_cells(four_leaves) -> None:
    tables = compile_tables(four_leaves)
    assert compile_tables(four_leaves, max_cells=tables.n_cells) is not None
    assert compile_tables(four_leaves, max_cells=tables.n_cells - 1) is None


def test_single_leaf_trees_and_no_trees() -> None:
    """Trees that cannot split carry only a bias; a booster with no trees explains everything as 0."""
    stumps = _train(rounds=5, min_child_samples=100_000)
    assert all("split_feature" not in t["tree_structure"] for t in stumps.dump_model()["tree_info"])
    X = _edge_rows(stumps)[:300]
    _assert_exact(stumps, compile_tables(stumps), X)
    X_tr, y = _frame(500, 1)
    empty = lgb.Booster({"objective": "binary", "verbose": -1}, lgb.Dataset(X_tr, y))
    assert empty.num_trees() == 0
    _assert_exact(empty, compile_tables(empty), X)


def test_multiclass_and_linear_trees_are_refused(caplog) -> None:
    X, y = _frame(2000, 2)
    multi = lgb.train(
        {"objective": "multiclass", "num_class": 3, "num_leaves": 4, "verbose": -1},
        lgb.Dataset(X, (y + (X["no_nan"] > 0)).to_numpy()),
        3,
    )
    linear = lgb.train(
        {"objective": "binary", "num_leaves": 4, "linear_tree": True, "verbose": -1},
        lgb.Dataset(X[["wide", "no_nan"]], y),
        3,
    )
    with caplog.at_level(logging.INFO, logger="model.shap_tables"):
        assert compile_tables(multi) is None
        assert compile_tables(linear) is None
    assert "multi-class" in caplog.text and "linear leaves" in caplog.text


def test_verify_names_the_difference_and_fails_when_tables_are_wrong(four_leaves) -> None:
    tables = compile_tables(four_leaves)
    X = _edge_rows(four_leaves)
    assert tables.verify(four_leaves, X) <= TOL
    off = dataclasses.replace(tables, values=tables.values + 1e-6)  # every cell off by a millionth
    with pytest.raises(ValueError, match=r"differ from LightGBM pred_contrib by \S+ \(tolerance 1e-09\)"):
        off.verify(four_leaves, X)
    with pytest.raises(ValueError, match=r"pred_contrib by 0.001 "):
        dataclasses.replace(tables, bias=tables.bias + 1e-3).verify(four_leaves, X)
    assert off.verify(four_leaves, X, tol=1e-3) > 1e-7  # the same difference, under a loose tolerance


def test_contributions_check_their_input(four_leaves) -> None:
    tables = compile_tables(four_leaves)
    assert tables.contributions(np.zeros((0, 8))).shape == (0, 9)
    with pytest.raises(ValueError, match="8 feature columns"):
        tables.contributions(np.zeros((3, 7)))


# ------------------------------------------------------------------------------------ the bundle
def _bundle(booster: lgb.Booster, reference_rows: np.ndarray | None = None) -> ModelBundle:
    names = booster.feature_name()
    return ModelBundle(
        booster=booster,
        encoder=FeatureEncoder(tuple(names), {"cat": CAT_VOCAB, "kind": KIND_VOCAB}),
        calibrator=Calibrator("platt"),
        tier_thresholds={"red": 0.5, "amber": 0.2},
        reference={},
        spec={},
        catalog={f: Feature(f, "num", "loan", f, f) for f in names},
        reference_rows=reference_rows,
    )


def test_bundle_contributions_use_verified_tables(four_leaves, tmp_path) -> None:
    X, _ = _frame(2000, 8)
    bundle = _bundle(four_leaves, reference_rows=_matrix(X))
    tables = bundle.shap_tables()
    assert tables is not None and bundle.shap_tables() is tables  # compiled once
    rows = _edge_rows(four_leaves)
    _assert_pred_contrib(bundle.contributions(rows), four_leaves, rows)
    loaded = ModelBundle.load(bundle.save(tmp_path / "b"))
    np.testing.assert_array_equal(loaded.reference_rows, bundle.reference_rows)
    _assert_pred_contrib(loaded.contributions(rows), four_leaves, rows)


def test_an_older_bundle_without_reference_rows_verifies_on_threshold_rows(four_leaves, tmp_path) -> None:
    folder = _bundle(four_leaves).save(tmp_path / "old")
    (folder / "shap_tables.npz").unlink()  # as saved before bundles kept their tables
    assert not (folder / "reference_rows.npy").exists()
    old = ModelBundle.load(folder)
    assert old.reference_rows is None and old.shap_tables() is not None
    rows = _edge_rows(four_leaves)[:700]
    _assert_pred_contrib(old.contributions(rows), four_leaves, rows)


def test_a_saved_bundle_loads_its_tables_instead_of_compiling(four_leaves, tmp_path, monkeypatch) -> None:
    import model.bundle as bundle_module

    X, _ = _frame(2000, 9)
    folder = _bundle(four_leaves, reference_rows=_matrix(X)).save(tmp_path / "b")
    assert (folder / "shap_tables.npz").exists()

    def no_compiling(booster, max_cells=None):
        raise AssertionError("compiled although the bundle has its tables")

    monkeypatch.setattr(bundle_module, "compile_tables", no_compiling)
    loaded = ModelBundle.load(folder)
    tables = loaded.shap_tables()
    assert tables is not None and tables.compile_seconds == 0.0  # read, not compiled
    rows = np.vstack([_edge_rows(four_leaves), _matrix(_frame(3000, 10)[0])])
    _assert_pred_contrib(loaded.contributions(rows), four_leaves, rows)


def test_stored_tables_of_another_booster_or_unreadable_are_compiled_afresh(
    four_leaves, zero_missing, tmp_path, caplog
) -> None:
    a = _bundle(four_leaves).save(tmp_path / "a")
    b = _bundle(zero_missing).save(tmp_path / "b")
    rows = _edge_rows(zero_missing)
    (b / "shap_tables.npz").write_bytes((a / "shap_tables.npz").read_bytes())
    with caplog.at_level(logging.WARNING, logger="model.shap_tables"):
        other = ModelBundle.load(b)
    assert "another booster" in caplog.text
    _assert_pred_contrib(other.contributions(rows), zero_missing, rows)
    (b / "shap_tables.npz").write_bytes(b"not numpy")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model.shap_tables"):
        broken = ModelBundle.load(b)
    assert "unreadable" in caplog.text
    _assert_pred_contrib(broken.contributions(rows), zero_missing, rows)


def test_stored_tables_that_disagree_with_the_booster_are_compiled_afresh(
    four_leaves, tmp_path, caplog
) -> None:
    import json

    from model.shap_tables import save_tables

    X, _ = _frame(500, 11)
    folder = _bundle(four_leaves, reference_rows=_matrix(X)).save(tmp_path / "w")
    wrong = dataclasses.replace(compile_tables(four_leaves), values=compile_tables(four_leaves).values + 1e-7)
    sha = json.loads((folder / "bundle.json").read_text())["booster_sha256"]
    save_tables(wrong, folder / "shap_tables.npz", sha)  # the right booster's name on wrong numbers
    rows = _edge_rows(four_leaves)
    with caplog.at_level(logging.WARNING, logger="model.bundle"):
        got = ModelBundle.load(folder).contributions(rows)
    assert "fail their check" in caplog.text  # said, and not used
    _assert_pred_contrib(got, four_leaves, rows)


def test_a_truncated_or_other_format_tables_file_is_compiled_afresh(four_leaves, tmp_path, caplog) -> None:
    import json

    from model.shap_tables import TABLES_FORMAT

    X, _ = _frame(500, 12)
    folder = _bundle(four_leaves, reference_rows=_matrix(X)).save(tmp_path / "t")
    path = folder / "shap_tables.npz"
    whole = path.read_bytes()
    rows = _edge_rows(four_leaves)
    for damage in (whole[: len(whole) // 2], whole[:-40] + bytes(40)):  # cut short; its directory zeroed
        path.write_bytes(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="model.shap_tables"):
            bundle = ModelBundle.load(folder)  # never a crash: the booster itself is whole
        assert "unreadable" in caplog.text
        _assert_pred_contrib(bundle.contributions(rows), four_leaves, rows)
    with np.load(io.BytesIO(whole)) as z:
        arrays = {k: z[k] for k in z.files}
    sha = json.loads((folder / "bundle.json").read_text())["booster_sha256"]
    assert str(arrays["booster_sha256"]) == sha and int(arrays["format"]) == TABLES_FORMAT
    np.savez(path, **{**arrays, "format": np.array(TABLES_FORMAT + 1)})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model.shap_tables"):
        bundle = ModelBundle.load(folder)
    assert "another format" in caplog.text
    _assert_pred_contrib(bundle.contributions(rows), four_leaves, rows)


def test_a_bundle_whose_tables_fail_verification_is_refused(four_leaves, monkeypatch) -> None:
    import model.bundle as bundle_module

    def off_by_a_bit(booster, max_cells=None):
        t = compile_tables(booster)
        return dataclasses.replace(t, values=t.values + 1e-7)

    monkeypatch.setattr(bundle_module, "compile_tables", off_by_a_bit)
    bundle = _bundle(four_leaves)
    with pytest.raises(ValueError, match="pred_contrib by"):
        bundle.contributions(np.zeros((1, 8)))


def test_a_corrupt_reference_rows_file_is_a_value_error(four_leaves, tmp_path) -> None:
    folder = _bundle(four_leaves, reference_rows=np.zeros((5, 8))).save(tmp_path / "c")
    (folder / "reference_rows.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="reference_rows"):
        ModelBundle.load(folder)
    np.save(folder / "reference_rows.npy", np.zeros((5, 3)))
    with pytest.raises(ValueError, match="reference_rows"):
        ModelBundle.load(folder)
