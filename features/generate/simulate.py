"""Forward simulation month by month over all open loans: the performance rows and the hidden states.

The hidden process (`features.generate.process`) decides each month's outcome; what the servicing file
shows is an emission of it: amounts paid and due, days past due (in whole cycles on a coarse profile),
and for a card the statement balance and minimum due, which follow the stress state but never drive it
(so the oracle's state stays (S, D)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.generate.params import GeneratorParams
from features.generate.process import (
    BACK,
    CURE,
    DEF_STATE,
    MISS,
    MISS2,
    N_OUTCOMES,
    PAID_STATE,
    PAY,
    RESTRUCTURE,
    ROLL,
    STAY,
    SUDDEN,
    LoanArrays,
    next_state,
    outcome_probs,
    scheduled_balance,
    sigmoid,
    stress_probs,
)
from features.generate.scenario import Scenario
from features.months import index_to_month

STATUSES = np.array(["open", "paid_off", "charged_off"])


def simulate(rng, la: LoanArrays, sc: Scenario, ws: int, n_months: int, p: GeneratorParams, progress):
    """Rows of every loan over the window's slots, sorted by loan and slot, with the hidden S and D."""
    n = len(la.q)
    S = np.zeros(n, dtype=np.int8)
    D = np.zeros(n, dtype=np.int8)
    dpd = np.zeros(n, dtype=np.int64)
    k_paid = np.zeros(n, dtype=np.int64)
    alive = np.zeros(n, dtype=bool)  # has rows and is not closed
    defaulted = np.zeros(n, dtype=bool)
    util = la.util0.copy()
    # seasoned loans start current, paid to date, in their stationary stress state
    seasoned = la.orig < ws
    on0, off0 = stress_probs(la, sc, ws, np.arange(n), p)
    S[seasoned] = (rng.random(seasoned.sum()) < (on0 / (on0 + off0))[seasoned]).astype(np.int8)
    k_paid[seasoned] = ws - 1 - la.orig[seasoned]
    out: dict[str, list] = {
        k: [] for k in ("loan", "slot", "balance", "sched", "paid", "dpd", "status", "restr", "S", "D")
    }
    cards = la.revolving.any()
    for slot in range(ws, ws + n_months):
        new = la.orig == slot
        alive |= new
        if slot == ws:
            alive |= seasoned
        idx = np.flatnonzero(alive & ~new)
        status = np.zeros(len(idx), dtype=np.int8)  # 0 open 1 paid_off 2 charged_off
        restr = np.zeros(len(idx), dtype=bool)
        paid_amt = np.zeros(len(idx))
        sched = la.installment[idx].copy()
        k = slot - la.orig[idx]
        matured = k >= la.term[idx]
        bal_before = scheduled_balance(la, k_paid[idx], idx)
        dd = defaulted[idx]  # loans in default: collection process
        live = ~dd  # performing or delinquent loans: the hidden-state process
        li = idx[live]
        on, off = stress_probs(la, sc, slot, li, p)
        u = rng.random(len(li))
        s_new = np.where(S[li] == 1, (u >= off).astype(np.int8), (u < on).astype(np.int8))
        S[li] = s_new
        probs = outcome_probs(la, sc, slot, li, s_new, D[li].astype(np.int64), p)
        cum = np.cumsum(probs, axis=1)
        u = rng.random(len(li))[:, None]
        o = np.minimum((u > cum).sum(axis=1), N_OUTCOMES - 1)
        nxt = next_state(D[li].astype(np.int64), o, matured[live])
        inst = la.installment[li]
        a = D[li].astype(np.int64)
        pay = np.zeros(len(li))
        paid_n = np.zeros(len(li), dtype=np.int64)
        ddpd = dpd[li].copy()
        missed = (o == MISS) | (o == MISS2)
        pay = np.where(o == PAY, inst, pay)
        paid_n = np.where(o == PAY, 1, paid_n)
        partial = rng.random(len(li)) < np.where(S[li] == 1, p.partial_share_stressed, p.partial_share_normal)
        frac = rng.uniform(*p.partial_paid, len(li))
        pay = np.where(missed | (o == ROLL), np.where(partial, inst * frac, 0.0), pay)
        first_dpd = rng.integers(1, 30, len(li))
        ddpd = np.where(o == MISS, first_dpd, ddpd)
        ddpd = np.where(o == MISS2, first_dpd + 30, ddpd)  # a returned payment and a miss: two cycles
        ddpd = np.where(o == ROLL, ddpd + 30, ddpd)
        pay = np.where(o == CURE, inst * (a + 1), pay)
        paid_n = np.where(o == CURE, a + 1, paid_n)
        ddpd = np.where((o == CURE) | (o == RESTRUCTURE), 0, ddpd)
        pay = np.where(o == RESTRUCTURE, inst, pay)
        paid_n = np.where(o == RESTRUCTURE, a + 1, paid_n)  # arrears capitalised into the schedule
        pay = np.where(o == BACK, 2 * inst, pay)
        paid_n = np.where(o == BACK, 2, paid_n)
        ddpd = np.where(o == BACK, np.maximum(ddpd - 30, 1), ddpd)
        pay = np.where(o == STAY, inst, pay)
        paid_n = np.where(o == STAY, 1, paid_n)
        ddpd = np.where(o == SUDDEN, ddpd + 30, ddpd)
        bal_live = bal_before[live]
        pay = np.where(nxt == PAID_STATE, bal_live + inst * (1 + a), pay)
        st = np.where(nxt == PAID_STATE, 1, 0)
        st = np.where(o == SUDDEN, 2, st)
        k_paid[li] += paid_n
        dpd[li] = ddpd
        D[li] = np.where(nxt <= 3, nxt, np.where(nxt == DEF_STATE, 4, 0)).astype(np.int8)
        defaulted[li[nxt == DEF_STATE]] = True
        status[live] = st
        restr[live] = o == RESTRUCTURE
        paid_amt[live] = np.round(pay, 2)
        # loans already in default: charge-off, NPL sale, rare cure
        di = idx[dd]
        if len(di):
            u = rng.random(len(di))
            cured = u < p.post_default_cure_prob
            sold = (~cured) & (u < p.post_default_cure_prob + p.npl_sale_prob)
            new_dpd = np.where(cured, 0, dpd[di] + 30)
            co = (~cured) & (sold | (new_dpd >= p.chargeoff_dpd))
            inst_d = la.installment[di]
            paid_amt[dd] = np.where(cured, np.round(inst_d * (D[di] + 1), 2), 0.0)
            k_paid[di] += np.where(cured, D[di] + 1, 0)
            dpd[di] = new_dpd
            D[di] = np.where(cured, 0, 4).astype(np.int8)
            status[dd] = np.where(co, 2, 0)
            # a cured defaulter goes on as a normal loan, still stressed; after probation it performs again
            defaulted[di[cured]] = False
            S[di[cured]] = 1
        bal = np.where(status == 1, 0.0, scheduled_balance(la, k_paid[idx], idx))
        sched = np.where(matured & (la.rtype[idx] != 0) & (k == la.term[idx]), sched + bal_before, sched)
        if cards:
            bal, sched, paid_amt = _card_rows(rng, la, p, idx, live, o, S, util, status, bal, sched, paid_amt)
        # new loans: first row at drawdown (a new card is drawn at its usual utilisation)
        ni = np.flatnonzero(new)
        first_bal = np.where(la.revolving[ni], np.round(util[ni] * la.principal[ni], 2), la.principal[ni])
        rows_idx = np.concatenate([idx, ni])
        out["loan"].append(rows_idx)
        out["slot"].append(np.full(len(rows_idx), slot))
        out["balance"].append(np.round(np.concatenate([bal, first_bal]), 2))
        out["sched"].append(np.round(np.concatenate([sched, np.zeros(len(ni))]), 2))
        out["paid"].append(np.concatenate([paid_amt, np.zeros(len(ni))]))
        out["dpd"].append(np.concatenate([dpd[idx], np.zeros(len(ni), dtype=np.int64)]))
        out["status"].append(np.concatenate([status, np.zeros(len(ni), dtype=np.int8)]))
        out["restr"].append(np.concatenate([restr, np.zeros(len(ni), dtype=bool)]))
        out["S"].append(np.concatenate([S[idx], S[ni]]))
        out["D"].append(np.concatenate([D[idx], D[ni]]))
        alive[idx[status > 0]] = False
        if progress:
            progress("simulate", slot - ws + 1, n_months)
    rows = {k: np.concatenate(v) for k, v in out.items()}
    order = np.lexsort((rows["slot"], rows["loan"]))
    rows = {k: v[order] for k, v in rows.items()}
    if p.coarse_dpd:  # whole cycles past due, as card systems report
        rows["dpd"] = -(-rows["dpd"] // 30) * 30
    return rows


def _card_rows(rng, la, p, idx, live, o, S, util, status, bal, sched, paid_amt):
    """Statement balance, minimum due and amount paid of the cards among `idx` this month.

    Utilisation mean-reverts to the cardholder's usual level when normal and drifts up under stress
    (borrowing to get by); arrears accrue interest. Payment follows the outcome: a paying transactor
    clears the statement, a stressed payer mostly pays only the minimum."""
    card = la.revolving[idx]
    ci = idx[card]
    stressed = S[ci] == 1
    noise = rng.normal(0, p.card_util_noise, len(ci))
    u = util[ci]
    u = np.where(
        stressed,
        u + p.card_util_stress_drift + noise,
        u + p.card_util_reversion * (la.util0[ci] - u) + noise,
    )
    out_o = np.full(len(idx), -1)
    out_o[live] = o
    oc = out_o[card]
    behind = oc != PAY  # delinquent, missing or in default (-1): interest and fees accrue
    u = np.where(behind, u * (1 + la.rate[ci] / 12) + p.card_arrears_fee, u)
    util[ci] = np.clip(u, 0.0, p.card_util_max)
    balance = np.round(util[ci] * la.principal[ci], 2)
    minimum = np.where(
        balance > 0, np.minimum(balance, np.maximum(p.card_min_share * balance, p.card_min_floor)), 0.0
    )
    r = rng.random(len(ci))
    transactor = r < sigmoid(p.card_transactor_base + la.q[ci])
    min_only = r < p.card_min_only_stressed
    revolver = minimum * rng.uniform(*p.card_revolver_paid, len(ci))
    paying = np.where(
        stressed, np.where(min_only, minimum, revolver), np.where(transactor, balance, revolver)
    )
    # other outcomes pay in units of the usual installment: the same units of today's minimum
    scale = minimum / np.maximum(la.installment[ci], 1e-9)
    pay = np.where(oc == PAY, np.minimum(paying, balance), paid_amt[card] * scale)
    closed = status[card] == 1
    pay = np.where(closed, balance, pay)
    bal = bal.copy()
    sched = sched.copy()
    paid_amt = paid_amt.copy()
    bal[card] = np.where(closed, 0.0, balance)
    sched[card] = minimum
    paid_amt[card] = np.round(pay, 2)
    return bal, sched, paid_amt


def performance_frame(rows: dict, loan_ids: np.ndarray, sc: Scenario) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "loan_id": loan_ids[rows["loan"]],
            "month": index_to_month(rows["slot"] + sc.first).astype("datetime64[ns]"),
            "balance": rows["balance"],
            "scheduled_payment": rows["sched"],
            "paid_amount": rows["paid"],
            "days_past_due": rows["dpd"].astype(np.int64),
            "status": STATUSES[rows["status"]],
            "restructured": rows["restr"].astype(bool),
        }
    )


def reporting_gaps(rng, perf: pd.DataFrame, p: GeneratorParams) -> np.ndarray:
    """Drop a few open, current, mid-life rows: real servicing files have missing months."""
    loan = perf["loan_id"].to_numpy()
    first = np.r_[True, loan[1:] != loan[:-1]]
    last = np.r_[loan[1:] != loan[:-1], True]
    prev_dpd = np.r_[0, perf["days_past_due"].to_numpy()[:-1]]
    eligible = (
        (perf["status"].to_numpy() == "open")
        & (perf["days_past_due"].to_numpy() == 0)
        & (prev_dpd == 0)
        & ~first
        & ~last
    )
    drop = eligible & (rng.random(len(perf)) < p.missing_row_prob)
    return ~drop
