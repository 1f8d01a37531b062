"""Parameters of the data-generating process and the named profiles (clean demo book, card, mixed).

Every coefficient of the process is a field here (monthly logits unless said otherwise), so a book is
fully described by its parameters and seed; `generator.json` beside a generated book records them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
PRODUCTS = ("secured_business", "secured_consumer", "unsecured_consumer", "revolving")


@dataclass(frozen=True)
class GeneratorParams:
    """Parameters of the data-generating process."""

    end_month: str = "2025-12"
    seasoned_share: float = 0.35  # share of loans already on the book at the first month
    single_vintage: bool = False  # every loan drawn in one month, `vintage_age` months before the window
    vintage_age: int = 18
    bureau_signal: float = 0.92  # correlation of the bureau score with latent quality
    # secured_business, secured_consumer, unsecured_consumer, revolving (credit cards)
    product_mix: tuple[float, float, float, float] = (0.45, 0.20, 0.35, 0.0)
    tier_mix: tuple[float, ...] = (0.15, 0.30, 0.30, 0.20, 0.05)
    # house prices: monthly log drift per tier and beta to the national cycle
    hpi_drift: tuple[float, ...] = (0.003, 0.0035, 0.003, 0.0025, 0.002)
    hpi_beta: tuple[float, ...] = (0.5, 0.9, 1.2, 1.6, 1.9)
    hpi_city_sigma: float = 0.004
    hpi_national_sigma: float = 0.0015
    hpi_recovery: float = 0.002  # national log HPI gain per month after the downturn
    downturn_start: float = 0.30  # share of the window
    downturn_months: int = 20
    downturn_depth: float = 0.010  # national log HPI fall per month during the downturn
    macro_peak: float = 1.5  # macro stress at the height of the downturn
    macro_ar: float = 0.85  # AR(1) coefficient and innovation of the macro noise
    macro_sigma: float = 0.12
    industry_ar: float = 0.9
    industry_sigma: float = 0.15
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
    s_off_macro: float = -0.5
    # repayment when current
    miss_base: float = -5.6
    miss_stressed: float = 7.2
    miss_stressed_revolving: float = 3.5  # a stressed cardholder pays the minimum from the line for a while
    miss_quality: float = 0.25
    miss_unsecured: float = 0.4
    partial_share_normal: float = 0.9  # share of misses paid in part when not stressed (a liquidity hiccup)
    partial_share_stressed: float = 0.15  # ... and when stressed
    double_miss_share: float = 0.0  # share of a stressed borrower's misses that skip a cycle (to 30-59 DPD)
    sudden_base: float = -8.3
    sudden_quality: float = 0.25
    sudden_stressed: float = 0.8
    sudden_negative_equity: float = 2.0
    sudden_unsecured: float = 0.4
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
    # reporting
    coarse_dpd: bool = False  # days past due reported in whole cycles (30, 60, 90, ...), as card systems do
    missing_row_prob: float = 0.003  # reporting gaps in open, current months
    # credit cards: limit, utilisation (an emission of the stress state, not a driver), minimum due
    card_limit_income: float = 0.25  # limit ~ this x income x exp(0.3 q + 0.35 e)
    card_rate: float = 0.18
    card_util_base: float = -0.6  # target utilisation = sigmoid(base - 0.6 q + 0.5 e)
    card_util_reversion: float = 0.3
    card_util_noise: float = 0.04
    card_util_stress_drift: float = 0.05  # a stressed cardholder borrows more each month
    card_min_share: float = 0.03  # minimum due = max(share x balance, floor)
    card_min_floor: float = 50.0
    card_transactor_base: float = 0.3  # P(pays the statement in full | normal) = sigmoid(base + q)
    card_min_only_stressed: float = 0.8  # P(pays only the minimum | stressed, pays)


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
