"""The micro-batcher: concurrent items are batched, and one item's failure is never a neighbour's."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.batcher import MicroBatcher


def _slow_double(items: list[int]) -> list[int | BaseException]:
    """Doubles each item; a whole batch with a negative item in it fails (like an overflow in pandas)."""
    time.sleep(0.01)
    if any(i < 0 for i in items):
        raise OverflowError("a negative item spoils the batch")
    return [ValueError(f"item {i} is odd") if i % 7 == 6 else 2 * i for i in items]


def _submit_all(batcher: MicroBatcher, items: list[int]) -> list[object]:
    def one(i: int) -> object:
        try:
            return batcher.submit(i)
        except Exception as e:  # the test looks at which items failed
            return e

    with ThreadPoolExecutor(16) as ex:
        return list(ex.map(one, items))


def test_a_poisoned_item_fails_alone_and_its_neighbours_are_scored() -> None:
    sizes: list[int] = []
    lock = threading.Lock()

    def fn(items):
        with lock:
            sizes.append(len(items))
        return _slow_double(items)

    batcher = MicroBatcher(fn)
    for _ in range(5):
        items = [*range(15), -1]
        results = _submit_all(batcher, items)
        assert isinstance(results[-1], OverflowError)
        for i, r in zip(items[:-1], results[:-1], strict=True):
            assert isinstance(r, ValueError) if i % 7 == 6 else r == 2 * i
    assert max(sizes) > 1, "concurrent items were never batched"


def test_a_wrong_result_count_or_a_base_exception_never_leaves_a_caller_waiting() -> None:
    calls = []

    def fn(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise KeyboardInterrupt  # not an Exception: every waiting caller still gets an answer
        return [] if len(items) > 1 else [items[0]]

    batcher = MicroBatcher(fn)
    with pytest.raises(KeyboardInterrupt):
        batcher.submit(1)
    results = _submit_all(batcher, list(range(8)))
    assert results == list(range(8))  # a short result list for a batch: retried one by one
