"""Opportunistic micro-batching for concurrent single-loan requests, with each request's failure its own.

Building features and SHAP values for 16 loans costs little more than for one (pandas and LightGBM
overheads are per call), so requests that arrive while a batch is being scored wait and are scored
together in the next one. There is no batching window: a lone request is scored at once.

One scoring thread drains the queue, so no request thread is kept scoring other callers' batches after
its own answer is ready. `fn` returns one result or exception per item; if it raises for a whole batch,
the items are scored again one by one, so only the item that fails gets the error.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class MicroBatcher(Generic[T, R]):
    """`submit(item)` from many threads; `fn(items)` returns one result or exception per item, in order."""

    def __init__(self, fn: Callable[[Sequence[T]], list[R | BaseException]], max_batch: int = 64) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[T, Future]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, item: T) -> R:
        fut: Future = Future()
        self._queue.put((item, fut))
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:  # started on first use, not at construction
                    self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
                    self._thread.start()
        return fut.result()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self._results([item for item, _ in batch])
            except BaseException as e:  # never leave a caller waiting
                results = [e] * len(batch)
            for (_, fut), res in zip(batch, results, strict=True):
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _results(self, items: list[T]) -> list[R | BaseException]:
        """One result or exception per item; never raises, so the scoring thread never dies."""
        try:
            results = self.fn(items)
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            return results
        except Exception as e:
            if len(items) == 1:
                return [e]
            log.warning("a batch of %d items failed (%r); scoring them one by one", len(items), e)
            return [self._results([item])[0] for item in items]
