"""The batch's book reader: the book at one as-of month, read, validated and featurised partition by
partition, ahead of the scorer, in a thread or in a second process.

`ews score-book` reads the book in a second process started before anything else loads. Reading,
validating and building features is Python and pandas work that holds the GIL, and so is importing
MLflow and LightGBM and opening the registry (about 4 s): in one process the two take turns on one core;
in two, each has its own. The reader computes the book's context table and validates the first
partitions at once (it needs nothing from the model); features wait for the model's label rule (which
loans perform, how long a cure waits), which the scoring side sends as soon as the model is loaded.

The in-thread reader (the default of `serving.batch.score_book`) does the same work in this process.
Both produce the same `Chunk`s from the same functions, so the outputs do not depend on which one ran.

The second process is spawned (a fresh interpreter, never a fork of a process with threads) and imports
`features` and the command's own module (spawn re-imports it; the CLI imports MLflow and the model only
inside its commands). It runs at most `ahead` partitions ahead of the scorer (memory follows the chunk
size), ends when the scoring side stops or dies, and hands every error to the scoring side, where it is
raised as if it had happened there.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import queue
import resource
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pandas as pd

from features.book import isin
from features.build import build_features
from features.chunks import book_context, iter_book_chunks
from features.labels import LabelRule
from features.validation import ValidationReport

log = logging.getLogger(__name__)

REJECT_COLUMNS = ["loan_id", "rule", "in_loans_table", "detail"]
POLL_SECONDS = 0.1  # how often a blocked side looks whether the other one is still there


@dataclass
class Chunk:
    """One partition of loans, validated and featurised, ready to score."""

    loans: int  # loans in this partition of the loans table
    rejects: pd.DataFrame  # REJECT_COLUMNS
    rejected_in_book: int
    orphan_rows: int  # performance rows of no loan in the loans table (unknown or missing loan id)
    features: pd.DataFrame
    info: pd.DataFrame  # what a credit officer needs beside the score: who, what, where, how much
    # the partition's validation warnings: (rule name, message, rows; 0 for a problem of a whole table)
    warnings: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class ReadPlan:
    """What to read: the book, the as-of month and the partition size (loans)."""

    book_dir: Path
    as_of: pd.Timestamp
    chunk_loans: int


# a chunk source: given the model's label rule, the book's chunks in loan-id order
ChunkSource = Callable[[LabelRule], Iterator[Chunk]]


def prepare(report: ValidationReport, as_of: pd.Timestamp, rule: LabelRule, book_dir: Path, context) -> Chunk:
    """Rejects and features of one validated partition."""
    try:
        kept = report.set_aside()
    except ValueError as e:
        raise ValueError(f"book {str(book_dir)!r} cannot be scored: {e}") from e
    ids = report.book.loans["loan_id"].dropna().astype(str)
    rej = rejects_of(report, ids)
    orphan_rows = int((~isin(report.book.performance["loan_id"], ids)).sum())
    good = kept.book
    feats = build_features(good, as_of, rule, context)
    info = good.loans[["loan_id", "borrower_id", "product", "city"]]
    perf = good.performance
    bal = perf.loc[(perf["month"] == as_of).to_numpy(), ["loan_id", "balance"]]
    info = feats[["loan_id"]].merge(info, on="loan_id", how="left").merge(bal, on="loan_id", how="left")
    info["current_ltv"] = feats["current_ltv"].to_numpy() if "current_ltv" in feats else np.nan
    # a card's exposure is its use of the limit, as a secured loan's is its LTV (missing for the other)
    info["utilisation"] = feats["utilisation"].to_numpy() if "utilisation" in feats else np.nan
    info["dpd"] = feats["dpd_now"].to_numpy() if "dpd_now" in feats else np.nan
    if len(info) != len(feats):  # the loans and rows kept are unique per loan: a bug, never bad data
        raise AssertionError(f"{len(info)} info rows for {len(feats)} scored loans")
    warnings = tuple((p.rule_name, p.message, p.count) for p in report.warnings)
    return Chunk(kept.loans_in_book, rej, kept.loans_rejected, orphan_rows, feats, info, warnings)


def rejects_of(report: ValidationReport, ids: pd.Series) -> pd.DataFrame:
    """One line per loan id an error touches (its first rule; `detail` says what, e.g. the CSV line), and
    one per error of loans or performance rows that have no loan id at all (`loan_id` empty)."""
    lines = [(lid, p.rule_name, p.details.get(lid, p.message)) for lid, p in report.first_errors().items()]
    lines += [
        (None, p.rule_name, f"{_rows(p.rows_of_no_loan)} with no loan id: {p.details.get('', p.message)}")
        for p in report.errors
        if p.rows_of_no_loan
    ]
    rej = pd.DataFrame(lines, columns=["loan_id", "rule", "detail"])
    rej["in_loans_table"] = isin(rej["loan_id"], ids) if len(rej) else np.zeros(0, dtype=bool)
    return rej[REJECT_COLUMNS]


def _rows(n: int) -> str:
    return f"{n} row{'' if n == 1 else 's'}"


# ------------------------------------------------------------------------------------- in this process
def read_in_thread(plan: ReadPlan) -> ChunkSource:
    """The book's chunks from a worker thread that runs one partition ahead of the consumer (LightGBM and
    the SHAP kernel release the GIL while this partition is explained). An error in the worker is raised
    in the consumer; a consumer that stops early stops the worker too."""

    def source(rule: LabelRule) -> Iterator[Chunk]:
        context = book_context(plan.book_dir, plan.as_of)
        chunks = (
            prepare(report, plan.as_of, rule, plan.book_dir, context)
            for report in iter_book_chunks(plan.book_dir, plan.chunk_loans)
        )
        return _in_background(chunks)

    return source


def _in_background(items: Iterator[Chunk], depth: int = 1) -> Iterator[Chunk]:
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(msg: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as e:  # handed to the consumer, raised there
            put(("error", e))

    worker = threading.Thread(target=work, name="batch-reader", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


# ---------------------------------------------------------------------------------- in a second process
class ProcessReader:
    """A `ChunkSource` whose reading runs in a spawned process, started at construction; `close()` (or
    the end of the chunks) stops it. `peak_rss_gib` is the reader's own peak memory once it has finished
    (the scoring process's own peak does not include it). One reader: two were measured slower on 2
    cores (`bench batch` 0.87x against 0.93x of `pred_contrib`).

    The reader has a pipe of its own, and this process keeps only the pipe's reading end: a reader that
    dies, even half-way through a chunk, is an end of file here, never a wait. The reader pickles each
    chunk itself before it is sent, so a chunk that cannot be sent is its error, never a chunk silently
    lost, and its last message says how many it sent."""

    def __init__(self, plan: ReadPlan, ahead: int = 2, log_format: str | None = None) -> None:
        ctx = mp.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()  # the reader logs at this process's level
        self._chunks_in, chunks_out = ctx.Pipe(duplex=False)  # reader -> scorer: pickled messages
        rules_in, self._rules_out = ctx.Pipe(duplex=False)  # scorer -> reader: the label rule
        self._proc = ctx.Process(
            target=_reader_main,
            args=(plan, ahead, rules_in, chunks_out, level, log_format),
            name="batch-reader",
            daemon=True,
        )
        self.peak_rss_gib: float | None = None
        try:
            self._proc.start()
        except BaseException:
            self._chunks_in.close()
            self._rules_out.close()
            raise
        finally:
            chunks_out.close()  # the reader's ends live in the reader only
            rules_in.close()

    @property
    def pid(self) -> int | None:
        """The reader process's id (for operators and tests)."""
        return self._proc.pid

    def __call__(self, rule: LabelRule) -> Iterator[Chunk]:
        # a reader that has ended already cannot take it; why (its error, if it said one) is in the pipe
        with contextlib.suppress(OSError):
            self._rules_out.send(rule)
        return _Stream(self._chunks(), self.close)

    def _chunks(self) -> Iterator[Chunk]:
        """("item", Chunk)..., then ("done", (chunks sent, peak GiB)) or ("error", e)."""
        received = 0
        try:
            while True:
                try:
                    kind, value = pickle.loads(self._chunks_in.recv_bytes())
                except (EOFError, OSError):
                    raise self._stopped() from None
                if kind == "item":
                    received += 1
                    yield value
                elif kind == "error":
                    raise value
                else:
                    sent, self.peak_rss_gib = value
                    if sent != received:  # a bug, never bad data
                        raise AssertionError(f"the book reader sent {sent} chunks, {received} arrived")
                    return
        finally:
            self.close()

    def _stopped(self) -> ChildProcessError:
        """The error of a reader that ended without saying why (killed, out of memory): an OSError, so the
        command line prints it as its one-line failure."""
        self._proc.join(timeout=1)
        code = self._proc.exitcode
        return ChildProcessError(f"a book reader process stopped unexpectedly (exit code {code})")

    def close(self) -> None:
        """Stop the reader: one that has sent everything exits by itself, any other is terminated."""
        if self._proc.pid is not None:
            self._proc.join(timeout=2 if self.peak_rss_gib is not None else 0)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout=5)
        self._chunks_in.close()
        self._rules_out.close()


class _Stream(Iterator[Chunk]):
    """The chunks, with a `close()` that stops the reader even before the first chunk was asked for (a
    generator's own close does nothing until it has started)."""

    def __init__(self, chunks: Iterator[Chunk], stop: Callable[[], None]) -> None:
        self._chunks, self._stop = chunks, stop

    def __next__(self) -> Chunk:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()  # type: ignore[attr-defined]
        self._stop()


def start_process_reader(plan: ReadPlan, log_format: str | None = None) -> ProcessReader | None:
    """A reader process for `plan`, or None where this host cannot start one (a process limit, no
    interpreter to spawn): the caller then reads in a thread, slower but the same chunks."""
    try:
        return ProcessReader(plan, log_format=log_format)
    except OSError as e:
        log.warning("cannot start a book reader process (%s): reading the book in this process", e)
        return None


def _reader_main(
    plan: ReadPlan,
    ahead: int,
    rules: Connection,
    out: Connection,
    log_level: int,
    log_format: str | None,
) -> None:
    """The reader process: the context, then the book's partitions, validated ahead (up to
    `ahead` before the rule is known), featurised once the rule arrives, each sent on `out` (pickled
    here, sent by a thread, at most `ahead` waiting); then ("done", (count, peak GiB)), or ("error", e)
    at the first error. Logs as the scoring side does (its level and format)."""
    # a terminal's Ctrl-C reaches the whole foreground group: the scoring side says it and stops this
    # process, which would otherwise print a KeyboardInterrupt traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=log_format or logging.BASIC_FORMAT, stream=sys.stderr)
    parent = mp.parent_process()

    def watch() -> None:
        """End this process at once when the scoring side is gone, whatever it is doing."""
        while parent is None or parent.is_alive():
            time.sleep(POLL_SECONDS)
        os._exit(0)

    outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=ahead)

    def send() -> None:
        while (data := outbox.get()) is not None:
            try:
                out.send_bytes(data)
            except OSError:  # the scoring side closed its end (it stopped, or failed): nothing to send for
                os._exit(0)

    sent = 0

    def put(kind: str, value: object) -> None:
        nonlocal sent
        outbox.put(pickle.dumps((kind, value), protocol=pickle.HIGHEST_PROTOCOL))
        sent += kind == "item"

    def wait_rule() -> LabelRule:
        try:
            return rules.recv()
        except EOFError:  # the scoring side is gone before it had a model
            os._exit(0)

    def poll_rule() -> LabelRule | None:
        return wait_rule() if rules.poll() else None

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
    sender = threading.Thread(target=send, name="chunk-sender", daemon=True)
    sender.start()
    try:
        context = book_context(plan.book_dir, plan.as_of)
        rule: LabelRule | None = None
        waiting: deque[ValidationReport] = deque()
        for report in iter_book_chunks(plan.book_dir, plan.chunk_loans):
            waiting.append(report)
            if rule is None:
                rule = poll_rule()
                if rule is None and len(waiting) < ahead:
                    continue  # validate the next partition while the model loads
                rule = rule or wait_rule()
            while waiting:
                put("item", prepare(waiting.popleft(), plan.as_of, rule, plan.book_dir, context))
        rule = rule or wait_rule()
        while waiting:
            put("item", prepare(waiting.popleft(), plan.as_of, rule, plan.book_dir, context))
        put("done", (sent, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20))
    except BaseException as e:  # handed to the scoring side, raised there
        put("error", _picklable(e))
    outbox.put(None)
    sender.join()


def _picklable(e: BaseException) -> BaseException:
    """`e` itself when it crosses a process boundary intact, else its base type (ValueError, OSError:
    the command line's one-line failures) or a RuntimeError, with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        for base in (ValueError, OSError):
            if isinstance(e, base):
                return base(str(e))
        return RuntimeError(f"{type(e).__name__}: {e}")
