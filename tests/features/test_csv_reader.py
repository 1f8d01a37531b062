"""The CSV book reader: a malformed line is a `csv_line` error of its table that names the line, the loan it
belongs to is set aside, and every other line is read exactly as on the fast path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ews.cli import app
from features.book import CSV_LINE, read_csv_table, read_raw_tables, write_book
from features.chunks import iter_book_chunks
from features.validation import validate_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def csv_book(small_generated, tmp_path_factory) -> Path:
    return write_book(small_generated.book, tmp_path_factory.mktemp("csv") / "book", fmt="csv")


def _edit_lines(path: Path, edits: dict[int, bytes | None], extra: list[bytes] = ()) -> list[bytes]:
    """Replace lines (1 = the header) of a file, append `extra` lines; returns the original lines."""
    lines = path.read_bytes().split(b"\n")
    original = list(lines)
    for number, text in edits.items():
        lines[number - 1] = text
    body = [x for x in lines if x is not None]
    if body and body[-1] == b"":
        body.pop()
    path.write_bytes(b"\n".join([*body, *extra]) + b"\n")
    return original


def test_a_clean_csv_reads_as_pandas_reads_it(csv_book) -> None:
    for table in ("borrowers", "loans", "performance"):
        path = csv_book / f"{table}.csv"
        expected = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        pd.testing.assert_frame_equal(read_csv_table(path), expected)


def test_malformed_lines_are_csv_line_errors_and_every_other_line_is_read(csv_book, tmp_path) -> None:
    book = shutil.copytree(csv_book, tmp_path / "book")
    perf_path = book / "performance.csv"
    lines = perf_path.read_bytes().split(b"\n")
    header = lines[0].split(b",")
    extra, few, quote, bad_utf8 = 11, 40, 70, 95  # line numbers (the header is line 1)
    ids = {n: lines[n - 1].split(b",")[0].decode() for n in (extra, few, quote, bad_utf8)}
    assert len(set(ids.values())) == 4
    after_quote = lines[quote].decode()  # the line after the open quote must still be its own record
    _edit_lines(
        perf_path,
        {
            extra: lines[extra - 1] + b",surplus",
            few: b",".join(lines[few - 1].split(b",")[:3]),
            quote: lines[quote - 1].replace(b",open,", b',"open,'),
            bad_utf8: lines[bad_utf8 - 1].replace(b",open,", b",op\xffen,"),
        },
        extra=[b"no-commas-at-all", lines[4].replace(lines[4].split(b",")[0], b"L-orphan")],
    )
    assert b',"open,' in perf_path.read_bytes()
    raw, _ = read_raw_tables(book, ("performance",))
    perf = raw["performance"]
    bad = perf[perf[CSV_LINE].notna()]
    assert len(bad) == 5 and len(perf) == len(lines) - 2 + 2  # every line a row: the bad ones marked
    width = len(header)
    notes = dict(zip(bad["loan_id"], bad[CSV_LINE], strict=True))
    assert notes[ids[extra]] == f"line {extra} has {width + 1} fields where the header has {width}"
    assert notes[ids[few]] == f"line {few} has 3 fields where the header has {width}"
    assert notes[ids[quote]] == f"line {quote} has a quote that is never closed"
    assert notes[ids[bad_utf8]] == f"line {bad_utf8} is not UTF-8 text"
    assert notes["no-commas-at-all"].endswith("has 1 field where the header has 8")
    assert bad.drop(columns=["loan_id", CSV_LINE]).isna().all().all()  # nothing but the loan id is kept
    good = perf[perf[CSV_LINE].isna()].drop(columns=CSV_LINE)
    lid, month, balance = after_quote.split(",")[:3]
    assert good.loc[(good["loan_id"] == lid) & (good["month"] == month), "balance"].tolist() == [balance]
    clean = pd.read_csv(csv_book / "performance.csv", dtype=str, keep_default_na=False, na_values=[""])
    untouched = ~clean["loan_id"].isin(ids.values())
    pd.testing.assert_frame_equal(  # every other line read as a clean file reads
        good[good["loan_id"].isin(clean["loan_id"][untouched])].reset_index(drop=True),
        clean[untouched].reset_index(drop=True),
    )

    report = validate_folder(book)
    csv_errors = [p for p in report.errors if p.rule == "csv_line"]
    assert len(csv_errors) == 1 and csv_errors[0].rule_name == "performance:csv_line"
    p = csv_errors[0]
    assert p.count == 5 and p.examples[0] == f"line {extra}"
    assert f"line {extra} has" in p.message and "and 2 more" in p.message
    rejected = report.rejected_loans()
    for lid in ids.values():  # each loan of a bad line is set aside with that rule, and only that rule
        assert rejected[lid] == "performance:csv_line"
    assert p.details[ids[quote]] == f"line {quote} has a quote that is never closed"
    kept = report.set_aside()
    assert kept.loans_rejected == 4 and set(ids.values()).isdisjoint(kept.book.loans["loan_id"])
    # rows that were never records raise nothing else (no not_null, no type error) ...
    assert {q.rule for q in report.errors} == {"csv_line", "foreign_key"}
    fk = next(q for q in report.errors if q.rule == "foreign_key")
    assert fk.loan_ids == {"L-orphan"}  # ... but a good row of an unknown loan still is an orphan
    # the chunked reader and `ews book validate` see the same
    by_chunk = {}
    for r in iter_book_chunks(book, 400):
        by_chunk.update(r.rejected_loans())
    assert {k: v for k, v in by_chunk.items() if v.endswith("csv_line")} == {
        k: v for k, v in rejected.items() if v.endswith("csv_line")
    }
    res = runner.invoke(app, ["book", "validate", str(book)])
    assert res.exit_code == 3, res.output
    assert (
        f"ERROR   performance [csv_line] 5 lines of the file are not a record of its header: line {extra}"
        in (res.output)
    )


def test_a_lone_open_quote_loses_no_line_of_a_file_larger_than_arrows_block(csv_book, tmp_path) -> None:
    """Arrow, given one quote left open and nothing else wrong, dropped the rest of its 1 MB block
    without an error (17,789 rows of a real-size file); the reader now counts the lines."""
    path = shutil.copyfile(csv_book / "performance.csv", tmp_path / "performance.csv")
    assert path.stat().st_size > 1 << 20
    lines = _edit_lines(path, {})
    quote = 70
    _edit_lines(path, {quote: lines[quote - 1].replace(b",open,", b',"open,')})
    got = read_csv_table(path, "loan_id")
    assert len(got) == len(lines) - 2  # every line after the header, the blank end excluded
    assert got[CSV_LINE].dropna().tolist() == [f"line {quote} has a quote that is never closed"]


def test_a_malformed_line_of_the_loans_table_sets_that_loan_aside(csv_book, tmp_path) -> None:
    book = shutil.copytree(csv_book, tmp_path / "book")
    lines = (book / "loans.csv").read_bytes().split(b"\n")
    lid = lines[9].split(b",")[0].decode()
    _edit_lines(book / "loans.csv", {10: lines[9] + b",x,y"})
    kept = validate_folder(book).set_aside()
    assert kept.rejected == {lid: "loans:csv_line"}
    assert kept.loans_in_book == len(lines) - 2 and kept.loans_rejected == 1  # still a loan of the book


def test_an_empty_file_or_a_bad_header_is_a_whole_book_problem(csv_book, tmp_path) -> None:
    book = shutil.copytree(csv_book, tmp_path / "book")
    (book / "loans.csv").write_bytes(b"")
    assert validate_folder(book).unusable
    (book / "loans.csv").write_bytes(b'loan_id,"borrower_id\nL1,B1\n')
    with pytest.raises(ValueError, match="header line .* quote that is never closed"):
        validate_folder(book)


def test_a_table_in_both_formats_reads_the_parquet_file_and_says_so(csv_book, tmp_path, caplog) -> None:
    book = tmp_path / "book"
    shutil.copytree(csv_book, book)
    loans = read_raw_tables(book, ("loans",))[0]["loans"]
    loans.iloc[:0].to_parquet(book / "loans.parquet")  # an empty Parquet table beside the full CSV one
    with caplog.at_level("WARNING", logger="features.book"):
        raw, _ = read_raw_tables(book, ("loans",))
        read_raw_tables(book, ("loans",))
    assert len(raw["loans"]) == 0  # the Parquet file, as documented
    said = [r.getMessage() for r in caplog.records if "both exist" in r.getMessage()]
    assert len(said) == 1 and "loans.parquet and loans.csv" in said[0]  # once, not on every read


def test_a_line_break_inside_quotes_sets_its_loan_aside_and_names_no_other_loan(csv_book, tmp_path) -> None:
    """A quoted value with a line break (an address exported from a spreadsheet) spans two physical lines;
    the second was read as a record of its own, with a fragment of the value as loan id. A stray quote
    that never closes must not take the next loan's malformed line as its own (that loan's line would be
    lost, the loan kept)."""
    book = shutil.copytree(csv_book, tmp_path / "book")
    path = book / "loans.csv"
    lines = path.read_bytes().split(b"\n")
    broken, stray, after = 5, 20, 21  # a city with a line break; a stray quote; the next loan's bad line
    ids = {n: lines[n - 1].split(b",")[0].decode() for n in (broken, stray, after)}
    city = lines[broken - 1].split(b",")[8]
    _edit_lines(
        path,
        {
            broken: lines[broken - 1].replace(b"," + city + b",", b',"' + city + b'\nDistrict 9, Road 3",'),
            stray: lines[stray - 1].replace(b"," + city + b",", b',"' + city + b",")
            if b"," + city + b"," in lines[stray - 1]
            else lines[stray - 1].replace(b",", b',"', 1),
            after: b",".join(lines[after - 1].split(b",")[:4]),
        },
    )
    raw, _ = read_raw_tables(book, ("loans",))
    loans = raw["loans"]
    bad = loans[loans[CSV_LINE].notna()]
    notes = bad.groupby("loan_id")[CSV_LINE].apply(list)
    assert set(notes.index) == set(ids.values()), bad  # no fragment such as 'District 9' is a loan id
    assert notes[ids[broken]] == [
        f"line {broken} has a quote that is never closed",
        f"line {broken + 1} is the rest of a quoted value that line {broken} left open "
        "(a line break inside quotes: a record must be one line)",
    ]
    assert notes[ids[stray]] == [f"line {stray + 1} has a quote that is never closed"]  # one line later now
    assert notes[ids[after]] == [f"line {after + 1} has 4 fields where the header has 13"]
    good = loans[loans[CSV_LINE].isna()]
    assert len(good) == len(lines) - 2 - 3  # every other loan is read
    kept = validate_folder(book).set_aside()
    assert kept.rejected == dict.fromkeys(ids.values(), "loans:csv_line")
    assert kept.loans_in_book == len(lines) - 2  # no loan made of a fragment
