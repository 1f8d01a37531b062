"""The generated book: reproducible, valid, and behaving like a lender's book."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from ews.cli import app
from features.generate import generate_book, oracle_column, pit_oracle_column, profile
from features.labels import LabelRule
from features.summary import default_rates, labelled_snapshots, oracle_auc
from features.validation import validate_tables
from tests.conftest import DEMO_LOANS
from training.metrics import auc

RULE = LabelRule()

runner = CliRunner()


def test_same_seed_gives_byte_identical_tables(tmp_path: Path) -> None:
    for name in ("a", "b"):
        res = runner.invoke(
            app,
            [
                "book",
                "generate",
                "--loans",
                "1200",
                "--months",
                "24",
                "--seed",
                "5",
                "--out",
                str(tmp_path / name),
            ],
        )
        assert res.exit_code == 0, res.output
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert {
        "borrowers.parquet",
        "loans.parquet",
        "collateral.parquet",
        "house_prices.parquet",
        "performance.parquet",
        "oracle.parquet",
    } <= set(files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    res = runner.invoke(
        app,
        [
            "book",
            "generate",
            "--loans",
            "1200",
            "--months",
            "24",
            "--seed",
            "6",
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert (tmp_path / "c" / "performance.parquet").read_bytes() != (
        tmp_path / "a" / "performance.parquet"
    ).read_bytes()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _generate(out: Path, *args: str):
    return runner.invoke(
        app, ["book", "generate", "--loans", "60", "--months", "12", "--out", str(out), *args]
    )


def test_generate_says_what_it_wrote_on_stdout(tmp_path: Path) -> None:
    """The result line went to stderr with the progress, so `ews book generate ... > log` kept nothing."""
    import subprocess
    import sys

    out = tmp_path / "book"
    args = ["book", "generate", "--loans", "60", "--months", "12", "--out", str(out)]
    res = subprocess.run(
        [sys.executable, "-m", "ews.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and "60 loans" in res.stdout and "wrote" not in res.stderr


def test_generate_never_replaces_a_folder_that_is_not_a_book(tmp_path: Path) -> None:
    """`--out` at a project folder is refused before anything is written; a book is replaced (in either
    format); impossible sizes are one-line errors."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "a.py").write_text("code")
    (project / "notes.txt").write_text("x")
    res = _generate(project)
    assert res.exit_code == 1 and "is not an empty folder or a book" in res.output, res.output
    assert (project / "src" / "a.py").read_text() == "code" and (project / "notes.txt").exists()
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt", "src"]

    book = tmp_path / "book"
    assert _generate(book).exit_code == 0
    assert _generate(book, "--seed", "2", "--format", "csv").exit_code == 0  # a book is replaced
    assert (book / "loans.csv").exists() and not (book / "loans.parquet").exists()
    (book / "mine.txt").write_text("y")
    res = _generate(book)
    assert res.exit_code == 1 and "mine.txt" in res.output, res.output
    assert (book / "loans.csv").exists()

    assert (book.stat().st_mode & 0o777) == 0o770 & ~_umask()  # the group as the umask allows; no others

    for bad in (["--loans", "0"], ["--months", "1"]):
        res = runner.invoke(app, ["book", "generate", *bad, "--out", str(tmp_path / "x")])
        assert res.exit_code == 1 and "need at least" in res.output and "Traceback" not in res.output


def test_demo_size_book_validates(demo_generated, tmp_path: Path) -> None:
    from features.book import write_book

    write_book(demo_generated.book, tmp_path / "demo")
    res = runner.invoke(app, ["book", "validate", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert f"VALID: {DEMO_LOANS:,} loans" in res.output


def test_oracle_covers_every_performing_loan_month(demo_generated) -> None:
    """Every performing (loan, month) of the book has its oracle PD, cured loans back from probation
    included; PDs grow with the horizon."""
    from features.labels import performing_snapshots

    snaps = performing_snapshots(demo_generated.book.performance, RULE, 12)
    oracle = demo_generated.oracle
    got = snaps.merge(oracle, on=["loan_id", "month"], how="left")
    for h in (1, 3, 6, 12):
        col = got[oracle_column(90, h)]
        assert col.notna().all() and col.between(0, 1).all()
    for a, b in ((1, 3), (3, 6), (6, 12)):
        assert (got[oracle_column(90, a)] <= got[oracle_column(90, b)] + 1e-12).all()
    both = got[got[oracle_column(30, 12)].notna()]  # 30-89 DPD rows are in default for a 30+ label
    assert len(both) > 0.9 * len(got)
    assert (both[oracle_column(30, 12)] >= both[oracle_column(90, 12)] - 1e-12).all()  # 30+ comes first


def test_oracle_is_the_true_probability(demo_generated) -> None:
    """Mean oracle PD matches the realised rate, overall and by oracle decile (it is calibrated)."""
    book = demo_generated.book
    col = oracle_column(90, 12)
    s = labelled_snapshots(book, RULE, 12).merge(demo_generated.oracle, on=["loan_id", "month"])
    assert abs(s[col].mean() / s["label"].mean() - 1) < 0.15
    s["decile"] = pd.qcut(s[col], 10, labels=False, duplicates="drop")
    g = s.groupby("decile").agg(pd_=(col, "mean"), obs=("label", "mean"), n=("label", "size"))
    top = g.iloc[-1]
    assert abs(top["obs"] - top["pd_"]) < 3 * np.sqrt(top["pd_"] * (1 - top["pd_"]) / top["n"]) + 0.02


def test_the_pit_oracle_draws_nothing_and_covers_the_asked_months(small_generated) -> None:
    """Asking for the point-in-time oracle changes neither the book nor the oracle (it draws no random
    numbers), and its columns are probabilities on the asked months' rows, missing on the others."""
    months = [pd.Timestamp("2024-06-01"), pd.Timestamp("2024-07-01"), pd.Timestamp("2031-01-01")]
    g = generate_book(1500, 30, 11, pit_months=months)
    for name in ("borrowers", "loans", "collateral", "house_prices", "performance"):
        pd.testing.assert_frame_equal(getattr(g.book, name), getattr(small_generated.book, name))
    pd.testing.assert_frame_equal(g.oracle[small_generated.oracle.columns], small_generated.oracle)
    pit = g.oracle[pit_oracle_column(90, 12)]
    asked = g.oracle["month"].isin(months)
    assert asked.sum() > 0 and pit[asked].notna().all() and pit[~asked].isna().all()
    assert pit[asked].between(0, 1).all()


def test_generate_writes_the_pit_oracle_for_a_specs_test_window(small_generated, tmp_path: Path) -> None:
    """`ews book generate --pit-spec` (as `make demo` runs it) writes the PIT oracle for the spec's test
    window beside the oracle, which is what it would be without it."""
    args = ["book", "generate", "--loans", "1500", "--months", "30", "--seed", "11", "--out", str(tmp_path)]
    res = runner.invoke(app, [*args, "--pit-spec", "models/pd_90d_12m.yaml"])
    assert res.exit_code == 0, res.output
    o = pd.read_parquet(tmp_path / "oracle.parquet")
    pd.testing.assert_frame_equal(o[small_generated.oracle.columns], small_generated.oracle)
    months = o.loc[o[pit_oracle_column(90, 12)].notna(), "month"].unique()
    assert list(months) == list(pd.date_range("2024-07-01", "2024-12-01", freq="MS"))  # its test window


def test_the_pit_oracle_holds_the_scenario_where_the_cycle_eases(demo_generated) -> None:
    """In the demo's test window the stress is easing: the oracle, which knows it, stays calibrated,
    while the PIT oracle holds today's stress over the horizon and predicts more defaults than happen,
    the over-prediction no model of the book at the as-of month can avoid."""
    col, pit_col = oracle_column(90, 12), pit_oracle_column(90, 12)
    s = labelled_snapshots(demo_generated.book, RULE, 12)
    s = s.merge(demo_generated.oracle, on=["loan_id", "month"])
    s = s[s[pit_col].notna()]
    assert s["month"].nunique() == 6  # the default spec's test window
    observed = s["label"].sum()
    assert 0.9 < observed / s[col].sum() < 1.1
    assert observed / s[pit_col].sum() < 0.95
    assert s[pit_col].mean() > s[col].mean()
    # each loan's true state still ranks it: the PIT oracle orders loans almost as the oracle does
    assert auc(s["label"], s[pit_col]) > auc(s["label"], s[col]) - 0.01


def test_oracle_auc_is_realistic(demo_generated) -> None:
    auc = oracle_auc(demo_generated.book, demo_generated.oracle, RULE, 12)
    assert 0.80 <= auc <= 0.95


def test_default_rates_are_realistic(demo_generated) -> None:
    rates = default_rates(demo_generated.book, RULE, 12)
    overall = rates["all"]["rate"].iloc[0]
    assert 0.01 <= overall <= 0.04
    by_product = rates["product"]["rate"]
    assert by_product["unsecured_consumer"] > by_product["secured_consumer"]
    by_year = rates["year"]["rate"]
    assert by_year.max() > 1.5 * by_year.iloc[0]  # the stress period shows
    by_tier = rates["city_tier"]["rate"]
    assert by_tier["tier3"] > by_tier["tier1"]  # the downturn hits lower tiers harder


def test_deterioration_usually_shows_first_but_not_always(demo_generated) -> None:
    snaps = labelled_snapshots(demo_generated.book, RULE, 12)
    bad = snaps[(snaps["label"] == 1) & (snaps["months_to_default"] == 6)]
    perf = demo_generated.book.performance
    feats_dpd = bad.merge(perf, on=["loan_id", "month"])["days_past_due"]
    # six months before default, some loans are behind already, most still current; later they show
    assert 0.05 <= (feats_dpd > 0).mean() <= 0.6
    one = snaps[(snaps["label"] == 1) & (snaps["months_to_default"] == 1)].merge(
        perf, on=["loan_id", "month"]
    )
    assert 0.6 <= (one["days_past_due"] > 0).mean() <= 0.95  # about a tenth default with no warning


def test_card_profile_reports_coarsely_re_defaults_and_shares_a_vintage(card_generated) -> None:
    book = card_generated.book
    assert (book.loans["product"] == "revolving").all() and (
        book.loans["repayment_type"] == "revolving"
    ).all()
    assert book.loans["origination_date"].dt.to_period("M").nunique() == 1  # one vintage
    perf = book.performance.sort_values(["loan_id", "month"])
    assert set(perf["days_past_due"].unique()) <= set(range(0, 400, 30))  # whole cycles past due
    jump = perf.groupby("loan_id")["days_past_due"].diff()
    assert (jump >= 60).any()  # 0 -> 60 in a month happens, as in real card files
    util = perf["balance"] / perf["loan_id"].map(book.loans.set_index("loan_id")["principal"])
    assert 0.1 < util.mean() < 0.8 and (perf["paid_amount"] < perf["scheduled_payment"]).any()
    report = validate_tables({k: v for k, v in book.tables().items()})
    assert report.ok and any(p.rule == "dpd_jump" for p in report.warnings)  # warnings only
    snaps = labelled_snapshots(book, LabelRule(30, 3), 1)
    assert 0.003 < snaps["label"].mean() < 0.08
    cured = RULE  # a loan back from a 90+ default re-enters the population and may default again
    from features.labels import performing_snapshots

    back = performing_snapshots(perf, cured, 1).merge(
        perf.assign(ev=perf["days_past_due"] >= 90)
        .groupby("loan_id")["ev"]
        .any()
        .rename("ever")
        .reset_index()
    )
    assert back["ever"].any()


def test_mixed_profile_has_every_product_and_an_exact_oracle(tmp_path: Path) -> None:
    g = generate_book(3000, 30, 4, profile("mixed"))
    assert set(g.book.loans["product"]) == {
        "secured_business",
        "secured_consumer",
        "unsecured_consumer",
        "revolving",
    }
    s = labelled_snapshots(g.book, RULE, 6).merge(g.oracle, on=["loan_id", "month"])
    col = oracle_column(90, 6)
    assert s[col].notna().all()
    assert abs(s[col].mean() / s["label"].mean() - 1) < 0.25


def test_house_prices_fall_harder_in_lower_tiers_and_negative_equity_appears(demo_generated) -> None:
    book = demo_generated.book
    hp = book.house_prices.merge(book.loans[["city", "city_tier"]].drop_duplicates(), on="city")
    peak_to_trough = hp.groupby("city").agg(
        tier=("city_tier", "first"), fall=("index", lambda s: s.min() / s.max() - 1)
    )
    by_tier = peak_to_trough.groupby("tier")["fall"].mean()
    assert by_tier["tier3"] < by_tier["tier1"] < 0
    loans = book.loans.dropna(subset=["collateral_id"]).merge(book.collateral, on="collateral_id")
    orig_ltv = (loans["principal"] + loans["prior_lien_balance"]) / loans["appraisal_value"]
    first_lien = loans["lien_position"] == 1
    share = orig_ltv[first_lien].between(0.4, 0.7).mean()
    assert share > 0.6
    assert (loans["lien_position"] == 2).mean() > 0.1
    assert set(loans["city_tier"]) >= {"tier1", "new_tier1", "tier2", "tier3"}


def test_summary_command_prints_rates_and_oracle_auc(small_book_dir: Path, small_generated) -> None:
    res = runner.invoke(app, ["book", "summary", str(small_book_dir)])
    assert res.exit_code == 0, res.output
    assert "oracle AUC 12m" in res.output and "by product" in res.output
    rates = default_rates(small_generated.book, RULE, 12)
    assert (
        f"{rates['all']['rate'].iloc[0]:.2%} of {int(rates['all']['snapshots'].iloc[0]):,} loan-months"
        in res.output
    )


def test_summary_of_a_short_card_book_takes_its_label(card_book_dir: Path) -> None:
    res = runner.invoke(app, ["book", "summary", str(card_book_dir)])
    assert res.exit_code == 0, res.output
    assert "no performing loan-month has its whole 12-month window" in res.output and "nan%" not in res.output
    assert "oracle AUC 12m: n/a" in res.output and "nan" not in res.output
    res = runner.invoke(app, ["book", "summary", str(card_book_dir), "--dpd", "30", "--horizon", "1"])
    assert res.exit_code == 0, res.output
    assert "1-month 30+ DPD default rate" in res.output and "oracle AUC  1m: 0." in res.output
    assert "0% secured" in res.output


def test_book_commands_take_the_book_as_every_command_does_too(small_book_dir: Path, tmp_path: Path) -> None:
    """`ews train --book DIR` but `ews book summary DIR`: a user who wrote `--book` got a usage error."""
    positional = runner.invoke(app, ["book", "summary", str(small_book_dir)])
    named = runner.invoke(app, ["book", "summary", "--book", str(small_book_dir)])
    assert named.exit_code == 0 and named.output == positional.output
    valid = runner.invoke(app, ["book", "validate", "--book", str(small_book_dir)])
    assert valid.exit_code == 0 and "VALID: " in valid.output, valid.output
    twice = runner.invoke(app, ["book", "validate", str(small_book_dir), "--book", str(tmp_path)])
    assert twice.exit_code == 64 and "the book is given twice" in twice.output
