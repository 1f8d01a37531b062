"""The generated book: reproducible, valid, and behaving like a lender's book."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from ews.cli import app
from features.labels import loan_outcomes
from features.months import month_index
from features.summary import complete_windows, default_rates, oracle_auc, performing_snapshots

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


def test_demo_size_book_validates(demo_generated, tmp_path: Path) -> None:
    from features.book import write_book

    write_book(demo_generated.book, tmp_path / "demo")
    res = runner.invoke(app, ["book", "validate", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert "VALID: 20,000 loans" in res.output


def test_oracle_covers_every_performing_loan_month_and_nothing_else(demo_generated) -> None:
    snaps = performing_snapshots(demo_generated.book)
    keys = set(zip(snaps["loan_id"], snaps["month"], strict=True))
    oracle = demo_generated.oracle
    okeys = set(zip(oracle["loan_id"], oracle["month"], strict=True))
    assert keys == okeys
    for h in (3, 6, 12):
        col = oracle[f"pd_{h}m"]
        assert col.between(0, 1).all()
    assert (oracle["pd_3m"] <= oracle["pd_6m"] + 1e-12).all()
    assert (oracle["pd_6m"] <= oracle["pd_12m"] + 1e-12).all()


def test_oracle_is_the_true_probability(demo_generated) -> None:
    """Mean oracle PD matches the realised rate, overall and by oracle decile (it is calibrated)."""
    book = demo_generated.book
    s = complete_windows(performing_snapshots(book), book, 12).merge(
        demo_generated.oracle, on=["loan_id", "month"]
    )
    assert abs(s["pd_12m"].mean() / s["label"].mean() - 1) < 0.15
    s["decile"] = pd.qcut(s["pd_12m"], 10, labels=False, duplicates="drop")
    g = s.groupby("decile").agg(pd_=("pd_12m", "mean"), obs=("label", "mean"), n=("label", "size"))
    top = g.iloc[-1]
    assert abs(top["obs"] - top["pd_"]) < 3 * np.sqrt(top["pd_"] * (1 - top["pd_"]) / top["n"]) + 0.02


def test_oracle_auc_is_realistic(demo_generated) -> None:
    auc = oracle_auc(demo_generated.book, demo_generated.oracle, 12)
    assert 0.80 <= auc <= 0.95


def test_default_rates_are_realistic(demo_generated) -> None:
    rates = default_rates(demo_generated.book)
    overall = rates["all"]["rate"].iloc[0]
    assert 0.01 <= overall <= 0.04
    by_product = rates["product"]["rate"]
    assert by_product["unsecured_consumer"] > by_product["secured_consumer"]
    by_year = rates["year"]["rate"]
    assert by_year.max() > 1.5 * by_year.iloc[0]  # the stress period shows
    by_tier = rates["city_tier"]["rate"]
    assert by_tier["tier3"] > by_tier["tier1"]  # the downturn hits lower tiers harder


def test_deterioration_usually_shows_first_but_not_always(demo_generated) -> None:
    perf = demo_generated.book.performance
    out = loan_outcomes(perf).dropna(subset=["default_m"])
    pm = perf.assign(m=month_index(perf["month"])).merge(
        out[["default_m"]], left_on="loan_id", right_index=True
    )
    before = pm[(pm["m"] < pm["default_m"]) & (pm["m"] >= pm["default_m"] - 6)]
    warned = before.groupby("loan_id")["days_past_due"].max().reindex(out.index).fillna(0) > 0
    assert 0.6 <= warned.mean() <= 0.95
    assert (~warned).mean() >= 0.05


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


def test_summary_command_prints_rates_and_oracle_auc(small_book_dir: Path) -> None:
    res = runner.invoke(app, ["book", "summary", str(small_book_dir)])
    assert res.exit_code == 0, res.output
    assert "oracle AUC 12m" in res.output and "by product" in res.output
