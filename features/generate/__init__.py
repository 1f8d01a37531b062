"""A synthetic loan book driven by a data-generating process a credit officer would recognise.

Hidden per loan: a latent borrower quality `q` and a monthly stress state `S` (0 normal, 1 stressed).
Common paths: a national house-price cycle with a downturn that hits lower-tier cities harder, and a
macro stress path whose income shocks fall on some industries more than others. Each month a loan's
stress state moves, then its delinquency bucket moves by one of a few outcomes (`process`). The same
transition drives the forward simulation that writes the book (`simulate`) and the backward recursion
that writes the oracle (`oracle`): the exact probability that a loan defaults within h months.

Profiles (`params.PROFILES`): `clean` (the demo book), `card` (a card book as a bank reports it: one
vintage, whole-cycle DPD, re-defaults, gaps) and `mixed` (the lender's book with cards beside it,
reported coarsely).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from features.book import Book
from features.generate.loans import draw_loans
from features.generate.oracle import (
    ORACLE_HORIZONS,
    ORACLE_THRESHOLDS,
    oracle,
    oracle_column,
    pit_oracle,
    pit_oracle_column,
)
from features.generate.params import CITIES_WITHOUT_HPI, PROFILES, GeneratorParams, profile
from features.generate.scenario import Scenario, make_scenario
from features.generate.simulate import performance_frame, reporting_gaps, simulate
from features.months import index_to_month, month_number
from features.schema import SCHEMA_VERSION

__all__ = [
    "CITIES_WITHOUT_HPI",
    "ORACLE_HORIZONS",
    "ORACLE_THRESHOLDS",
    "PROFILES",
    "Generated",
    "GeneratorParams",
    "generate_book",
    "oracle_column",
    "pit_oracle_column",
    "profile",
]

# scenario months before the window (old appraisals) and after it (the oracle's horizon)
PRE_MONTHS, POST_MONTHS = 60, 13


@dataclass
class Generated:
    book: Book
    oracle: pd.DataFrame  # loan_id, month, pd_{thr}d_{h}m for every open loan-month not in default
    params: dict


def generate_book(
    n_loans: int,
    n_months: int,
    seed: int,
    params: GeneratorParams | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    pit_months: Iterable[pd.Timestamp] = (),
) -> Generated:
    """Generate a book of `n_loans` loans observed over `n_months` months, and its oracle PDs; for the
    months of `pit_months` (those inside the window), also the point-in-time oracle (`oracle.pit_oracle`:
    the true state, the scenario frozen at the month), NaN in the other months."""
    if n_loans < 1 or n_months < 6:
        raise ValueError("need at least 1 loan and 6 months")
    p = params or GeneratorParams()
    if max(ORACLE_HORIZONS) >= POST_MONTHS:
        raise ValueError("the scenario must extend past the window by more than the longest horizon")
    rng = np.random.default_rng(seed)
    end = pd.Timestamp(p.end_month + "-01")
    window_end = month_number(end)
    window_start = window_end - n_months + 1
    sc = make_scenario(
        rng, window_start - PRE_MONTHS, PRE_MONTHS + n_months + POST_MONTHS, window_start, n_months, p
    )
    borrowers, loans, collateral, la = draw_loans(rng, n_loans, sc, window_start, n_months, p)
    ws = PRE_MONTHS
    rows = simulate(rng, la, sc, ws, n_months, p, progress)
    hp = _house_prices(sc, ws, n_months)
    loan_ids = loans["loan_id"].to_numpy()
    perf = performance_frame(rows, loan_ids, sc)
    keep = reporting_gaps(rng, perf, p)
    perf = perf[keep].reset_index(drop=True)
    rows = {k: v[keep] for k, v in rows.items()}
    truth = oracle(la, sc, rows, ws, n_months, p, loan_ids, progress)
    slots = sorted({ws + month_number(pd.Timestamp(m)) - window_start for m in pit_months})
    slots = [t for t in slots if ws <= t < ws + n_months]
    if slots:
        pit = pit_oracle(la, sc, rows, slots, p, loan_ids)
        truth = truth.merge(pit, on=["loan_id", "month"], how="left", validate="one_to_one")
    book = Book(borrowers=borrowers, loans=loans, collateral=collateral, house_prices=hp, performance=perf)
    meta = {"n_loans": n_loans, "n_months": n_months, "seed": seed, "schema_version": SCHEMA_VERSION}
    return Generated(book, truth, {**meta, **asdict(p)})


def _house_prices(sc: Scenario, ws: int, n_months: int) -> pd.DataFrame:
    """Published series: from five years before the window (older than any appraisal) to its end."""
    slots = np.arange(0, ws + n_months)
    rows = []
    months = index_to_month(slots + sc.first)
    for ci, city in enumerate(sc.cities):
        if city in CITIES_WITHOUT_HPI:
            continue
        rows.append(
            pd.DataFrame({"city": city, "month": months, "index": np.round(np.exp(sc.log_hpi[ci, slots]), 4)})
        )
    return pd.concat(rows, ignore_index=True)
