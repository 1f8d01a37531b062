"""The batch's book reader: in a second process it gives exactly the chunks the in-thread reader gives,
hands its errors to the scoring side, and never outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features.book import read_raw_tables, write_book
from features.labels import LabelRule
from serving.reader import ProcessReader, ReadPlan, read_in_thread, start_process_reader

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def as_of(small_generated) -> str:
    return f"{small_generated.book.last_month:%Y-%m}"


def _frames(chunks) -> dict[str, pd.DataFrame]:
    chunks = list(chunks)
    out = {
        name: pd.concat([getattr(c, name) for c in chunks], ignore_index=True)
        .sort_values(list(key), ignore_index=True)
        .reset_index(drop=True)
        for name, key in (("features", ["loan_id"]), ("info", ["loan_id"]), ("rejects", ["loan_id", "rule"]))
    }
    counts = pd.DataFrame([(c.loans, c.rejected_in_book, c.orphan_rows) for c in chunks]).sum()
    out["counts"] = counts.to_frame()
    return out


def test_the_reader_process_gives_exactly_the_chunks_of_the_thread(small_generated, as_of, tmp_path) -> None:
    """The reader process against the in-thread reader on a book with rejects (rows of unknown loans):
    the same features, officer fields, rejects and counts, to the bit."""
    b = small_generated.book
    orphans = b.performance.iloc[:2].assign(loan_id=["A-no-such-loan", "ZZ-no-such-loan"])
    folder = write_book(
        type(b)(b.borrowers, b.loans, b.collateral, b.house_prices, pd.concat([b.performance, orphans])),
        tmp_path / "book",
    )
    plan = ReadPlan(folder, pd.Timestamp(as_of), 400)
    rule = LabelRule(90, 3)
    want = _frames(read_in_thread(plan)(rule))
    assert len(want["features"]) > 500 and len(want["rejects"]) == 2
    reader = ProcessReader(plan)
    got = _frames(reader(rule))
    for name, frame in want.items():
        pd.testing.assert_frame_equal(got[name], frame, obj=name)
    assert reader.peak_rss_gib is not None and reader.peak_rss_gib > 0
    assert not _alive(reader.pid)


def test_an_error_in_the_reader_is_raised_where_the_chunks_are_read(small_book_dir, as_of, tmp_path) -> None:
    """A book whose loans table breaks the contract as a whole: the process reader raises the very error
    (type and words) the in-thread reader raises."""
    raw, _ = read_raw_tables(small_book_dir, ("borrowers", "loans", "collateral", "house_prices"))
    folder = tmp_path / "book"
    folder.mkdir()
    for name, df in raw.items():
        df = df.drop(columns=["principal"]) if name == "loans" else df
        df.to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "performance.parquet").write_bytes((small_book_dir / "performance.parquet").read_bytes())
    plan = ReadPlan(folder, pd.Timestamp(as_of), 400)
    with pytest.raises(ValueError) as thread_error:
        list(read_in_thread(plan)(LabelRule()))
    with pytest.raises(ValueError) as process_error:
        list(ProcessReader(plan)(LabelRule()))
    assert "cannot be scored" in str(thread_error.value)
    assert str(process_error.value) == str(thread_error.value)


def test_an_error_before_the_model_is_known_keeps_its_words(small_book_dir, as_of, tmp_path) -> None:
    """A table that cannot be read fails the reader before the label rule arrives, and the reader has
    ended by the time the rule is sent: its own error is raised, not "stopped unexpectedly"."""
    folder = tmp_path / "book"
    folder.mkdir()
    for f in small_book_dir.glob("*.parquet"):
        (folder / f.name).write_bytes(b"" if f.name == "collateral.parquet" else f.read_bytes())
    reader = ProcessReader(ReadPlan(folder, pd.Timestamp(as_of), 400))
    reader._proc.join(timeout=60)  # ended (its error sent) before anyone asks for a chunk
    assert reader._proc.exitcode == 0
    with pytest.raises(Exception) as e:
        list(reader(LabelRule()))
    assert not isinstance(e.value, ChildProcessError)
    assert "collateral.parquet" in str(e.value)


def test_a_reader_that_dies_is_an_error_not_a_hang(small_book_dir, as_of) -> None:
    reader = ProcessReader(ReadPlan(small_book_dir, pd.Timestamp(as_of), 400))
    os.kill(reader.pid, signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(ChildProcessError, match="reader process stopped unexpectedly"):
        list(reader(LabelRule()))
    assert time.monotonic() - t < 10


@pytest.mark.slow  # kills processes and waits for the survivors
def test_a_reader_closed_early_stops_and_one_whose_scorer_dies_stops_by_itself(small_book_dir, as_of) -> None:
    """`close()` before any chunk (the command failed to load its model) stops the reader at once; a
    scoring process killed outright (kill -9, no clean-up) leaves no reader behind either."""
    reader = ProcessReader(ReadPlan(small_book_dir, pd.Timestamp(as_of), 400))
    reader.close()
    assert not _alive(reader.pid)

    for consume in ("", "    it = r(LabelRule())\n    next(it)\n"):  # waiting for the rule; chunks queued
        script = (
            "import sys, time, pandas as pd\n"
            "from pathlib import Path\n"
            "from features.labels import LabelRule\n"
            "from serving.reader import ProcessReader, ReadPlan\n"
            "if __name__ == '__main__':\n"
            f"    r = ProcessReader(ReadPlan(Path({str(small_book_dir)!r}), pd.Timestamp({as_of!r}), 400))\n"
            f"{consume}"
            "    print(r.pid, flush=True)\n"
            "    time.sleep(60)\n"
        )
        scorer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            pid = int(scorer.stdout.readline())
            time.sleep(0.5)  # the reader fills the queue as far as it may
            assert _alive(pid)
            scorer.kill()
            scorer.wait()
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(pid), f"the reader outlived the process it reads for ({consume!r})"
        finally:
            scorer.kill()


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan is reaped by init, a child by `join`)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_host_that_cannot_start_a_reader_process_reads_in_this_one(
    small_book_dir, as_of, monkeypatch, caplog
) -> None:
    """A host where no process can be spawned (a process limit): no reader process, a warning, and the
    batch then reads in its own thread (`score_book` without a source)."""
    import multiprocessing.process

    def refuse(self):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    assert start_process_reader(ReadPlan(small_book_dir, pd.Timestamp(as_of), 400)) is None
    assert "cannot start a book reader process" in caplog.text


@pytest.mark.slow  # kills processes and waits for the survivors
def test_a_reader_killed_half_way_through_a_chunk_is_an_error_not_a_hang(small_book_dir, as_of) -> None:
    """The reader dies while the chunk it sends is only partly in the pipe (a chunk is far larger than a
    pipe's buffer, and nobody reads while it is killed): the scoring side gets an error at once."""
    reader = ProcessReader(ReadPlan(small_book_dir, pd.Timestamp(as_of), 400))
    chunks = reader(LabelRule())
    next(chunks)
    time.sleep(1.0)  # the reader prepares the next chunks and blocks sending one
    os.kill(reader.pid, signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(ChildProcessError, match="reader process stopped unexpectedly"):
        for _ in chunks:
            pass
    assert time.monotonic() - t < 10


def test_a_stream_closed_before_its_first_chunk_stops_the_reader(small_book_dir, as_of) -> None:
    """`score_book` closes the stream when anything fails before the loop (its model's SHAP tables)."""
    reader = ProcessReader(ReadPlan(small_book_dir, pd.Timestamp(as_of), 400))
    reader(LabelRule()).close()
    assert not _alive(reader.pid)
