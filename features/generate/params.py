"""Parameters of the data-generating process and the named profiles (clean demo book, card, mixed).

Every coefficient of the process is a field of `GeneratorParams` (monthly logits unless said otherwise);
what is drawn at origination is grouped in nested `BorrowerParams`, `LoanParams` and `CollateralParams`.
A book is fully described by its parameters and seed; `generator.json` beside a generated book records
them (nested groups as nested objects). Only names stay module constants: cities and their tiers, funding
partners, products.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

CITIES: dict[str, tuple[str, ...]] = {
    "tier1": ("Beijing", "Shanghai", "Guangzhou", "Shenzhen"),
    "new_tier1": (
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
    ),
    "tier2": (
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
    ),
    "tier3": (
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
    ),
    "other": ("Hegang", "Yulin", "Tongren"),
}
# Cities the lender has no house-price series for: collateral there is valued at appraisal.
CITIES_WITHOUT_HPI = ("Tongren", "Jiujiang")

FUNDING_PARTNERS = ("Xinyuan Trust", "Huarong Consumer Finance", "Bank of Dongfang", "Pingan Capital")
PRODUCTS = ("secured_business", "secured_consumer", "unsecured_consumer", "revolving")


@dataclass(frozen=True)
class BorrowerParams:
    """Borrowers at origination: type, bureau score, income and the personal and business details."""

    # borrowers who are micro-business owners: of secured business loans (else SMEs), of unsecured loans
    # (else individuals)
    micro_share_secured_business: float = 0.75
    micro_share_unsecured: float = 0.15
    # bureau score = mean + sd x (bureau_signal q + noise), rounded and clipped to the range
    bureau_mean: float = 640.0
    bureau_sd: float = 55.0
    bureau_range: tuple[float, float] = (350.0, 950.0)
    bureau_null_share: float = 0.03  # no bureau record
    # stated annual income = exp(log mean of the type + quality x q + sd x noise)
    income_log_mean: tuple[float, float, float] = (11.3, 12.2, 13.4)  # individual, micro owner, SME
    income_quality: float = 0.25
    income_log_sd: float = 0.45
    income_null_share: float = 0.02  # income not reported
    # years in business = gamma(shape, scale) x exp(quality x q)
    years_in_business_gamma: tuple[float, float] = (2.0, 3.0)
    years_in_business_quality: float = 0.25
    age_mean: float = 42.0  # years, at origination; normal, clipped to the range
    age_sd: float = 9.0
    age_range: tuple[float, float] = (22.0, 70.0)
    industry_null_share: float = 0.2  # individuals with no industry recorded


@dataclass(frozen=True)
class LoanParams:
    """Installment loan terms at origination: maturity, repayment type, amount, rate, affordability."""

    # terms in months and their probabilities, per product (a card has no maturity: `card_term`)
    term_secured_business: tuple[int, ...] = (36, 60, 120)
    term_secured_business_p: tuple[float, ...] = (0.4, 0.4, 0.2)
    term_secured_consumer: tuple[int, ...] = (120, 180, 240)
    term_secured_consumer_p: tuple[float, ...] = (0.3, 0.4, 0.3)
    term_unsecured: tuple[int, ...] = (12, 24, 36)
    term_unsecured_p: tuple[float, ...] = (0.3, 0.4, 0.3)
    card_term: int = 600  # a card's renewal horizon, past any window
    repayment_mix_secured_business: tuple[float, float, float] = (0.5, 0.3, 0.2)  # amortizing, IO, balloon
    balloon_amortization: int = 2  # a balloon's installment amortises over this many times its term
    seasoned_age_max: int = 48  # a seasoned loan is 1..this months old at the first month ...
    seasoned_min_remaining: int = 6  # ... and at least this many months from maturity
    appraisal_lag_max: int = 2  # collateral appraised 0..this months before origination
    # unsecured amount = min(exp(log mean + sd x noise), income share x income + cap add), at least the floor
    unsecured_log_principal: float = 11.0
    unsecured_log_sd: float = 0.5
    unsecured_income_share: float = 0.8
    unsecured_cap_add: float = 5000.0
    unsecured_floor: float = 5000.0
    # annual rate = base - score slope x bureau z + second-lien add-on + noise, clipped (cards: card_rate)
    base_rate: tuple[float, float, float] = (0.065, 0.045, 0.115)  # secured business, consumer, unsecured
    rate_score: float = 0.008
    rate_second_lien: float = 0.006
    rate_sd: float = 0.006
    rate_range: tuple[float, float] = (0.025, 0.24)
    # secured loans are underwritten to a debt-service ratio (annual payment / income):
    # mean - quality x q + sd x noise, clipped
    dsr_mean: float = 0.32
    dsr_quality: float = 0.05
    dsr_sd: float = 0.08
    dsr_range: tuple[float, float] = (0.12, 0.65)
    dsr_income_floor: float = 0.5  # the underwritten income is at least this share of the stated one
    partner_share_secured_business: float = 0.6  # loans funded by a partner, secured business ...
    partner_share_other: float = 0.3  # ... and the other products
    burden_missing_income: float = 0.35  # payment burden assumed where income is missing
    burden_cap: float = 2.0  # annual payment / income is clipped here


@dataclass(frozen=True)
class CollateralParams:
    """Property collateral at origination: value, second liens, loan-to-value, property type."""

    log_value: tuple[float, ...] = (15.4, 14.8, 14.3, 13.9, 13.5)  # mean log appraisal value per city tier
    log_value_sd: float = 0.45
    second_lien_share_business: float = 0.35  # secured business loans behind another lender's first lien
    second_lien_share_consumer: float = 0.15  # ... secured consumer loans
    prior_lien_share: tuple[float, float] = (0.2, 0.45)  # prior lien balance / value, uniform
    # target CLTV = scale x beta(a, b) + offset - quality x q, clipped
    cltv_beta: tuple[float, float] = (6.0, 5.0)
    cltv_scale: float = 0.6
    cltv_offset: float = 0.25
    cltv_quality: float = 0.05
    cltv_range: tuple[float, float] = (0.3, 0.85)
    second_lien_cltv_add: float = 0.1  # a second lien lends to the target CLTV plus this ...
    second_lien_ltv_range: tuple[float, float] = (0.1, 0.5)  # ... its own LTV clipped to this range
    property_mix_business: tuple[float, float, float] = (0.6, 0.35, 0.05)  # residential, commercial, land


@dataclass(frozen=True)
class GeneratorParams:
    """Parameters of the data-generating process."""

    end_month: str = "2025-12"
    seasoned_share: float = 0.35  # share of loans already on the book at the first month
    single_vintage: bool = False  # every loan drawn in one month, `vintage_age` months before the window
    vintage_age: int = 18
    bureau_signal: float = 0.92  # correlation of the bureau score with latent quality
    borrower: BorrowerParams = field(default_factory=BorrowerParams)
    loan: LoanParams = field(default_factory=LoanParams)
    collateral: CollateralParams = field(default_factory=CollateralParams)
    # secured_business, secured_consumer, unsecured_consumer, revolving (credit cards)
    product_mix: tuple[float, float, float, float] = (0.45, 0.20, 0.35, 0.0)
    tier_mix: tuple[float, ...] = (0.15, 0.30, 0.30, 0.20, 0.05)
    # house prices: monthly log drift per tier and beta to the national cycle
    hpi_drift: tuple[float, ...] = (0.003, 0.0035, 0.003, 0.0025, 0.002)
    hpi_beta: tuple[float, ...] = (0.5, 0.9, 1.2, 1.6, 1.9)
    hpi_drift_downturn: float = 0.3  # share of the tier drift left from the downturn on
    # national cycle = amplitude x sin(2 pi t / period) x unit (two factors, multiplied in this order)
    hpi_cycle_amplitude: float = 0.6
    hpi_cycle_unit: float = 0.002
    hpi_cycle_months: float = 70.0
    hpi_city_sigma: float = 0.004
    hpi_national_sigma: float = 0.0015
    hpi_recovery: float = 0.002  # national log HPI gain per month after the downturn
    downturn_start: float = 0.30  # share of the window
    downturn_months: int = 20
    downturn_depth: float = 0.010  # national log HPI fall per month during the downturn
    macro_peak: float = 1.5  # macro stress at the height of the downturn
    # the stress bump is a half sine from this many months before the downturn to this many after its end
    macro_lead: int = 3
    macro_lag: int = 5
    macro_ar: float = 0.85  # AR(1) coefficient and innovation of the macro noise
    macro_sigma: float = 0.12
    industry_ar: float = 0.9
    industry_sigma: float = 0.15
    # industries of business owners: (name, loading on the macro stress path, share among them)
    industries: tuple[tuple[str, float, float], ...] = (
        ("construction", 1.8, 0.10),
        ("hospitality", 1.5, 0.10),
        ("export_manufacturing", 1.3, 0.12),
        ("retail", 1.0, 0.18),
        ("wholesale", 0.8, 0.14),
        ("transport", 0.7, 0.10),
        ("education", 0.6, 0.04),
        ("agriculture", 0.4, 0.07),
        ("tech_services", 0.3, 0.08),
        ("healthcare", 0.2, 0.05),
        ("public_sector", 0.05, 0.02),
    )
    # stress onset / recovery
    s_on_base: float = -7.6
    s_on_quality: float = 0.7
    s_on_macro: float = 0.6
    s_on_industry: float = 0.3
    s_on_unsecured: float = 0.5
    s_on_burden: float = 1.2  # times (annual payment / income)
    s_on_local_hpi: float = 4.0  # times the fall of the city's house prices over ... (local economy)
    s_on_local_hpi_months: int = 12  # ... this many months
    s_off_base: float = -2.9
    s_off_quality: float = 0.3
    s_off_macro: float = -0.5
    # repayment when current
    miss_base: float = -5.6
    miss_stressed: float = 7.2
    miss_stressed_revolving: float = 3.5  # a stressed cardholder pays the minimum from the line for a while
    miss_quality: float = 0.25
    miss_unsecured: float = 0.4
    partial_share_normal: float = 0.9  # share of misses paid in part when not stressed (a liquidity hiccup)
    partial_share_stressed: float = 0.15  # ... and when stressed
    partial_paid: tuple[float, float] = (0.2, 0.9)  # share of the installment paid in part, uniform
    double_miss_share: float = 0.0  # share of a stressed borrower's misses that skip a cycle (to 30-59 DPD)
    sudden_base: float = -8.3
    sudden_quality: float = 0.25
    sudden_stressed: float = 0.8
    sudden_negative_equity: float = 2.0  # times negative equity, clip(CLTV - negative_equity_cltv, 0, cap)
    sudden_unsecured: float = 0.4
    prepay_base: float = -4.6
    prepay_stressed: float = -1.5
    prepay_equity: float = -3.0  # times max(CLTV - prepay_cltv, 0)
    prepay_cltv: float = 0.7
    balloon_fail_base: float = -3.0
    balloon_fail_stressed: float = 3.0
    balloon_fail_ltv: float = 3.0  # times (CLTV - balloon_fail_cltv)
    balloon_fail_cltv: float = 0.7
    # delinquent loans
    cure_base: float = 0.1
    cure_stressed: float = -2.2
    cure_negative_equity: float = -1.5
    roll_base: float = -1.9
    roll_stressed: float = 1.9
    roll_quality: float = 0.3
    roll_negative_equity: float = 1.0
    negative_equity_cltv: float = 0.8  # CLTV above which the borrower is in negative equity ...
    negative_equity_cap: float = 0.8  # ... counted up to this much
    back_prob: float = 0.06
    restructure_prob: float = 0.07  # secured loans 30-89 DPD, lender's forbearance
    # after default
    npl_sale_prob: float = 0.08
    post_default_cure_prob: float = 0.04
    chargeoff_dpd: int = 180
    # reporting
    coarse_dpd: bool = False  # days past due reported in whole cycles (30, 60, 90, ...), as card systems do
    missing_row_prob: float = 0.003  # reporting gaps in open, current months
    # credit cards: limit, utilisation (an emission of the stress state, not a driver), minimum due
    card_limit_income: float = 0.25  # limit ~ this x income x exp(quality q + sd e), clipped to the range
    card_limit_quality: float = 0.3
    card_limit_sd: float = 0.35
    card_limit_range: tuple[float, float] = (3000.0, 5e5)
    card_rate: float = 0.18  # annual rate = this - score slope x bureau z, clipped
    card_rate_score: float = 0.01
    card_rate_range: tuple[float, float] = (0.08, 0.36)
    card_util_base: float = -0.6  # target utilisation = sigmoid(base - quality q + sd e)
    card_util_quality: float = 0.6
    card_util_sd: float = 0.5
    card_util_reversion: float = 0.3
    card_util_noise: float = 0.04
    card_util_stress_drift: float = 0.05  # a stressed cardholder borrows more each month
    card_arrears_fee: float = 0.005  # utilisation added each month a card is behind, on top of interest
    card_util_max: float = 1.1  # utilisation cap (over the limit by fees and interest)
    card_min_share: float = 0.03  # minimum due = max(share x balance, floor)
    card_min_floor: float = 50.0
    card_transactor_base: float = 0.3  # P(pays the statement in full | normal) = sigmoid(base + q)
    card_min_only_stressed: float = 0.8  # P(pays only the minimum | stressed, pays)
    card_revolver_paid: tuple[float, float] = (1.0, 3.0)  # a revolver pays this x the minimum, uniform


PROFILES: dict[str, GeneratorParams] = {
    # the motivating lender's book: property-secured business and consumer loans and unsecured loans
    "clean": GeneratorParams(),
    # a card book as a bank's servicing system reports it: one vintage, whole-cycle DPD, re-defaults
    "card": GeneratorParams(
        product_mix=(0.0, 0.0, 0.0, 1.0),
        single_vintage=True,
        coarse_dpd=True,
        double_miss_share=0.3,
        post_default_cure_prob=0.15,
        missing_row_prob=0.01,
    ),
    # the lender's book with a card portfolio beside it, reported coarsely, with cures and gaps
    "mixed": GeneratorParams(
        product_mix=(0.35, 0.15, 0.25, 0.25),
        coarse_dpd=True,
        double_miss_share=0.2,
        post_default_cure_prob=0.10,
        missing_row_prob=0.01,
    ),
}


def profile(name: str, **overrides) -> GeneratorParams:
    if name not in PROFILES:
        raise ValueError(f"unknown generator profile {name!r}; choose from {sorted(PROFILES)}")
    return replace(PROFILES[name], **overrides)
