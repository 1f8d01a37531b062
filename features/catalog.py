"""Every model feature, declared once: dtype, plain-language name, reason text and risk direction.

`direction` is +1 when a higher value means more risk, -1 when less, 0 when there is no expected
direction; training turns it into LightGBM monotone constraints and validation checks the fitted model
honours it. `reason` is a format string over `value` used for the reason codes of the scorer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Family = Literal["borrower", "loan", "collateral", "behaviour"]
HISTORY_MONTHS = 24  # the service needs this much history to reproduce the book-wide features exactly


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: Literal["num", "cat"]
    family: Family
    title: str
    reason: str
    direction: int = 0
    exact: tuple[tuple[float, str], ...] = ()  # values that read better as their own sentence

    def reason_text(self, value: object) -> str:
        """The reason sentence for this feature's value, e.g. 'Loan-to-value is 84% ...'.

        `{s}` in the template is the plural ending: '1 missed payment', '2 missed payments'."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{self.title}: not available"
        for v, text in self.exact:
            if value == v:
                return text
        try:
            return self.reason.format(value=value, s="" if value == 1 else "s")
        except (ValueError, TypeError):
            return f"{self.title}: {value}"


FEATURES: tuple[Feature, ...] = (
    # borrower
    Feature("borrower_type", "cat", "borrower", "Borrower type", "Borrower is a {value}"),
    Feature("industry", "cat", "borrower", "Industry", "Industry {value} is under stress"),
    Feature("age", "num", "borrower", "Borrower age", "Borrower aged {value:.0f}"),
    Feature("annual_income", "num", "borrower", "Declared income", "Declared income of {value:,.0f}", -1),
    Feature(
        "bureau_score", "num", "borrower", "Bureau score", "Bureau score of {value:.0f} at origination", -1
    ),
    Feature(
        "years_in_business", "num", "borrower", "Years in business", "Business only {value:.1f} years old", -1
    ),
    # loan
    Feature("product", "cat", "loan", "Product", "Product {value}"),
    Feature("repayment_type", "cat", "loan", "Repayment type", "Repayment type {value}"),
    Feature("city_tier", "cat", "loan", "City tier", "Located in a {value} city"),
    Feature("funding_partner", "cat", "loan", "Funding partner", "Funded with {value}"),
    Feature("months_on_book", "num", "loan", "Months on book", "{value:.0f} month{s} on book"),
    Feature("remaining_term", "num", "loan", "Remaining term", "{value:.0f} month{s} to maturity"),
    Feature(
        "balance_ratio", "num", "loan", "Balance over principal", "Balance is {value:.0%} of the amount lent"
    ),
    Feature("interest_rate", "num", "loan", "Interest rate", "Priced at {value:.1%} a year", 1),
    Feature(
        "payment_to_income",
        "num",
        "loan",
        "Payment to income",
        "Installments take {value:.0%} of declared income",
        1,
    ),
    Feature(
        "lien_position",
        "num",
        "loan",
        "Lien position",
        "Lien {value:.0f}, behind prior lenders",
        1,
        exact=((1.0, "First lien"), (2.0, "Second lien, behind a prior lender")),
    ),
    # collateral
    Feature("property_type", "cat", "collateral", "Property type", "Collateral is {value} property"),
    Feature(
        "indexed_value",
        "num",
        "collateral",
        "Indexed collateral value",
        "Collateral now worth {value:,.0f} on the house-price index",
    ),
    Feature(
        "current_ltv",
        "num",
        "collateral",
        "Loan-to-value",
        "Loan-to-value is {value:.0%} on today's house prices",
        1,
    ),
    Feature(
        "combined_ltv",
        "num",
        "collateral",
        "Combined loan-to-value",
        "Loan-to-value with prior liens is {value:.0%} on today's house prices",
        1,
    ),
    Feature(
        "ltv_change",
        "num",
        "collateral",
        "Change in combined LTV",
        "Loan-to-value has moved {value:+.0%} since origination as house prices changed",
        1,
    ),
    Feature(
        "hpi_change_6m",
        "num",
        "collateral",
        "House prices, 6 months",
        "House prices in the collateral's city moved {value:+.1%} in 6 months",
        -1,
    ),
    Feature(
        "hpi_change_12m",
        "num",
        "collateral",
        "House prices, 12 months",
        "House prices in the collateral's city moved {value:+.1%} in 12 months",
        -1,
    ),
    Feature(
        "hpi_missing",
        "num",
        "collateral",
        "No price index",
        "No house-price index for the collateral's city: valued at appraisal",
    ),
    # repayment behaviour
    Feature("dpd_now", "num", "behaviour", "Days past due", "{value:.0f} day{s} past due now", 1),
    Feature(
        "max_dpd_3m",
        "num",
        "behaviour",
        "Worst DPD, 3 months",
        "Up to {value:.0f} day{s} past due in 3 months",
        1,
    ),
    Feature(
        "max_dpd_6m",
        "num",
        "behaviour",
        "Worst DPD, 6 months",
        "Up to {value:.0f} day{s} past due in 6 months",
        1,
    ),
    Feature(
        "max_dpd_12m",
        "num",
        "behaviour",
        "Worst DPD, 12 months",
        "Up to {value:.0f} day{s} past due in 12 months",
        1,
    ),
    Feature(
        "months_30plus_6m",
        "num",
        "behaviour",
        "Months 30+ DPD, 6 months",
        "{value:.0f} month{s} 30+ days past due in the last 6",
        1,
    ),
    Feature(
        "months_30plus_12m",
        "num",
        "behaviour",
        "Months 30+ DPD, 12 months",
        "{value:.0f} month{s} 30+ days past due in the last 12",
        1,
    ),
    Feature(
        "months_delinquent_3m",
        "num",
        "behaviour",
        "Months delinquent, 3 months",
        "{value:.0f} month{s} behind on payments in the last 3",
        1,
    ),
    Feature(
        "months_delinquent_12m",
        "num",
        "behaviour",
        "Months delinquent, 12 months",
        "{value:.0f} month{s} behind on payments in the last 12",
        1,
    ),
    Feature(
        "missed_payments_3m",
        "num",
        "behaviour",
        "Missed payments, 3 months",
        "{value:.0f} missed payment{s} in the last 3 months",
        1,
    ),
    Feature(
        "missed_payments_6m",
        "num",
        "behaviour",
        "Missed payments, 6 months",
        "{value:.0f} missed payment{s} in the last 6 months",
        1,
    ),
    Feature(
        "partial_payments_6m",
        "num",
        "behaviour",
        "Partial payments, 6 months",
        "{value:.0f} partial payment{s} in the last 6 months",
        1,
    ),
    Feature(
        "partial_payments_12m",
        "num",
        "behaviour",
        "Partial payments, 12 months",
        "{value:.0f} partial payment{s} in the last 12 months",
        1,
    ),
    Feature(
        "pay_ratio_1m",
        "num",
        "behaviour",
        "Paid of due, 1 month",
        "Paid {value:.0%} of the amount due this month",
        -1,
    ),
    Feature(
        "pay_ratio_3m",
        "num",
        "behaviour",
        "Paid of due, 3 months",
        "Paid {value:.0%} of the amounts due over 3 months",
        -1,
    ),
    Feature(
        "pay_ratio_6m",
        "num",
        "behaviour",
        "Paid of due, 6 months",
        "Paid {value:.0%} of the amounts due over 6 months",
        -1,
    ),
    Feature(
        "pay_ratio_12m",
        "num",
        "behaviour",
        "Paid of due, 12 months",
        "Paid {value:.0%} of the amounts due over 12 months",
        -1,
    ),
    Feature(
        "months_since_delinquency",
        "num",
        "behaviour",
        "Months since last delinquency",
        "Last behind on payments {value:.0f} month{s} ago",
        -1,
        exact=(
            (0.0, "Behind on payments now"),
            (float(HISTORY_MONTHS), f"Not behind on payments in the last {HISTORY_MONTHS} months"),
        ),
    ),
    Feature(
        "restructured_24m",
        "num",
        "behaviour",
        "Restructurings, 24 months",
        "Restructured {value:.0f} times in the last 24 months",
        1,
        exact=((1.0, "Restructured once in the last 24 months"),),
    ),
    Feature(
        "balance_trend_6m",
        "num",
        "behaviour",
        "Balance trend, 6 months",
        "Balance changed {value:+.1%} over 6 months",
    ),
    Feature(
        "missing_months_12m",
        "num",
        "behaviour",
        "Unreported months, 12 months",
        "{value:.0f} month{s} without a servicing report in the last 12",
    ),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.dtype == "cat")
NUMERIC: tuple[str, ...] = tuple(f.name for f in FEATURES if f.dtype == "num")
KEY_COLUMNS = ("loan_id", "as_of")
