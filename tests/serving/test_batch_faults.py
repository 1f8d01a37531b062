"""Nothing lost in the nightly batch (issue 14): every row that cannot be scored is in rejects with its rule
(orphan rows, malformed CSV lines, a book broken in many ways at once), the month's four outputs are a
complete set at every instant (kill -9 at each step of the swap, then a rerun), and `ews score-book` says
what happened in its exit code."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ews.cli import app
from features.book import write_book
from features.validation import validate_folder
from serving import outputs
from serving.batch import BatchConfig, score_book
from serving.scorer import RiskScorer
from tests.serving.conftest import serve_env

FILES = ("scores.parquet", "watchlist.csv", "left.csv", "rejects.csv", "summary.json")
REPO = Path(__file__).resolve().parents[2]
CHUNK = 400  # the small book's 1,500 loans in four partitions
runner = CliRunner()


def _run(book: Path, as_of: str, out: Path, scorer: RiskScorer, reasons: str = "all") -> dict:
    cfg = BatchConfig(book, pd.Timestamp(f"{as_of}-01"), out, reasons, CHUNK)
    return score_book(cfg, scorer, "test-run")


def _files(folder: Path) -> dict[str, bytes]:
    return {f: (folder / f).read_bytes() for f in FILES if (folder / f).exists()}


def _hidden(out: Path) -> list[str]:
    """Everything a finished run must not leave: hidden entries in the output folder or its versions."""
    return [
        str(p.relative_to(out))
        for d in (out, out / "versions")
        if d.is_dir()
        for p in d.iterdir()
        if p.name.startswith(".")
    ]


@pytest.fixture(scope="module")
def as_of(small_generated) -> str:
    return f"{small_generated.book.last_month:%Y-%m}"


@pytest.fixture(scope="module")
def clean(small_book_dir, as_of, champion_scorer, tmp_path_factory) -> tuple[dict, dict[str, bytes]]:
    """The clean small book scored once: its summary and its four files."""
    out = tmp_path_factory.mktemp("clean")
    summary = _run(small_book_dir, as_of, out, champion_scorer)
    return summary, _files(out / as_of)


# ---------------------------------------------------------------------------------------------- rejects


def _orphan_rows(perf: pd.DataFrame) -> pd.DataFrame:
    """Rows of loan ids the loans table does not have: below, between and above its ids (L000001..)."""
    ids = {"A-below-every-id": 3, "L000700x-between": 2, "ZZZ-above-every-id": 1}
    return pd.concat([perf.iloc[:n].assign(loan_id=lid) for lid, n in ids.items()], ignore_index=True)


def test_orphan_rows_are_rejects_one_line_per_id_counted_as_rows(
    small_generated, as_of, champion_scorer, clean, tmp_path
) -> None:
    b = small_generated.book
    orphans = _orphan_rows(b.performance)
    book = write_book(
        type(b)(b.borrowers, b.loans, b.collateral, b.house_prices, pd.concat([b.performance, orphans])),
        tmp_path / "book",
    )
    s = _run(book, as_of, tmp_path / "out", champion_scorer)
    rejects = pd.read_csv(tmp_path / "out" / as_of / "rejects.csv", keep_default_na=False)
    assert sorted(rejects["loan_id"]) == sorted(orphans["loan_id"].unique())  # one line per id
    assert set(rejects["rule"]) == {"performance.loan_id:foreign_key"}
    assert not rejects["in_loans_table"].astype(bool).any()
    c = s["counts"]
    assert c["orphan_rows_rejected"] == len(orphans) == 6 and c["orphan_ids_rejected"] == 3
    assert sorted(s["rejects"]["orphan_ids"]) == sorted(orphans["loan_id"].unique())
    assert s["rejects"]["lines"] == 3 and c["rejected"] == 0
    assert c["scored"] == clean[0]["counts"]["scored"]  # orphans take nothing from the loans


@dataclass
class Broken:
    folder: Path
    rules: dict[str, str]  # loan id (of the loans table) -> the rule it must be rejected with
    orphans: dict[str, int]  # loan id not in the loans table -> its performance rows
    rows_of_no_loan: int  # performance rows with no loan id


def _broken_book(small_book_dir: Path, as_of: str, folder: Path) -> Broken:
    """The small book as CSV, broken in many ways at once, each on loans of its own that are open and
    current at the as-of month (so each would have been scored)."""
    shutil.copytree(small_book_dir, folder)
    tables = {}
    for name in ("borrowers", "loans", "collateral", "house_prices", "performance"):
        p = folder / f"{name}.parquet"
        tables[name] = pd.read_parquet(p)
        p.unlink()
        for c in tables[name].columns:  # as the text a CSV holds, so any value can be written
            col = tables[name][c]
            text = (
                col.dt.strftime("%Y-%m-%d") if pd.api.types.is_datetime64_any_dtype(col) else col.astype(str)
            )
            tables[name][c] = text.where(col.notna(), "").astype(object)
    perf, loans, borrowers = tables["performance"], tables["loans"], tables["borrowers"]
    now = perf[(perf["month"] == f"{as_of}-01") & (perf["status"] == "open") & (perf["days_past_due"] == "0")]
    pick = iter(now["loan_id"].iloc[::37])  # spread over the id range and the partitions
    rules: dict[str, str] = {}

    def row_of(lid: str, last: bool = True) -> int:
        rows = perf.index[perf["loan_id"] == lid]
        return rows[-1] if last else rows[2]

    a = next(pick)  # a wrong type
    perf.loc[row_of(a), "days_past_due"] = "ten"
    rules[a] = "performance.days_past_due:type"
    b = next(pick)  # a value outside the allowed ones
    loans.loc[loans["loan_id"] == b, "product"] = "payday"
    rules[b] = "loans.product:allowed"
    c = next(pick)  # broken foreign keys, one with a NUL in the id
    loans.loc[loans["loan_id"] == c, "borrower_id"] = "B-missing\x00"
    rules[c] = "loans.borrower_id:foreign_key"
    c2 = next(pick)
    loans.loc[loans["loan_id"] == c2, "collateral_id"] = "C-missing"
    rules[c2] = "loans.collateral_id:foreign_key"
    d = next(pick)  # duplicate rows: of performance and of the loans table
    perf = pd.concat([perf, perf.loc[[row_of(d)]]], ignore_index=True)
    rules[d] = "performance.loan_id+month:unique"
    d2 = next(pick)
    loans = pd.concat([loans, loans[loans["loan_id"] == d2]], ignore_index=True)
    rules[d2] = "loans.loan_id:unique"
    e = next(pick)  # a missing month
    perf.loc[row_of(e, last=False), "month"] = ""
    rules[e] = "performance.month:not_null"
    j = next(pick)  # a borrower outside the allowed types
    bid = loans.loc[loans["loan_id"] == j, "borrower_id"].iloc[0]
    borrowers.loc[borrowers["borrower_id"] == bid, "borrower_type"] = "alien"
    rules[j] = "borrowers.borrower_type:allowed"
    k = next(pick)  # a negative balance
    perf.loc[row_of(k), "balance"] = "-10"
    rules[k] = "performance.balance:range"
    f = next(pick)  # a NUL in the loan id of one early row: that row is an orphan, the loan is fine
    nul_id = f + "\x00"
    perf.loc[row_of(f, last=False), "loan_id"] = nul_id
    no_id = perf.loc[[row_of(next(pick), last=False)]].assign(loan_id="")  # a row with no loan id
    perf = pd.concat([perf, _orphan_rows(perf), no_id], ignore_index=True)
    orphans = {"A-below-every-id": 3, "L000700x-between": 2, "ZZZ-above-every-id": 1, nul_id: 1}
    tables.update(performance=perf, loans=loans, borrowers=borrowers)
    for name, df in tables.items():
        df.to_csv(folder / f"{name}.csv", index=False)
    # malformed lines: too many fields, too few, a quote never closed, and one of no known loan
    path = folder / "performance.csv"
    lines = path.read_bytes().split(b"\n")
    for rule_loan, edit in (
        (next(pick), lambda x: x + b",surplus"),
        (next(pick), lambda x: b",".join(x.split(b",")[:3])),
        (next(pick), lambda x: x.replace(b",open,", b',"open,')),
    ):
        at = max(i for i, x in enumerate(lines) if x.startswith(rule_loan.encode() + b","))
        lines[at] = edit(lines[at])  # its as-of line, the last of the loan: the next loan's line follows
        rules[rule_loan] = "performance:csv_line"
    lines.insert(-1, b"garbage line,with,three fields")
    orphans["garbage line"] = 1
    path.write_bytes(b"\n".join(lines))
    lines = (folder / "loans.csv").read_bytes().split(b"\n")
    g = next(pick)
    at = next(i for i, x in enumerate(lines) if x.startswith(g.encode() + b","))
    lines[at] += b",surplus"
    rules[g] = "loans:csv_line"
    (folder / "loans.csv").write_bytes(b"\n".join(lines))
    return Broken(folder, rules, orphans, rows_of_no_loan=1)


def test_a_book_broken_in_many_ways_at_once_loses_nothing(
    small_book_dir, as_of, champion_scorer, clean, tmp_path
) -> None:
    broken = _broken_book(small_book_dir, as_of, tmp_path / "book")
    out = tmp_path / "out"
    s = _run(broken.folder, as_of, out, champion_scorer)
    rejects = pd.read_csv(out / as_of / "rejects.csv", keep_default_na=False, dtype=str)
    in_table = rejects[rejects["in_loans_table"] == "True"].set_index("loan_id")
    assert in_table["rule"].to_dict() == broken.rules
    csv_lines = in_table.loc[in_table["rule"] == "performance:csv_line", "detail"]
    assert csv_lines.str.fullmatch(r"line \d+ (has \d+ fields where the header has 8|has a quote .*)").all()
    orphan = rejects[(rejects["in_loans_table"] == "False") & (rejects["loan_id"] != "")]
    assert sorted(orphan["loan_id"]) == sorted(broken.orphans)  # one line per id, the NUL id included
    assert orphan.set_index("loan_id").loc["garbage line", "rule"] == "performance:csv_line"
    no_id = rejects[rejects["loan_id"] == ""]
    assert no_id["rule"].tolist() == ["performance.loan_id:not_null"]
    c = s["counts"]
    assert c["orphan_rows_rejected"] == sum(broken.orphans.values()) + broken.rows_of_no_loan
    assert c["orphan_ids_rejected"] == len(broken.orphans)
    assert s["rejects"]["lines"] == len(rejects) == len(broken.rules) + len(broken.orphans) + 1
    # every loan an ERROR of `ews book validate` touches is in rejects
    report = validate_folder(broken.folder)
    assert {lid for p in report.errors for lid in p.loan_ids} == set(rejects["loan_id"]) - {""}
    # reconciled against the clean book: every loan is scored, not performing or rejected, and only the
    # broken ones moved
    clean_summary, clean_files = clean
    scores = pd.read_parquet(out / as_of / "scores.parquet")
    clean_scores = pd.read_parquet(io.BytesIO(clean_files["scores.parquet"]))
    rejected = set(broken.rules)
    assert set(scores["loan_id"]) == set(clean_scores["loan_id"]) - rejected
    assert c["loans_in_book"] == clean_summary["counts"]["loans_in_book"] == 1500
    assert c["rejected"] == len(rejected)
    assert c["not_performing"] == clean_summary["counts"]["not_performing"]
    assert c["loans_in_book"] == c["scored"] + c["not_performing"] + c["rejected"]


# --------------------------------------------------------------------------------- the swap under kill -9

CRASH = """
import os, signal, sys
from pathlib import Path
from serving import outputs

out, month, source, point = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]


def die(at):
    if at == point:
        os.kill(os.getpid(), signal.SIGKILL)


def writer(name):
    data = (source / name).read_bytes()

    def write(path):
        if point == "in_first_write":
            path.write_bytes(data[: len(data) // 2])
            die(point)
        path.write_bytes(data)

    return write


outputs._checkpoint = die
outputs.publish(out, month, {name: writer(name) for name in sys.argv[5:]})
"""

KILL_POINTS = {  # where the run dies -> which set the month shows right after
    "in_first_write": "old",  # half of scores.parquet written into the partial folder
    "write:rejects.csv": "old",  # between writes: three files written, two to go
    "complete": "old",  # the new version is complete, nothing points to it yet
    "linked": "old",  # during the swap: the new link is made, not yet renamed over the month
    "swapped": "new",  # after the swap, before the old version is deleted
}


@pytest.fixture(scope="module")
def old_and_new(small_book_dir, as_of, champion_scorer, clean, tmp_path_factory) -> dict[str, Path]:
    """Two complete sets of the same month from real runs: reasons for flagged loans only (old) and for
    all loans (new, the clean run)."""
    out = tmp_path_factory.mktemp("sets")
    _run(small_book_dir, as_of, out / "old", champion_scorer, reasons="flagged")
    (out / "new").mkdir()
    for f, data in clean[1].items():
        (out / "new" / f).write_bytes(data)
    return {"old": out / "old" / as_of, "new": out / "new"}


def _crash(out: Path, month: str, source: Path, point: str) -> None:
    res = subprocess.run(
        [sys.executable, "-c", CRASH, str(out), month, str(source), point, *FILES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == -signal.SIGKILL, res.stderr


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_at_any_point_of_the_swap_leaves_a_complete_set_and_the_next_run_recovers(
    point, small_book_dir, as_of, champion_scorer, old_and_new, tmp_path
) -> None:
    sets = {k: _files(v) for k, v in old_and_new.items()}
    assert sets["old"] != sets["new"] and all(len(x) == len(FILES) for x in sets.values())
    out = tmp_path / "scores"
    outputs.publish(out, as_of, {f: (lambda p, d=d: p.write_bytes(d)) for f, d in sets["old"].items()})
    _crash(out, as_of, old_and_new["new"], point)
    assert _files(out / as_of) == sets[KILL_POINTS[point]]  # complete, the old set or the new
    versions = list((out / "versions").iterdir())
    assert len(_hidden(out)) + len(versions) > 1  # the kill left something behind ...
    s = _run(small_book_dir, as_of, out, champion_scorer)  # ... that the next run clears away
    assert _files(out / as_of) == sets["new"] and s["counts"]["scored"] > 100
    assert _hidden(out) == [] and sorted(p.name.split(".")[0] for p in (out / "versions").iterdir()) == [
        as_of
    ]


def test_a_failing_run_recovers_too_and_writes_nothing(
    small_book_dir, as_of, champion_scorer, old_and_new, tmp_path
) -> None:
    sets = {k: _files(v) for k, v in old_and_new.items()}
    out = tmp_path / "scores"
    outputs.publish(out, as_of, {f: (lambda p, d=d: p.write_bytes(d)) for f, d in sets["old"].items()})
    _crash(out, as_of, old_and_new["new"], "swapped")
    _crash(out, "2031-01", old_and_new["new"], "linked")  # another month, killed before it ever existed
    with pytest.raises(ValueError, match="no performance rows for 2031-01"):
        _run(small_book_dir, "2031-01", out, champion_scorer)
    assert _files(out / as_of) == sets["new"] and _hidden(out) == []
    assert sorted(p.name for p in out.iterdir()) == [as_of, "versions"]  # no 2031-01: never swapped in
    assert len(list((out / "versions").iterdir())) == 1


def test_months_of_the_earlier_writer_are_kept_restored_and_then_linked(old_and_new, as_of, tmp_path) -> None:
    """Plain month folders (the earlier code's) are read as they are; its `.MONTH.old-PID` left between
    its two renames is put back; the first new run turns the folder into a link; a kill in that one-time
    step (the one instant a month's name is missing) is undone by the next run."""
    sets = {k: _files(v) for k, v in old_and_new.items()}
    out = tmp_path / "scores"
    shutil.copytree(old_and_new["old"], out / f".{as_of}.old-4242")  # killed between the renames
    shutil.copytree(old_and_new["new"], out / f".{as_of}.partial")  # killed while writing
    outputs.recover(out)
    assert (out / as_of).is_dir() and not (out / as_of).is_symlink()
    assert _files(out / as_of) == sets["old"] and _hidden(out) == []
    _crash(out, as_of, old_and_new["new"], "moved_legacy")
    assert not os.path.lexists(out / as_of)
    outputs.recover(out)
    assert _files(out / as_of) == sets["old"] and not (out / as_of).is_symlink()  # as it was
    assert _hidden(out) == [] and list((out / "versions").iterdir()) == []
    outputs.publish(out, as_of, {f: (lambda p, d=d: p.write_bytes(d)) for f, d in sets["new"].items()})
    assert _files(out / as_of) == sets["new"] and len(list((out / "versions").iterdir())) == 1


def test_the_previous_month_is_found_through_its_link(
    small_book_dir, as_of, champion_scorer, tmp_path
) -> None:
    earlier = f"{pd.Timestamp(f'{as_of}-01') - pd.DateOffset(months=1):%Y-%m}"
    _run(small_book_dir, earlier, tmp_path, champion_scorer)
    s = _run(small_book_dir, as_of, tmp_path, champion_scorer)
    assert (tmp_path / earlier).is_symlink() and s["watchlist"]["previous_run"] == earlier
    watch = pd.read_csv(tmp_path / as_of / "watchlist.csv")
    assert "first run" not in set(watch["change"])


# ----------------------------------------------------------------------------------------- exit codes


def _score_book(champion_store, book: Path, as_of: str, out: Path):
    mp = pytest.MonkeyPatch()
    for k, v in serve_env(champion_store).items():
        if k.startswith(("MLFLOW_", "EWS_")):
            mp.setenv(k, v)
    try:
        args = [
            "score-book",
            "--book",
            str(book),
            "--as-of",
            as_of,
            "--out",
            str(out),
            "--chunk-loans",
            "400",
        ]
        return runner.invoke(app, args)
    finally:
        mp.undo()


def test_exit_codes_say_what_happened(
    champion_store, small_book_dir, small_generated, as_of, tmp_path
) -> None:
    clean = _score_book(champion_store, small_book_dir, as_of, tmp_path / "clean")
    assert clean.exit_code == 0, clean.output
    assert "rejects:" not in clean.output
    b = small_generated.book
    orphan_book = write_book(
        type(b)(
            b.borrowers,
            b.loans,
            b.collateral,
            b.house_prices,
            pd.concat([b.performance, _orphan_rows(b.performance)]),
        ),
        tmp_path / "orphans",
    )
    orphans = _score_book(champion_store, orphan_book, as_of, tmp_path / "orphans-out")
    assert orphans.exit_code == 3, orphans.output  # rows of no loan are rejects too
    assert (
        "rejects: 3 lines: 0 loans, 3 loan ids not in the loans table; 6 performance rows" in orphans.output
    )
    broken = _broken_book(small_book_dir, as_of, tmp_path / "broken")
    res = _score_book(champion_store, broken.folder, as_of, tmp_path / "broken-out")
    assert res.exit_code == 3, res.output
    summary = json.loads((tmp_path / "broken-out" / as_of / "summary.json").read_text())
    assert summary["counts"]["rejected"] == len(broken.rules)
    no_principal = tmp_path / "no-principal"  # a whole-book contract error, met by the reader process
    no_principal.mkdir()
    for f in small_book_dir.glob("*.parquet"):
        df = pd.read_parquet(f)
        df.drop(columns=["principal"] if f.stem == "loans" else []).to_parquet(no_principal / f.name)
    for book, month, message in (
        (small_book_dir, "2031-01", "has no performance rows for 2031-01 (its months are 2023-07..2025-12)"),
        (tmp_path / "no-such-book", as_of, "does not exist"),
        (no_principal, as_of, "cannot be scored"),
    ):
        failed = _score_book(champion_store, book, month, tmp_path / "failed")
        assert failed.exit_code == 1, failed.output
        errors = [x for x in failed.output.splitlines() if x.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in failed.output
        assert not (tmp_path / "failed").exists()


def test_the_exit_codes_are_documented_in_the_help() -> None:
    res = runner.invoke(app, ["score-book", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "Exit codes: 0 done" in text and "3 done with rejects" in text and "1 failed" in text


def test_a_run_log_that_fails_after_the_outputs_are_published_is_a_warning(
    champion_store, small_book_dir, as_of, tmp_path
) -> None:
    """A run log that failed after the outputs were published (another process holding the store's
    write lock; an artifact folder gone) exited 1 with a 234-line traceback, so a scheduler would rerun
    a batch whose outputs were live. Now the outputs stand, the exit code is the batch's, and one
    warning line says the run was not logged. The fault here: a copy of the store whose batch
    experiment keeps its artifacts where a file stands (the lock waits MLflow's 20 s busy timeout)."""
    import sqlite3

    from mlflow import MlflowClient

    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(champion_store[0] / "mlflow.db", store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    blocker = tmp_path / "artifacts-are-a-file"
    blocker.write_text("x")
    if MlflowClient(uri).get_experiment_by_name("loan-ews-batch") is None:
        MlflowClient(uri).create_experiment("loan-ews-batch", artifact_location=blocker.as_uri())
    else:
        with sqlite3.connect(store / "mlflow.db") as db:
            db.execute(
                "UPDATE experiments SET artifact_location = ? WHERE name = 'loan-ews-batch'",
                (blocker.as_uri(),),
            )
    mp = pytest.MonkeyPatch()
    for k, v in serve_env(champion_store).items():
        if k.startswith(("MLFLOW_", "EWS_")):
            mp.setenv(k, v)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        res = runner.invoke(
            app,
            ["score-book", "--book", str(small_book_dir), "--as-of", as_of, "--out", str(tmp_path / "out")],
        )
    finally:
        mp.undo()
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    text = " ".join(res.output.split())
    assert "warning: the outputs are written" in text and "MLflow run of this batch was not logged" in text
    assert "scored" in res.output and (tmp_path / "out" / as_of / "summary.json").exists()


def test_the_batch_says_the_books_validation_warnings_and_keeps_them_in_its_summary(
    champion_store, small_book_dir, as_of, tmp_path
) -> None:
    """`score-book` printed no validation warning: a month left out of the extract scored silently."""
    book = shutil.copytree(small_book_dir, tmp_path / "book")
    perf = pd.read_parquet(book / "performance.parquet")
    gap = pd.Timestamp(as_of) - pd.DateOffset(months=2)
    perf[pd.to_datetime(perf["month"]) != gap].to_parquet(book / "performance.parquet", index=False)
    res = _score_book(champion_store, book, as_of, tmp_path / "out")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"warning: performance.month:month_gap: no loan has a row for {gap:%Y-%m}" in text
    summary = json.loads((tmp_path / "out" / as_of / "summary.json").read_text())
    assert [w["rule"] for w in summary["warnings"]] == ["performance.month:month_gap"]


def test_an_output_folder_that_cannot_be_written_fails_before_the_book_is_scored(
    champion_store, small_book_dir, as_of, tmp_path
) -> None:
    """A read-only output folder was found only after all the scoring (root ignores modes, so a file
    stands where the folder's parent should be)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    res = _score_book(champion_store, small_book_dir, as_of, blocker / "scores")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and f"the output folder {blocker / 'scores'} cannot be written" in errors[0]
    assert "scored" not in res.output


def test_an_early_month_with_a_list_too_small_for_a_red_loan_writes_strict_json_and_logs_its_run(
    small_champion_store, small_book_dir, tmp_path
) -> None:
    """At the book's fourth month few loans are in arrears: 1% of them is no loan, so the list has no red
    threshold, and features with no history yet have no PSI. summary.json said `"red": Infinity` (not
    JSON: other tools refuse the file) and the batch's MLflow run was not logged ("Missing value for
    required parameter 'metrics[22].value'"), exit 0 all the same."""
    from mlflow import MlflowClient

    first = pd.read_parquet(small_book_dir / "performance.parquet", columns=["month"])["month"].min()
    as_of = f"{first + pd.DateOffset(months=3):%Y-%m}"
    res = _score_book(small_champion_store, small_book_dir, as_of, tmp_path / "out")
    assert res.exit_code == 0 and "not logged" not in res.output, res.output

    def refuse(name: str):
        raise AssertionError(f"{name} is not JSON")

    summary = json.loads((tmp_path / "out" / as_of / "summary.json").read_text(), parse_constant=refuse)
    lists = summary["lists"]
    small = [name for name, lst in lists.items() if 0 < lst["loans"] < 50]
    assert small, lists  # the case this test is about: a list with loans and no red loan
    for name in small:
        assert summary["tier_thresholds"]["capacity_at_as_of"][name]["red"] is None
        assert lists[name]["red"] == 0
    client = MlflowClient(small_champion_store[1])
    exp = client.get_experiment_by_name("loan-ews-batch").experiment_id
    (run,) = client.search_runs([exp])
    assert run.data.metrics["count_scored"] == summary["counts"]["scored"]
    # a feature no loan has a value of yet (a 6-month trend at a mixed book's first months) has PSI None
    # in the summary: the run is logged without it
    import mlflow

    from serving.batch import BatchConfig, log_batch_run

    feature = sorted(summary["psi"]["features"])[0]
    summary["psi"]["features"][feature] = None
    cfg = BatchConfig(small_book_dir, pd.Timestamp(f"{as_of}-01"), tmp_path / "out")
    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(small_champion_store[1])
    try:
        log_batch_run(
            cfg, summary, "sha", "key", 1.0, 1.0, small_champion_store[0] / "models" / "mlartifacts"
        )
    finally:
        mlflow.set_tracking_uri(prev)
    latest = client.search_runs([exp], order_by=["attributes.start_time DESC"])[0]
    assert latest.info.run_id != run.info.run_id and f"psi_{feature}" not in latest.data.metrics
    assert latest.data.metrics["count_scored"] == summary["counts"]["scored"]


def test_summary_numbers_without_a_value_are_written_as_null() -> None:
    """A PSI of a book with no scored loan, the rank correlation of a shadow whose PDs are all equal:
    NaN, written as a bare NaN that JSON does not have (other tools refuse the file)."""
    import numpy as np

    from serving.batch import _finite

    summary = {"psi": {"score": float("nan")}, "shadow": {"rank_correlation": np.float64("nan")}}
    summary["lists"] = [{"red": float("inf")}, {"red": 0.5}]
    text = json.dumps(_finite(summary), allow_nan=False)
    assert json.loads(text) == {
        "psi": {"score": None},
        "shadow": {"rank_correlation": None},
        "lists": [{"red": None}, {"red": 0.5}],
    }
