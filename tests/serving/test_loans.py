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


def test_the_book_price_index_a_request_reuses_is_the_one_it_would_build_and_the_cache_stays_bounded() -> (
    None
):
    import numpy as np
    import pandas as pd

    from serving.loans import PriceSeries

    cities = [f"C{i:03d}" for i in range(PriceSeries.CACHED + 40)]
    months = pd.period_range("2020-01", periods=6, freq="M").to_timestamp()
    hp = pd.DataFrame(
        [(c, m, 100.0 + i + k) for i, c in enumerate(cities) for k, m in enumerate(months)],
        columns=["city", "month", "index"],
    )
    prices = PriceSeries(hp)
    month = np.array([2020 * 12 + 3] * 2, dtype=np.int64)  # 2020-04
    for a, b in zip(cities, cities[1:], strict=False):
        got = prices.index_for({a, b, "NOWHERE"}, [])
        fresh = prices._index({a, b}, [])
        code = got.codes([a, b])
        assert np.array_equal(got.at(code, month), fresh.at(fresh.codes([a, b]), month))
        assert prices.index_for({b, a}, []) is got  # the same set of cities: the same index, built once
    assert len(prices._cache) <= PriceSeries.CACHED
    assert np.isnan(got.at(got.codes(["NOWHERE"]), month[:1]))[0]  # a city without a series has none
