"""A synthetic loan book driven by a data-generating process a credit officer would recognise.

Hidden per loan: a latent borrower quality `q` and a monthly stress state `S` (0 normal, 1 stressed).
Common paths: a national house-price cycle with a downturn that hits lower-tier cities harder, and a
macro stress path whose income shocks fall on some industries more than others.

Each month a loan's stress state moves (`stress_probs`), then its delinquency bucket `D`
(0 current, 1: 1-29, 2: 30-59, 3: 60-89 days past due) moves by one of a few outcomes (`outcome_probs`):
pay, miss (partly or wholly), sudden charge-off, prepay or mature, cure, restructure, catch up one
installment, stay, roll forward. Reaching 90+ DPD or a charge-off is the default event.

The same two functions drive the forward simulation that writes the book and the backward recursion
that writes the oracle: the exact probability that a performing loan defaults within 3, 6 and 12 months
given its full hidden state (q, S, D) and the generator's macro and house-price scenario.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from features.book import Book
from features.months import index_to_month
from features.schema import CITY_TIERS

log = logging.getLogger(__name__)

# Outcomes of one month for a loan in bucket D given its new stress state.
PAY, MISS, SUDDEN, PAID, CURE, RESTRUCTURE, BACK, STAY, ROLL = range(9)
N_OUTCOMES = 9
DEF_STATE = 4  # index of the default state among next-states (0..3 buckets, 4 default, 5 paid)
PAID_STATE = 5
ORACLE_HORIZONS = (3, 6, 12)

CITIES: dict[str, list[str]] = {
    "tier1": ["Beijing", "Shanghai", "Guangzhou", "Shenzhen"],
    "new_tier1": [
        "Chengdu",
        "Hangzhou",
        "Chongqing",
        "Wuhan",
        "Xian",
        "Suzhou",
        "Nanjing",
        "Tianjin",
        "Changsha",
        "Zhengzhou",
        "Dongguan",
        "Qingdao",
    ],
    "tier2": [
        "Hefei",
        "Fuzhou",
        "Jinan",
        "Kunming",
        "Xiamen",
        "Nanning",
        "Shijiazhuang",
        "Harbin",
        "Guiyang",
        "Taiyuan",
    ],
    "tier3": [
        "Weifang",
        "Baoding",
        "Zhuzhou",
        "Yancheng",
        "Ganzhou",
        "Shangrao",
        "Luoyang",
        "Zhanjiang",
        "Handan",
        "Jiujiang",
    ],
    "other": ["Hegang", "Yulin", "Tongren"],
}
# Cities the lender has no house-price series for: collateral there is valued at appraisal.
CITIES_WITHOUT_HPI = ("Tongren", "Jiujiang")

INDUSTRIES = {  # name: (loading on the macro stress path, share among business owners)
    "construction": (1.8, 0.10),
    "hospitality": (1.5, 0.10),
    "export_manufacturing": (1.3, 0.12),
    "retail": (1.0, 0.18),
    "wholesale": (0.8, 0.14),
    "transport": (0.7, 0.10),
    "education": (0.6, 0.04),
    "agriculture": (0.4, 0.07),
    "tech_services": (0.3, 0.08),
    "healthcare": (0.2, 0.05),
    "public_sector": (0.05, 0.02),
}
FUNDING_PARTNERS = ("Xinyuan Trust", "Huarong Consumer Finance", "Bank of Dongfang", "Pingan Capital")


@dataclass(frozen=True)
class GeneratorParams:
    """Parameters of the data-generating process (monthly logits unless said otherwise)."""

    end_month: str = "2025-12"
    seasoned_share: float = 0.35  # share of loans already on the book at the first month
    bureau_signal: float = 0.92  # correlation of the bureau score with latent quality
    product_mix: tuple[float, float, float] = (
        0.45,
        0.20,
        0.35,
    )  # secured_business, secured_consumer, unsecured
    tier_mix: tuple[float, ...] = (0.15, 0.30, 0.30, 0.20, 0.05)
    # house prices: monthly log drift per tier and beta to the national cycle
    hpi_drift: tuple[float, ...] = (0.003, 0.0035, 0.003, 0.0025, 0.002)
    hpi_beta: tuple[float, ...] = (0.5, 0.9, 1.2, 1.6, 1.9)
    hpi_city_sigma: float = 0.004
    downturn_start: float = 0.30  # share of the window
    downturn_months: int = 20
    downturn_depth: float = 0.010  # national log HPI fall per month during the downturn
    macro_peak: float = 1.5  # macro stress at the height of the downturn
    # stress onset / recovery
    s_on_base: float = -7.6
    s_on_quality: float = 0.7
    s_on_macro: float = 0.6
    s_on_industry: float = 0.3
    s_on_unsecured: float = 0.5
    s_on_burden: float = 1.2  # times (annual payment / income)
    s_on_local_hpi: float = 4.0  # times the fall of the city's house prices over 12 months (local economy)
    s_off_base: float = -2.9
    s_off_quality: float = 0.3
    # repayment when current
    miss_base: float = -5.6
    miss_stressed: float = 7.2
    miss_quality: float = 0.25
    partial_share_normal: float = 0.9  # share of misses paid in part when not stressed (a liquidity hiccup)
    partial_share_stressed: float = 0.15  # ... and when stressed
    sudden_base: float = -8.3
    sudden_quality: float = 0.25
    sudden_stressed: float = 0.8
    sudden_negative_equity: float = 2.0
    prepay_base: float = -4.6
    prepay_stressed: float = -1.5
    prepay_equity: float = -3.0  # times max(CLTV - 0.7, 0)
    balloon_fail_base: float = -3.0
    balloon_fail_stressed: float = 3.0
    balloon_fail_ltv: float = 3.0
    # delinquent loans
    cure_base: float = 0.1
    cure_stressed: float = -2.2
    cure_negative_equity: float = -1.5
    roll_base: float = -1.9
    roll_stressed: float = 1.9
    roll_quality: float = 0.3
    roll_negative_equity: float = 1.0
    back_prob: float = 0.06
    restructure_prob: float = 0.07  # secured loans 30-89 DPD, lender's forbearance
    # after default
    npl_sale_prob: float = 0.08
    post_default_cure_prob: float = 0.04
    chargeoff_dpd: int = 180
    missing_row_prob: float = 0.003  # reporting gaps in open, current months
    extra: dict[str, float] = field(default_factory=dict)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------------------------------
# The scenario: house prices and macro stress over [first month - pre, last month + post]


@dataclass
class Scenario:
    first: int  # month index of calendar slot 0
    months: int  # slots
    cities: list[str]
    city_tier: np.ndarray  # tier index per city
    log_hpi: np.ndarray  # (cities, months)
    macro: np.ndarray  # (months,)
    industries: list[str]
    industry_shock: np.ndarray  # (industries, months)


def make_scenario(
    rng: np.random.Generator, first: int, months: int, window_start: int, window_len: int, p: GeneratorParams
) -> Scenario:
    cities = [c for tier in CITY_TIERS for c in CITIES[tier]]
    tier_of = np.array([CITY_TIERS.index(t) for t in CITY_TIERS for _ in CITIES[t]])
    t = np.arange(months)
    d0 = window_start - first + int(p.downturn_start * window_len)
    d1 = d0 + p.downturn_months
    national = 0.6 * np.sin(2 * np.pi * t / 70.0) * 0.002 + rng.normal(0, 0.0015, months)
    national = np.where((t >= d0) & (t < d1), national - p.downturn_depth, national)
    # slow partial recovery after the downturn
    national = np.where(t >= d1, national + 0.002, national)
    drift = np.asarray(p.hpi_drift)[tier_of][:, None]
    beta = np.asarray(p.hpi_beta)[tier_of][:, None]
    growth = drift * (t[None, :] < d0) + drift * 0.3 * (t[None, :] >= d0) + beta * national[None, :]
    growth = growth + rng.normal(0, p.hpi_city_sigma, (len(cities), months))
    log_hpi = np.log(100.0) + np.cumsum(growth, axis=1)
    # macro stress: smooth bump over the downturn plus persistent noise
    bump = np.clip(np.sin(np.pi * (t - d0 + 3) / (p.downturn_months + 8)), 0, None)
    bump = np.where((t >= d0 - 3) & (t < d1 + 5), bump, 0.0) * p.macro_peak
    noise = np.zeros(months)
    e = rng.normal(0, 0.12, months)
    for i in range(1, months):
        noise[i] = 0.85 * noise[i - 1] + e[i]
    macro = bump + noise
    names = list(INDUSTRIES)
    load = np.array([INDUSTRIES[n][0] for n in names])
    ind_noise = np.zeros((len(names), months))
    e = rng.normal(0, 0.15, (len(names), months))
    for i in range(1, months):
        ind_noise[:, i] = 0.9 * ind_noise[:, i - 1] + e[:, i]
    shock = load[:, None] * macro[None, :] + ind_noise
    return Scenario(first, months, cities, tier_of, log_hpi, macro, names, shock)


# --------------------------------------------------------------------------------------------------
# Transition probabilities: one definition shared by the simulation and the oracle


@dataclass
class LoanArrays:
    """Static per-loan values the hazards need (numpy, one entry per loan)."""

    q: np.ndarray
    orig: np.ndarray  # origination month slot
    term: np.ndarray
    rate: np.ndarray
    principal: np.ndarray
    rtype: np.ndarray  # 0 amortizing, 1 interest_only, 2 balloon
    unsecured: np.ndarray  # bool
    secured: np.ndarray  # bool
    city: np.ndarray  # city index
    industry: np.ndarray  # industry index
    burden: np.ndarray  # annual scheduled payment / income
    value0: np.ndarray  # appraisal value (0 if unsecured)
    appraisal_slot: np.ndarray
    prior: np.ndarray  # prior lien balance
    installment: np.ndarray
    has_hpi: np.ndarray  # bool: the city has a price series


def scheduled_balance(la: LoanArrays, k: np.ndarray, idx=slice(None)) -> np.ndarray:
    """Outstanding principal after k installments paid on schedule."""
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
        * np.clip(sc.log_hpi[la.city[idx], max(slot - 12, 0)] - sc.log_hpi[la.city[idx], slot], 0, None)
    )
    z_off = p.s_off_base + p.s_off_quality * la.q[idx] - 0.5 * sc.macro[slot]
    return _sigmoid(z_on), _sigmoid(z_off)


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
    neg_eq = np.clip(cltv - 0.8, 0.0, 0.8)
    k = slot - la.orig[idx]
    matured = k >= la.term[idx]
    at_maturity = k == la.term[idx]
    bullet = la.rtype[idx] != 0
    s = stressed.astype(float)
    out = np.zeros((n, N_OUTCOMES))
    current = bucket == 0
    # current loans
    sudden = _sigmoid(
        p.sudden_base
        - p.sudden_quality * q
        + p.sudden_stressed * s
        + p.sudden_negative_equity * neg_eq
        + 0.4 * la.unsecured[idx]
    )
    miss = _sigmoid(p.miss_base + p.miss_stressed * s - p.miss_quality * q + 0.4 * la.unsecured[idx])
    prepay = _sigmoid(p.prepay_base + p.prepay_stressed * s + p.prepay_equity * np.clip(cltv - 0.7, 0, None))
    bfail = _sigmoid(p.balloon_fail_base + p.balloon_fail_stressed * s + p.balloon_fail_ltv * (cltv - 0.7))
    bfail = np.where(bullet, bfail, 0.0)
    # at maturity the loan pays off unless a bullet repayment fails; after maturity a current loan is closed
    paid = np.where(matured, 1.0 - np.where(at_maturity, bfail, 0.0), prepay) * (1.0 - sudden)
    miss_c = np.where(
        matured, np.where(at_maturity, bfail * (1 - sudden), 0.0), miss * (1.0 - sudden) * (1 - prepay)
    )
    out[:, SUDDEN] = np.where(current, sudden, 0.0)
    out[:, PAID] = np.where(current, paid, 0.0)
    out[:, MISS] = np.where(current, miss_c, 0.0)
    out[:, PAY] = np.where(current, 1.0 - out[:, SUDDEN] - out[:, PAID] - out[:, MISS], 0.0)
    # delinquent loans
    cure = _sigmoid(p.cure_base + p.cure_stressed * s + p.cure_negative_equity * neg_eq)
    roll = _sigmoid(p.roll_base + p.roll_stressed * s - p.roll_quality * q + p.roll_negative_equity * neg_eq)
    restr = np.where(la.secured[idx] & (bucket >= 2), p.restructure_prob, 0.0)
    back = np.where(bucket >= 2, p.back_prob, 0.0)
    d = ~current
    rest = 1.0
    c = cure * rest
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
    nxt = np.where(outcome == PAY, 0, 0)
    nxt = np.where(outcome == MISS, 1, nxt)
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
    PD = np.zeros((n, 2, 4, 6))
    mat = matured.astype(float)
    for s in (0, 1):
        for d in range(4):
            probs = outcome_probs(la, sc, slot, idx, np.full(n, s), np.full(n, d), p, cltv)
            for o in range(N_OUTCOMES):
                ns_open = int(next_state(np.array([d]), np.array([o]), np.array([False]))[0])
                ns_mat = int(next_state(np.array([d]), np.array([o]), np.array([True]))[0])
                PD[:, s, d, ns_open] += probs[:, o] * (1.0 - mat)
                PD[:, s, d, ns_mat] += probs[:, o] * mat
    return PS, PD


# --------------------------------------------------------------------------------------------------
# Loans and borrowers


def _draw_loans(
    rng: np.random.Generator, n: int, sc: Scenario, window_start: int, window_len: int, p: GeneratorParams
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, LoanArrays]:
    ws = window_start - sc.first  # slot of the first window month
    product = rng.choice(3, n, p=np.asarray(p.product_mix))  # 0 sec business, 1 sec consumer, 2 unsecured
    secured = product < 2
    q = rng.normal(0, 1, n)
    # borrower
    btype = np.where(
        product == 0,
        np.where(rng.random(n) < 0.75, 1, 2),
        np.where(product == 1, 0, np.where(rng.random(n) < 0.15, 1, 0)),
    )
    bureau = np.clip(
        np.round(640 + 55 * (p.bureau_signal * q + np.sqrt(1 - p.bureau_signal**2) * rng.normal(0, 1, n))),
        350,
        950,
    )
    bureau_null = rng.random(n) < 0.03
    inc_mu = np.array([11.3, 12.2, 13.4])[btype]
    income = np.round(np.exp(inc_mu + 0.25 * q + 0.45 * rng.normal(0, 1, n)), -2)
    income_null = rng.random(n) < 0.02
    business = btype > 0
    yib = np.round(rng.gamma(2.0, 3.0, n) * np.exp(0.25 * q), 1)
    age = np.clip(rng.normal(42, 9, n), 22, 70)
    ind_names = list(INDUSTRIES)
    ind_share = np.array([INDUSTRIES[k][1] for k in ind_names])
    industry = rng.choice(len(ind_names), n, p=ind_share / ind_share.sum())
    industry_null = (~business) & (rng.random(n) < 0.2)
    # loan terms
    term = np.where(
        product == 0,
        rng.choice([36, 60, 120], n, p=[0.4, 0.4, 0.2]),
        np.where(
            product == 1,
            rng.choice([120, 180, 240], n, p=[0.3, 0.4, 0.3]),
            rng.choice([12, 24, 36], n, p=[0.3, 0.4, 0.3]),
        ),
    )
    rtype = np.where(product == 0, rng.choice(3, n, p=[0.5, 0.3, 0.2]), 0)
    seasoned = rng.random(n) < p.seasoned_share
    age_m = np.minimum(rng.integers(1, 49, n), term - 6)
    orig = np.where(seasoned, ws - np.maximum(age_m, 1), ws + rng.integers(0, window_len, n))
    tier = rng.choice(len(CITY_TIERS), n, p=np.asarray(p.tier_mix))
    city_names = np.array(sc.cities)
    city = np.empty(n, dtype=np.int64)
    for t in range(len(CITY_TIERS)):
        pool = np.flatnonzero(sc.city_tier == t)
        m = tier == t
        city[m] = rng.choice(pool, m.sum())
    has_hpi = ~np.isin(city_names[city], CITIES_WITHOUT_HPI)
    # collateral
    log_val = np.array([15.4, 14.8, 14.3, 13.9, 13.5])[tier] + 0.45 * rng.normal(0, 1, n)
    value0 = np.where(secured, np.round(np.exp(log_val), -3), 0.0)
    lien2 = secured & (rng.random(n) < np.where(product == 0, 0.35, 0.15))
    prior = np.where(lien2, np.round(value0 * rng.uniform(0.2, 0.45, n), -2), 0.0)
    target_cltv = np.clip(rng.beta(6, 5, n) * 0.6 + 0.25 + 0.05 * (-q), 0.3, 0.85)
    ltv_own = np.where(
        lien2, np.clip(target_cltv + 0.1 - prior / np.maximum(value0, 1), 0.1, 0.5), target_cltv
    )
    unsec_principal = np.round(np.minimum(np.exp(11.0 + 0.5 * rng.normal(0, 1, n)), income * 0.8 + 5000), -2)
    principal = np.where(secured, np.round(value0 * ltv_own, -2), np.maximum(unsec_principal, 5000))
    appraisal_slot = orig - rng.integers(0, 3, n)
    rate_base = np.array([0.065, 0.045, 0.115])[product]
    score_z = np.where(bureau_null, 0.0, (bureau - 640) / 55)
    rate = np.round(
        np.clip(rate_base - 0.008 * score_z + 0.006 * lien2 + rng.normal(0, 0.006, n), 0.025, 0.24), 4
    )
    r = rate / 12
    amort_n = np.where(rtype == 2, term * 2, term)
    inst = np.where(rtype == 1, principal * r, principal * r / (1 - (1 + r) ** (-amort_n)))
    # lenders underwrite secured loans to a debt-service ratio: income follows the installment
    dsr = np.clip(0.32 - 0.05 * q + 0.08 * rng.normal(0, 1, n), 0.12, 0.65)
    income = np.where(secured, np.round(np.maximum(12 * inst / dsr, income * 0.5), -2), income)
    borrowers_income = income
    burden = np.where(income_null | (income <= 0), 0.35, 12 * inst / np.maximum(income, 1.0))
    burden = np.clip(burden, 0, 2.0)
    partner = np.where(
        rng.random(n) < np.where(product == 0, 0.6, 0.3), rng.integers(0, len(FUNDING_PARTNERS), n), -1
    )

    la = LoanArrays(
        q=q,
        orig=orig,
        term=term,
        rate=rate,
        principal=principal,
        rtype=rtype,
        unsecured=~secured,
        secured=secured,
        city=city,
        industry=industry,
        burden=burden,
        value0=value0,
        appraisal_slot=appraisal_slot,
        prior=prior,
        installment=inst,
        has_hpi=has_hpi,
    )
    width = max(6, len(str(n)))
    loan_ids = np.array([f"L{i:0{width}d}" for i in range(1, n + 1)])
    borrower_ids = np.array([f"B{i:0{width}d}" for i in range(1, n + 1)])
    coll_ids = np.array([f"C{i:0{width}d}" for i in range(1, n + 1)])
    first_day = index_to_month(orig + sc.first)
    day_offset = pd.to_timedelta(rng.integers(0, 28, n), unit="D")
    btypes = np.array(["individual", "micro_business_owner", "sme"])
    products = np.array(["secured_business", "secured_consumer", "unsecured_consumer"])
    rtypes = np.array(["amortizing", "interest_only", "balloon"])
    borrowers = pd.DataFrame(
        {
            "borrower_id": borrower_ids,
            "borrower_type": btypes[btype],
            "birth_year": pd.array(
                np.round(index_to_month(orig + sc.first).year - age).astype(int), dtype="Int64"
            ),
            "industry": pd.Series(np.array(ind_names)[industry], dtype="str").where(~industry_null, None),
            "years_in_business": pd.Series(yib).where(business, np.nan),
            "annual_income": pd.Series(borrowers_income).where(~income_null, np.nan),
            "bureau_score": pd.Series(bureau).where(~bureau_null, np.nan),
        }
    )
    loans = pd.DataFrame(
        {
            "loan_id": loan_ids,
            "borrower_id": borrower_ids,
            "product": products[product],
            "origination_date": (first_day + day_offset).astype("datetime64[ns]"),
            "term_months": term.astype(np.int64),
            "principal": principal,
            "interest_rate": rate,
            "repayment_type": rtypes[rtype],
            "city": city_names[city],
            "city_tier": np.array(CITY_TIERS)[tier],
            "collateral_id": pd.Series(coll_ids, dtype="str").where(secured, None),
            "lien_position": pd.array(np.where(secured, np.where(lien2, 2, 1), 0), dtype="Int64"),
            "funding_partner": pd.Series(
                np.array(FUNDING_PARTNERS)[np.maximum(partner, 0)], dtype="str"
            ).where(partner >= 0, None),
        }
    )
    loans.loc[~secured, "lien_position"] = pd.NA
    ptypes = np.where(product == 0, rng.choice(3, n, p=[0.6, 0.35, 0.05]), 0)
    collateral = pd.DataFrame(
        {
            "collateral_id": coll_ids,
            "property_type": np.array(["residential", "commercial", "land"])[ptypes],
            "city": city_names[city],
            "appraisal_value": value0,
            "appraisal_date": (index_to_month(appraisal_slot + sc.first) + day_offset).astype(
                "datetime64[ns]"
            ),
            "prior_lien_balance": prior,
        }
    )[secured].reset_index(drop=True)
    return borrowers, loans, collateral, la


# --------------------------------------------------------------------------------------------------
# Simulation


@dataclass
class Generated:
    book: Book
    oracle: pd.DataFrame  # loan_id, month, pd_3m, pd_6m, pd_12m for every performing loan-month
    params: dict
    hidden: pd.DataFrame | None = None  # loan_id, month, quality, stressed: diagnostics only, never written


def generate_book(
    n_loans: int,
    n_months: int,
    seed: int,
    params: GeneratorParams | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Generated:
    """Generate a book of `n_loans` loans observed over `n_months` months, and its oracle PDs."""
    if n_loans < 1 or n_months < 6:
        raise ValueError("need at least 1 loan and 6 months")
    p = params or GeneratorParams()
    rng = np.random.default_rng(seed)
    end = pd.Timestamp(p.end_month + "-01")
    window_end = end.year * 12 + end.month - 1
    window_start = window_end - n_months + 1
    pre, post = 60, 13
    sc = make_scenario(rng, window_start - pre, pre + n_months + post, window_start, n_months, p)
    borrowers, loans, collateral, la = _draw_loans(rng, n_loans, sc, window_start, n_months, p)
    ws = pre
    perf, states = _simulate(rng, la, sc, ws, n_months, p, progress)
    hp = _house_prices(sc, ws, n_months)
    perf_df = _performance_frame(perf, loans["loan_id"].to_numpy(), sc)
    keep = _reporting_gaps(rng, perf_df, p)
    perf_df = perf_df[keep].reset_index(drop=True)
    states = {k: v[keep] for k, v in states.items()}
    oracle = _oracle(la, sc, states, ws, n_months, p, loans["loan_id"].to_numpy(), progress)
    book = Book(borrowers=borrowers, loans=loans, collateral=collateral, house_prices=hp, performance=perf_df)
    hidden = pd.DataFrame(
        {
            "loan_id": perf_df["loan_id"].to_numpy(),
            "month": perf_df["month"].to_numpy(),
            "quality": la.q[states["loan"]],
            "stressed": states["S"].astype(np.int8),
        }
    )
    return Generated(
        book, oracle, {"n_loans": n_loans, "n_months": n_months, "seed": seed, **asdict(p)}, hidden
    )


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


def _simulate(rng, la: LoanArrays, sc: Scenario, ws: int, n_months: int, p: GeneratorParams, progress):
    """Forward simulation month by month over all open loans; returns row arrays and hidden states."""
    n = len(la.q)
    S = np.zeros(n, dtype=np.int8)
    D = np.zeros(n, dtype=np.int8)
    dpd = np.zeros(n, dtype=np.int64)
    k_paid = np.zeros(n, dtype=np.int64)
    alive = np.zeros(n, dtype=bool)  # has rows and is not closed
    defaulted = np.zeros(n, dtype=bool)
    # seasoned loans start current, paid to date, in their stationary stress state
    seasoned = la.orig < ws
    on0, off0 = stress_probs(la, sc, ws, np.arange(n), p)
    S[seasoned] = (rng.random(seasoned.sum()) < (on0 / (on0 + off0))[seasoned]).astype(np.int8)
    k_paid[seasoned] = ws - 1 - la.orig[seasoned]
    out: dict[str, list] = {
        k: []
        for k in ("loan", "slot", "balance", "sched", "paid", "dpd", "status", "restr", "S", "D", "defaulted")
    }
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
        # loans in default: collection process
        dd = defaulted[idx]
        # performing or delinquent loans: the hidden-state process
        live = ~dd
        li = idx[live]
        on, off = stress_probs(la, sc, slot, li, p)
        u = rng.random(len(li))
        s_new = np.where(S[li] == 1, (u >= off).astype(np.int8), (u < on).astype(np.int8))
        S[li] = s_new
        probs = outcome_probs(la, sc, slot, li, s_new, D[li].astype(np.int64), p)
        cum = np.cumsum(probs, axis=1)
        u = rng.random(len(li))[:, None]
        outcome = np.minimum((u > cum).sum(axis=1), N_OUTCOMES - 1)
        nxt = next_state(D[li].astype(np.int64), outcome, matured[live])
        inst = la.installment[li]
        a = D[li].astype(np.int64)
        pay = np.zeros(len(li))
        paid_n = np.zeros(len(li), dtype=np.int64)
        ddpd = dpd[li].copy()
        o = outcome
        pay = np.where(o == PAY, inst, pay)
        paid_n = np.where(o == PAY, 1, paid_n)
        partial = rng.random(len(li)) < np.where(S[li] == 1, p.partial_share_stressed, p.partial_share_normal)
        frac = rng.uniform(0.2, 0.9, len(li))
        pay = np.where((o == MISS) | (o == ROLL), np.where(partial, inst * frac, 0.0), pay)
        ddpd = np.where(o == MISS, rng.integers(1, 30, len(li)), ddpd)
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
        newly_def = nxt == DEF_STATE
        defaulted[li[newly_def]] = True
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
            # a cured defaulter goes on as a normal loan, but never re-enters the performing population
            defaulted[di[cured]] = False
            S[di[cured]] = 1
        bal = np.where(status == 1, 0.0, scheduled_balance(la, k_paid[idx], idx))
        sched = np.where(matured & (la.rtype[idx] != 0) & (k == la.term[idx]), sched + bal_before, sched)
        # new loans: first row at drawdown
        ni = np.flatnonzero(new)
        rows_idx = np.concatenate([idx, ni])
        out["loan"].append(rows_idx)
        out["slot"].append(np.full(len(rows_idx), slot))
        out["balance"].append(np.round(np.concatenate([bal, la.principal[ni]]), 2))
        out["sched"].append(np.round(np.concatenate([sched, np.zeros(len(ni))]), 2))
        out["paid"].append(np.concatenate([paid_amt, np.zeros(len(ni))]))
        out["dpd"].append(np.concatenate([dpd[idx], np.zeros(len(ni), dtype=np.int64)]))
        out["status"].append(np.concatenate([status, np.zeros(len(ni), dtype=np.int8)]))
        out["restr"].append(np.concatenate([restr, np.zeros(len(ni), dtype=bool)]))
        out["S"].append(np.concatenate([S[idx], S[ni]]))
        out["D"].append(np.concatenate([D[idx], D[ni]]))
        out["defaulted"].append(
            np.concatenate([defaulted[idx] | (D[idx] == 4), np.zeros(len(ni), dtype=bool)])
        )
        closed = idx[status > 0]
        alive[closed] = False
        if progress:
            progress("simulate", slot - ws + 1, n_months)
    perf = {k: np.concatenate(v) for k, v in out.items()}
    # the post-default-cure flag must persist: a loan that ever defaulted is never performing again
    order = np.lexsort((perf["slot"], perf["loan"]))
    perf = {k: v[order] for k, v in perf.items()}
    ever = perf["defaulted"].astype(np.int64)
    grp_start = np.r_[True, perf["loan"][1:] != perf["loan"][:-1]]
    cs = np.cumsum(ever)
    base = np.maximum.accumulate(np.where(grp_start, cs - ever, 0))
    perf["ever_defaulted"] = (cs - base) > 0
    states = {
        "S": perf["S"],
        "D": perf["D"],
        "ever_defaulted": perf["ever_defaulted"],
        "loan": perf["loan"],
        "slot": perf["slot"],
        "status": perf["status"],
    }
    return perf, states


def _performance_frame(perf: dict, loan_ids: np.ndarray, sc: Scenario) -> pd.DataFrame:
    statuses = np.array(["open", "paid_off", "charged_off"])
    return pd.DataFrame(
        {
            "loan_id": loan_ids[perf["loan"]],
            "month": index_to_month(perf["slot"] + sc.first).astype("datetime64[ns]"),
            "balance": perf["balance"],
            "scheduled_payment": perf["sched"],
            "paid_amount": perf["paid"],
            "days_past_due": perf["dpd"].astype(np.int64),
            "status": statuses[perf["status"]],
            "restructured": perf["restr"].astype(bool),
        }
    )


def _reporting_gaps(rng, perf: pd.DataFrame, p: GeneratorParams) -> np.ndarray:
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


def _oracle(
    la: LoanArrays,
    sc: Scenario,
    states: dict,
    ws: int,
    n_months: int,
    p: GeneratorParams,
    loan_ids: np.ndarray,
    progress,
) -> pd.DataFrame:
    """Exact P(default within h months | hidden state at month end) by backward recursion over months."""
    H = max(ORACLE_HORIZONS)
    slot = states["slot"]
    performing = (states["status"] == 0) & (states["D"] < 4) & ~states["ever_defaulted"]
    rows = np.flatnonzero(performing)
    n = len(la.q)
    # loans that need values: performing at some month of the window
    need = np.zeros(n, dtype=bool)
    need[states["loan"][rows]] = True
    loans_needed = np.flatnonzero(need)
    pos = np.full(n, -1)
    pos[loans_needed] = np.arange(len(loans_needed))
    m = len(loans_needed)
    A_next = np.zeros((m, H + 1, 2, 4))  # A_{t+1}[h][S,D]
    out = {h: np.full(len(rows), np.nan) for h in ORACLE_HORIZONS}
    row_slot = slot[rows]
    row_loan = pos[states["loan"][rows]]
    row_S = states["S"][rows].astype(np.int64)
    row_D = states["D"][rows].astype(np.int64)
    last = ws + n_months - 1 + H
    # only loans originated by t+1 matter at slot t; a loan originated later has no performing row yet
    for t in range(last - 1, ws - 1, -1):
        active = np.flatnonzero(la.orig[loans_needed] <= t + 1)
        A = np.zeros_like(A_next)
        if len(active):
            gi = loans_needed[active]
            PS, PD = transition_to_states(la, sc, t + 1, gi, p)
            val = np.zeros((len(active), H, 2, 6))
            val[:, :, :, :4] = A_next[active, :H]
            val[:, :, :, DEF_STATE] = 1.0
            # X[n,h,S',D] = sum_k PD[n,S',D,k] * val[n,h,S',k]
            X = np.einsum("nsdk,nhsk->nhsd", PD, val, optimize=True)
            A[active, 1:] = np.einsum("nab,nhbd->nhad", PS, X, optimize=True)
        sel = np.flatnonzero(row_slot == t)
        for h in ORACLE_HORIZONS:
            out[h][sel] = A[row_loan[sel], h, row_S[sel], row_D[sel]]
        A_next = A
        if progress:
            progress("oracle", last - t, last - ws)
    return pd.DataFrame(
        {
            "loan_id": loan_ids[states["loan"][rows]],
            "month": index_to_month(row_slot + sc.first).astype("datetime64[ns]"),
            **{f"pd_{h}m": out[h] for h in ORACLE_HORIZONS},
        }
    )
