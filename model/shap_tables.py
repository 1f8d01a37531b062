"""Exact TreeSHAP contributions of a LightGBM booster, precompiled into lookup tables.

Why: `booster.predict(X, pred_contrib=True)` (exact TreeSHAP, log-odds, bias last) is what the nightly batch
and the service wait on. A tree's SHAP vector depends on a row only through the bins of the few features it
splits on, so it can be computed once per bin cell instead of once per row.

How:
- Read the trees with `booster.dump_model()`. Group them by the set of features they split on; a set that is
  a subset of another group's set joins that group (the one it grows least), so a row does one lookup per
  group instead of one per tree.
- Each group's table is indexed by the group's bins: per feature, the intervals between its split
  thresholds in the group, plus a bin for zero and one for NaN (numeric), or one bin per category code
  named in a split, one for every other value and one for NaN (categorical).
- Fill each cell from LightGBM's own per-tree `pred_contrib` (`start_iteration=t, num_iteration=1`) on a
  representative row inside the cell, summed over the group's trees; the bias is the trees' expected
  values, summed in tree order as LightGBM does. The numbers are LightGBM's; only the summation order
  differs (contributions agree to ~1e-15).
- At prediction a row is binned once per feature on the whole model's cuts, then each group maps those
  bins to its cell through a small lookup (global bin -> cell offset).

LightGBM's reading of a value, matched here and checked against `pred_contrib` in the tests:
- |x| <= kZeroThreshold (1e-35f as a double) is read as 0, and a threshold can be such a value, so a
  representative is a point of its bin that LightGBM does not read as zero, never a bare threshold;
- numeric split: NaN is read as 0 unless missing_type is NaN; a missing value (NaN for missing_type NaN,
  zero for missing_type Zero) goes the default_left way; otherwise x <= threshold goes left;
- categorical split: the code is the value truncated to an int (-0.5 is code 0); a listed code goes left;
  NaN (whatever the split's missing_type: LightGBM 4.7 does not read it as code 0), a negative code, a
  code not in the split's set and a value beyond int range go right.
Zero and NaN take their own bins, so each rule above is one cell whatever a split's missing_type, and a
LightGBM that read NaN differently would still be matched: the cell's representative is NaN itself.

Speed (`python -m bench shap`: the default model trained on the 200,000-loan book, 537 trees, its 94,842
performing rows, binning included, one run, best of 3): tables 412k rows/s, LightGBM pred_contrib 8.0k
(51.7x; 44-52x per repetition), LightGBM raw prediction 95k, with other jobs holding about half the 2-core
machine. The kernel is a nogil numba loop (`model/_shap_kernels.py`) over row ranges in threads, chosen by
measurement, the variants interleaved in one process on the same rows (rows/s, best of 3):
- the numba kernel in 2 threads 539k; the same loop under numba `prange` (parallel=True, omp layer) 536k;
  one thread 315k (the 20,000-loan book's model, 998 trees, at a quiet moment); on the model above, with
  a neighbour's job holding one core: threads 411k, prange 409k, one thread 414k;
- numpy, vectorised over 8,192-row blocks in 2 threads (numpy releases the GIL): 70k against 411k there,
  and 86k against 217k for an earlier, slower numba loop: ~1,000 small numpy calls per block cost more
  than the gathers they do.
Numba it is. Threads and prange are level, so threads: they need no numba threading layer (the
workqueue fallback aborts on calls from two threads at once, and the service calls from many) and compile
one function instead of two. What made the loop fast is data layout, not parallelism: rows go in blocks of
256, binned once per feature, then the block is explained group by group with bins and sums stored
feature-major, so a group's lookup and cells stay in cache across the block (a row-at-a-time loop over
all tables ran at 35-110k rows/s per core).

Limits: single-output models only (binary; a multi-class booster is refused), no linear trees, no random
forest averaging. `compile_tables` returns None (with a logged reason) when the tables would exceed
`max_cells` (deep trees): callers then use `pred_contrib`.
"""

from __future__ import annotations

import logging
import math
import os
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

KZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold: a value with |x| <= KZERO is read as 0
INT_LIMIT = 2.0**31  # a category value at or above this is no int code: LightGBM sends it right
DEFAULT_MAX_CELLS = 2_000_000  # about 16 MB of float64 per contribution a cell holds
SERIAL_ROWS = 2048  # below this a call runs in the caller's thread: thread start-up would cost more


# ------------------------------------------------------------------------------------------ bins
@dataclass(frozen=True)
class Axis:
    """How one feature is cut into bins (for one group of trees, or for the whole model).

    numeric: bins 0..len(cuts) are the intervals (cuts[k-1], cuts[k]] (x <= threshold goes left), then a
    bin for values LightGBM reads as zero, then NaN. categorical: bin k is the code cuts[k], then every
    other value, then NaN."""

    categorical: bool
    cuts: np.ndarray  # sorted unique thresholds, or sorted category codes (as floats)

    @property
    def n_bins(self) -> int:
        return len(self.cuts) + (2 if self.categorical else 3)

    def bins(self, x: np.ndarray) -> np.ndarray:
        """The bin of each value: the same rules as the numba kernel, in numpy (compile time, tests)."""
        x = np.asarray(x, dtype=np.float64)
        nc = len(self.cuts)
        nan = np.isnan(x)
        if not self.categorical:
            out = np.searchsorted(self.cuts, x, side="left")
            out[np.abs(x) <= KZERO] = nc + 1
            out[nan] = nc + 2
            return out
        ok = ~nan & (x > -1.0) & (x < INT_LIMIT)  # else no non-negative int code: every split sends it right
        code = np.trunc(np.where(ok, x, -1.0))
        pos = np.searchsorted(self.cuts, code, side="left")
        hit = ok & (pos < nc)
        hit[hit] = self.cuts[pos[hit]] == code[hit]
        out = np.where(hit, pos, nc)
        out[nan] = nc + 1
        return out

    def representatives(self) -> np.ndarray:
        """One value inside each bin, read by LightGBM as that bin (0.0 for an interval no value reaches)."""
        if self.categorical:
            return np.concatenate([self.cuts, [-1.0, np.nan]])
        edges = np.concatenate([[-math.inf], self.cuts, [math.inf]])
        reps = [_interval_point(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        return np.array([*reps, 0.0, np.nan])


def _inside(a: float, b: float) -> float | None:
    """A finite point strictly between a < b (either may be infinite), or None if there is none."""
    if a == -math.inf:
        m = b - max(1.0, abs(b))
    elif b == math.inf:
        m = a + max(1.0, abs(a))
    else:
        m = a / 2 + b / 2
    if not (a < m < b and math.isfinite(m)):
        m = math.nextafter(a, math.inf) if a > -math.inf else math.nextafter(b, -math.inf)
    return m if a < m < b and math.isfinite(m) else None


def _interval_point(lo: float, hi: float) -> float:
    """A value of (lo, hi] that LightGBM does not read as zero; 0.0 if the interval holds none (then every
    value in it is read as zero and lands in the zero bin, so the cell is never used)."""
    p_lo = max(lo, KZERO)  # the positive part (p_lo, hi]
    if hi > p_lo:
        m = _inside(p_lo, hi)
        return m if m is not None else hi
    n_hi = min(hi, -KZERO)  # the negative part (lo, n_hi), plus hi itself when hi < -KZERO
    if n_hi > lo:
        m = _inside(lo, n_hi)
        if m is not None:
            return m
        if hi < -KZERO:
            return hi
    return 0.0


# ------------------------------------------------------------------------------------------ trees
@dataclass
class _Group:
    """Trees sharing one feature set (or a subset of it) and the cuts they split on."""

    features: frozenset[int]
    cuts: dict[int, set[float]]
    trees: list[int] = field(default_factory=list)


def _nodes(tree: dict) -> Iterator[dict]:
    stack = [tree["tree_structure"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            yield node
            stack.extend((node["left_child"], node["right_child"]))


def _read_trees(dump: dict) -> tuple[list[dict[int, set[float]]], dict[int, bool]] | str:
    """Per tree, the cuts of each feature it splits on; per feature, whether it is categorical. A string
    (the reason) for a tree the tables cannot represent."""
    per_tree: list[dict[int, set[float]]] = []
    categorical: dict[int, bool] = {}
    for info in dump["tree_info"]:
        cuts: dict[int, set[float]] = {}
        for node in _nodes(info):
            f, kind = int(node["split_feature"]), node["decision_type"]
            if kind == "<=":
                vals = {float(node["threshold"])}
            elif kind == "==":
                vals = {float(int(c)) for c in str(node["threshold"]).split("||")}
            else:
                return f"tree {info['tree_index']} has a split of unknown decision type {kind!r}"
            if categorical.setdefault(f, kind == "==") != (kind == "=="):
                return f"feature {f} is split both as numeric and as categorical"
            cuts.setdefault(f, set()).update(vals)
        per_tree.append(cuts)
        if _has_linear_leaf(info["tree_structure"]):
            return f"tree {info['tree_index']} has linear leaves"
    return per_tree, categorical


def _has_linear_leaf(node: dict) -> bool:
    stack = [node]
    while stack:
        n = stack.pop()
        if "leaf_coeff" in n:
            return True
        if "split_feature" in n:
            stack.extend((n["left_child"], n["right_child"]))
    return False


def _cells(cuts: dict[int, set[float]], categorical: dict[int, bool]) -> int:
    return math.prod(len(c) + (2 if categorical[f] else 3) for f, c in cuts.items())


def _group_trees(per_tree: list[dict[int, set[float]]], categorical: dict[int, bool]) -> list[_Group]:
    """Trees by feature set; each set joins the existing superset group it grows least, largest sets first."""
    by_set: dict[frozenset[int], list[int]] = {}
    for t, cuts in enumerate(per_tree):
        if cuts:  # a single-leaf tree has only a bias
            by_set.setdefault(frozenset(cuts), []).append(t)
    groups: list[_Group] = []
    for fs in sorted(by_set, key=lambda s: (-len(s), sorted(s))):
        trees = by_set[fs]
        cuts: dict[int, set[float]] = {f: set() for f in fs}
        for t in trees:
            for f, c in per_tree[t].items():
                cuts[f] |= c
        best, growth = None, math.inf
        for g in groups:
            if fs <= g.features:
                merged = {f: g.cuts[f] | cuts.get(f, set()) for f in g.features}
                d = _cells(merged, categorical) - _cells(g.cuts, categorical)
                if d < growth:
                    best, growth = g, d
        if best is None:
            groups.append(_Group(fs, cuts, list(trees)))
        else:
            for f, c in cuts.items():
                best.cuts[f] |= c
            best.trees.extend(trees)
    for g in groups:
        g.trees.sort()  # LightGBM sums trees in order; so does each table
    return groups


def _axis(cuts: set[float], categorical: bool) -> Axis:
    return Axis(categorical, np.array(sorted(cuts), dtype=np.float64))


# ------------------------------------------------------------------------------------------ tables
@dataclass(frozen=True, eq=False, repr=False)
class ShapTables:
    """A booster's exact SHAP contributions as one lookup table per group of trees (see the module doc).

    Flat arrays for the kernel: per feature its kind and cuts; per group its features, for each of them a
    lookup from the feature's global bin to a cell offset, and its cells' contributions (cell-major)."""

    n_features: int
    bias: float
    axes: dict[int, Axis]  # the whole model's cuts, per feature split on
    kind: np.ndarray  # per feature: 0 numeric, 1 categorical
    cut_ptr: np.ndarray  # cuts of feature f are cuts[cut_ptr[f]:cut_ptr[f + 1]]
    cuts: np.ndarray
    used: np.ndarray  # features any tree splits on
    g_ptr: np.ndarray  # group g's features are g_feat[g_ptr[g]:g_ptr[g + 1]]
    g_feat: np.ndarray
    lut_ptr: np.ndarray  # per (group, feature) entry: where its global-bin -> cell offset lookup starts
    lut: np.ndarray
    val_off: np.ndarray  # group g's cell c, feature j: values[val_off[g] + c * k_g + j]
    values: np.ndarray
    n_trees: int
    n_cells: int
    compile_seconds: float

    @property
    def n_groups(self) -> int:
        return len(self.val_off)

    def __repr__(self) -> str:
        return (
            f"ShapTables({self.n_trees} trees, {self.n_groups} groups, {self.n_cells} cells, "
            f"{self.n_features} features)"
        )

    def contributions(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        """`booster.predict(X, pred_contrib=True)`: n x (n_features + 1) float64, bias last, log-odds.

        `threads` (default: the cores this process may use) run row blocks side by side; a call under
        SERIAL_ROWS rows runs in the caller's thread."""
        from model import _shap_kernels as kernels  # numba's import and compilation wait for the first call

        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be a matrix of {self.n_features} feature columns, got shape {X.shape}")
        n = len(X)
        out = np.empty((n, self.n_features + 1), dtype=np.float64)
        args = (
            self.kind,
            self.cut_ptr,
            self.cuts,
            self.used,
            self.g_ptr,
            self.g_feat,
            self.lut_ptr,
            self.lut,
            self.val_off,
            self.values,
            self.bias,
        )
        threads = 1 if n < SERIAL_ROWS else threads or _cores()
        if threads <= 1:
            kernels.fill_rows(X, 0, n, out, *args)
            return out
        step = max(SERIAL_ROWS // 2, -(-n // (4 * threads)))  # a few blocks per thread evens out the load

        def rows(lo: int) -> None:
            kernels.fill_rows(X, lo, min(n, lo + step), out, *args)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(rows, range(0, n, step)))  # list: a kernel's error is raised here
        return out

    def verify(self, booster: lgb.Booster, X_reference: np.ndarray, tol: float = 1e-9) -> float:
        """Max abs difference to `pred_contrib` on the reference rows; ValueError naming it above tol."""
        X = np.ascontiguousarray(X_reference, dtype=np.float64)
        if len(X) == 0:
            raise ValueError("SHAP tables cannot be verified on zero reference rows")
        # LightGBM's pred_contrib runs in C with the GIL released: in a thread it overlaps the tables' first
        # call, which imports numba and loads the compiled kernel (Python work, about half a second)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(booster.predict, X, pred_contrib=True)
            got = self.contributions(X)
            want = pending.result()
        diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else math.nan
        if not diff <= tol:  # NaN (a shape or NaN mismatch) fails too
            raise ValueError(
                f"SHAP tables differ from LightGBM pred_contrib by {diff:.3g} (tolerance {tol:g}) "
                f"on {len(X)} reference rows"
            )
        return diff

    def edge_rows(self, n: int = 1000, seed: int = 0) -> np.ndarray:
        """Rows whose every feature sits on an edge of the model's own bins: each threshold, the doubles
        next to it, each bin's representative, zero, tiny values, NaN; unseen and negative category codes.
        Verifies tables where no training rows were kept."""
        rng = np.random.default_rng(seed)
        X = np.zeros((n, self.n_features), dtype=np.float64)
        for f, ax in self.axes.items():
            X[:, f] = rng.choice(_edge_values(ax), size=n)
        return X


_ARRAYS = ("kind", "cut_ptr", "cuts", "used", "g_ptr", "g_feat", "lut_ptr", "lut", "val_off", "values")
TABLES_FORMAT = 1  # the layout of the saved arrays; a file of another format is compiled afresh


def save_tables(tables: ShapTables, path: Path, booster_sha256: str) -> None:
    """The tables as one .npz beside the booster they were compiled from (named by its SHA-256), so a
    bundle loads them instead of compiling (about a second per 1,000 trees) at every start."""
    np.savez(
        path,
        format=np.array(TABLES_FORMAT),
        booster_sha256=np.array(booster_sha256),
        scalars=np.array([tables.n_features, tables.bias, tables.n_trees, tables.n_cells], dtype=np.float64),
        **{name: getattr(tables, name) for name in _ARRAYS},
    )


def load_tables(path: Path, booster_sha256: str | None, n_features: int) -> ShapTables | None:
    """Tables saved by `save_tables` for this booster; None (logged: they are compiled afresh) when the
    file is unreadable, incomplete or belongs to another booster. Whatever is loaded is still verified
    against `pred_contrib` before its first use (`ModelBundle.shap_tables`)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or int(z["format"]) != TABLES_FORMAT:
                log.warning("%s is of another format: compiling the SHAP tables afresh", path.name)
                return None
            if booster_sha256 is None or str(z["booster_sha256"]) != booster_sha256:
                log.warning("%s belongs to another booster: compiling the SHAP tables afresh", path.name)
                return None
            arrays = {name: z[name] for name in _ARRAYS}
            nf, bias, n_trees, n_cells = z["scalars"].tolist()
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated, altered, not npz
        log.warning("%s is unreadable (%s): compiling the SHAP tables afresh", path.name, e)
        return None
    if int(nf) != n_features or len(arrays["cut_ptr"]) != n_features + 1:
        log.warning("%s is for %d features, not %d: compiling afresh", path.name, int(nf), n_features)
        return None
    kind, cut_ptr, cuts = arrays["kind"], arrays["cut_ptr"], arrays["cuts"]
    axes = {
        int(f): Axis(bool(kind[f]), cuts[cut_ptr[f] : cut_ptr[f + 1]].astype(np.float64))
        for f in arrays["used"].tolist()
    }
    return ShapTables(
        n_features=int(nf),
        bias=float(bias),
        axes=axes,
        n_trees=int(n_trees),
        n_cells=int(n_cells),
        compile_seconds=0.0,
        **arrays,
    )


def _cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _edge_values(ax: Axis) -> np.ndarray:
    tiny = [0.0, -0.0, KZERO, -KZERO, 1e-35, -1e-35, math.nextafter(KZERO, 1.0), math.nextafter(-KZERO, -1.0)]
    if ax.categorical:
        top = float(ax.cuts.max()) if len(ax.cuts) else 0.0
        extra = [top + 1.0, -1.0, -0.5, 0.5, 1e12, math.inf, math.nan]
        return np.concatenate([ax.cuts, ax.cuts + 0.5, extra, tiny])
    near = [np.nextafter(ax.cuts, -np.inf), ax.cuts, np.nextafter(ax.cuts, np.inf)]
    return np.concatenate([*near, ax.representatives(), tiny, [math.nan, math.inf, -math.inf]])


def compile_tables(booster: lgb.Booster, max_cells: int = DEFAULT_MAX_CELLS) -> ShapTables | None:
    """Compile the booster (the trees `booster.predict` uses by default) into SHAP tables; None, with the
    reason logged, when the model is not one tables can represent or the tables would exceed max_cells."""
    t0 = time.perf_counter()
    dump = booster.dump_model()
    if dump.get("num_tree_per_iteration", 1) != 1:
        log.info("no SHAP tables: %s trees per iteration (multi-class)", dump["num_tree_per_iteration"])
        return None
    if dump.get("average_output"):
        log.info("no SHAP tables: the model averages its trees (random forest)")
        return None
    read = _read_trees(dump)
    if isinstance(read, str):
        log.info("no SHAP tables: %s", read)
        return None
    per_tree, categorical = read
    n_features = booster.num_feature()
    groups = _group_trees(per_tree, categorical)
    n_cells = sum(_cells(g.cuts, categorical) for g in groups)
    if n_cells > max_cells:
        log.info(
            "no SHAP tables: %d trees would need %d cells in %d groups, over the budget of %d; "
            "contributions come from pred_contrib",
            len(per_tree),
            n_cells,
            len(groups),
            max_cells,
        )
        return None

    tree_bias = np.zeros(len(per_tree))
    for t, cuts in enumerate(per_tree):
        if not cuts:  # a single-leaf tree: its bias is its leaf value, nothing depends on the row
            phi = booster.predict(
                np.zeros((1, n_features)), start_iteration=t, num_iteration=1, pred_contrib=True
            )
            tree_bias[t] = phi[0, -1]

    all_cuts: dict[int, set[float]] = {}
    for cuts in per_tree:
        for f, c in cuts.items():
            all_cuts.setdefault(f, set()).update(c)
    axes = {f: _axis(c, categorical[f]) for f, c in sorted(all_cuts.items())}
    global_reps = {f: ax.representatives() for f, ax in axes.items()}

    g_ptr, g_feat, lut_ptr, luts, val_off, values = [0], [], [], [], [], []
    lut_size = val_size = 0
    for g in groups:
        feats = sorted(g.features)
        g_axes = [_axis(g.cuts[f], categorical[f]) for f in feats]
        shape = [ax.n_bins for ax in g_axes]
        strides = np.cumprod([1, *shape[::-1]])[-2::-1]  # C order: the last feature varies fastest
        grid = np.meshgrid(*[ax.representatives() for ax in g_axes], indexing="ij")
        rows = np.zeros((math.prod(shape), n_features))
        for j, f in enumerate(feats):
            rows[:, f] = grid[j].ravel()
        vals = np.zeros((len(rows), len(feats)))
        for t in g.trees:
            phi = booster.predict(rows, start_iteration=t, num_iteration=1, pred_contrib=True)
            vals += phi[:, feats]
            tree_bias[t] = phi[0, -1]
        for j, (f, ax) in enumerate(zip(feats, g_axes, strict=True)):
            lut = ax.bins(global_reps[f]).astype(np.int64) * int(strides[j])
            g_feat.append(f)
            lut_ptr.append(lut_size)
            luts.append(lut)
            lut_size += len(lut)
        g_ptr.append(len(g_feat))
        val_off.append(val_size)
        values.append(vals.ravel())
        val_size += vals.size

    bias = 0.0
    for b in tree_bias:  # in tree order, as LightGBM adds each tree's expected value
        bias += float(b)
    kind = np.zeros(n_features, dtype=np.int8)
    cut_ptr = np.zeros(n_features + 1, dtype=np.int64)
    for f in range(n_features):
        ax = axes.get(f)
        kind[f] = int(ax is not None and ax.categorical)
        cut_ptr[f + 1] = cut_ptr[f] + (len(ax.cuts) if ax is not None else 0)
    tables = ShapTables(
        n_features=n_features,
        bias=bias,
        axes=axes,
        kind=kind,
        cut_ptr=cut_ptr,
        cuts=np.concatenate([ax.cuts for ax in axes.values()]) if axes else np.zeros(0),
        used=np.array(sorted(axes), dtype=np.int64),
        g_ptr=np.array(g_ptr, dtype=np.int64),
        g_feat=np.array(g_feat, dtype=np.int64),
        lut_ptr=np.array(lut_ptr, dtype=np.int64),
        lut=np.concatenate(luts) if luts else np.zeros(0, dtype=np.int64),
        val_off=np.array(val_off, dtype=np.int64),
        values=np.concatenate(values) if values else np.zeros(0),
        n_trees=len(per_tree),
        n_cells=n_cells,
        compile_seconds=time.perf_counter() - t0,
    )
    log.info(
        "SHAP tables: %d trees in %d groups, %d cells, compiled in %.2f s",
        tables.n_trees,
        tables.n_groups,
        n_cells,
        tables.compile_seconds,
    )
    return tables
