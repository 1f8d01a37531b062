"""Request and response models of the scoring API: the book contract (DESIGN.md §2) for one loan.

Pydantic checks types, required fields, allowed values of the contract's enumerations and ranges, so a
malformed request gets a 400 naming the field. Category values the contract leaves open (city, industry,
funding partner) are accepted even when the model never saw them: they are scored and flagged.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

MAX_HISTORY = 24
MAX_BATCH = 1000

BorrowerType = Literal["individual", "micro_business_owner", "sme"]
Product = Literal["secured_business", "secured_consumer", "unsecured_consumer", "revolving"]
RepaymentType = Literal["amortizing", "interest_only", "balloon", "revolving"]
CityTier = Literal["tier1", "new_tier1", "tier2", "tier3", "other"]
PropertyType = Literal["residential", "commercial", "land"]
Status = Literal["open", "paid_off", "charged_off"]


def _month(v: object) -> object:
    """Accept 'YYYY-MM' as the first day of that month."""
    if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}", v):
        return f"{v}-01"
    return v


def _first_of_month(d: date) -> date:
    if d.day != 1:
        raise ValueError(f"{d.isoformat()} is not the first day of a month (use YYYY-MM or YYYY-MM-01)")
    return d


Month = Annotated[
    date,
    BeforeValidator(_month),
    AfterValidator(_first_of_month),
    Field(description="A month: YYYY-MM or YYYY-MM-01."),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Borrower(_Strict):
    borrower_id: str = Field(min_length=1, description="Unique borrower id.")
    borrower_type: BorrowerType = Field(description="individual, micro_business_owner or sme.")
    birth_year: int | None = Field(None, ge=1900, le=2100, description="Year of birth.")
    industry: str | None = Field(None, description="Industry of the business or employer.")
    years_in_business: float | None = Field(None, ge=0, description="Years the business has run.")
    annual_income: float | None = Field(None, ge=0, description="Declared annual income at origination.")
    bureau_score: float | None = Field(None, ge=0, description="Credit bureau score at origination.")


class Loan(_Strict):
    loan_id: str = Field(min_length=1, description="Unique loan id.")
    borrower_id: str = Field(min_length=1, description="Borrower of the loan (must match borrower).")
    product: Product = Field(description="Product line.")
    origination_date: date = Field(description="Date the loan was drawn.")
    term_months: int = Field(gt=0, description="Contractual term in months.")
    principal: float = Field(gt=0, description="Amount lent.")
    interest_rate: float = Field(ge=0, lt=1, description="Annual interest rate as a fraction.")
    repayment_type: RepaymentType = Field(description="How principal is repaid.")
    city: str = Field(min_length=1, description="City of the borrower or the collateral.")
    city_tier: CityTier = Field(description="Tier of the city.")
    collateral_id: str | None = Field(None, description="Pledged property, if secured.")
    lien_position: Literal[1, 2] | None = Field(None, description="1st or 2nd lien.")
    funding_partner: str | None = Field(None, description="Partner sharing the funding.")


class Collateral(_Strict):
    collateral_id: str = Field(min_length=1, description="Unique collateral id (must match the loan's).")
    property_type: PropertyType = Field(description="Kind of property.")
    city: str = Field(min_length=1, description="City where the property lies.")
    appraisal_value: float = Field(gt=0, description="Appraised value.")
    appraisal_date: date = Field(description="Date of the appraisal.")
    prior_lien_balance: float = Field(0.0, ge=0, description="Debt ranking ahead of this lender.")


class PerformanceRow(_Strict):
    loan_id: str = Field(min_length=1, description="Loan the row reports on (must be this loan).")
    month: Month
    balance: float = Field(ge=0, description="Outstanding principal at month end.")
    scheduled_payment: float = Field(ge=0, description="Payment due in the month.")
    paid_amount: float = Field(ge=0, description="Amount paid in the month.")
    days_past_due: int = Field(ge=0, description="Days the oldest unpaid installment is late.")
    status: Status = Field(description="open, paid_off or charged_off.")
    restructured: bool = Field(False, description="A restructuring took effect this month.")


class HousePrice(_Strict):
    month: Month
    index: float = Field(gt=0, description="House price index level of the collateral's city.")


class LoanInput(_Strict):
    """One loan with everything needed to score it at `as_of`."""

    borrower: Borrower
    loan: Loan
    collateral: Collateral | None = Field(None, description="The pledged property (secured loans).")
    performance: list[PerformanceRow] = Field(
        min_length=1,
        max_length=MAX_HISTORY,
        description=f"The loan's monthly rows in month order, the last {MAX_HISTORY} months up to as_of.",
    )
    house_prices: list[HousePrice] | None = Field(
        None,
        description="House price index of the collateral's city; if absent, the configured book's series.",
    )
    as_of: Month | None = Field(None, description="Month to score at; default the last performance month.")

    @model_validator(mode="after")
    def _consistent(self) -> LoanInput:
        problems = []
        if self.loan.borrower_id != self.borrower.borrower_id:
            problems.append(
                f"loan.borrower_id {self.loan.borrower_id!r} is not borrower.borrower_id "
                f"{self.borrower.borrower_id!r}"
            )
        if self.collateral is None and self.loan.collateral_id is not None:
            problems.append(
                f"loan.collateral_id {self.loan.collateral_id!r} is given but collateral is missing"
            )
        if self.collateral is not None and self.loan.collateral_id != self.collateral.collateral_id:
            problems.append(
                f"loan.collateral_id {self.loan.collateral_id!r} is not collateral.collateral_id "
                f"{self.collateral.collateral_id!r}"
            )
        for i, r in enumerate(self.performance):
            if r.loan_id != self.loan.loan_id:
                problems.append(
                    f"performance[{i}].loan_id {r.loan_id!r} is another loan than loan.loan_id "
                    f"{self.loan.loan_id!r}"
                )
            if i and r.month <= self.performance[i - 1].month:
                problems.append(
                    f"performance[{i}].month {r.month:%Y-%m} is not after performance[{i - 1}].month "
                    f"{self.performance[i - 1].month:%Y-%m}: rows must be in month order, one per month"
                )
        today = date.today().replace(day=1)
        last = self.performance[-1].month
        if last > today:
            problems.append(f"performance[{len(self.performance) - 1}].month {last:%Y-%m} is in the future")
        if self.as_of is not None:
            if self.as_of > today:
                problems.append(f"as_of {self.as_of:%Y-%m} is in the future")
            elif self.as_of not in {r.month for r in self.performance}:
                problems.append(f"as_of {self.as_of:%Y-%m} has no performance row")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Reason(BaseModel):
    concept: str = Field(description="Reason concept (arrears, payment_history, collateral, ...).")
    title: str = Field(description="Plain-language name of the concept.")
    feature: str = Field(description="The model feature the sentence tells first.")
    value: float | str | None = Field(description="The loan's value of that feature.")
    contribution: float = Field(
        description="The concept's contribution to the raw score: the sum of its features' SHAP values."
    )
    text: str = Field(description="The reason as a sentence for a credit officer.")


class ScoreResponse(BaseModel):
    model_name: str = Field(description="Registered model name.")
    model_version: str = Field(description="Registered model version.")
    loan_id: str
    as_of: str = Field(description="Month scored (YYYY-MM).")
    pd: float = Field(description="Calibrated probability of the label event within the horizon.")
    grade: int = Field(description="Master-scale grade, 1 (best) to 10.")
    watch_list: Literal["early_warning", "in_arrears"] = Field(
        description="early_warning: not in arrears at as_of; in_arrears: days past due now."
    )
    tier: Literal["red", "amber", "green"] = Field(description="Review tier against the list's thresholds.")
    raw_score: float = Field(description="LightGBM raw score (log-odds) before calibration.")
    reasons: list[Reason] = Field(description="Top features pushing the risk up, largest first.")
    unknown_categories: list[str] = Field(
        description="Category values the model never saw ('field=value'); scored as missing, not rejected."
    )


class BatchResponse(BaseModel):
    model_name: str
    model_version: str
    scores: list[ScoreResponse]


class ExplainResponse(BaseModel):
    model_name: str
    model_version: str
    loan_id: str
    as_of: str
    base_value: float = Field(description="Expected raw score over the training data.")
    raw_score: float = Field(description="base_value + sum of contributions.")
    pd: float
    contributions: dict[str, float] = Field(description="SHAP contribution of every feature (log-odds).")
    concepts: dict[str, float] = Field(
        description="Each reason concept's contribution: the sum of its features' (protected ones apart)."
    )
    values: dict[str, float | str | None] = Field(description="The loan's feature values.")


class ModelInfo(BaseModel):
    model_name: str
    model_version: str
    model_ref: str = Field(description="How the model was chosen: an alias (champion) or a version.")
    loaded_at: str = Field(description="When this server loaded the model (UTC).")
    schema_version: str
    spec: dict = Field(description="The model spec it was trained from.")
    windows: dict[str, list[str]] = Field(description="Train, calibration and test as-of windows.")
    test_metrics: dict[str, float] = Field(description="Out-of-time test metrics from training.")
    tier_thresholds: dict[str, dict[str, float]] = Field(
        description="PD thresholds of the red and amber tiers of each list."
    )
    grade_bands: list[float] = Field(description="Upper PD bound of grades 1 to 9.")
    features: list[str]
    book: str | None = Field(description="The book scored by loan id, if one is configured.")
