"""Shared, seeded fixtures: generated books are built once per session and written to temp folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.book import write_book
from features.generate import Generated, generate_book

DEMO_LOANS, DEMO_MONTHS, DEMO_SEED = 20_000, 48, 7


@pytest.fixture(scope="session")
def demo_generated() -> Generated:
    """The demo-size book (20,000 loans x 48 months, seed 7) with its oracle, in memory."""
    return generate_book(DEMO_LOANS, DEMO_MONTHS, DEMO_SEED)


@pytest.fixture(scope="session")
def small_generated() -> Generated:
    return generate_book(1500, 30, 11)


@pytest.fixture(scope="session")
def small_book_dir(small_generated: Generated, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("books") / "small"
    write_book(small_generated.book, folder, extras={"oracle": small_generated.oracle})
    return folder
