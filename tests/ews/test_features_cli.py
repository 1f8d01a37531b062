"""`ews features build` streams a book by loan partitions and writes the same panel as the in-memory
builder, with its label rule, oracle and book context; a bad month range fails with one line."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from ews.cli import app
from features.context import context_table
from features.labels import LabelRule
from features.months import month_range
from training.panel import build_panel

runner = CliRunner()


def build(book, *args: str):
    """`ews features build --book BOOK ARGS...`, in process."""
    return runner.invoke(app, ["features", "build", "--book", str(book), *args])


def test_features_build_writes_the_in_memory_panel_in_partitions(
    small_book_dir, small_generated, tmp_path
) -> None:
    out = tmp_path / "panel.parquet"
    res = build(
        small_book_dir,
        "--from",
        "2024-01",
        "--to",
        "2024-06",
        "--horizon",
        "6",
        "--dpd",
        "30",
        "--chunk-loans",
        "400",
        "--out",
        str(out),
    )  # several partitions of a 1,500-loan book
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(out).sort_values(["as_of", "loan_id"], ignore_index=True)
    said = "".join(res.output.split())  # the console wraps long lines, inside the path too
    assert "".join(f"wrote {out}: {len(got):,} rows over 6 as-of months".split()) in said

    b = small_generated.book
    want = build_panel(
        b,
        month_range("2024-01", "2024-06"),
        LabelRule(30, 3),
        6,
        small_generated.oracle,
        context_table(b.performance, b.loans, b.borrowers),
    ).sort_values(["as_of", "loan_id"], ignore_index=True)
    assert len(got) == len(want) > 1000 and set(want.columns) <= set(got.columns)
    assert got["label"].isin([0, 1, -1]).all() and got["label"].eq(1).any()
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False, check_categorical=False)


def test_features_build_refuses_a_bad_month_with_one_line(small_book_dir, tmp_path) -> None:
    res = build(small_book_dir, "--from", "2023-13", "--out", str(tmp_path / "p"))
    assert res.exit_code == 64 and "Traceback" not in res.output  # a wrong command line
    assert "Invalid value for '--from'" in res.output and "is not a month" in res.output
    assert not (tmp_path / "p").exists()


def test_features_build_keeps_to_the_book_s_months(small_book_dir, small_generated, tmp_path) -> None:
    """A range outside the book is an error naming the book's months (it wrote an empty panel and exit
    0); a range partly outside it is cut to the book, with a warning."""
    perf = small_generated.book.performance
    first, last = perf["month"].min(), perf["month"].max()
    res = build(small_book_dir, "--from", "2010-01", "--to", "2011-06", "--out", str(tmp_path / "p"))
    assert res.exit_code == 1 and f"it reports {first:%Y-%m}..{last:%Y-%m}" in res.output, res.output
    assert not (tmp_path / "p").exists()
    res = build(small_book_dir, "--from", "2010-01", "--to", f"{first:%Y-%m}", "--out", str(tmp_path / "q"))
    assert res.exit_code in (0, 3), res.output
    assert "warning: the book reports" in res.output and "over 1 as-of months" in res.output, res.output


def test_the_panel_goes_to_the_data_folder_of_the_settings(small_book_dir, tmp_path, monkeypatch) -> None:
    """Without --out the panel went to ./data whatever EWS_DATA_DIR said."""
    monkeypatch.setenv("EWS_DATA_DIR", str(tmp_path / "elsewhere"))
    res = build(small_book_dir, "--from", "2024-01", "--to", "2024-01", "--horizon", "6")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "elsewhere" / "panel.parquet").is_file()
