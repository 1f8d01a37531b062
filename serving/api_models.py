"""Request and response models of the scoring API: the book contract (DESIGN.md §2) for one loan.

Types, enumerations, ranges, nullability and descriptions come from `features.schema.TABLES` and the
history length from `features.catalog.HISTORY_MONTHS`, so the API cannot drift from the contract
(`tests/serving/test_api_models.py` checks). On top of the contract the API bounds what a request may
carry: finite numbers, integers within int64, printable strings of bounded length, dates in a sane range,
and the cross-field rules of one loan, each reported at the field it concerns. Category values the
contract leaves open (city, industry, funding partner) are accepted even when the model never saw them:
they are scored and flagged.
"""

from __future__ import annotations

import functools
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from features.catalog import HISTORY_MONTHS
from features.schema import (
    BORROWER_TYPES,
    CITY_TIERS,
    PRODUCTS,
    PROPERTY_TYPES,
    REPAYMENT_TYPES,
    STATUSES,
    TABLES,
)

MAX_BATCH = 1000
MAX_ID_CHARS = 64
MAX_TEXT_CHARS = 200
INT64_MAX = 2**63 - 1  # the book stores integers as int64
DATE_MIN, DATE_MAX = date(1900, 1, 1), date(2199, 12, 31)  # inside pandas' datetime range


def _printable(s: str) -> str:
    """No control, format (bidi overrides, zero-width) or separator characters: ids and names are shown
    to officers and written to logs as they are."""
    if not s.isprintable():
        bad = next(c for c in s if not c.isprintable())
        raise ValueError(f"must be printable text (character U+{ord(bad):04X} is not)")
    return s


Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_printable)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_printable)]


def _in_range(d: date, text: str) -> date:
    if not DATE_MIN <= d <= DATE_MAX:
        raise ValueError(f"{text} is outside {DATE_MIN.year}-{DATE_MAX.year}")
    return d


DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits: \d would take any script's
MONTH_TEXT = re.compile(r"([0-9]{4})-([0-9]{2})(?:-([0-9]{2}))?")


def _date(v: object) -> date:
    """An ISO date 'YYYY-MM-DD' (a number is refused, never read as a timestamp)."""
    if isinstance(v, date):
        return _in_range(v, str(v))
    if not isinstance(v, str):
        raise ValueError("a date is a string YYYY-MM-DD")
    return _date_of_text(v)


@functools.lru_cache(maxsize=4096)
def _date_of_text(v: str) -> date:
    """Each distinct text parsed once: a request repeats the same few dates (errors are not cached)."""
    if not DATE_TEXT.fullmatch(v):
        raise ValueError("a date is a string YYYY-MM-DD")
    try:
        d = date.fromisoformat(v)
    except ValueError as e:
        raise ValueError(f"{v} is not a date: {e}") from e
    return _in_range(d, v)


def _month(v: object) -> date:
    """'YYYY-MM' or 'YYYY-MM-01' as the first day of that month; anything else (a number, another day)
    is refused, never coerced."""
    if isinstance(v, date) and v.day == 1:
        return _in_range(v, f"{v:%Y-%m}")
    if not isinstance(v, str):
        raise ValueError("a month is a string YYYY-MM or YYYY-MM-01")
    return _month_of_text(v)


@functools.lru_cache(maxsize=4096)
def _month_of_text(v: str) -> date:
    """Each distinct text parsed once: every row of a loan's history has a month, and the histories of
    concurrent requests share their months (a validator call per row was a tenth of a request's time)."""
    m = MONTH_TEXT.fullmatch(v)
    if m is None:
        raise ValueError("a month is a string YYYY-MM or YYYY-MM-01")
    if m.group(3) not in (None, "01"):
        raise ValueError(f"{v} is not the first day of a month (use YYYY-MM or YYYY-MM-01)")
    try:
        d = date(int(m.group(1)), int(m.group(2)), 1)
    except ValueError as e:
        raise ValueError(f"{v} is not a month: {e}") from e
    return _in_range(d, v)


Date = Annotated[date, BeforeValidator(_date), WithJsonSchema({"type": "string", "format": "date"})]
Month = Annotated[
    date,
    BeforeValidator(_month),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]{4}-[0-9]{2}(-01)?$",
            "description": "A month: YYYY-MM or YYYY-MM-01.",
        }
    ),
]

BorrowerType = Literal[BORROWER_TYPES]
Product = Literal[PRODUCTS]
RepaymentType = Literal[REPAYMENT_TYPES]
CityTier = Literal[CITY_TIERS]
PropertyType = Literal[PROPERTY_TYPES]
Status = Literal[STATUSES]
LienPosition = Literal[TABLES["loans"].column("lien_position").allowed]


def col(table: str, column: str, note: str = "", **extra: Any) -> Any:
    """The request field of a book column: the contract's description, range and default (None when the
    column is nullable, else required), integers kept within int64; `extra` adds API-only bounds."""
    spec = TABLES[table]
    c = spec.column(column)
    bounds = {"ge": c.min, "gt": c.min_exclusive, "lt": c.max_exclusive}
    if c.kind == "int" and c.allowed is None:  # within int64, as the book stores them
        bounds["le"] = INT64_MAX
        if c.min is None and c.min_exclusive is None:
            bounds["ge"] = -INT64_MAX - 1
    default = spec.defaults.get(column, None if c.nullable else ...)
    kw = {k: v for k, v in bounds.items() if v is not None} | extra
    kw.setdefault("default", default)
    return Field(description=f"{c.description} {note}".strip(), **kw)


class _Strict(BaseModel):
    """Unknown fields, strings for numbers, NaN and Infinity are errors, never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Borrower(_Strict):
    borrower_id: Id = col("borrowers", "borrower_id")
    borrower_type: BorrowerType = col("borrowers", "borrower_type")
    birth_year: int | None = col("borrowers", "birth_year")
    industry: Text | None = col("borrowers", "industry")
    years_in_business: float | None = col("borrowers", "years_in_business")
    annual_income: float | None = col("borrowers", "annual_income")
    bureau_score: float | None = col("borrowers", "bureau_score")


class Loan(_Strict):
    loan_id: Id = col("loans", "loan_id")
    borrower_id: Id = col("loans", "borrower_id", "Must be borrower.borrower_id.")
    product: Product = col("loans", "product")
    origination_date: Date = col("loans", "origination_date")
    term_months: int = col("loans", "term_months")
    principal: float = col("loans", "principal")
    interest_rate: float = col("loans", "interest_rate")
    repayment_type: RepaymentType = col("loans", "repayment_type")
    city: Text = col("loans", "city")
    city_tier: CityTier = col("loans", "city_tier")
    collateral_id: Id | None = col("loans", "collateral_id", "Must be collateral.collateral_id.")
    lien_position: LienPosition | None = col("loans", "lien_position")
    funding_partner: Text | None = col("loans", "funding_partner")


class Collateral(_Strict):
    collateral_id: Id = col("collateral", "collateral_id")
    property_type: PropertyType = col("collateral", "property_type")
    city: Text = col("collateral", "city")
    appraisal_value: float = col("collateral", "appraisal_value")
    appraisal_date: Date = col("collateral", "appraisal_date")
    prior_lien_balance: float = col("collateral", "prior_lien_balance", "Default 0.")


class PerformanceRow(_Strict):
    loan_id: Id = col("performance", "loan_id", "Must be loan.loan_id.")
    month: Month = col("performance", "month")
    balance: float = col("performance", "balance")
    scheduled_payment: float = col("performance", "scheduled_payment")
    paid_amount: float = col("performance", "paid_amount")
    days_past_due: int = col("performance", "days_past_due")
    status: Status = col("performance", "status")
    restructured: bool = col("performance", "restructured")


class HousePrice(_Strict):
    """One month of the house price index of the collateral's city (the city is the collateral's)."""

    month: Month = col("house_prices", "month")
    index: float = col("house_prices", "index")


def _problem(loc: tuple[str | int, ...], msg: str, value: object) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("inconsistent", "{reason}", {"reason": msg}), loc=loc, input=value
    )


def _row(month: str, balance: float, paid: float, dpd: int) -> dict:
    return {
        "loan_id": "L000001",
        "month": month,
        "balance": balance,
        "scheduled_payment": 410.0,
        "paid_amount": paid,
        "days_past_due": dpd,
        "status": "open",
    }


EXAMPLE_LOAN = {  # a valid request loan, shown in the OpenAPI document (serving.openapi)
    "borrower": {
        "borrower_id": "B000001",
        "borrower_type": "individual",
        "birth_year": 1985,
        "industry": "retail",
        "annual_income": 42000.0,
        "bureau_score": 690.0,
    },
    "loan": {
        "loan_id": "L000001",
        "borrower_id": "B000001",
        "product": "unsecured_consumer",
        "origination_date": "2024-01-15",
        "term_months": 36,
        "principal": 12000.0,
        "interest_rate": 0.14,
        "repayment_type": "amortizing",
        "city": "Chengdu",
        "city_tier": "new_tier1",
    },
    "performance": [
        _row("2024-02", 11750.0, 410.0, 0),
        _row("2024-03", 11500.0, 410.0, 0),
        _row("2024-04", 11500.0, 0.0, 15),
    ],
    "as_of": "2024-04",
}


class LoanInput(_Strict):
    """One loan with everything needed to score it at `as_of`."""

    borrower: Borrower
    loan: Loan
    collateral: Collateral | None = Field(None, description="The pledged property (secured loans).")
    performance: list[PerformanceRow] = Field(
        min_length=1,
        max_length=HISTORY_MONTHS,
        description=f"The loan's monthly rows in month order, the last {HISTORY_MONTHS} months up to as_of.",
    )
    house_prices: list[HousePrice] | None = Field(
        None,
        max_length=10 * HISTORY_MONTHS,
        description="House price index of the collateral's city, months in order; if absent, the "
        "configured book's series.",
    )
    as_of: Month | None = Field(None, description="Month to score at; default the last performance month.")

    @model_validator(mode="after")
    def _consistent(self) -> LoanInput:
        """Rules across fields of one loan, each reported at the field it concerns (the batch's
        `features.validation` has the same rules for a book: rows before origination, after close)."""
        p: list[InitErrorDetails] = []
        loan, perf = self.loan, self.performance
        if loan.borrower_id != self.borrower.borrower_id:
            p.append(
                _problem(
                    ("loan", "borrower_id"),
                    f"loan.borrower_id {loan.borrower_id!r} is not borrower.borrower_id "
                    f"{self.borrower.borrower_id!r}",
                    loan.borrower_id,
                )
            )
        if self.collateral is None and loan.collateral_id is not None:
            p.append(
                _problem(
                    ("loan", "collateral_id"),
                    f"loan.collateral_id {loan.collateral_id!r} is given but collateral is missing",
                    loan.collateral_id,
                )
            )
        if self.collateral is not None and loan.collateral_id != self.collateral.collateral_id:
            p.append(
                _problem(
                    ("collateral", "collateral_id"),
                    f"collateral.collateral_id {self.collateral.collateral_id!r} is not "
                    f"loan.collateral_id {loan.collateral_id!r}",
                    self.collateral.collateral_id,
                )
            )
        closed_at = None
        for i, r in enumerate(perf):
            if r.loan_id != loan.loan_id:
                p.append(
                    _problem(
                        ("performance", i, "loan_id"),
                        f"performance[{i}].loan_id {r.loan_id!r} is another loan than loan.loan_id "
                        f"{loan.loan_id!r}",
                        r.loan_id,
                    )
                )
            if i and r.month <= perf[i - 1].month:
                p.append(
                    _problem(
                        ("performance", i, "month"),
                        f"performance[{i}].month {r.month:%Y-%m} is not after performance[{i - 1}].month "
                        f"{perf[i - 1].month:%Y-%m}: rows must be in month order, one per month",
                        f"{r.month:%Y-%m}",
                    )
                )
            if closed_at is not None:
                p.append(
                    _problem(
                        ("performance", i, "status"),
                        f"performance[{i}] comes after the loan was {perf[closed_at].status} in "
                        f"performance[{closed_at}]",
                        r.status,
                    )
                )
            elif r.status != "open":
                closed_at = i
        first = min(range(len(perf)), key=lambda i: perf[i].month)
        if perf[first].month < loan.origination_date.replace(day=1):
            p.append(
                _problem(
                    ("loan", "origination_date"),
                    f"loan.origination_date {loan.origination_date} is after performance[{first}].month "
                    f"{perf[first].month:%Y-%m}: a loan has no rows before its origination month",
                    f"{loan.origination_date}",
                )
            )
        today = date.today().replace(day=1)
        last = perf[-1].month
        if last > today:
            p.append(
                _problem(
                    ("performance", len(perf) - 1, "month"),
                    f"performance[{len(perf) - 1}].month {last:%Y-%m} is in the future",
                    f"{last:%Y-%m}",
                )
            )
        if self.as_of is not None:
            if self.as_of > today:
                p.append(_problem(("as_of",), f"as_of {self.as_of:%Y-%m} is in the future", f"{self.as_of}"))
            elif self.as_of not in {r.month for r in perf}:
                p.append(
                    _problem(("as_of",), f"as_of {self.as_of:%Y-%m} has no performance row", f"{self.as_of}")
                )
        for i, h in enumerate(self.house_prices or ()):
            if i and h.month <= self.house_prices[i - 1].month:
                p.append(
                    _problem(
                        ("house_prices", i, "month"),
                        f"house_prices[{i}].month {h.month:%Y-%m} is not after house_prices[{i - 1}].month:"
                        " months must be in order, one per month",
                        f"{h.month:%Y-%m}",
                    )
                )
        if p:
            raise ValidationError.from_exception_data("LoanInput", p)
        return self


# ----------------------------------------------------------------------------------------- responses


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


class BatchError(BaseModel):
    """A loan of a batch that could not be scored, and why: what /score would answer for it alone."""

    index: int = Field(description="Position of the loan in the request's `loans`.")
    loan_id: str
    status: int = Field(description="The status /score would give it, e.g. 422: not performing at as_of.")
    error: str = Field(description="One-line summary.")
    detail: list[ErrorDetail] = Field(description="One entry per problem; paths under ['loans', index].")


class BatchResponse(BaseModel):
    """One call's loans: every loan is in `scores` or in `errors` (a loan in arrears past the threshold
    is routine in a book and never costs the others their scores)."""

    model_name: str
    model_version: str
    scores: list[ScoreResponse] = Field(description="The loans scored, in the request's order.")
    errors: list[BatchError] = Field(
        default_factory=list, description="The loans that could not be scored, in the request's order."
    )


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


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Path of the field at fault, e.g. ['loan', 'performance', 3].")
    msg: str = Field(description="What is wrong with it.")
    type: str | None = Field(None, description="Kind of error, where known.")


class ErrorBody(BaseModel):
    """Every 4xx (and the rare 5xx) the API answers: a summary and, for a request at fault, its fields."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="One-line summary.")
    detail: list[ErrorDetail] = Field(default_factory=list, description="One entry per problem.")
