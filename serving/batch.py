"""The nightly batch: score every performing loan of a book at one as-of month and write the watchlist.

Loans whose rows break the contract go to `rejects` with the rule they broke; the rest is scored in
chunks of loans (bounded memory) with the shared feature builder and the shared `RiskScorer`. Outputs for
an as-of month appear together or not at all: they are written to a hidden temp folder and moved into
place at the end, so a crashed or killed run leaves the previous outputs untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.book import find_table_file, replace_dir
from features.build import build_features
from features.chunks import iter_book_chunks
from features.months import as_month
from features.stability import psi
from serving.scorer import RiskScorer

log = logging.getLogger(__name__)

PSI_SHIFTED = 0.25
FLAGGED = ("red", "amber")
TIER_RANK = {"green": 0, "amber": 1, "red": 2}


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
    if perf_path.suffix == ".parquet":
        months = pq.read_table(perf_path, columns=["month"])["month"].to_pandas()
    else:
        months = pd.read_csv(perf_path, usecols=["month"])["month"]
    months = pd.to_datetime(months, errors="coerce")
    if not (months == cfg.as_of).any():
        last = months.max()
        raise ValueError(
            f"book {str(cfg.book_dir)!r} has no performance rows for {cfg.as_of:%Y-%m} "
            f"(its last month is {last:%Y-%m})"
            if pd.notna(last)
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
    return earlier[-1], pd.read_parquet(
        cfg.out_dir / earlier[-1] / "scores.parquet", columns=["loan_id", "tier"]
    )


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
) -> dict:
    """Score the book at cfg.as_of and write scores, watchlist, rejects and summary atomically.
    Returns the summary. Raises ValueError (and writes nothing) for a book unusable as a whole."""
    if cfg.reasons not in ("all", "flagged"):
        raise ValueError(f"reasons must be 'all' or 'flagged', got {cfg.reasons!r}")
    check_usable(cfg)
    clean_partial(cfg.out_dir)
    t0 = time.perf_counter()
    dpd = int(scorer.bundle.spec.get("label", {}).get("dpd_threshold", 90))
    n_loans = _count_loans(cfg.book_dir)
    scored_parts, feature_parts, reject_parts, shadow_parts = [], [], [], []
    counts = {"loans_in_book": 0, "scored": 0, "not_performing": 0, "rejected": 0, "orphan_rows_rejected": 0}
    done = 0
    for report in iter_book_chunks(cfg.book_dir, cfg.chunk_loans):
        if report.unusable:
            lines = "; ".join(p.describe() for p in report.errors if p.whole_book)
            raise ValueError(f"book {str(cfg.book_dir)!r} cannot be scored: {lines}")
        book = report.book
        assert book is not None
        ids = book.loans["loan_id"].dropna().astype(str)
        rejected = report.rejected_loans()
        in_book = ids[ids.isin(list(rejected))]
        rej = pd.DataFrame(
            {"loan_id": list(rejected), "rule": list(rejected.values())}, columns=["loan_id", "rule"]
        )
        rej["in_loans_table"] = rej["loan_id"].isin(set(ids))
        reject_parts.append(rej)
        good = book.subset_loans(ids[~ids.isin(list(rejected))])
        feats = build_features(good, cfg.as_of, dpd)
        scored = scorer.score(feats, reasons=cfg.reasons)
        if shadow is not None and len(feats):
            shadow_parts.append(shadow.score(feats, reasons="none")[["loan_id", "pd", "tier"]])
        # what a credit officer needs beside the score: who, what, where, how much
        info = good.loans[["loan_id", "borrower_id", "product", "city"]]
        bal = good.performance.loc[good.performance["month"] == cfg.as_of, ["loan_id", "balance"]]
        scored = scored.merge(info, on="loan_id", how="left").merge(bal, on="loan_id", how="left")
        scored["current_ltv"] = feats["current_ltv"].to_numpy() if "current_ltv" in feats else np.nan
        scored["dpd"] = feats["dpd_now"].to_numpy() if "dpd_now" in feats else np.nan
        scored_parts.append(scored)
        feature_parts.append(feats[scorer.bundle.features])
        counts["loans_in_book"] += len(ids)
        counts["scored"] += len(scored)
        counts["rejected"] += len(in_book)
        counts["orphan_rows_rejected"] += int((~rej["in_loans_table"]).sum())
        counts["not_performing"] += len(ids) - len(in_book) - len(scored)
        done += len(ids)
        log.info("chunk done: %d of %s loans, %d scored so far", done, n_loans, counts["scored"])
        if progress:
            progress("loans scored", done, n_loans or done)
    scores = pd.concat(scored_parts, ignore_index=True).sort_values("loan_id", ignore_index=True)
    features = pd.concat(feature_parts, ignore_index=True)
    rejects = pd.concat(reject_parts, ignore_index=True).sort_values("loan_id", ignore_index=True)
    if counts["loans_in_book"] != counts["scored"] + counts["not_performing"] + counts["rejected"]:
        raise AssertionError(f"counts do not reconcile: {counts}")  # a bug, never bad data
    for k in range(1, scorer.top_k + 1):  # numbers and categories in one column: stored as text
        v = scores[f"reason_{k}_value"]
        scores[f"reason_{k}_value"] = v.map(
            lambda x: None if x is None else (f"{x:.6g}" if isinstance(x, float) else str(x))
        )
    scores.insert(0, "run_id", run_id)
    scores["model_name"] = scorer.model_name
    scores["model_version"] = scorer.model_version
    prev = previous_run(cfg)
    watch = _watchlist(scores, scorer.top_k, prev)
    summary = _summary(cfg, scorer, scores, features, counts, watch, prev, run_id, shadow, shadow_parts)
    _write(cfg, scores, watch, rejects, summary)
    log.info(
        "scored %s loans at %s in %.1fs: %s",
        counts["scored"],
        f"{cfg.as_of:%Y-%m}",
        time.perf_counter() - t0,
        counts,
    )
    return summary


def _count_loans(book_dir: Path) -> int | None:
    p = find_table_file(book_dir, "loans")
    if p is not None and p.suffix == ".parquet":
        return pq.ParquetFile(p).metadata.num_rows
    return None


def _watchlist(scores: pd.DataFrame, k: int, prev: tuple[str, pd.DataFrame] | None) -> pd.DataFrame:
    w = scores[scores["tier"].isin(FLAGGED)].sort_values(["pd", "loan_id"], ascending=[False, True])
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
            "dpd": w["dpd"],
            "pd": w["pd"].round(6),
            "grade": w["grade"],
            "tier": w["tier"],
            "change": change,
            "previous_tier": was.fillna("green" if prev else ""),
            "reasons": _reason_text(w, k),
            "as_of": w["as_of"].dt.strftime("%Y-%m"),
            "model": w["model_name"] + "@" + w["model_version"],
        }
    )
    return out


def _summary(cfg, scorer, scores, features, counts, watch, prev, run_id, shadow, shadow_parts) -> dict:
    b = scorer.bundle
    psis = {f: psi(b.reference[f], features[f]) for f in b.features if f in b.reference}
    score_psi = psi(b.reference["__score__"], scores["pd"]) if len(scores) else float("nan")
    shifted = sorted(f for f, v in psis.items() if v > PSI_SHIFTED)
    left = 0
    if prev is not None:
        was_flagged = set(prev[1].loc[prev[1]["tier"].isin(FLAGGED), "loan_id"])
        left = len(was_flagged - set(watch["loan_id"]))
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
        "grades": {str(g): int(n) for g, n in scores["grade"].value_counts().sort_index().items()},
        "watchlist": {
            "loans": len(watch),
            "exposure": round(float(watch["balance"].sum()), 2),
            "book_exposure": round(float(scores["balance"].sum()), 2),
            "new": int((watch["change"] == "new").sum()),
            "tier_up": int((watch["change"] == "tier up").sum()),
            "tier_down": int((watch["change"] == "tier down").sum()),
            "left_the_list": left,
            "previous_run": prev[0] if prev else None,
        },
        "psi": {
            "score": round(float(score_psi), 6),
            "features": {f: round(float(v), 6) for f, v in sorted(psis.items())},
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
        sh = pd.concat(shadow_parts, ignore_index=True).set_index("loan_id").loc[scores["loan_id"]]
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


def _write(cfg: BatchConfig, scores, watch, rejects, summary) -> None:
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out_dir / f".{cfg.as_of:%Y-%m}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        scores.to_parquet(tmp / "scores.parquet", index=False)
        watch.to_csv(tmp / "watchlist.csv", index=False)
        rejects.to_csv(tmp / "rejects.csv", index=False)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
        replace_dir(tmp, cfg.target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_partial(out_dir: Path) -> list[Path]:
    """Remove temp folders a killed run left behind (never finished outputs)."""
    if not out_dir.exists():
        return []
    stale = [p for p in out_dir.iterdir() if p.name.endswith(".partial") or ".old-" in p.name]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def parse_as_of(value: str) -> pd.Timestamp:
    try:
        return as_month(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--as-of {value!r} is not a month (YYYY-MM)") from e
