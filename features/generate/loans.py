"""Borrowers, loans and collateral drawn at origination, with the static arrays the hazards need."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.generate.params import (
    CITIES_WITHOUT_HPI,
    FUNDING_PARTNERS,
    INDUSTRIES,
    PRODUCTS,
    GeneratorParams,
)
from features.generate.process import LoanArrays, sigmoid
from features.generate.scenario import Scenario
from features.months import index_to_month
from features.schema import CITY_TIERS

SEC_BUSINESS, SEC_CONSUMER, UNSECURED, REVOLVING = range(4)


def draw_loans(
    rng: np.random.Generator, n: int, sc: Scenario, window_start: int, window_len: int, p: GeneratorParams
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, LoanArrays]:
    ws = window_start - sc.first  # slot of the first window month
    product = rng.choice(4, n, p=np.asarray(p.product_mix) / np.sum(p.product_mix))
    secured = product < UNSECURED
    card = product == REVOLVING
    q = rng.normal(0, 1, n)
    # borrower
    btype = np.where(
        product == SEC_BUSINESS,
        np.where(rng.random(n) < 0.75, 1, 2),
        np.where(product == UNSECURED, np.where(rng.random(n) < 0.15, 1, 0), 0),
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
    # loan terms (a card has no maturity inside any window: its term is the renewal horizon)
    term = np.select(
        [product == SEC_BUSINESS, product == SEC_CONSUMER, product == UNSECURED],
        [
            rng.choice([36, 60, 120], n, p=[0.4, 0.4, 0.2]),
            rng.choice([120, 180, 240], n, p=[0.3, 0.4, 0.3]),
            rng.choice([12, 24, 36], n, p=[0.3, 0.4, 0.3]),
        ],
        600,
    )
    rtype = np.where(product == SEC_BUSINESS, rng.choice(3, n, p=[0.5, 0.3, 0.2]), np.where(card, 3, 0))
    seasoned = rng.random(n) < p.seasoned_share
    age_m = np.minimum(rng.integers(1, 49, n), term - 6)
    orig = np.where(seasoned, ws - np.maximum(age_m, 1), ws + rng.integers(0, window_len, n))
    if p.single_vintage:
        orig = np.full(n, ws - p.vintage_age)
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
    lien2 = secured & (rng.random(n) < np.where(product == SEC_BUSINESS, 0.35, 0.15))
    prior = np.where(lien2, np.round(value0 * rng.uniform(0.2, 0.45, n), -2), 0.0)
    target_cltv = np.clip(rng.beta(6, 5, n) * 0.6 + 0.25 + 0.05 * (-q), 0.3, 0.85)
    ltv_own = np.where(
        lien2, np.clip(target_cltv + 0.1 - prior / np.maximum(value0, 1), 0.1, 0.5), target_cltv
    )
    unsec_principal = np.round(np.minimum(np.exp(11.0 + 0.5 * rng.normal(0, 1, n)), income * 0.8 + 5000), -2)
    principal = np.where(secured, np.round(value0 * ltv_own, -2), np.maximum(unsec_principal, 5000))
    appraisal_slot = orig - rng.integers(0, 3, n)
    rate_base = np.array([0.065, 0.045, 0.115, p.card_rate])[product]
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
    partner = np.where(
        rng.random(n) < np.where(product == SEC_BUSINESS, 0.6, 0.3),
        rng.integers(0, len(FUNDING_PARTNERS), n),
        -1,
    )
    if card.any():
        # cards, drawn last so that a book without cards is the same book it always was: the limit follows
        # income and quality; the typical minimum due follows the cardholder's usual utilisation
        limit = np.round(
            np.clip(p.card_limit_income * income * np.exp(0.3 * q + 0.35 * rng.normal(0, 1, n)), 3000, 5e5),
            -2,
        )
        util0 = np.where(card, sigmoid(p.card_util_base - 0.6 * q + 0.5 * rng.normal(0, 1, n)), 0.0)
        rate = np.where(card, np.round(np.clip(p.card_rate - 0.01 * score_z, 0.08, 0.36), 4), rate)
        principal = np.where(card, limit, principal)
        inst = np.where(card, np.maximum(p.card_min_share * util0 * limit, p.card_min_floor), inst)
    else:
        util0 = np.zeros(n)
    burden = np.where(income_null | (income <= 0), 0.35, 12 * inst / np.maximum(income, 1.0))
    burden = np.clip(burden, 0, 2.0)
    la = LoanArrays(
        q=q,
        orig=orig,
        term=term,
        rate=rate,
        principal=principal,
        rtype=rtype,
        unsecured=~secured,
        secured=secured,
        revolving=card,
        city=city,
        industry=industry,
        burden=burden,
        value0=value0,
        appraisal_slot=appraisal_slot,
        prior=prior,
        installment=inst,
        has_hpi=has_hpi,
        util0=util0,
    )
    width = max(6, len(str(n)))
    loan_ids = np.array([f"L{i:0{width}d}" for i in range(1, n + 1)])
    borrower_ids = np.array([f"B{i:0{width}d}" for i in range(1, n + 1)])
    coll_ids = np.array([f"C{i:0{width}d}" for i in range(1, n + 1)])
    first_day = index_to_month(orig + sc.first)
    day_offset = pd.to_timedelta(rng.integers(0, 28, n), unit="D")
    btypes = np.array(["individual", "micro_business_owner", "sme"])
    rtypes = np.array(["amortizing", "interest_only", "balloon", "revolving"])
    borrowers = pd.DataFrame(
        {
            "borrower_id": borrower_ids,
            "borrower_type": btypes[btype],
            "birth_year": pd.array(
                np.round(index_to_month(orig + sc.first).year - age).astype(int), dtype="Int64"
            ),
            "industry": pd.Series(np.array(ind_names)[industry], dtype="str").where(~industry_null, None),
            "years_in_business": pd.Series(yib).where(business, np.nan),
            "annual_income": pd.Series(income).where(~income_null, np.nan),
            "bureau_score": pd.Series(bureau).where(~bureau_null, np.nan),
        }
    )
    loans = pd.DataFrame(
        {
            "loan_id": loan_ids,
            "borrower_id": borrower_ids,
            "product": np.array(PRODUCTS)[product],
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
    ptypes = np.where(product == SEC_BUSINESS, rng.choice(3, n, p=[0.6, 0.35, 0.05]), 0)
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
