"""The nightly batch: score every performing loan of a book at one as-of month and write the watchlist.

Nothing is lost: every loan of the loans table is scored, not performing at the as-of month, or in
`rejects.csv` with the first contract rule its rows broke (`loans in the book = scored + not performing
+ rejected`, checked on every run). Rows that belong to no loan of the loans table are in rejects too:
one line per unknown loan id (`in_loans_table` false; its performance rows counted in
`counts.orphan_rows_rejected`) and one line per rule for rows with no loan id at all. A CSV line that is
not a record is a `TABLE:csv_line` reject naming the line, found by the book reader, so `ews book
validate` reports the same. The rest is scored in partitions of loan ids (bounded memory) with the shared
feature builder and the shared `RiskScorer`.

The five outputs of an as-of month (`scores.parquet`, `watchlist.csv`, `left.csv`, `rejects.csv`,
`summary.json`) are
replaced as a set at one instant (`serving.outputs`: the month is a link to a complete version folder, and
every run first recovers what a killed one left), so a reader or a kill at any point sees the complete old
set or the complete new set.

`ews score-book` exits 0 when every loan was scored or is not performing, 3 when the run completed with
rejects (`rejects.csv` has lines), and 1 when it failed: the book is unusable as a whole (no loans or
performance table, no rows at the as-of month, a whole-book contract error, more rejects than
`max_reject_share`) or anything else stopped it; then nothing is written and the previous outputs stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.book import find_table_file, month_span, new_dir
from features.months import parse_month
from features.stability import PSI_SHIFTED, psi, with_history
from features.validation import check_reject_share
from model.bundle import capacity_cut
from model.spec import LISTS
from serving.outputs import publish, recover
from serving.reader import ChunkSource, ReadPlan, read_in_thread

if TYPE_CHECKING:  # the scorer's module loads LightGBM: `ews score-book` starts its reader first
    from serving.scorer import RiskScorer

log = logging.getLogger(__name__)

FLAGGED = ("red", "amber")
TIER_RANK = {"green": 0, "amber": 1, "red": 2}
MAX_LISTED_ORPHANS = 100  # orphan ids listed in summary.json (rejects.csv has them all)


@dataclass(frozen=True)
class BatchConfig:
    book_dir: Path
    as_of: pd.Timestamp
    out_dir: Path
    reasons: str = "all"  # "all" or "flagged"
    chunk_loans: int = 50_000

    @property
    def target(self) -> Path:
        return self.out_dir / f"{self.as_of:%Y-%m}"


def run_key(book_sha256: str, cfg: BatchConfig, model: str, version: str) -> str:
    """A run id that depends only on the inputs, so rerunning the same as-of gives identical files."""
    text = f"{book_sha256}|{cfg.as_of:%Y-%m}|{model}|{version}|{cfg.reasons}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_usable(cfg: BatchConfig) -> None:
    """Stop before anything is written if the book cannot be scored at all at this as-of month."""
    for table in ("borrowers", "loans", "performance"):
        if find_table_file(cfg.book_dir, table) is None:
            raise ValueError(f"book {str(cfg.book_dir)!r} has no {table} table: nothing can be scored")
    perf_path = find_table_file(cfg.book_dir, "performance")
    assert perf_path is not None
    try:
        has, first, last = month_span(perf_path, cfg.as_of)
    except KeyError:
        raise ValueError(
            f"book {str(cfg.book_dir)!r} has no performance.month column: nothing can be scored"
        ) from None
    if not has:
        raise ValueError(
            f"book {str(cfg.book_dir)!r} has no performance rows for {cfg.as_of:%Y-%m} "
            f"(its months are {first:%Y-%m}..{last:%Y-%m})"
            if first is not None and last is not None
            else f"book {str(cfg.book_dir)!r} has no readable performance months"
        )


def previous_run(cfg: BatchConfig) -> tuple[str, pd.DataFrame] | None:
    """The latest earlier as-of folder's scores (loan id and tier), for 'what changed'."""
    if not cfg.out_dir.exists():
        return None
    earlier = sorted(
        p.name
        for p in cfg.out_dir.iterdir()
        if p.is_dir()
        and re.fullmatch(r"\d{4}-\d{2}", p.name)
        and p.name < f"{cfg.as_of:%Y-%m}"
        and (p / "scores.parquet").exists()
    )
    if not earlier:
        return None
    path = cfg.out_dir / earlier[-1] / "scores.parquet"
    wanted = ("loan_id", "tier", "pd", "watch_list", "model_name", "model_version")
    cols = [c for c in wanted if c in pq.read_schema(path).names]
    return earlier[-1], pd.read_parquet(path, columns=cols)


def model_change(
    prev: tuple[str, pd.DataFrame] | None, name: str, version: str
) -> tuple[str, str, int] | None:
    """A warning when the previous as-of was scored by another model: its watchlist changes (new, tier up,
    tier down) then compare two models, not only the loans."""
    if prev is None or "model_version" not in prev[1] or prev[1].empty:
        return None
    before = {f"{n}:{v}" for n, v in prev[1][["model_name", "model_version"]].drop_duplicates().to_numpy()}
    now = f"{name}:{version}"
    if before == {now}:
        return None
    return (
        "model_changed",
        f"the previous run ({prev[0]}) was scored by {', '.join(sorted(before))}, this one by {now}: "
        "its new, tier up and tier down compare two models, not only the loans",
        0,
    )


def unseen_categories(training: dict, features: pd.DataFrame) -> tuple[tuple[str, str, int], ...]:
    """Warnings for scored loans whose category the model never saw: training left the feature out because
    every training loan shared one value (a card model scoring a book of mortgages too), so the model
    cannot tell these loans apart from that value and their PDs are extrapolations."""
    out = []
    for f, value in sorted((training.get("constant_categories") or {}).items()):
        if f not in features:
            continue
        col = features[f].astype("object")
        other = col.notna() & (col.astype(str) != value)
        if n := int(other.sum()):
            seen = ", ".join(sorted(col[other].astype(str).unique())[:5])
            out.append(
                (
                    f"unseen_{f}",
                    f"{n:,} scored loans with {f} {seen}: the model was trained on {f} {value} alone "
                    "(it left the feature out as constant), so their PDs extrapolate from other loans",
                    0,  # a count of loans, said in the message (the warnings' `rows` count rows)
                )
            )
    return tuple(out)


def _reason_text(scored: pd.DataFrame, k: int) -> pd.Series:
    parts = [scored[f"reason_{i}_text"] for i in range(1, k + 1)]
    joined = parts[0].fillna("")
    for p in parts[1:]:
        joined = joined.str.cat(p.fillna(""), sep=" | ").str.rstrip(" |")
    return joined


def score_book(
    cfg: BatchConfig,
    scorer: RiskScorer,
    run_id: str,
    shadow: RiskScorer | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    max_reject_share: float = 1.0,
    source: ChunkSource | None = None,
) -> dict:
    """Score the book at cfg.as_of and write scores, watchlist, rejects and summary atomically.
    Returns the summary. Raises ValueError (and writes nothing) for a book unusable as a whole, or one with
    more than `max_reject_share` of its loans breaking the contract. First, whatever happens next, it
    recovers the output folder from a run that was killed (`serving.outputs.recover`).

    `source`: where the book's validated, featurised partitions come from (`serving.reader`): by default
    a reader thread in this process; the command line passes the reader process it started before MLflow
    and the model loaded. It is called (with the model's label rule) after the book is found usable, and
    closed whatever happens."""
    check_writable(cfg.out_dir)
    recover(cfg.out_dir)
    if cfg.reasons not in ("all", "flagged"):
        raise ValueError(f"reasons must be 'all' or 'flagged', got {cfg.reasons!r}")
    check_usable(cfg)
    t0 = time.perf_counter()
    source = source or read_in_thread(ReadPlan(cfg.book_dir, cfg.as_of, cfg.chunk_loans))
    chunks = source(scorer.bundle.model_spec.label.rule)  # the reader builds features from here on
    with contextlib.closing(chunks) as stream:  # the reader stops on any error here too
        # the champion's SHAP tables are verified (their kernel loaded) while the reader works; the
        # shadow challenger is scored without reasons and never needs its tables
        scorer.bundle.shap_tables()
        n_loans = _count_loans(cfg.book_dir)
        scored_parts, feature_parts, reject_parts, shadow_parts = [], [], [], []
        warnings: dict[str, dict] = {}
        counts = {
            "loans_in_book": 0,
            "scored": 0,
            "not_performing": 0,
            "rejected": 0,
            "orphan_rows_rejected": 0,
            "orphan_ids_rejected": 0,
        }
        for chunk in stream:
            feats = chunk.features
            scored = scorer.score(feats, reasons=cfg.reasons)
            if shadow is not None and len(feats):
                shadow_parts.append(
                    shadow.score(feats, reasons="none")[["loan_id", "pd", "watch_list", "tier"]]
                )
            for c in chunk.info.columns[1:]:  # same rows, same order as the features
                scored[c] = chunk.info[c].to_numpy()
            scored_parts.append(scored)
            feature_parts.append(feats)
            reject_parts.append(chunk.rejects)
            _add_warnings(warnings, chunk.warnings)
            counts["loans_in_book"] += chunk.loans
            counts["scored"] += len(scored)
            counts["rejected"] += chunk.rejected_in_book
            counts["orphan_rows_rejected"] += chunk.orphan_rows
            counts["orphan_ids_rejected"] += int(
                (chunk.rejects["loan_id"].notna() & ~chunk.rejects["in_loans_table"]).sum()
            )
            counts["not_performing"] += chunk.loans - chunk.rejected_in_book - len(scored)
            done = counts["loans_in_book"]
            log.info("chunk done: %d of %s loans, %d scored so far", done, n_loans, counts["scored"])
            if progress:
                progress("loans scored", done, n_loans or done)
    scores = pd.concat(scored_parts, ignore_index=True).sort_values("loan_id", ignore_index=True)
    features = pd.concat(feature_parts, ignore_index=True).sort_values("loan_id", ignore_index=True)
    thresholds = capacity_tiers(scores, scorer.bundle.model_spec.tiers)
    if cfg.reasons == "flagged":  # loans the capacity tiers flag and the model's thresholds did not
        _add_reasons(scores, features, scorer)
    rejects = pd.concat(reject_parts, ignore_index=True).sort_values(
        ["loan_id", "rule"], ignore_index=True, na_position="last"
    )
    if counts["loans_in_book"] != counts["scored"] + counts["not_performing"] + counts["rejected"]:
        raise AssertionError(f"counts do not reconcile: {counts}")  # a bug, never bad data
    check_reject_share(
        counts["rejected"], counts["loans_in_book"], max_reject_share, f"book {str(cfg.book_dir)!r}"
    )
    for k in range(1, scorer.top_k + 1):  # numbers and categories in one column: stored as text
        scores[f"reason_{k}_value"] = _value_text(scores[f"reason_{k}_value"])
    scores.insert(0, "run_id", run_id)
    scores["model_name"] = scorer.model_name
    scores["model_version"] = scorer.model_version
    prev = previous_run(cfg)
    if changed := model_change(prev, scorer.model_name, scorer.model_version):
        _add_warnings(warnings, (changed,))
    _add_warnings(warnings, unseen_categories(scorer.bundle.training, features))
    watch = _watchlist(scores, scorer.top_k, prev)
    left = _left(prev, scores, rejects)
    summary = _summary(cfg, scorer, scores, features, counts, watch, left, prev, run_id, shadow, shadow_parts)
    summary["rejects"] = _reject_summary(rejects)
    summary["warnings"] = [warnings[k] for k in sorted(warnings)]
    summary["tier_thresholds"] = {
        "capacity_at_as_of": thresholds,
        "calibration_window": scorer.bundle.tier_thresholds,
        "flagged_by_calibration_thresholds": int(
            (scorer.bundle.tier(scores["pd"].to_numpy(), scores["watch_list"].to_numpy()) != "green").sum()
        ),
    }
    _write(cfg, scores, watch, left, rejects, summary)
    log.info(
        "scored %s loans at %s in %.1fs: %s",
        counts["scored"],
        f"{cfg.as_of:%Y-%m}",
        time.perf_counter() - t0,
        counts,
    )
    return summary


def capacity_tiers(scores: pd.DataFrame, tiers) -> dict[str, dict[str, float]]:
    """Re-tier the scored book to its review capacity: red is the riskiest `red_share` and amber the next
    `amber_share` of each list at this as-of month, so the watchlist always fits the officers' capacity
    whatever the cycle did to the PD level since the calibration window. Returns the PD thresholds used
    (a service given them tiers a loan as the batch did); infinite where a list is too small for one loan
    of the tier (35 loans hold no 1% red: no PD reaches it; summary.json says null). Ties at a threshold
    all go up."""
    out: dict[str, dict[str, float]] = {}
    tier = np.full(len(scores), "green", dtype=object)
    pd_ = scores["pd"].to_numpy()
    for name in LISTS:
        on = (scores["watch_list"] == name).to_numpy()
        p = pd_[on]
        if len(p) == 0:
            continue
        out[name] = t = capacity_cut(p, tiers.red_share, tiers.amber_share)
        tier[on] = np.where(p >= t["red"], "red", np.where(p >= t["amber"], "amber", "green"))
    scores["tier"] = tier.astype(str)
    return out


def _add_reasons(scores: pd.DataFrame, features: pd.DataFrame, scorer: RiskScorer) -> None:
    """Reasons for flagged loans that have none yet (flagged only after re-tiering to capacity)."""
    need = (scores["tier"] != "green").to_numpy() & scores["reason_1_concept"].isna().to_numpy()
    if not need.any():
        return
    again = scorer.score(features[need].reset_index(drop=True), reasons="all")
    cols = [c for c in again.columns if c.startswith("reason_")]
    idx = np.flatnonzero(need)
    for c in cols:
        col = scores[c].astype(object) if scores[c].dtype != float else scores[c]
        col.iloc[idx] = again[c].to_numpy()
        scores[c] = col


def _value_text(values: pd.Series) -> pd.Series:
    """Reason values as text: numbers to 6 significant digits, categories as they are, missing as None."""
    texts = {v: (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in set(values.dropna())}
    return values.map(texts).astype(object).where(values.notna(), None)


def _count_loans(book_dir: Path) -> int | None:
    p = find_table_file(book_dir, "loans")
    if p is not None and p.suffix == ".parquet":
        return pq.ParquetFile(p).metadata.num_rows
    return None


LEFT_REASONS = ("now green", "set aside", "not scored")


def _left(prev: tuple[str, pd.DataFrame] | None, scores: pd.DataFrame, rejects: pd.DataFrame) -> pd.DataFrame:
    """The loans red or amber at the previous as-of that are not now, and why: `now green` (scored, below
    the tiers), `set aside` (their rows broke the contract this month: `rejects.csv` says which rule), or
    `not scored` (not performing at this as-of: in default, at or past the threshold, in probation or
    closed; or gone from the book). A loan that defaulted leaves the watchlist as `not scored`, never
    without a trace."""
    cols = ["loan_id", "previous_tier", "previous_pd", "previous_list", "now", "pd", "tier", "rule"]
    if prev is None or "tier" not in prev[1]:
        return pd.DataFrame(columns=cols)
    was = prev[1][prev[1]["tier"].isin(FLAGGED)]
    now = scores.set_index("loan_id")
    gone = was[~was["loan_id"].isin(now.index[now["tier"].isin(FLAGGED)])].sort_values("loan_id")
    ids = gone["loan_id"]
    rule = rejects.dropna(subset=["loan_id"]).drop_duplicates("loan_id").set_index("loan_id")["rule"]
    scored = ids.isin(now.index).to_numpy()
    set_aside = ids.isin(rule.index).to_numpy() & ~scored
    return pd.DataFrame(
        {
            "loan_id": ids.to_numpy(),
            "previous_tier": gone["tier"].to_numpy(),
            "previous_pd": gone["pd"].round(6).to_numpy() if "pd" in gone else np.nan,
            "previous_list": gone["watch_list"].to_numpy() if "watch_list" in gone else None,
            "now": np.where(scored, LEFT_REASONS[0], np.where(set_aside, LEFT_REASONS[1], LEFT_REASONS[2])),
            "pd": now["pd"].reindex(ids).round(6).to_numpy(),
            "tier": now["tier"].reindex(ids).to_numpy(),
            "rule": rule.reindex(ids).where(set_aside).to_numpy(),
        },
        columns=cols,
    )


def _watchlist(scores: pd.DataFrame, k: int, prev: tuple[str, pd.DataFrame] | None) -> pd.DataFrame:
    w = scores[scores["tier"].isin(FLAGGED)]
    w = w.assign(_early=(w["watch_list"] == LISTS[0]).astype(int)).sort_values(
        ["_early", "pd", "loan_id"], ascending=[False, False, True]
    )
    w = w.reset_index(drop=True)
    before = prev[1].set_index("loan_id")["tier"] if prev else pd.Series(dtype=object)
    was = w["loan_id"].map(before)
    now_rank, was_rank = w["tier"].map(TIER_RANK), was.map(TIER_RANK).fillna(0)
    change = np.where(
        was.isna() | (was_rank == 0),
        "new",
        np.where(now_rank > was_rank, "tier up", np.where(now_rank < was_rank, "tier down", "unchanged")),
    )
    if prev is None:
        change = np.full(len(w), "first run")
    out = pd.DataFrame(
        {
            "rank": np.arange(1, len(w) + 1),
            "loan_id": w["loan_id"],
            "borrower_id": w["borrower_id"],
            "product": w["product"],
            "city": w["city"],
            "balance": w["balance"].round(2),
            "current_ltv": w["current_ltv"].round(4),
            "utilisation": w["utilisation"].round(4),
            "dpd": w["dpd"].round().astype("Int64"),  # days: 60, not 60.0
            "pd": w["pd"].round(6),
            "grade": w["grade"],
            "watch_list": w["watch_list"],
            "tier": w["tier"],
            "change": change,
            "previous_tier": was.fillna("green" if prev else ""),
            "reasons": _reason_text(w, k),
            "as_of": w["as_of"].dt.strftime("%Y-%m"),
            "model": w["model_name"] + ":" + w["model_version"],  # NAME:version, as every command takes it
        }
    )
    return out


def _lists(scores: pd.DataFrame, tiers) -> dict[str, dict]:
    """Per list (early warning, in arrears): loans, red and amber, and their shares against capacity."""
    out = {}
    for name in LISTS:
        on = scores["watch_list"] == name
        n = int(on.sum())
        red, amber = (
            int((on & (scores["tier"] == "red")).sum()),
            int((on & (scores["tier"] == "amber")).sum()),
        )
        out[name] = {
            "loans": n,
            "red": red,
            "amber": amber,
            "red_share": red / n if n else 0.0,
            "amber_share": amber / n if n else 0.0,
            "red_capacity": tiers.red_share,
            "amber_capacity": tiers.amber_share,
        }
    return out


def _summary(cfg, scorer, scores, features, counts, watch, left, prev, run_id, shadow, shadow_parts) -> dict:
    b = scorer.bundle
    hist = features.get("history_months")
    psis = {  # vs training, like for like: a feature that needs history on the rows that have it
        f: psi(b.reference[f], with_history(features[f], hist, b.catalog[f].history))
        for f in b.features
        if f in b.reference
    }
    score_psi = psi(b.reference["__score__"], scores["pd"]) if len(scores) else float("nan")
    shifted = sorted(f for f, v in psis.items() if v > PSI_SHIFTED)
    s = {
        "run_id": run_id,
        "as_of": f"{cfg.as_of:%Y-%m}",
        "book": str(cfg.book_dir),
        "model": {"name": scorer.model_name, "version": scorer.model_version},
        "reasons": cfg.reasons,
        "counts": counts,
        "reconciles": counts["loans_in_book"]
        == counts["scored"] + counts["not_performing"] + counts["rejected"],
        "tiers": {t: int((scores["tier"] == t).sum()) for t in ("red", "amber", "green")},
        "lists": _lists(scores, b.model_spec.tiers),
        "grades": {str(g): int(n) for g, n in scores["grade"].value_counts().sort_index().items()},
        "watchlist": {
            "loans": len(watch),
            "exposure": round(float(watch["balance"].sum()), 2),
            "book_exposure": round(float(scores["balance"].sum()), 2),
            "new": int((watch["change"] == "new").sum()),
            "tier_up": int((watch["change"] == "tier up").sum()),
            "tier_down": int((watch["change"] == "tier down").sum()),
            "left_the_list": len(left),
            "left_by_reason": {r: int((left["now"] == r).sum()) for r in LEFT_REASONS},
            "previous_run": prev[0] if prev else None,
        },
        "psi": {
            "score": round(float(score_psi), 6),
            # None where nothing could be compared (no scored row with the history a feature needs)
            "features": {f: round(float(v), 6) if v == v else None for f, v in sorted(psis.items())},
            "shifted_above_0.25": shifted,
        },
        "mean_pd": round(float(scores["pd"].mean()), 6) if len(scores) else None,
        "model_test_window": {
            "mean_pd": b.test_metrics.get("mean_pd"),
            "default_rate": b.test_metrics.get("default_rate"),
            "window": b.windows.get("test"),
        },
        "shadow": None,
    }
    if shadow is not None and shadow_parts:
        sh = pd.concat(shadow_parts, ignore_index=True)
        capacity_tiers(sh, shadow.bundle.model_spec.tiers)  # the same capacity rule as the champion's
        sh = sh.set_index("loan_id").loc[scores["loan_id"]]
        a, c = scores["pd"].to_numpy(), sh["pd"].to_numpy()
        red_a = set(scores.loc[scores["tier"] == "red", "loan_id"])
        red_c = set(sh.index[sh["tier"] == "red"])
        s["shadow"] = {
            "challenger_version": shadow.model_version,
            "rank_correlation": round(float(pd.Series(a).rank().corr(pd.Series(c).rank())), 6),
            "red_overlap": round(len(red_a & red_c) / max(len(red_a | red_c), 1), 6),
            "red_champion": len(red_a),
            "red_challenger": len(red_c),
            "challenger_mean_pd": round(float(c.mean()), 6),
        }
    return s


def _add_warnings(total: dict[str, dict], found: tuple[tuple[str, str, int], ...]) -> None:
    """Validation warnings over the partitions: rows summed by rule; a problem of a whole table (no
    rows: each partition sees the same one) once."""
    for rule, message, rows in found:
        w = total.setdefault(rule, {"rule": rule, "message": message, "rows": 0})
        w["rows"] += rows


def _reject_summary(rejects: pd.DataFrame) -> dict:
    """What rejects.csv holds, by rule, and the loan ids that are not in the loans table."""
    orphans = rejects.loc[rejects["loan_id"].notna() & ~rejects["in_loans_table"], "loan_id"]
    return {
        "lines": len(rejects),
        "by_rule": {str(r): int(n) for r, n in rejects["rule"].value_counts().sort_index().items()},
        "orphan_ids": orphans.head(MAX_LISTED_ORPHANS).tolist(),
        "orphan_ids_listed_all": len(orphans) <= MAX_LISTED_ORPHANS,
    }


def _finite(obj):
    """The summary with every NaN or infinite number as null: JSON has neither (a PSI of a book with no
    scored loan, the rank correlation of PDs that are all equal), and other tools refuse a file with them."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating) and not np.isfinite(obj):
        return None
    return obj


def _write(cfg: BatchConfig, scores, watch, left, rejects, summary) -> None:
    """The five files as one new version of the month folder, swapped in at one instant."""
    text = json.dumps(_finite(summary), indent=1, sort_keys=True, default=str, allow_nan=False)
    writers: dict[str, Callable[[Path], None]] = {
        "scores.parquet": lambda p: scores.to_parquet(p, index=False),
        "watchlist.csv": lambda p: watch.to_csv(p, index=False),
        "left.csv": lambda p: left.to_csv(p, index=False),
        "rejects.csv": lambda p: rejects.to_csv(p, index=False),
        "summary.json": lambda p: p.write_text(text),
    }
    try:
        publish(cfg.out_dir, f"{cfg.as_of:%Y-%m}", writers)
    except OSError as e:  # a full disk says neither file nor folder by itself
        raise OSError(e.errno, f"writing the outputs to {cfg.target} failed: {e.strerror or e}") from e


def check_writable(out_dir: Path) -> None:
    """Fail before the book is read if the output folder cannot take a new version (read-only, a
    file in its place): found only after all the scoring otherwise."""
    try:
        if out_dir.exists():
            new_dir(out_dir, ".write-check-").rmdir()  # a real try: modes do not stop root, mounts do
            return
        parent = next(p for p in out_dir.parents if p.exists())  # a failed run creates no folder
        if not parent.is_dir():
            raise NotADirectoryError(20, f"{parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(13, f"{parent} is not writable")
    except OSError as e:
        raise OSError(f"the output folder {out_dir} cannot be written: {e.strerror or e}") from e


def parse_as_of(value: str) -> pd.Timestamp:
    try:
        return parse_month(value)
    except ValueError as e:
        raise ValueError(f"--as-of {e}") from e


def log_batch_run(
    cfg: BatchConfig,
    summary: dict,
    book_sha256: str,
    key: str,
    seconds: float,
    pipeline: float,
    artifact_root,
    reader_peak_gib: float | None = None,
) -> None:
    """One run of the `loan-ews-batch` MLflow experiment per batch: inputs, counts, drift, timings, and the
    peak memory of the reader process when one read the book (`serving.reader.ProcessReader`)."""
    import mlflow

    from model.registry import ensure_experiment

    exp = ensure_experiment("loan-ews-batch", artifact_root)
    c = summary["counts"]
    with mlflow.start_run(experiment_id=exp, run_name=f"score-book-{cfg.as_of:%Y-%m}"):
        mlflow.set_tags({"loan_ews.kind": "score_book", "run_key": key})
        mlflow.log_params(
            {
                "book": str(cfg.book_dir),
                "book_sha256": book_sha256,
                "as_of": f"{cfg.as_of:%Y-%m}",
                "model": summary["model"]["name"],
                "model_version": summary["model"]["version"],
                "reasons": cfg.reasons,
                "chunk_loans": cfg.chunk_loans,
                "shadow_version": summary["shadow"]["challenger_version"] if summary["shadow"] else "",
            }
        )
        metrics = {
            **{f"count_{k}": v for k, v in c.items()},
            "psi_score": summary["psi"]["score"],
            "mean_pd": summary["mean_pd"] or 0.0,
            "watchlist_loans": summary["watchlist"]["loans"],
            "watchlist_exposure": summary["watchlist"]["exposure"],
            "seconds": seconds,
            "loans_per_second": c["scored"] / seconds,
            "pipeline_seconds": pipeline,
            "pipeline_loans_per_second": c["scored"] / pipeline,
        }
        # each process's own peak (the OS reports a parent's peak as the larger of its own and its
        # children's, so a caller cannot tell them apart)
        metrics["scoring_peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        if reader_peak_gib is not None:
            metrics["reader_peak_gib"] = reader_peak_gib
        for name, lst in summary["lists"].items():
            metrics.update({f"{name}_red_share": lst["red_share"], f"{name}_amber_share": lst["amber_share"]})
        metrics.update({f"psi_{f}": v for f, v in summary["psi"]["features"].items()})
        if summary["shadow"]:
            metrics["shadow_rank_correlation"] = summary["shadow"]["rank_correlation"]
            metrics["shadow_red_overlap"] = summary["shadow"]["red_overlap"]
        # a figure with no value (a feature no loan has at an early as-of month: PSI None) is left out:
        # MLflow refuses the whole batch of metrics for one missing value
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        mlflow.log_artifact(str(cfg.target / "summary.json"))
