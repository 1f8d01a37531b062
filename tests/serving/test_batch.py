"""The nightly batch on generated books: counts, rejects, atomic outputs, reruns, shadow, API parity."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.book import write_book
from serving.batch import BatchConfig, score_book
from serving.scorer import RiskScorer
from tests.conftest import DEMO_LOANS
from tests.serving.conftest import serve_env

FILES = ("scores.parquet", "watchlist.csv", "left.csv", "rejects.csv", "summary.json")


def _run(book: Path, as_of: str, out: Path, scorer: RiskScorer, shadow=None, chunk=50_000) -> dict:
    cfg = BatchConfig(book, pd.Timestamp(f"{as_of}-01"), out, "all", chunk)
    return score_book(cfg, scorer, "test-run", shadow)


def test_counts_reconcile_and_every_performing_loan_is_scored_with_reasons(
    demo_book_dir, champion_scorer, tmp_path
) -> None:
    s = _run(demo_book_dir, "2025-12", tmp_path, champion_scorer, chunk=DEMO_LOANS // 3)
    c = s["counts"]
    assert c["loans_in_book"] == DEMO_LOANS and c["rejected"] == 0
    mask = os.umask(0)
    os.umask(mask)
    assert ((tmp_path / "2025-12").resolve().stat().st_mode & 0o777) == 0o770 & ~mask  # group, never others
    assert c["scored"] + c["not_performing"] == c["loans_in_book"] and c["scored"] > DEMO_LOANS // 4
    perf = pd.read_parquet(demo_book_dir / "performance.parquet")
    open_now = perf[
        (pd.to_datetime(perf["month"]) == pd.Timestamp("2025-12-01")) & (perf["status"] == "open")
    ]
    assert (
        c["scored"] <= len(open_now) < c["scored"] + 2_000
    )  # open loans not scored: in default or probation
    scores = pd.read_parquet(tmp_path / "2025-12" / "scores.parquet")
    assert len(scores) == c["scored"] and scores["loan_id"].is_unique
    # a loan with nothing worse than typical has none, nor one whose telling values carry too little of
    # any concept's weight (about a quarter of the demo book's green loans); a flagged loan always has one
    assert scores["reason_1_text"].notna().mean() > 0.6
    assert scores.loc[scores["tier"] != "green", "reason_1_text"].notna().all()
    assert (scores["model_name"] == "loan-ews-pd-12m").all() and (scores["model_version"] == "1").all()
    assert sum(s["tiers"].values()) == c["scored"] and sum(s["grades"].values()) == c["scored"]
    watch = pd.read_csv(tmp_path / "2025-12" / "watchlist.csv")
    assert len(watch) == s["tiers"]["red"] + s["tiers"]["amber"] == s["watchlist"]["loans"]
    assert set(watch["model"]) == {"loan-ews-pd-12m:1"}  # NAME:version, as `ews report --model` takes it
    for name, part in watch.groupby("watch_list", sort=False):  # early warning first, riskiest first
        assert part["pd"].is_monotonic_decreasing and set(part["tier"]) <= {"red", "amber"}, name
    assert list(dict.fromkeys(watch["watch_list"])) == ["early_warning", "in_arrears"]
    lists = s["lists"]
    assert sum(x["loans"] for x in lists.values()) == c["scored"]
    assert sum(x["red"] + x["amber"] for x in lists.values()) == len(watch)
    for name, x in lists.items():  # each list's red and amber fill the officers' capacity at this month
        for tier in ("red", "amber"):
            want = x[f"{tier}_capacity"] * x["loans"]
            assert abs(x[tier] - want) <= max(0.2 * want, 1.0), (name, tier, x)  # 20%, or a whole loan
    assert watch["reasons"].str.len().gt(0).all()
    dpd = (tmp_path / "2025-12" / "watchlist.csv").read_text().splitlines()[1:]
    assert not [x for x in dpd if ".0," in x.split(",")[7] + ","], dpd[:3]  # days: 60, not 60.0
    assert s["watchlist"]["exposure"] == pytest.approx(watch["balance"].sum(), rel=1e-6)
    assert set(s["psi"]["features"]) == set(champion_scorer.bundle.features)
    assert all(s["psi"]["features"][f] > 0.25 for f in s["psi"]["shifted_above_0.25"])


def test_a_book_with_bad_rows_scores_the_good_loans_and_lists_every_bad_one(
    small_generated, champion_scorer, tmp_path
) -> None:
    g = small_generated.book
    as_of = g.performance["month"].max()
    open_now = g.performance[(g.performance["month"] == as_of) & (g.performance["status"] == "open")]
    a, b, c, d = open_now["loan_id"].iloc[:4]
    perf = g.performance.copy()
    perf.loc[perf.index[(perf["loan_id"] == a)][-1], "balance"] = -10.0
    loans = g.loans.copy()
    loans["product"] = loans["product"].astype(object)
    loans.loc[loans["loan_id"] == b, "product"] = "payday"
    borrowers = g.borrowers.copy()
    borrowers["borrower_type"] = borrowers["borrower_type"].astype(object)
    c_borrower = g.loans.loc[g.loans["loan_id"] == c, "borrower_id"].iloc[0]
    borrowers.loc[borrowers["borrower_id"] == c_borrower, "borrower_type"] = "alien"
    dup = perf[perf["loan_id"] == d].iloc[[-1]]
    perf = pd.concat([perf, dup], ignore_index=True)
    bad = type(g)(borrowers, loans, g.collateral, g.house_prices, perf)
    folder = tmp_path / "bad-book"
    write_book(bad, folder)
    s = _run(folder, f"{as_of:%Y-%m}", tmp_path / "out", champion_scorer)
    rejects = pd.read_csv(tmp_path / "out" / f"{as_of:%Y-%m}" / "rejects.csv").set_index("loan_id")
    assert set(rejects.index) == {a, b, c, d}
    assert rejects.loc[a, "rule"] == "performance.balance:range"
    assert rejects.loc[b, "rule"] == "loans.product:allowed"
    assert rejects.loc[c, "rule"] == "borrowers.borrower_type:allowed"
    assert rejects.loc[d, "rule"].startswith("performance.")
    counts = s["counts"]
    assert counts["rejected"] == 4
    assert counts["scored"] + counts["not_performing"] + counts["rejected"] == counts["loans_in_book"]
    assert counts["loans_in_book"] == len(g.loans)
    scores = pd.read_parquet(tmp_path / "out" / f"{as_of:%Y-%m}" / "scores.parquet")
    assert not set(scores["loan_id"]) & {a, b, c, d} and len(scores) == counts["scored"] > 100


def test_unusable_books_stop_with_a_message_and_write_nothing(
    small_book_dir, champion_scorer, tmp_path
) -> None:
    no_rows = tmp_path / "out1"
    with pytest.raises(ValueError, match="no performance rows for 2031-01"):
        _run(small_book_dir, "2031-01", no_rows, champion_scorer)
    assert not no_rows.exists() or not any(no_rows.iterdir())
    broken = tmp_path / "broken"
    shutil.copytree(small_book_dir, broken)
    (broken / "loans.parquet").unlink()
    with pytest.raises(ValueError, match="no loans table"):
        _run(broken, "2024-12", tmp_path / "out2", champion_scorer)
    assert not (tmp_path / "out2").exists()
    # found while validating a partition (in the producer thread): raised here all the same
    no_status = tmp_path / "no-status"
    shutil.copytree(small_book_dir, no_status)
    perf = pd.read_parquet(no_status / "performance.parquet").drop(columns="status")
    perf.to_parquet(no_status / "performance.parquet", index=False)
    with pytest.raises(ValueError, match=r"performance\.status \[missing_column\]"):
        _run(no_status, "2024-12", tmp_path / "out3", champion_scorer, chunk=500)
    assert not (tmp_path / "out3").exists()


def test_a_failure_while_scoring_writes_nothing_and_stops_the_reader(
    small_book_dir, champion_scorer, tmp_path
) -> None:
    class FailsOnSecondChunk(RiskScorer):
        calls = 0

        def score(self, features, reasons="all"):
            FailsOnSecondChunk.calls += 1
            if FailsOnSecondChunk.calls == 2:
                raise RuntimeError("scorer broke")
            return super().score(features, reasons)

    broken = FailsOnSecondChunk(champion_scorer.bundle, champion_scorer.top_k)
    as_of = pd.read_parquet(small_book_dir / "performance.parquet", columns=["month"])["month"].max()
    with pytest.raises(RuntimeError, match="scorer broke"):
        _run(small_book_dir, f"{pd.Timestamp(as_of):%Y-%m}", tmp_path / "out", broken, chunk=200)
    assert FailsOnSecondChunk.calls == 2
    assert not (tmp_path / "out").exists()
    assert not [t for t in threading.enumerate() if t.name == "batch-producer"]


def test_changes_since_the_previous_run_and_shadow_scoring(
    demo_book_dir, champion_scorer, demo_trained, tmp_path
):
    _run(demo_book_dir, "2025-11", tmp_path, champion_scorer)
    plain = _run(demo_book_dir, "2025-12", tmp_path, champion_scorer)
    plain_watch = (tmp_path / "2025-12" / "watchlist.csv").read_bytes()
    prev = pd.read_parquet(tmp_path / "2025-11" / "scores.parquet").set_index("loan_id")["tier"]
    watch = pd.read_csv(tmp_path / "2025-12" / "watchlist.csv")
    for r in watch.itertuples():
        before = prev.get(r.loan_id, "green")
        expect = {
            ("green", "red"): "new",
            ("green", "amber"): "new",
            ("amber", "red"): "tier up",
            ("red", "amber"): "tier down",
        }.get((before, r.tier), "unchanged")
        assert r.change == expect, (r.loan_id, before, r.tier, r.change)
    assert plain["watchlist"]["previous_run"] == "2025-11"
    assert plain["watchlist"]["new"] == (watch["change"] == "new").sum() > 0
    # every loan that left the watchlist is listed with why: green now, set aside, or not scored (a loan
    # that went into default or closed leaves with a trace, not only as a count)
    left = pd.read_csv(tmp_path / "2025-12" / "left.csv")
    now = pd.read_parquet(tmp_path / "2025-12" / "scores.parquet").set_index("loan_id")["tier"]
    assert set(left["loan_id"]) == set(prev.index[prev.isin(["red", "amber"])]) - set(watch["loan_id"])
    assert len(left) == plain["watchlist"]["left_the_list"] > 0
    for r in left.itertuples():
        assert r.now == ("now green" if r.loan_id in now.index else "not scored"), r
        assert r.previous_tier == prev[r.loan_id] and (
            r.loan_id not in now.index or now[r.loan_id] == "green"
        )
    assert (left["now"] == "not scored").any() and (left["now"] == "now green").any()
    by = plain["watchlist"]["left_by_reason"]
    assert by == {k: int((left["now"] == k).sum()) for k in ("now green", "set aside", "not scored")}
    # a shadow challenger (a weaker model on fewer features) is scored on the same loans, reported, and
    # changes nothing else
    from model.spec import resolve_windows
    from training.fit import train_model

    spec, panel, _ = demo_trained
    weak = spec.model_copy(
        update={
            "features": ["dpd_now", "max_dpd_12m", "bureau_score", "product"],
            "lightgbm": spec.lightgbm.model_copy(update={"n_estimators": 60}),
        }
    )
    w = resolve_windows(weak, pd.Timestamp("2022-01-01"), pd.Timestamp("2025-12-01"))
    other = train_model(weak, panel, w).bundle
    other.name, other.version = "loan-ews-pd-12m", "2"
    s = _run(demo_book_dir, "2025-12", tmp_path, champion_scorer, shadow=RiskScorer(other))
    sh = s["shadow"]
    assert sh["challenger_version"] == "2" and 0.5 < sh["rank_correlation"] < 0.999
    assert 0 <= sh["red_overlap"] < 1 and sh["red_champion"] == s["tiers"]["red"]
    assert (tmp_path / "2025-12" / "watchlist.csv").read_bytes() == plain_watch
    assert "model_changed" not in {x["rule"] for x in plain["warnings"]}
    # the previous month scored by another model: its changes compare two models, and the summary says so
    swapped = _run(demo_book_dir, "2025-12", tmp_path, RiskScorer(other))
    (warning,) = [x for x in swapped["warnings"] if x["rule"] == "model_changed"]
    assert warning["message"].startswith(
        "the previous run (2025-11) was scored by loan-ews-pd-12m:1, this one by loan-ews-pd-12m:2"
    )


def _cli(champion_store, book: Path, out: Path, *extra: str, session: bool = False) -> subprocess.Popen:
    """`ews score-book` in a process of its own (`session`: in a process group of its own too, which a
    terminal's Ctrl-C reaches as a whole)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ews.cli",
            "score-book",
            "--book",
            str(book),
            "--as-of",
            "2025-12",
            "--out",
            str(out),
            *extra,
        ],
        env=serve_env(champion_store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=session,
    )


def _after_first_chunk(run: subprocess.Popen) -> subprocess.Popen:
    """The batch `run` once its log says a first chunk is scored (nothing is written yet)."""
    deadline, seen = time.time() + 300, ""
    while time.time() < deadline:
        line = run.stderr.readline()
        seen += line
        if "chunk done" in line or not line:
            break
    assert "chunk done" in seen, seen
    return run


def test_killed_run_leaves_previous_outputs_and_rerun_gives_identical_files(
    champion_store, demo_book_dir, tmp_path
) -> None:
    out = tmp_path / "scores"
    first = _cli(champion_store, demo_book_dir, out)
    o, e = first.communicate(timeout=300)
    assert first.returncode == 0, e
    assert "scored" in o and "watchlist:" in o
    target = out / "2025-12"
    before = {f: (target / f).read_bytes() for f in FILES}
    # kill a second run part way: after its first chunk is scored, before anything is written
    run = _after_first_chunk(_cli(champion_store, demo_book_dir, out, "--chunk-loans", "2000"))
    os.kill(run.pid, signal.SIGKILL)
    run.wait(30)
    assert run.returncode == -signal.SIGKILL
    assert {f: (target / f).read_bytes() for f in FILES} == before
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["2025-12", "versions"]
    # the rerun completes and, same as-of and model, writes byte-identical files
    again = _cli(champion_store, demo_book_dir, out, "--chunk-loans", "2000")
    _, e = again.communicate(timeout=300)
    assert again.returncode == 0, e
    assert {f: (target / f).read_bytes() for f in FILES} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    summary = json.loads((target / "summary.json").read_text())
    import mlflow

    runs = mlflow.MlflowClient(tracking_uri=champion_store[1]).search_runs(
        [
            mlflow.MlflowClient(tracking_uri=champion_store[1])
            .get_experiment_by_name("loan-ews-batch")
            .experiment_id
        ]
    )
    runs = [r for r in runs if r.data.params["book"] == str(demo_book_dir)]  # the store is shared
    assert len(runs) >= 2 and all(r.data.tags["run_key"] == summary["run_id"] for r in runs)
    assert runs[0].data.metrics["count_scored"] == summary["counts"]["scored"]


@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
def test_a_stopped_batch_says_so_in_one_line_and_leaves_nothing_half_written(
    stop, champion_store, demo_book_dir, tmp_path
) -> None:
    """SIGTERM (a scheduler's stop) exited 143 with nothing on stderr and left a link and a version
    folder for the next run to clean up. Ctrl-C at a terminal is SIGINT to the whole process group, the
    book reader process included: one line and 130, the reader stopped by the command, not by the
    signal on its own."""
    import psutil

    out = tmp_path / "scores"
    run = _cli(champion_store, demo_book_dir, out, "--chunk-loans", "2000", session=stop == "Ctrl-C")
    run = _after_first_chunk(run)
    children = psutil.Process(run.pid).children(recursive=True)
    assert children  # the book reader runs in a process of its own
    if stop == "SIGTERM":
        run.send_signal(signal.SIGTERM)
    else:
        os.killpg(run.pid, signal.SIGINT)  # what the terminal does
    _, err = run.communicate(timeout=60)
    code, said = (
        (143, "error: stopped by SIGTERM") if stop == "SIGTERM" else (130, "error: stopped by SIGINT")
    )
    assert run.returncode == code, err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(said), err
    assert "Traceback" not in err
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(".")]
    psutil.wait_procs(children, timeout=10)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_batch_score_of_a_loan_equals_the_api_score(server, demo_book_dir, champion_scorer, tmp_path) -> None:
    s = _run(demo_book_dir, "2025-12", tmp_path, champion_scorer)
    scores = pd.read_parquet(tmp_path / "2025-12" / "scores.parquet")
    capacity = s["tier_thresholds"]["capacity_at_as_of"]
    pick = pd.concat([scores.nlargest(5, "pd"), scores.sample(10, random_state=2)])
    for r in pick.itertuples():
        api = server.post("/score_by_id", json={"loan_id": r.loan_id, "as_of": "2025-12"}).json()
        assert api["pd"] == pytest.approx(r.pd, abs=1e-9) and api["watch_list"] == r.watch_list
        t = capacity[api["watch_list"]]  # the batch's capacity thresholds give the API's PD the batch's tier
        assert ("red" if api["pd"] >= t["red"] else "amber" if api["pd"] >= t["amber"] else "green") == r.tier
        assert [x["concept"] for x in api["reasons"]] == [
            f for f in (r.reason_1_concept, r.reason_2_concept, r.reason_3_concept) if pd.notna(f)
        ]
    assert np.isfinite(scores["pd"]).all()


def test_a_loan_that_left_the_watchlist_says_why() -> None:
    """Green now, set aside this month (with its rule), or not scored (in default, closed, gone); loans
    still flagged, or green before, are not leavers."""
    from serving.batch import _left

    prev = pd.DataFrame(
        {
            "loan_id": ["A", "B", "C", "D", "E"],
            "tier": ["red", "amber", "red", "amber", "green"],
            "pd": [0.5, 0.2, 0.6, 0.3, 0.01],
            "watch_list": ["early_warning"] * 5,
        }
    )
    scores = pd.DataFrame(
        {"loan_id": ["A", "D", "E"], "tier": ["green", "red", "green"], "pd": [0.02, 0.4, 0.01]}
    )
    rejects = pd.DataFrame({"loan_id": ["B", None], "rule": ["performance.balance:range", "loans:csv_line"]})
    left = _left(("2025-11", prev), scores, rejects).set_index("loan_id")
    assert list(left.index) == ["A", "B", "C"]
    assert left["now"].tolist() == ["now green", "set aside", "not scored"]
    assert left.loc["A", "tier"] == "green" and left.loc["A", "pd"] == 0.02
    assert left.loc["B", "rule"] == "performance.balance:range" and pd.isna(left.loc["C", "rule"])
    assert left["previous_tier"].tolist() == ["red", "amber", "red"]
    assert _left(None, scores, rejects).empty
