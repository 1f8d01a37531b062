"""Months an operator types: exactly YYYY-MM, never whatever pandas can read."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from ews.cli import app
from features.months import parse_month


def test_a_typed_month_is_yyyy_mm_and_nothing_else() -> None:
    assert parse_month("2025-12") == pd.Timestamp("2025-12-01")
    for text in (
        "2025Q4",
        "2025-12-15",
        "2025-1",
        " 2025-12",
        "20251201",
        "Dec 2025",
        "2025-١٢",
        "2025-13",
        "2025-00",
        "",
        "2025-12-01",
    ):
        with pytest.raises(ValueError, match="use YYYY-MM"):
            parse_month(text)


def test_score_book_refuses_an_as_of_that_is_not_yyyy_mm(tmp_path) -> None:
    """Refused before any work: such a month once wrote (or overwrote) another month's outputs."""
    res = CliRunner().invoke(
        app, ["score-book", "--as-of", "2025Q4", "--book", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code != 0 and "not a month" in res.output, res.output
    assert not (tmp_path / "o").exists()
