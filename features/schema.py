"""The book data contract (DESIGN.md §2), declared once.

Every other module (reader, validator, generator, feature builder, API request models) reads the
column lists, types and rules from here instead of restating them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

SCHEMA_VERSION = "1.0"

Kind = Literal["str", "int", "float", "date", "month", "bool"]


@dataclass(frozen=True)
class Column:
    """One column of a book table and the rules its values must follow."""

    name: str
    kind: Kind
    nullable: bool = False
    allowed: tuple[str, ...] | tuple[int, ...] | None = None
    min: float | None = None  # inclusive lower bound
    max_exclusive: float | None = None
    min_exclusive: float | None = None
    description: str = ""


@dataclass(frozen=True)
class ForeignKey:
    column: str
    table: str
    ref_column: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    may_be_empty: bool = False
    defaults: dict[str, object] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


BORROWER_TYPES = ("individual", "micro_business_owner", "sme")
PRODUCTS = ("secured_business", "secured_consumer", "unsecured_consumer", "revolving")
REPAYMENT_TYPES = ("amortizing", "interest_only", "balloon", "revolving")
CITY_TIERS = ("tier1", "new_tier1", "tier2", "tier3", "other")
PROPERTY_TYPES = ("residential", "commercial", "land")
STATUSES = ("open", "paid_off", "charged_off")
SECURED_PRODUCTS = ("secured_business", "secured_consumer")

BORROWERS = Table(
    name="borrowers",
    key=("borrower_id",),
    columns=(
        Column("borrower_id", "str", description="Unique borrower id."),
        Column("borrower_type", "str", allowed=BORROWER_TYPES, description="Kind of borrower."),
        Column(
            "birth_year", "int", nullable=True, min=1900, max_exclusive=2101, description="Year of birth."
        ),
        Column("industry", "str", nullable=True, description="Industry of the business or employer."),
        Column("years_in_business", "float", nullable=True, min=0, description="Years the business has run."),
        Column(
            "annual_income",
            "float",
            nullable=True,
            min=0,
            description="Declared annual income; 0: not declared.",
        ),
        Column(
            "bureau_score", "float", nullable=True, min=0, description="Credit bureau score at origination."
        ),
    ),
)

LOANS = Table(
    name="loans",
    key=("loan_id",),
    foreign_keys=(
        ForeignKey("borrower_id", "borrowers", "borrower_id"),
        ForeignKey("collateral_id", "collateral", "collateral_id"),
    ),
    columns=(
        Column("loan_id", "str", description="Unique loan id."),
        Column("borrower_id", "str", description="Borrower of the loan."),
        Column("product", "str", allowed=PRODUCTS, description="Product line."),
        Column("origination_date", "date", description="Date the loan was drawn."),
        Column("term_months", "int", min_exclusive=0, description="Contractual term in months."),
        Column("principal", "float", min_exclusive=0, description="Amount lent."),
        Column("interest_rate", "float", min=0, max_exclusive=1, description="Annual interest rate."),
        Column("repayment_type", "str", allowed=REPAYMENT_TYPES, description="How principal is repaid."),
        Column("city", "str", description="City of the borrower or the collateral."),
        Column("city_tier", "str", allowed=CITY_TIERS, description="Tier of the city."),
        Column("collateral_id", "str", nullable=True, description="Pledged property, if secured."),
        Column("lien_position", "int", nullable=True, allowed=(1, 2), description="1st or 2nd lien."),
        Column("funding_partner", "str", nullable=True, description="Partner sharing the funding."),
    ),
)

COLLATERAL = Table(
    name="collateral",
    key=("collateral_id",),
    may_be_empty=True,
    columns=(
        Column("collateral_id", "str", description="Unique collateral id."),
        Column("property_type", "str", allowed=PROPERTY_TYPES, description="Kind of property."),
        Column("city", "str", description="City where the property lies."),
        Column("appraisal_value", "float", min_exclusive=0, description="Appraised value."),
        Column("appraisal_date", "date", description="Date of the appraisal."),
        Column("prior_lien_balance", "float", min=0, description="Debt ranking ahead of this lender."),
    ),
    defaults={"prior_lien_balance": 0.0},  # none recorded: no lien ahead (a first-lien-only book)
)

HOUSE_PRICES = Table(
    name="house_prices",
    key=("city", "month"),
    may_be_empty=True,
    columns=(
        Column("city", "str", description="City of the series."),
        Column("month", "month", description="First day of the month."),
        Column("index", "float", min_exclusive=0, description="House price index level."),
    ),
)

PERFORMANCE = Table(
    name="performance",
    key=("loan_id", "month"),
    foreign_keys=(ForeignKey("loan_id", "loans", "loan_id"),),
    defaults={"restructured": False},
    columns=(
        Column("loan_id", "str", description="Loan the row reports on."),
        Column("month", "month", description="Reporting month (first day); state at month end."),
        Column("balance", "float", min=0, description="Outstanding principal."),
        Column("scheduled_payment", "float", min=0, description="Payment due in the month."),
        Column("paid_amount", "float", min=0, description="Amount paid in the month."),
        Column("days_past_due", "int", min=0, description="Days the oldest unpaid installment is late."),
        Column("status", "str", allowed=STATUSES, description="open, paid_off or charged_off."),
        Column("restructured", "bool", description="A restructuring took effect this month."),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (BORROWERS, LOANS, COLLATERAL, HOUSE_PRICES, PERFORMANCE)}

_ARROW = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "date": pa.date32(),
    "month": pa.date32(),
    "bool": pa.bool_(),
}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema a table is written with, so every writer gives the same bytes."""
    spec = TABLES[table]
    return pa.schema([pa.field(c.name, _ARROW[c.kind], nullable=c.nullable) for c in spec.columns])
