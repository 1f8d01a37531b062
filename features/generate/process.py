"""The monthly transition of a loan's hidden state: one definition shared by the simulation and the oracle.

Hidden per loan: latent quality `q` and a stress state `S` (0 normal, 1 stressed). Each month S moves
(`stress_probs`), then the delinquency bucket `D` (0 current, 1: 1-29, 2: 30-59, 3: 60-89 days past due)
moves by one of a few outcomes (`outcome_probs`). Reaching 90+ DPD or a charge-off is the default state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.generate.params import GeneratorParams
from features.generate.scenario import Scenario

# Outcomes of one month for a loan in bucket D given its new stress state.
PAY, MISS, SUDDEN, PAID, CURE, RESTRUCTURE, BACK, STAY, ROLL, MISS2 = range(10)
N_OUTCOMES = 10
N_BUCKETS = 4
DEF_STATE = 4  # index of the default state among next-states (0..3 buckets, 4 default, 5 paid)
PAID_STATE = 5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class LoanArrays:
    """Static per-loan values the hazards need (numpy, one entry per loan)."""

    q: np.ndarray
    orig: np.ndarray  # origination month slot
    term: np.ndarray
    rate: np.ndarray
    principal: np.ndarray  # the amount lent; a card's credit limit
    rtype: np.ndarray  # 0 amortizing, 1 interest_only, 2 balloon, 3 revolving
    unsecured: np.ndarray  # bool
    secured: np.ndarray  # bool
    revolving: np.ndarray  # bool
    city: np.ndarray  # city index
    industry: np.ndarray  # industry index
    burden: np.ndarray  # annual scheduled payment / income
    value0: np.ndarray  # appraisal value (0 if unsecured)
    appraisal_slot: np.ndarray
    prior: np.ndarray  # prior lien balance
    installment: np.ndarray  # a card's typical minimum due
    has_hpi: np.ndarray  # bool: the city has a price series
    util0: np.ndarray  # a card's target utilisation (0 for installment loans)


def scheduled_balance(la: LoanArrays, k: np.ndarray, idx=slice(None)) -> np.ndarray:
    """Outstanding principal after k installments paid on schedule (a card: its limit, unused here)."""
    r = la.rate[idx] / 12.0
    P = la.principal[idx]
    inst = la.installment[idx]
    g = (1.0 + r) ** np.clip(k, 0, None)
    amort = P * g - inst * (g - 1.0) / r
    bal = np.where(la.rtype[idx] == 1, P, amort)
    return np.clip(bal, 0.0, None)


def scheduled_cltv(la: LoanArrays, sc: Scenario, slot: int, idx) -> np.ndarray:
    """Combined LTV on the scheduled balance with the house-price-indexed collateral value."""
    k = slot - la.orig[idx]
    bal = scheduled_balance(la, np.minimum(k, la.term[idx]), idx)
    city = la.city[idx]
    hpi_now = sc.log_hpi[city, slot]
    hpi_app = sc.log_hpi[city, la.appraisal_slot[idx]]
    factor = np.where(la.has_hpi[idx], np.exp(hpi_now - hpi_app), 1.0)
    value = la.value0[idx] * factor
    return np.where(la.secured[idx], (bal + la.prior[idx]) / np.maximum(value, 1.0), 0.0)


def stress_probs(
    la: LoanArrays, sc: Scenario, slot: int, idx, p: GeneratorParams
) -> tuple[np.ndarray, np.ndarray]:
    """P(stress starts) and P(stress ends) this month."""
    z_on = (
        p.s_on_base
        - p.s_on_quality * la.q[idx]
        + p.s_on_macro * sc.macro[slot]
        + p.s_on_industry * sc.industry_shock[la.industry[idx], slot]
        + p.s_on_unsecured * la.unsecured[idx]
        + p.s_on_burden * la.burden[idx]
        + p.s_on_local_hpi
        * np.clip(
            sc.log_hpi[la.city[idx], max(slot - p.s_on_local_hpi_months, 0)] - sc.log_hpi[la.city[idx], slot],
            0,
            None,
        )
    )
    z_off = p.s_off_base + p.s_off_quality * la.q[idx] + p.s_off_macro * sc.macro[slot]
    return sigmoid(z_on), sigmoid(z_off)


def outcome_probs(
    la: LoanArrays,
    sc: Scenario,
    slot: int,
    idx,
    stressed: np.ndarray,
    bucket: np.ndarray,
    p: GeneratorParams,
    cltv: np.ndarray | None = None,
) -> np.ndarray:
    """Probabilities (n, N_OUTCOMES) of this month's repayment outcome given new stress and current bucket."""
    n = len(stressed)
    q = la.q[idx]
    if cltv is None:
        cltv = scheduled_cltv(la, sc, slot, idx)
    neg_eq = np.clip(cltv - p.negative_equity_cltv, 0.0, p.negative_equity_cap)
    k = slot - la.orig[idx]
    matured = k >= la.term[idx]
    at_maturity = k == la.term[idx]
    bullet = (la.rtype[idx] == 1) | (la.rtype[idx] == 2)
    s = stressed.astype(float)
    uns = la.unsecured[idx]
    out = np.zeros((n, N_OUTCOMES))
    current = bucket == 0
    # current loans
    sudden = sigmoid(
        p.sudden_base
        - p.sudden_quality * q
        + p.sudden_stressed * s
        + p.sudden_negative_equity * neg_eq
        + p.sudden_unsecured * uns
    )
    miss_s = np.where(la.revolving[idx], p.miss_stressed_revolving, p.miss_stressed)
    miss = sigmoid(p.miss_base + miss_s * s - p.miss_quality * q + p.miss_unsecured * uns)
    prepay = sigmoid(
        p.prepay_base + p.prepay_stressed * s + p.prepay_equity * np.clip(cltv - p.prepay_cltv, 0, None)
    )
    bfail = sigmoid(
        p.balloon_fail_base + p.balloon_fail_stressed * s + p.balloon_fail_ltv * (cltv - p.balloon_fail_cltv)
    )
    bfail = np.where(bullet, bfail, 0.0)
    # at maturity the loan pays off unless a bullet repayment fails; after maturity a current loan is closed
    paid = np.where(matured, 1.0 - np.where(at_maturity, bfail, 0.0), prepay) * (1.0 - sudden)
    miss_c = np.where(
        matured, np.where(at_maturity, bfail * (1 - sudden), 0.0), miss * (1.0 - sudden) * (1 - prepay)
    )
    double = p.double_miss_share * s
    out[:, SUDDEN] = np.where(current, sudden, 0.0)
    out[:, PAID] = np.where(current, paid, 0.0)
    out[:, MISS] = np.where(current, miss_c * (1 - double), 0.0)
    out[:, MISS2] = np.where(current, miss_c * double, 0.0)
    out[:, PAY] = np.where(current, 1.0 - out[:, SUDDEN] - out[:, PAID] - miss_c, 0.0)
    # delinquent loans
    cure = sigmoid(p.cure_base + p.cure_stressed * s + p.cure_negative_equity * neg_eq)
    roll = sigmoid(p.roll_base + p.roll_stressed * s - p.roll_quality * q + p.roll_negative_equity * neg_eq)
    restr = np.where(la.secured[idx] & (bucket >= 2), p.restructure_prob, 0.0)
    back = np.where(bucket >= 2, p.back_prob, 0.0)
    d = ~current
    c = cure
    r = restr * (1 - cure)
    ro = roll * (1 - cure) * (1 - restr)
    b = back * (1 - cure) * (1 - restr) * (1 - roll)
    out[:, CURE] = np.where(d, c, 0.0)
    out[:, RESTRUCTURE] = np.where(d, r, 0.0)
    out[:, ROLL] = np.where(d, ro, 0.0)
    out[:, BACK] = np.where(d, b, 0.0)
    out[:, STAY] = np.where(d, 1.0 - c - r - ro - b, 0.0)
    return np.clip(out, 0.0, 1.0)


def next_state(bucket: np.ndarray, outcome: np.ndarray, matured: np.ndarray) -> np.ndarray:
    """Next state index (0..3 buckets, 4 default, 5 paid) of each outcome."""
    nxt = np.zeros(np.broadcast(bucket, outcome).shape, dtype=np.int64)
    nxt = np.where(outcome == MISS, 1, nxt)
    nxt = np.where(outcome == MISS2, 2, nxt)
    nxt = np.where(outcome == SUDDEN, DEF_STATE, nxt)
    nxt = np.where(outcome == PAID, PAID_STATE, nxt)
    # a delinquent loan past maturity that cures is paid off
    nxt = np.where((outcome == CURE) | (outcome == RESTRUCTURE), np.where(matured, PAID_STATE, 0), nxt)
    nxt = np.where(outcome == BACK, np.maximum(bucket - 1, 1), nxt)
    nxt = np.where(outcome == STAY, bucket, nxt)
    nxt = np.where(outcome == ROLL, np.where(bucket >= 3, DEF_STATE, bucket + 1), nxt)
    return nxt


def transition_to_states(
    la: LoanArrays, sc: Scenario, slot: int, idx, p: GeneratorParams
) -> tuple[np.ndarray, np.ndarray]:
    """Exact transition tensors for the oracle.

    Returns PS (n, 2, 2): P(S'|S) and PD (n, 2, 4, 6): P(next state | S', bucket).
    """
    n = len(idx) if not isinstance(idx, slice) else len(la.q)
    on, off = stress_probs(la, sc, slot, idx, p)
    PS = np.empty((n, 2, 2))
    PS[:, 0, 1] = on
    PS[:, 0, 0] = 1 - on
    PS[:, 1, 0] = off
    PS[:, 1, 1] = 1 - off
    cltv = scheduled_cltv(la, sc, slot, idx)
    matured = (slot - la.orig[idx]) >= la.term[idx]
    PD = np.zeros((n, 2, N_BUCKETS, 6))
    mat = matured.astype(float)
    for s in (0, 1):
        for d in range(N_BUCKETS):
            probs = outcome_probs(la, sc, slot, idx, np.full(n, s), np.full(n, d), p, cltv)
            for o in range(N_OUTCOMES):
                ns_open = int(next_state(np.array([d]), np.array([o]), np.array([False]))[0])
                ns_mat = int(next_state(np.array([d]), np.array([o]), np.array([True]))[0])
                PD[:, s, d, ns_open] += probs[:, o] * (1.0 - mat)
                PD[:, s, d, ns_mat] += probs[:, o] * mat
    return PS, PD
