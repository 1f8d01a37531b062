"""The oracle: the exact probability that a loan open and not in default at a month end reaches the
default event within h months, given its full hidden state (q, S, D) and the generator's scenario.

Backward recursion over months through the same transition tensors that drive the simulation. The event
is "days past due at or above a threshold, or a charge-off": on the clean profile a 90 DPD threshold is
the default state itself, 30 and 60 are buckets 2 and 3; where DPD is reported in whole cycles (30 per
bucket) they are buckets 1, 2 and 3. The buckets at or past the threshold are absorbing, so the oracle is
exact for every threshold that falls on a bucket boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import pandas as pd

from features.generate.params import GeneratorParams
from features.generate.process import DEF_STATE, N_BUCKETS, LoanArrays, transition_to_states
from features.generate.scenario import Scenario
from features.months import index_to_month

ORACLE_HORIZONS = (1, 3, 6, 12)
ORACLE_THRESHOLDS = (30, 90)


def oracle_column(dpd_threshold: int, horizon: int) -> str:
    """The oracle file's column for a label (the one place the naming lives)."""
    return f"pd_{dpd_threshold}d_{horizon}m"


def pit_oracle_column(dpd_threshold: int, horizon: int) -> str:
    """The column of the point-in-time oracle (`pit_oracle`) for a label."""
    return "pit_" + oracle_column(dpd_threshold, horizon)


def first_absorbing_bucket(dpd_threshold: int, coarse: bool) -> int | None:
    """The lowest hidden bucket whose reported DPD is at or above the threshold (DEF_STATE for 90+ on a
    clean book); None when the threshold falls inside a bucket (no exact oracle)."""
    if coarse:  # bucket b is reported as 30 b days
        b = -(-dpd_threshold // 30)
        return b if 30 * b >= dpd_threshold and 1 <= b <= DEF_STATE else None
    # clean: bucket 1 holds 1-29 DPD, 2: 31-59, 3: 61-89, default 91+
    return {30: 2, 60: 3, 90: DEF_STATE}.get(dpd_threshold)


def oracle(
    la: LoanArrays,
    sc: Scenario,
    rows: dict,
    ws: int,
    n_months: int,
    p: GeneratorParams,
    loan_ids: np.ndarray,
    progress,
    thresholds: tuple[int, ...] = ORACLE_THRESHOLDS,
    horizons: tuple[int, ...] = ORACLE_HORIZONS,
) -> pd.DataFrame:
    """One row per open loan-month not in default, a column per (threshold, horizon)."""
    H = max(horizons)
    slot = rows["slot"]
    keep = (rows["status"] == 0) & (rows["D"] < DEF_STATE)
    sel_rows = np.flatnonzero(keep)
    n = len(la.q)
    need = np.zeros(n, dtype=bool)
    need[rows["loan"][sel_rows]] = True
    loans_needed = np.flatnonzero(need)
    pos = np.full(n, -1)
    pos[loans_needed] = np.arange(len(loans_needed))
    row_slot = slot[sel_rows]
    row_loan = pos[rows["loan"][sel_rows]]
    row_S = rows["S"][sel_rows].astype(np.int64)
    row_D = rows["D"][sel_rows].astype(np.int64)
    absorbing = {thr: first_absorbing_bucket(thr, p.coarse_dpd) for thr in thresholds}
    usable = [thr for thr, k in absorbing.items() if k is not None]
    out = {(thr, h): np.full(len(sel_rows), np.nan) for thr in usable for h in horizons}
    A_next = {thr: np.zeros((len(loans_needed), H + 1, 2, N_BUCKETS)) for thr in usable}
    last = ws + n_months - 1 + H
    # only loans originated by t+1 matter at slot t; a loan originated later has no row yet
    for t in range(last - 1, ws - 1, -1):
        active = np.flatnonzero(la.orig[loans_needed] <= t + 1)
        sel = np.flatnonzero(row_slot == t)
        PS = PD = None
        if len(active):
            PS, PD = transition_to_states(la, sc, t + 1, loans_needed[active], p)
        for thr in usable:
            k = absorbing[thr]
            A = np.zeros_like(A_next[thr])
            if len(active):
                val = np.zeros((len(active), H, 2, 6))
                val[:, :, :, :N_BUCKETS] = A_next[thr][active, :H]
                val[:, :, :, k:N_BUCKETS] = 1.0  # reaching a bucket at or past the threshold is the event
                val[:, :, :, DEF_STATE] = 1.0
                # X[n,h,S',D] = sum_k PD[n,S',D,k] * val[n,h,S',k]
                X = np.einsum("nsdk,nhsk->nhsd", PD, val, optimize=True)
                A[active, 1:] = np.einsum("nab,nhbd->nhad", PS, X, optimize=True)
            for h in horizons:
                v = A[row_loan[sel], h, row_S[sel], row_D[sel]]
                out[(thr, h)][sel] = np.where(row_D[sel] < k, v, np.nan)
            A_next[thr] = A
        if progress:
            progress("oracle", last - t, last - ws)
    return pd.DataFrame(
        {
            "loan_id": loan_ids[rows["loan"][sel_rows]],
            "month": index_to_month(row_slot + sc.first).astype("datetime64[ns]"),
            **{oracle_column(thr, h): out[(thr, h)] for thr in usable for h in horizons},
        }
    )


def pit_oracle(
    la: LoanArrays,
    sc: Scenario,
    rows: dict,
    slots: Iterable[int],
    p: GeneratorParams,
    loan_ids: np.ndarray,
    thresholds: tuple[int, ...] = ORACLE_THRESHOLDS,
    horizons: tuple[int, ...] = ORACLE_HORIZONS,
) -> pd.DataFrame:
    """The oracle as a point-in-time model at its best: every loan's true hidden state at month t, with
    the scenario frozen at t (macro stress, industry shocks and house prices held at their month-t values
    over the horizon), for the rows of the given calendar slots.

    Why: the oracle knows the scenario's future, which no model of the book at t can. Where the cycle
    turns inside the horizon, the oracle's calibration in the large (O/E) is unreachable, and this one
    is the honest bound: a PIT model that over-predicts as a recovery begins as much as this one does is
    as calibrated as the book's own data allow. One short recursion per slot, so it is asked for, not
    written by default."""
    parts = []
    for t in slots:
        sel = rows["slot"] == t
        if not sel.any():
            continue
        frozen = replace(
            sc,
            macro=_held(sc.macro, t),
            industry_shock=_held(sc.industry_shock, t),
            log_hpi=_held(sc.log_hpi, t),
        )
        at_t = {k: v[sel] for k, v in rows.items()}
        part = oracle(la, frozen, at_t, t, 1, p, loan_ids, None, thresholds, horizons)
        parts.append(part.rename(columns=lambda c: c if c in ("loan_id", "month") else "pit_" + c))
    if not parts:
        return pd.DataFrame(columns=["loan_id", "month"])
    return pd.concat(parts, ignore_index=True)


def _held(path: np.ndarray, t: int) -> np.ndarray:
    """A scenario path (months on the last axis) held at its month-t value from t on."""
    out = path.copy()
    out[..., t + 1 :] = path[..., t : t + 1]
    return out
