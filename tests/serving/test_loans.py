"""The served book by loan id: a loan the book's validation set aside is named as such, with its rule,
not called unknown."""

from __future__ import annotations

from dataclasses import replace

import pytest

from features.book import write_book
from serving.loans import BookIndex, InputError


def test_a_loan_set_aside_by_validation_says_so_and_its_rule(small_generated, tmp_path) -> None:
    book = small_generated.book
    bad = book.loans["loan_id"].iloc[3]
    loans = book.loans.copy()
    loans.loc[loans["loan_id"] == bad, "principal"] = -5.0
    index = BookIndex.load(write_book(replace(book, loans=loans), tmp_path / "book"))
    with pytest.raises(InputError) as e:
        index.loan_book(bad)
    assert e.value.status == 422
    ((field, message),) = e.value.problems
    assert field == "loan_id" and f"loan {bad!r} was set aside by the book's validation (" in message
    assert "principal" in message
    with pytest.raises(InputError) as e:
        index.loan_book("L-NOT-THERE")
    assert e.value.status == 404
    index.loan_book(book.loans["loan_id"].iloc[4])  # its neighbours are served
