"""Opportunistic micro-batching for concurrent single-loan requests.

Building features and SHAP values for 16 loans costs little more than for one (pandas and LightGBM
overheads are per call), so requests that arrive while a batch is being scored wait and are scored
together in the next one. There is no batching window: a lone request is scored at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """`submit(item)` from many threads; `fn(items)` returns one result or exception per item, in order."""

    def __init__(self, fn: Callable[[Sequence[T]], list[R | BaseException]], max_batch: int = 64) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[T, Future]] = []
        self._busy = False

    def submit(self, item: T) -> R:
        fut: Future = Future()
        with self._lock:
            self._pending.append((item, fut))
            lead = not self._busy
            self._busy = True
        if lead:
            self._drain()
        return fut.result()

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                if not batch:
                    self._busy = False
                    return
            try:
                results = self.fn([item for item, _ in batch])
            except BaseException as e:  # handed to every waiting caller
                results = [e] * len(batch)
            for (_, fut), res in zip(batch, results, strict=True):
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
