"""Every model feature, declared once: dtype, concept, plain-language name, reason text, risk direction.

`direction` is +1 when a higher value means more risk, -1 when less, 0 when there is no expected
direction; training turns it into LightGBM monotone constraints and validation checks the fitted model
honours it. `concept` groups features for reason codes (a concept's contribution is the sum of its
features' SHAP values). `reason` is a format string over `value` that words the feature when it explains
a score; `telling` is False for features that may move a score but are never worth telling an officer
(an operational attribute, a data-quality flag). A missing value is never a reason: `reason_text` gives
None for it.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Literal

HISTORY_MONTHS = 24  # the service needs this much history to reproduce the book-wide features exactly

CONCEPTS: dict[str, str] = {
    "arrears": "Arrears now",
    "payment_history": "Payment history",
    "cure_history": "Past default",
    "utilisation": "Use of the credit line",
    "collateral": "Collateral and loan-to-value",
    "house_prices": "House-price trend",
    "affordability": "Affordability",
    "borrower": "Borrower profile",
    "loan_structure": "Loan structure",
    "portfolio": "Portfolio context",
}
ARREARS_CONCEPTS = ("arrears", "payment_history")


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: Literal["num", "cat"]
    concept: str
    title: str
    reason: str
    direction: int = 0
    exact: tuple[tuple[object, str], ...] = ()  # values that read better as their own sentence
    telling: bool = True
    # features of one measure over other windows ('dpd': now, worst in 3, 6, 12 months): once one is told,
    # another with the value the sentence shows alike adds nothing ("1 missed payment in the last 3
    # months | 1 missed payment in the last 6 months" is one payment)
    measure: str = ""
    # months of history, t included, the feature needs (missing below): a short book's training rows
    # lack it for want of history, not because of the loan, so training may leave it out
    history: int = 0
    # a feature of the same concept whose telling value already says this one's fact, and is told first
    # when the concept is ("60 days past due now; Behind on payments now"): this one is then not told
    told_by: str = ""
    # a change whose sign says its direction: one on the safe side of zero is never a risk, however it
    # compares with the typical loan ("Loan-to-value has moved -3 points" is no reason to call)
    signed: bool = False

    def reason_text(self, value: object) -> str | None:
        """The reason sentence for this feature's value, e.g. 'Loan-to-value is 84% ...'; None if missing.

        `{s}` in the template is the plural ending: '1 missed payment', '2 missed payments'; `{pts}` is a
        difference of two shares in percentage points (0.19 -> 19), which '{value:+.0%}' would misread as
        a relative change ('+19%' of what it was), and `{ps}` its plural ending as '{pts:+.0f}' shows it."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        for v, text in self.exact:
            if value == v:
                return text
        shown = _Compact(value) if isinstance(value, float) and abs(value) >= COMPACT_FROM else value
        if isinstance(shown, str):
            shown = shown.replace("_", " ")  # a category code as words: 'export manufacturing'
        try:
            pts = _points(value)
            one = isinstance(pts, float) and round(abs(pts)) == 1  # '+1 point' (with '{pts:+.0f}')
            return self.reason.format(
                value=shown, s="" if value == 1 else "s", pts=pts, ps="" if one else "s"
            )
        except (ValueError, TypeError):
            return f"{self.title}: {value}"

    @property
    def display_step(self) -> float:
        """The smallest difference the reason sentence shows ('{value:.0%}': 0.01; '{value:,.0f}': 1);
        0 where it shows the value as it is. Two values closer than this read alike."""
        m = re.search(r"\{(value|pts):[^}]*?\.(\d+)([f%])\}", self.reason)
        if m is None:
            return 0.0
        step = 10.0 ** -int(m.group(2))
        return step / 100 if m.group(3) == "%" or m.group(1) == "pts" else step


def _points(value: object) -> object:
    """A share difference in percentage points, for `{pts}`; the value as it is when not a number."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        pts = float(value) * 100
        return _Compact(pts) if abs(pts) >= COMPACT_FROM else pts
    return value


COMPACT_FROM = 1e12  # values this large are told in three significant digits, not hundreds of them


class _Compact(float):
    """A huge value (a balance of 1e308 is a valid request) formatted as '9.43e+307' (or '...%'),
    whatever the sentence's format asks, so a reason stays a sentence."""

    def __format__(self, spec: str) -> str:
        sign = "+" if spec.startswith("+") else ""  # '{value:+.0%}' keeps its sign
        if spec.endswith("%"):
            return f"{float(self) * 100:{sign}.3g}%"
        return f"{float(self):{sign}.3g}"


def _n(
    name,
    concept,
    title,
    reason,
    direction=0,
    exact=(),
    telling=True,
    measure="",
    history=0,
    told_by="",
    signed=False,
) -> Feature:
    return Feature(
        name, "num", concept, title, reason, direction, exact, telling, measure, history, told_by, signed
    )


def _c(name, concept, title, reason, exact=(), telling=True) -> Feature:
    return Feature(name, "cat", concept, title, reason, 0, exact, telling)


FEATURES: tuple[Feature, ...] = (
    # borrower
    _c(
        "borrower_type",
        "borrower",
        "Borrower type",
        "Borrower type {value}",
        exact=(
            ("individual", "Individual borrower"),
            ("micro_business_owner", "Micro-business owner"),
            ("sme", "Small or medium enterprise"),
        ),
    ),
    _c("industry", "borrower", "Industry", "Works in {value}, a higher-risk industry in this model"),
    _n("age", "borrower", "Borrower age", "Borrower aged {value:.0f}"),
    _n("annual_income", "affordability", "Declared income", "Declared income of {value:,.0f}", -1),
    _n("bureau_score", "borrower", "Bureau score", "Bureau score of {value:.0f} at origination", -1),
    _n("years_in_business", "borrower", "Years in business", "Business only {value:.1f} years old", -1),
    # loan
    _c("product", "loan_structure", "Product", "Product: {value}"),
    _c("repayment_type", "loan_structure", "Repayment type", "Repayment: {value}"),
    _c("city_tier", "loan_structure", "City tier", "City tier: {value}"),  # "in a other city" read badly
    _c("funding_partner", "loan_structure", "Funding partner", "Funded with {value}", telling=False),
    _n("months_on_book", "loan_structure", "Months on book", "{value:.0f} month{s} on book"),
    _n("remaining_term", "loan_structure", "Remaining term", "{value:.0f} month{s} to maturity"),
    _n(
        "balance_ratio",
        "loan_structure",
        "Balance over principal",
        "Balance is {value:.0%} of the amount lent",
    ),
    _n(
        "history_months",
        "loan_structure",
        "Months of history",
        "{value:.0f} month{s} of history",
        0,
        (),
        False,
    ),
    _n("interest_rate", "affordability", "Interest rate", "Priced at {value:.1%} a year", 1),
    _n(
        "payment_to_income",
        "affordability",
        "Payment to income",
        "Payments due take {value:.0%} of declared income",  # an installment or a card's minimum due
        1,
    ),
    _n(
        "lien_position",
        "collateral",
        "Lien position",
        "Lien {value:.0f}, behind prior lenders",
        1,
        exact=((1.0, "First lien"), (2.0, "Second lien, behind a prior lender")),
    ),
    # collateral
    _c("property_type", "collateral", "Property type", "Collateral is {value} property"),
    _n(
        "indexed_value",
        "collateral",
        "Indexed collateral value",
        "Collateral now worth {value:,.0f} on the house-price index",
    ),
    _n(
        "current_ltv",
        "collateral",
        "Loan-to-value",
        "Loan-to-value is {value:.0%} on today's house prices",
        1,
        measure="ltv",
    ),
    _n(
        "combined_ltv",
        "collateral",
        "Combined loan-to-value",
        "Loan-to-value with prior liens is {value:.0%} on today's house prices",
        1,
        measure="ltv",
    ),
    _n(
        "ltv_change",
        "collateral",
        "Change in combined LTV",
        "Loan-to-value has moved {pts:+.0f} point{ps} since origination",
        1,
        signed=True,
    ),
    _n(
        "hpi_missing",
        "collateral",
        "No price index",
        "No house-price index for the collateral's city: valued at appraisal",
        telling=False,
    ),
    _n(
        "hpi_change_6m",
        "house_prices",
        "House prices, 6 months",
        "House prices in the collateral's city moved {value:+.1%} in 6 months",
        -1,
        signed=True,
    ),
    _n(
        "hpi_change_12m",
        "house_prices",
        "House prices, 12 months",
        "House prices in the collateral's city moved {value:+.1%} in 12 months",
        -1,
        signed=True,
        measure="hpi_12m",
    ),
    _n(
        "local_hpi_change_12m",
        "house_prices",  # the borrower's city: the trend an unsecured loan has
        "Local house prices, 12 months",
        "House prices in the borrower's city moved {value:+.1%} in 12 months",
        -1,
        measure="hpi_12m",  # the collateral's city is often the borrower's: one fact, told once
        signed=True,
    ),
    # arrears now
    _n("dpd_now", "arrears", "Days past due", "{value:.0f} day{s} past due now", 1, measure="dpd"),
    _n(
        "max_dpd_3m",
        "arrears",
        "Worst DPD, 3 months",
        "Up to {value:.0f} day{s} past due in 3 months",
        1,
        measure="dpd",
    ),
    _n(
        "months_delinquent_3m",
        "arrears",
        "Months delinquent, 3 months",
        "{value:.0f} month{s} behind on payments in the last 3 months",
        1,
        measure="months_delinquent",
    ),
    _n(
        "missed_payments_3m",
        "arrears",
        "Missed payments, 3 months",
        "{value:.0f} missed payment{s} in the last 3 months",
        1,
        measure="missed",
    ),
    _n(
        "pay_ratio_1m", "arrears", "Paid of due, 1 month", "Paid {value:.0%} of the amount due this month", -1
    ),
    _n(
        "pay_ratio_3m",
        "arrears",
        "Paid of due, 3 months",
        "Paid {value:.0%} of the amounts due over 3 months",
        -1,
    ),
    _n(
        "months_since_delinquency",
        "arrears",
        "Months since last delinquency",
        "Last behind on payments {value:.0f} month{s} ago",
        -1,
        exact=(
            (0.0, "Behind on payments now"),
            (float(HISTORY_MONTHS), f"Not behind on payments in the last {HISTORY_MONTHS} months"),
        ),
        told_by="dpd_now",
    ),
    # payment history
    _n(
        "max_dpd_6m",
        "payment_history",
        "Worst DPD, 6 months",
        "Up to {value:.0f} day{s} past due in 6 months",
        1,
        measure="dpd",
    ),
    _n(
        "max_dpd_12m",
        "payment_history",
        "Worst DPD, 12 months",
        "Up to {value:.0f} day{s} past due in 12 months",
        1,
        measure="dpd",
    ),
    _n(
        "months_30plus_6m",
        "payment_history",
        "Months 30+ DPD, 6 months",
        "{value:.0f} month{s} 30+ days past due in the last 6",
        1,
        measure="months_30plus",
    ),
    _n(
        "months_30plus_12m",
        "payment_history",
        "Months 30+ DPD, 12 months",
        "{value:.0f} month{s} 30+ days past due in the last 12",
        1,
        measure="months_30plus",
    ),
    _n(
        "months_delinquent_12m",
        "payment_history",
        "Months delinquent, 12 months",
        "{value:.0f} month{s} behind on payments in the last 12 months",
        1,
        measure="months_delinquent",
    ),
    _n(
        "missed_payments_6m",
        "payment_history",
        "Missed payments, 6 months",
        "{value:.0f} missed payment{s} in the last 6 months",
        1,
        measure="missed",
    ),
    _n(
        "partial_payments_6m",
        "payment_history",
        "Partial payments, 6 months",
        "{value:.0f} partial payment{s} in the last 6 months",
        1,
        measure="partial",
    ),
    _n(
        "partial_payments_12m",
        "payment_history",
        "Partial payments, 12 months",
        "{value:.0f} partial payment{s} in the last 12 months",
        1,
        measure="partial",
    ),
    _n(
        "pay_ratio_6m",
        "payment_history",
        "Paid of due, 6 months",
        "Paid {value:.0%} of the amounts due over 6 months",
        -1,
    ),
    _n(
        "pay_ratio_12m",
        "payment_history",
        "Paid of due, 12 months",
        "Paid {value:.0%} of the amounts due over 12 months",
        -1,
    ),
    _n(
        "restructured_24m",
        "payment_history",
        "Restructurings, 24 months",
        "Restructured {value:.0f} times in the last 24 months",
        1,
        exact=((1.0, "Restructured once in the last 24 months"),),
    ),
    _n(
        "balance_trend_6m",
        "payment_history",
        "Balance trend, 6 months",
        "Balance changed {value:+.1%} over 6 months",
        1,
        history=7,  # the balance 6 months before t
        signed=True,
    ),
    _n(
        "missing_months_12m",
        "payment_history",
        "Unreported months, 12 months",
        "{value:.0f} month{s} without a servicing report in the last 12",
        telling=False,
    ),
    # cure history
    _n(
        "defaulted_24m",
        "cure_history",
        "Defaulted in 24 months",
        "In default within the last 24 months",
        1,
        exact=((0.0, "Not in default in the last 24 months"),),
    ),
    _n(
        "months_since_cure",
        "cure_history",
        "Months since cure",
        "Cured from default {value:.0f} month{s} ago",
        -1,
    ),
    _n(
        "default_episodes_24m",
        "cure_history",
        "Default episodes, 24 months",
        "{value:.0f} default episode{s} in the last 24 months",
        1,
    ),
    # revolving credit lines (cards): `principal` is the credit limit
    _n("utilisation", "utilisation", "Utilisation", "Using {value:.0%} of the credit limit", 1),
    _n(
        "utilisation_change_3m",
        "utilisation",
        "Utilisation change, 3 months",
        "Use of the credit limit moved {pts:+.0f} point{ps} in 3 months",
        1,
        signed=True,
    ),
    _n(
        "payment_to_balance_3m",
        "utilisation",
        "Paid of statement balance, 3 months",
        "Paid {value:.0%} of the statement balances over 3 months",
        -1,
    ),
    _n(
        "min_payment_months_6m",
        "utilisation",
        "Minimum-payment months, 6 months",
        "Paid only the minimum in {value:.0f} of the last 6 months",
        1,
        measure="minimum",
    ),
    _n(
        "strain_months_6m",
        "utilisation",
        "Months borrowing more while paying the minimum, 6 months",
        "Balance grew while paying the minimum or less in {value:.0f} of the last 6 months",
        1,
        measure="minimum",
    ),
    # portfolio context (features.context)
    _n(
        "book_arrears_rate",
        "portfolio",
        "Book arrears rate",
        "{value:.1%} of the book is behind on payments now",
        1,
    ),
    _n(
        "book_arrears_change_6m",
        "portfolio",
        "Book arrears change, 6 months",
        "The book's arrears rate moved {pts:+.1f} points in 6 months",
        1,
        signed=True,
    ),
    _n(
        "book_roll_rate_3m",
        "portfolio",
        "Book roll rate, 3 months",
        "{value:.1%} of current loans fell behind each month lately",
        1,
    ),
    _n(
        "book_roll_rate_change_3m",
        "portfolio",
        "Book roll rate change, 3 months",
        "The share of current loans falling behind moved {pts:+.1f} points in 3 months",
        1,
        signed=True,
    ),
    _n(
        "industry_arrears_rate",
        "portfolio",
        "Industry arrears rate",
        "{value:.1%} of loans in the borrower's industry are behind now",
        1,
    ),
    _n(
        "industry_roll_rate_3m",
        "portfolio",
        "Industry roll rate, 3 months",
        "{value:.1%} of current loans in the borrower's industry fell behind each month lately",
        1,
    ),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
