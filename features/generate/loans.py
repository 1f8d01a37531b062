"""Borrowers, loans and collateral drawn at origination, with the static arrays the hazards need."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.generate.params import CITIES_WITHOUT_HPI, FUNDING_PARTNERS, PRODUCTS, GeneratorParams
from features.generate.process import LoanArrays, sigmoid
from features.generate.scenario import Scenario
from features.months import index_to_month
from features.schema import CITY_TIERS

SEC_BUSINESS, SEC_CONSUMER, UNSECURED, REVOLVING = range(4)


def draw_loans(
    rng: np.random.Generator, n: int, sc: Scenario, window_start: int, window_len: int, p: GeneratorParams
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, LoanArrays]:
    ws = window_start - sc.first  # slot of the first window month
    b, ln, co = p.borrower, p.loan, p.collateral
    product = rng.choice(4, n, p=np.asarray(p.product_mix) / np.sum(p.product_mix))
    secured = product < UNSECURED
    card = product == REVOLVING
    q = rng.normal(0, 1, n)
    # borrower
    btype = np.where(
        product == SEC_BUSINESS,
        np.where(rng.random(n) < b.micro_share_secured_business, 1, 2),
        np.where(product == UNSECURED, np.where(rng.random(n) < b.micro_share_unsecured, 1, 0), 0),
    )
    signal = p.bureau_signal * q + np.sqrt(1 - p.bureau_signal**2) * rng.normal(0, 1, n)
    bureau = np.clip(np.round(b.bureau_mean + b.bureau_sd * signal), *b.bureau_range)
    bureau_null = rng.random(n) < b.bureau_null_share
    inc_mu = np.asarray(b.income_log_mean)[btype]
    income = np.round(np.exp(inc_mu + b.income_quality * q + b.income_log_sd * rng.normal(0, 1, n)), -2)
    income_null = rng.random(n) < b.income_null_share
    business = btype > 0
    yib = np.round(rng.gamma(*b.years_in_business_gamma, n) * np.exp(b.years_in_business_quality * q), 1)
    age = np.clip(rng.normal(b.age_mean, b.age_sd, n), *b.age_range)
    ind_names = [name for name, _, _ in p.industries]
    ind_share = np.array([share for _, _, share in p.industries])
    industry = rng.choice(len(ind_names), n, p=ind_share / ind_share.sum())
    industry_null = (~business) & (rng.random(n) < b.industry_null_share)
    # loan terms (a card has no maturity inside any window: its term is the renewal horizon)
    term = np.select(
        [product == SEC_BUSINESS, product == SEC_CONSUMER, product == UNSECURED],
        [
            rng.choice(ln.term_secured_business, n, p=ln.term_secured_business_p),
            rng.choice(ln.term_secured_consumer, n, p=ln.term_secured_consumer_p),
            rng.choice(ln.term_unsecured, n, p=ln.term_unsecured_p),
        ],
        ln.card_term,
    )
    rtype = np.where(
        product == SEC_BUSINESS, rng.choice(3, n, p=ln.repayment_mix_secured_business), np.where(card, 3, 0)
    )
    seasoned = rng.random(n) < p.seasoned_share
    age_m = np.minimum(rng.integers(1, ln.seasoned_age_max + 1, n), term - ln.seasoned_min_remaining)
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
    log_val = np.asarray(co.log_value)[tier] + co.log_value_sd * rng.normal(0, 1, n)
    value0 = np.where(secured, np.round(np.exp(log_val), -3), 0.0)
    lien2_share = np.where(
        product == SEC_BUSINESS, co.second_lien_share_business, co.second_lien_share_consumer
    )
    lien2 = secured & (rng.random(n) < lien2_share)
    prior = np.where(lien2, np.round(value0 * rng.uniform(*co.prior_lien_share, n), -2), 0.0)
    target_cltv = np.clip(
        rng.beta(*co.cltv_beta, n) * co.cltv_scale + co.cltv_offset + co.cltv_quality * (-q), *co.cltv_range
    )
    own = np.clip(
        target_cltv + co.second_lien_cltv_add - prior / np.maximum(value0, 1), *co.second_lien_ltv_range
    )
    ltv_own = np.where(lien2, own, target_cltv)
    unsec_draw = np.exp(ln.unsecured_log_principal + ln.unsecured_log_sd * rng.normal(0, 1, n))
    unsec_principal = np.round(
        np.minimum(unsec_draw, income * ln.unsecured_income_share + ln.unsecured_cap_add), -2
    )
    principal = np.where(
        secured, np.round(value0 * ltv_own, -2), np.maximum(unsec_principal, ln.unsecured_floor)
    )
    appraisal_slot = orig - rng.integers(0, ln.appraisal_lag_max + 1, n)
    rate_base = np.array([*ln.base_rate, p.card_rate])[product]
    score_z = np.where(bureau_null, 0.0, (bureau - b.bureau_mean) / b.bureau_sd)
    rate = np.round(
        np.clip(
            rate_base - ln.rate_score * score_z + ln.rate_second_lien * lien2 + rng.normal(0, ln.rate_sd, n),
            *ln.rate_range,
        ),
        4,
    )
    r = rate / 12
    amort_n = np.where(rtype == 2, term * ln.balloon_amortization, term)
    inst = np.where(rtype == 1, principal * r, principal * r / (1 - (1 + r) ** (-amort_n)))
    # lenders underwrite secured loans to a debt-service ratio: income follows the installment
    dsr = np.clip(ln.dsr_mean - ln.dsr_quality * q + ln.dsr_sd * rng.normal(0, 1, n), *ln.dsr_range)
    income = np.where(
        secured, np.round(np.maximum(12 * inst / dsr, income * ln.dsr_income_floor), -2), income
    )
    partner_share = np.where(
        product == SEC_BUSINESS, ln.partner_share_secured_business, ln.partner_share_other
    )
    partner = np.where(rng.random(n) < partner_share, rng.integers(0, len(FUNDING_PARTNERS), n), -1)
    if card.any():
        # cards, drawn last so that a book without cards is the same book it always was: the limit follows
        # income and quality; the typical minimum due follows the cardholder's usual utilisation
        spread = np.exp(p.card_limit_quality * q + p.card_limit_sd * rng.normal(0, 1, n))
        limit = np.round(np.clip(p.card_limit_income * income * spread, *p.card_limit_range), -2)
        util0 = np.where(
            card,
            sigmoid(p.card_util_base - p.card_util_quality * q + p.card_util_sd * rng.normal(0, 1, n)),
            0.0,
        )
        rate = np.where(
            card, np.round(np.clip(p.card_rate - p.card_rate_score * score_z, *p.card_rate_range), 4), rate
        )
        principal = np.where(card, limit, principal)
        inst = np.where(card, np.maximum(p.card_min_share * util0 * limit, p.card_min_floor), inst)
    else:
        util0 = np.zeros(n)
    burden = np.where(
        income_null | (income <= 0), ln.burden_missing_income, 12 * inst / np.maximum(income, 1.0)
    )
    burden = np.clip(burden, 0, ln.burden_cap)
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
            "birth_year": pd.array(np.round(first_day.year - age).astype(int), dtype="Int64"),
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
    ptypes = np.where(product == SEC_BUSINESS, rng.choice(3, n, p=co.property_mix_business), 0)
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
