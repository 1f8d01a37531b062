"""The default event, the performing population and the horizon label (DESIGN.md §3), in one place.

- Default event: a month with days past due at or above the threshold, or a charge-off.
- Performing at t: a row for t, status open, below the threshold, not in default or probation (no
  event in the `probation` months up to t: a loan that cured comes back once it has stayed below the
  threshold that long), and no close (paid off, charged off) earlier in the history window. Cured loans
  are among the riskiest a lender holds, so they are scored, with their cure history as features.
- Label of (loan, t) for horizon H: 1 if an event falls in (t, t+H] before any clean close; 0 if the
  loan was observed through t+H or closed clean first; otherwise censored (-1).

Everything is computed on the dense month grid of `features.grid`, on integer month indices, so a
horizon of H months is exactly H calendar months. Only the last `HISTORY_MONTHS` months before t decide
whether a loan performs at t, so a loan sent to the API with that much history is judged as in the book.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import HISTORY_MONTHS
from features.grid import MonthGrid
from features.months import as_month, month_index

CENSORED = -1
DEFAULT_PROBATION = 3


@dataclass(frozen=True)
class LabelRule:
    """What counts as a default and when a cured loan performs again (parameters of a model spec)."""

    dpd_threshold: int = 90
    probation_months: int = DEFAULT_PROBATION

    def __post_init__(self) -> None:
        if self.dpd_threshold <= 0:
            raise ValueError(f"dpd_threshold must be positive, got {self.dpd_threshold}")
        if not 1 <= self.probation_months <= HISTORY_MONTHS:
            raise ValueError(
                f"probation_months must be between 1 and {HISTORY_MONTHS}, got {self.probation_months}"
            )


@dataclass
class GridStates:
    """The per-cell states every consumer needs, laid on one grid."""

    grid: MonthGrid
    dpd: np.ndarray
    is_open: np.ndarray
    event: np.ndarray
    closed: np.ndarray
    performing: np.ndarray


def grid_states(performance: pd.DataFrame, rule: LabelRule, grid: MonthGrid | None = None) -> GridStates:
    """Events, closes and the performing population on the book's month grid."""
    g = grid or MonthGrid.of_rows(performance)
    dpd = performance["days_past_due"].to_numpy(dtype=float, na_value=np.nan)
    status = performance["status"].to_numpy(dtype=object, na_value=None)
    return states_on_grid(g, dpd, status, rule)


def states_on_grid(
    g: MonthGrid, days_past_due: np.ndarray, status: np.ndarray, rule: LabelRule
) -> GridStates:
    """`grid_states` from row arrays (days past due as floats, status as text, in the grid's row order):
    the one definition of the default event, a close and the performing population."""
    dpd = g.put(days_past_due)
    is_open = g.flag(status == "open")
    charged_off = g.flag(status == "charged_off")
    closed = g.flag((status == "paid_off") | (status == "charged_off"))
    with np.errstate(invalid="ignore"):
        event = g.present & ((dpd >= rule.dpd_threshold) | charged_off)
        below = dpd < rule.dpd_threshold
    since_event = g.months_since(event, strictly_before=True)
    since_close = g.months_since(closed, strictly_before=True)
    performing = (
        g.present & is_open & below & (since_event >= rule.probation_months) & (since_close >= HISTORY_MONTHS)
    )
    return GridStates(g, dpd, is_open, event, closed, performing)


def label_cells(states: GridStates, cells: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Label (1, 0 or -1 censored) and months to the event (NaN unless 1) of the given grid cells."""
    if horizon <= 0:
        raise ValueError(f"horizon must be positive, got {horizon}")
    g = states.grid
    to_event = g.months_until(states.event)[cells]
    to_close = g.months_until(states.closed)[cells]
    to_end = (g.last[g.gloan] - g.gm)[cells]  # months the loan is observed after t
    bad = (to_event <= horizon) & (to_event <= to_close)
    observed = (to_end >= horizon) | (to_close <= horizon)
    label = np.where(bad, 1, np.where(observed, 0, CENSORED)).astype(np.int8)
    return label, np.where(bad, to_event, np.nan)


def cells_of(grid: MonthGrid, loan_id: pd.Series | np.ndarray, as_of) -> np.ndarray:
    """Grid cell of each (loan, month); -1 where the loan has no cell that month."""
    code = grid.loan_index.get_indexer(pd.Index(np.asarray(loan_id)))
    t = (
        month_index(as_of)
        if not np.isscalar(as_of)
        else np.full(len(code), month_index([as_month(as_of)])[0])
    )
    return cells_of_codes(grid, code, t)


def cells_of_codes(grid: MonthGrid, code: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Grid cell of each (loan code, month index); -1 where the code is -1 or the loan has no cell then."""
    c = np.maximum(code, 0)
    ok = (code >= 0) & (t >= grid.first[c]) & (t <= grid.last[c])
    return np.where(ok, grid.start[c] + (t - grid.first[c]), -1)


def label_snapshots(
    performance: pd.DataFrame, loan_id: pd.Series, as_of: pd.Series, rule: LabelRule, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label and months to the event of each (loan, as-of month) snapshot of the book's rows."""
    if horizon <= 0:
        raise ValueError(f"horizon must be positive, got {horizon}")
    states = grid_states(performance, rule)
    cells = cells_of(states.grid, loan_id, as_of)
    if (cells < 0).any():
        raise ValueError("a snapshot has no performance row for its loan and month")
    return label_cells(states, cells, horizon)


def performing_snapshots(performance: pd.DataFrame, rule: LabelRule, horizon: int) -> pd.DataFrame:
    """Every performing (loan, month) with its label (censored ones included, label -1)."""
    states = grid_states(performance, rule)
    g = states.grid
    cells = np.flatnonzero(states.performing)
    label, ttd = label_cells(states, cells, horizon)
    from features.months import index_to_month

    return pd.DataFrame(
        {
            "loan_id": g.loan_index[g.gloan[cells]],
            "month": index_to_month(g.gm[cells]),
            "label": label,
            "months_to_default": ttd,
        }
    )
